//! The MLP's forward in f32 with AVX-512: examples in blocks of 48, each
//! block taken through every layer while its activations (feature-major,
//! `[width][48]`, 12 KiB at width 64) stay in L1.
//!
//! Why: a vector flow's conditioner multiplies a few hundred rows by
//! matrices of tens; the `gemm` crate reached about 30 GFLOP/s there, and
//! the bias and ReLU passes over the row-major outputs cost as much again
//! (two_moons' density spent 85% of its time in them). A layer here is one
//! micro-kernel call per 8 outputs: 8 outputs by 48 examples in 24
//! registers, started from the bias, stored through the ReLU.
//!
//! Rows are independent, so each thread takes a contiguous range of
//! examples; the result does not depend on the number of threads.

use std::arch::x86_64::*;

use crate::exec::parallel::{chunks, map_parts};

/// Examples per block: the micro-kernel's width (three vectors of 16).
const NB: usize = 48;
/// Outputs per micro-kernel call.
const MR: usize = 8;

/// Whether this machine runs the blocked forward (AVX-512F).
pub fn available() -> bool {
    is_x86_feature_detected!("avx512f")
}

/// One layer's weight packed for [`layer_block`] (blocks of [`MR`] outputs,
/// `[in][MR]` within a block, zeros past `dout`) and its bias.
struct Layer {
    din: usize,
    dout: usize,
    packed: Vec<f32>,
    /// Zeros past `dout`, to whole blocks.
    bias: Vec<f32>,
}

impl Layer {
    /// From the row-major weight `[dout][din]`.
    fn new(w: &[f32], b: &[f32], din: usize, dout: usize) -> Self {
        let rows = dout.div_ceil(MR) * MR;
        let mut packed = vec![0f32; rows * din];
        for o in 0..dout {
            for k in 0..din {
                packed[((o / MR) * din + k) * MR + o % MR] = w[o * din + k];
            }
        }
        let mut bias = b.to_vec();
        bias.resize(rows, 0.0);
        Layer {
            din,
            dout,
            packed,
            bias,
        }
    }

    /// `out[o][j] = relu?(bias[o] + sum_k w[o][k] * inp[k][j])` for the
    /// first `16 * nv` columns of a block (`inp` and `out` are `[rows][NB]`).
    fn apply(&self, inp: &[f32], nv: usize, relu: bool, out: &mut [f32]) {
        assert!(available() && (1..=NB / 16).contains(&nv));
        let blocks = self.dout.div_ceil(MR);
        assert!(inp.len() >= self.din * NB && out.len() >= blocks * MR * NB);
        assert!(self.bias.len() >= blocks * MR && self.packed.len() >= blocks * MR * self.din);
        for b in 0..blocks {
            let w = self.packed[b * self.din * MR..].as_ptr();
            let bias = self.bias[b * MR..].as_ptr();
            let o = out[b * MR * NB..].as_mut_ptr();
            let (x, din) = (inp.as_ptr(), self.din);
            // SAFETY: AVX-512F is present (asserted); the kernel reads `din`
            // rows of `16 nv <= NB` values of `inp`, the `din * MR` packed
            // weights and `MR` biases of block `b`, and writes `MR` rows of
            // `out` from row `b * MR`, all inside the asserted lengths.
            unsafe {
                match nv {
                    3 => layer_block::<3>(x, din, w, bias, relu, o),
                    2 => layer_block::<2>(x, din, w, bias, relu, o),
                    _ => layer_block::<1>(x, din, w, bias, relu, o),
                }
            }
        }
    }
}

/// `out[m][0..16 NV] = relu?(bias[m] + sum_k w[k][m] * x[k][0..16 NV])` for
/// the [`MR`] outputs of one block; rows of `x` and `out` are [`NB`] apart.
/// The same register tiling as the convolutions' `conv_block`, with the
/// bias as the accumulators' start and the ReLU on the way out.
#[target_feature(enable = "avx512f")]
unsafe fn layer_block<const NV: usize>(
    x: *const f32,
    din: usize,
    mut w: *const f32,
    bias: *const f32,
    relu: bool,
    out: *mut f32,
) {
    let mut acc = [[_mm512_setzero_ps(); NV]; MR];
    for (m, a) in acc.iter_mut().enumerate() {
        *a = [_mm512_set1_ps(*bias.add(m)); NV];
    }
    for k in 0..din {
        let row = x.add(k * NB);
        let mut xv = [_mm512_setzero_ps(); NV];
        for (v, xv) in xv.iter_mut().enumerate() {
            *xv = _mm512_loadu_ps(row.add(16 * v));
        }
        for (m, a) in acc.iter_mut().enumerate() {
            let wv = _mm512_set1_ps(*w.add(m));
            for v in 0..NV {
                a[v] = _mm512_fmadd_ps(wv, xv[v], a[v]);
            }
        }
        w = w.add(MR);
    }
    for (m, a) in acc.iter().enumerate() {
        for (v, &av) in a.iter().enumerate() {
            // max(0, s) returns s when s is NaN: NaN stays NaN.
            let s = if relu {
                _mm512_max_ps(_mm512_setzero_ps(), av)
            } else {
                av
            };
            _mm512_storeu_ps(out.add(m * NB + 16 * v), s);
        }
    }
}

/// The network's forward on the `n` rows of `x` (`n x dims[0]`, row-major):
/// the output `y` (`n x dims.last()`), and, when `hidden` is not empty, each
/// hidden layer's output after its ReLU (`n x width`, for the backward).
/// `params` holds per layer the weight `[out][in]` then the bias.
pub fn forward(
    dims: &[usize],
    params: &[f32],
    x: &[f32],
    n: usize,
    threads: usize,
    y: &mut [f32],
    hidden: &mut [Vec<f32>],
) {
    let mut layers = vec![];
    let mut at = 0;
    for d in dims.windows(2) {
        let (w, rest) = params[at..].split_at(d[0] * d[1]);
        layers.push(Layer::new(w, &rest[..d[1]], d[0], d[1]));
        at += d[0] * d[1] + d[1];
    }
    let ranges = chunks(n, threads);
    // Per range: its rows of the output and of every kept hidden layer.
    let mut parts: Vec<Vec<&mut [f32]>> = ranges.iter().map(|_| vec![]).collect();
    let widths = dims.last().into_iter().chain(&dims[1..dims.len() - 1]);
    let outputs = std::iter::once(y).chain(hidden.iter_mut().map(|h| h.as_mut_slice()));
    for (out, &width) in outputs.zip(widths) {
        let mut rest = out;
        for (k, r) in ranges.iter().enumerate() {
            let (mine, tail) = rest.split_at_mut(r.len() * width);
            rest = tail;
            parts[k].push(mine);
        }
    }
    let run = |(r, mut outs): (std::ops::Range<usize>, Vec<&mut [f32]>)| {
        let rows = &x[r.start * dims[0]..r.end * dims[0]];
        let (y, kept) = outs.split_first_mut().expect("an output");
        range(&layers, rows, r.len(), y, kept);
    };
    map_parts(ranges.into_iter().zip(parts).collect(), run);
}

/// One thread's rows, a block of [`NB`] examples at a time.
fn range(layers: &[Layer], x: &[f32], n: usize, y: &mut [f32], kept: &mut [&mut [f32]]) {
    let widest = layers
        .iter()
        .map(|l| l.din.max(l.dout.div_ceil(MR) * MR))
        .max();
    let len = widest.expect("a layer") * NB;
    let (mut a, mut b) = (vec![0f32; len], vec![0f32; len]);
    let d0 = layers[0].din;
    for e0 in (0..n).step_by(NB) {
        let nb = NB.min(n - e0);
        let nv = nb.div_ceil(16);
        for k in 0..d0 {
            let row = &mut a[k * NB..][..16 * nv];
            for (j, v) in row.iter_mut().enumerate() {
                *v = if j < nb { x[(e0 + j) * d0 + k] } else { 0.0 };
            }
        }
        for (l, layer) in layers.iter().enumerate() {
            let last = l + 1 == layers.len();
            layer.apply(&a, nv, !last, &mut b);
            match (last, kept.get_mut(l)) {
                (true, _) => unblock(&b, layer.dout, e0, nb, y),
                (false, Some(h)) => unblock(&b, layer.dout, e0, nb, h),
                (false, None) => {}
            }
            std::mem::swap(&mut a, &mut b);
        }
    }
}

/// Writes the block `blk` (`[width][NB]`, `nb` examples) as rows `e0..` of
/// the row-major `dst` (`n x width`).
fn unblock(blk: &[f32], width: usize, e0: usize, nb: usize, dst: &mut [f32]) {
    for j in 0..nb {
        let row = &mut dst[(e0 + j) * width..][..width];
        for (o, v) in row.iter_mut().enumerate() {
            *v = blk[o * NB + j];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The MLP in f64, row by row, as the definition says.
    fn reference(dims: &[usize], p: &[f32], x: &[f32], n: usize) -> Vec<Vec<f64>> {
        let mut outs = vec![];
        let mut h: Vec<f64> = x.iter().map(|&v| v as f64).collect();
        let mut at = 0;
        for (l, d) in dims.windows(2).enumerate() {
            let (din, dout) = (d[0], d[1]);
            let mut next = vec![0f64; n * dout];
            for i in 0..n {
                for o in 0..dout {
                    let mut s = p[at + din * dout + o] as f64;
                    for k in 0..din {
                        s += p[at + o * din + k] as f64 * h[i * din + k];
                    }
                    next[i * dout + o] = if l + 2 < dims.len() { s.max(0.0) } else { s };
                }
            }
            at += din * dout + dout;
            h = next.clone();
            outs.push(next);
        }
        outs
    }

    /// Values and kept hidden layers against f64, on awkward sizes: one
    /// row, rows off the block and vector widths, widths off [`MR`], one
    /// and three hidden layers, one and two threads.
    #[test]
    fn blocked_matches_an_f64_mlp() {
        if !available() {
            return;
        }
        let mut rng = crate::train::rng::Rng::new(7);
        for (n, dims) in [
            (1usize, vec![2usize, 64, 64, 4]),
            (47, vec![3, 17, 6]),
            (49, vec![1, 9, 9, 9, 2]),
            (130, vec![5, 64, 64, 10]),
        ] {
            let total: usize = dims.windows(2).map(|d| d[0] * d[1] + d[1]).sum();
            let p: Vec<f32> = (0..total).map(|_| 0.3 * rng.normal() as f32).collect();
            let x: Vec<f32> = (0..n * dims[0]).map(|_| rng.normal() as f32).collect();
            let want = reference(&dims, &p, &x, n);
            for threads in [1, 2] {
                let mut y = vec![f32::NAN; n * dims[dims.len() - 1]];
                let mut hidden: Vec<Vec<f32>> = dims[1..dims.len() - 1]
                    .iter()
                    .map(|&w| vec![f32::NAN; n * w])
                    .collect();
                forward(&dims, &p, &x, n, threads, &mut y, &mut hidden);
                let got = hidden.iter().chain([&y]);
                for (l, (g, w)) in got.zip(&want).enumerate() {
                    let err = g.iter().zip(w).map(|(&a, &b)| (a as f64 - b).abs());
                    let worst = err.fold(0f64, f64::max);
                    assert!(worst < 1e-5, "n {n} dims {dims:?} layer {l}: {worst}");
                }
                // Without kept layers, the same output.
                let mut y2 = vec![f32::NAN; y.len()];
                forward(&dims, &p, &x, n, threads, &mut y2, &mut []);
                assert_eq!(y, y2);
            }
        }
    }
}
