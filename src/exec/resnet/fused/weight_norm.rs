//! Weight normalization inside the fused conditioner: each convolution's
//! kernel is `w = g * v / ||v||`, the norm per output channel over
//! `(in, 3, 3)` (as [`crate::exec::wn_conv`]). The forward computes the
//! kernels once a call and the backward takes their gradients to `v` and
//! `g`, both split over the threads. Why here and not in candle ops: those
//! cost five ops per convolution and five autograd nodes, each a fresh
//! tensor on the calling thread while the other threads wait (1-2% of a
//! 2-thread step's samples, the largest serial share left).

use super::ParamLayout;
use crate::exec::parallel::{map_parts, threads};
use crate::exec::scratch::{self, Buf};

/// The effective kernels `g * v / ||v||` of every convolution of `p` (the
/// norm per output channel, in f64), one after another at [`super::ConvAt`]'s `k`.
pub(super) fn effective_kernels(p: &[f32], lay: &ParamLayout) -> Buf {
    let mut w = scratch::any(lay.kernels);
    let mut rows = Vec::with_capacity(lay.rows());
    let mut rest = &mut w[..];
    for c in &lay.convs {
        let (mine, tail) = rest.split_at_mut(c.kernel_len());
        rest = tail;
        let vs = p[c.v..c.g].chunks_exact(c.inp * 9);
        for ((v, g), w) in vs
            .zip(&p[c.g..c.bias])
            .zip(mine.chunks_exact_mut(c.inp * 9))
        {
            rows.push((v, *g, w));
        }
    }
    par_rows(
        rows,
        |r| r.0.len(),
        |(v, g, w)| {
            let scale = (g as f64 / norm(v)) as f32;
            for (w, v) in w.iter_mut().zip(v) {
                *w = v * scale;
            }
        },
    );
    w
}

/// Takes the effective kernels' gradients, in the `v` slots of `dp`, to
/// those of `v` and `g`: with `n = ||v||`, `dg = dw.v / n` and
/// `dv = (g / n) (dw - (dg / n) v)`.
pub(super) fn weight_norm_backward(p: &[f32], lay: &ParamLayout, dp: &mut [f32]) {
    let mut rows = Vec::with_capacity(lay.rows());
    let mut rest = &mut dp[..];
    let mut at = 0;
    for c in &lay.convs {
        // `g` follows `v`: one slice holds both of this convolution's.
        let (_, from_v) = rest.split_at_mut(c.v - at);
        let (dvg, tail) = from_v.split_at_mut(c.bias - c.v);
        (rest, at) = (tail, c.bias);
        let (dv, dg) = dvg.split_at_mut(c.kernel_len());
        let vs = p[c.v..c.g].chunks_exact(c.inp * 9);
        let dvs = dv.chunks_exact_mut(c.inp * 9);
        for (((v, g), dv), dg) in vs.zip(&p[c.g..c.bias]).zip(dvs).zip(dg) {
            rows.push((v, *g, dv, dg));
        }
    }
    par_rows(
        rows,
        |r| r.0.len(),
        |(v, g, dv, dg)| {
            let n = norm(v);
            let dot: f64 = dv.iter().zip(v).map(|(d, v)| *d as f64 * *v as f64).sum();
            *dg = (dot / n) as f32;
            let (k, m) = ((g as f64 / n) as f32, (g as f64 * dot / (n * n * n)) as f32);
            for (d, v) in dv.iter_mut().zip(v) {
                *d = k * *d - m * v;
            }
        },
    );
}

/// The Euclidean norm of `v`, summed in f64.
fn norm(v: &[f32]) -> f64 {
    v.iter().map(|&x| x as f64 * x as f64).sum::<f64>().sqrt()
}

/// Runs `f` on every row, the rows split over the threads in contiguous
/// runs of about equal length (`len` of a row).
fn par_rows<T: Send>(rows: Vec<T>, len: impl Fn(&T) -> usize, f: impl Fn(T) + Sync) {
    let total: usize = rows.iter().map(&len).sum();
    let t = threads();
    let mut parts: Vec<Vec<T>> = (0..t).map(|_| vec![]).collect();
    let mut before = 0;
    for r in rows {
        let l = len(&r);
        parts[(before * t / total.max(1)).min(t - 1)].push(r);
        before += l;
    }
    map_parts(parts, |rows| rows.into_iter().for_each(&f));
}
