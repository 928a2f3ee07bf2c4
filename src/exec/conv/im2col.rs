//! The portable path of [`super`]: per example, im2col into a
//! `(C·k·k, H·W)` matrix and one GEMM (the `gemm` crate) for the forward;
//! for the backward, one GEMM for the kernel gradient and one for the
//! column gradient, folded back (col2im) into the input gradient. Any odd
//! kernel, f32 and f64; the reference the direct kernels are tested against.

use super::Dims;
use crate::exec::linalg::matmul;
use crate::exec::parallel::{chunks, threads};
use candle_core::WithDType;

/// cols[(c·k + dy)·k + dx][i·W + j] = x[c][i + dy - p][j + dx - p], zero outside.
fn im2col<T: WithDType>(x: &[T], d: Dims, cols: &mut [T]) {
    let p = d.k / 2;
    let hw = d.hw();
    for c in 0..d.c {
        for dy in 0..d.k {
            for dx in 0..d.k {
                let row = &mut cols[((c * d.k + dy) * d.k + dx) * hw..][..hw];
                for i in 0..d.h {
                    let si = i + dy;
                    let out = &mut row[i * d.w..(i + 1) * d.w];
                    if si < p || si - p >= d.h {
                        out.fill(T::zero());
                        continue;
                    }
                    let src = &x[(c * d.h + si - p) * d.w..][..d.w];
                    for (j, o) in out.iter_mut().enumerate() {
                        let sj = j + dx;
                        *o = if sj < p || sj - p >= d.w {
                            T::zero()
                        } else {
                            src[sj - p]
                        };
                    }
                }
            }
        }
    }
}

/// The adjoint of [`im2col`]: adds each column entry back to its input position.
fn col2im<T: WithDType + std::ops::AddAssign>(cols: &[T], d: Dims, x: &mut [T]) {
    let p = d.k / 2;
    let hw = d.hw();
    for c in 0..d.c {
        for dy in 0..d.k {
            for dx in 0..d.k {
                let row = &cols[((c * d.k + dy) * d.k + dx) * hw..][..hw];
                for i in 0..d.h {
                    let si = i + dy;
                    if si < p || si - p >= d.h {
                        continue;
                    }
                    let dst = &mut x[(c * d.h + si - p) * d.w..][..d.w];
                    for j in 0..d.w {
                        let sj = j + dx;
                        if sj >= p && sj - p < d.w {
                            dst[sj - p] += row[i * d.w + j];
                        }
                    }
                }
            }
        }
    }
}

pub(super) fn forward<T: WithDType + Send + Sync>(x: &[T], wt: &[T], d: Dims) -> Vec<T> {
    let (hw, rows) = (d.hw(), d.rows());
    let mut y = vec![T::zero(); d.n * d.o * hw];
    let per_out = d.o * hw;
    std::thread::scope(|s| {
        let mut rest = y.as_mut_slice();
        for r in chunks(d.n, threads()) {
            let (mine, tail) = rest.split_at_mut(r.len() * per_out);
            rest = tail;
            s.spawn(move || {
                let mut cols = vec![T::zero(); rows * hw];
                for (e, out) in r.zip(mine.chunks_mut(per_out)) {
                    im2col(&x[e * d.c * hw..(e + 1) * d.c * hw], d, &mut cols);
                    matmul(d.o, hw, rows, out, false, wt, rows, 1, &cols, hw, 1);
                }
            });
        }
    });
    y
}

/// `[dx | dw]`: the input gradient, then the kernel gradient.
pub(super) fn backward<T: WithDType + Send + Sync + std::ops::AddAssign>(
    x: &[T],
    wt: &[T],
    g: &[T],
    d: Dims,
) -> Vec<T> {
    let (hw, rows) = (d.hw(), d.rows());
    let per_in = d.c * hw;
    let mut out = vec![T::zero(); d.n * per_in + d.o * rows];
    let (dx, dw) = out.split_at_mut(d.n * per_in);
    let partials: Vec<Vec<T>> = std::thread::scope(|s| {
        let mut rest = dx;
        let mut handles = vec![];
        for r in chunks(d.n, threads()) {
            let (mine, tail) = rest.split_at_mut(r.len() * per_in);
            rest = tail;
            handles.push(s.spawn(move || {
                let mut cols = vec![T::zero(); rows * hw];
                let mut dcols = vec![T::zero(); rows * hw];
                let mut dw_part = vec![T::zero(); d.o * rows];
                for (i, (e, dxe)) in r.zip(mine.chunks_mut(per_in)).enumerate() {
                    let ge = &g[e * d.o * hw..(e + 1) * d.o * hw];
                    im2col(&x[e * per_in..(e + 1) * per_in], d, &mut cols);
                    // dW (O x rows) += g_e (O x HW) · cols^T (HW x rows)
                    matmul(d.o, rows, hw, &mut dw_part, i > 0, ge, hw, 1, &cols, 1, hw);
                    // dcols (rows x HW) = W^T (rows x O) · g_e (O x HW)
                    matmul(rows, hw, d.o, &mut dcols, false, wt, 1, rows, ge, hw, 1);
                    col2im(&dcols, d, dxe);
                }
                dw_part
            }));
        }
        handles
            .into_iter()
            .map(|h| h.join().expect("conv worker"))
            .collect()
    });
    for part in partials {
        for (a, b) in dw.iter_mut().zip(part) {
            *a += b;
        }
    }
    out
}
