//! Stride-1 "same" convolutions (odd square kernels, zero padding) as a
//! custom op: per example, im2col into a (C·k·k, H·W) matrix and one GEMM
//! for the forward; for the backward, one GEMM for the kernel gradient and
//! one for the column gradient, folded back (col2im) into the input
//! gradient. Examples are split between threads; each thread accumulates its
//! own kernel gradient and the partials are summed in a fixed order.
//!
//! Why not `Tensor::conv2d`: candle's CPU backward of a convolution runs a
//! direct transposed convolution that costs several forwards, and it is what
//! a Real NVP training step spends most of its time in.
//!
//! ```
//! use candle_core::{Device, Tensor};
//! let x = Tensor::randn(0f32, 1., (2, 3, 5, 5), &Device::Cpu)?;
//! let w = Tensor::randn(0f32, 1., (4, 3, 3, 3), &Device::Cpu)?;
//! let y = flowc::exec::conv::conv2d_same(&x, &w)?;
//! let reference = x.conv2d(&w, 1, 1, 1, 1)?;
//! assert!((y - reference)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()? < 1e-4);
//! # Ok::<(), candle_core::Error>(())
//! ```

use candle_core::{
    bail, CpuStorage, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor, WithDType,
};
use gemm::{gemm, Parallelism};

/// Sizes of one convolution.
#[derive(Clone, Copy, Debug)]
struct Dims {
    n: usize,
    c: usize,
    h: usize,
    w: usize,
    o: usize,
    k: usize,
}

impl Dims {
    fn of(x: &Layout, w: &Layout) -> Result<Dims> {
        let (xd, wd) = (x.shape().dims(), w.shape().dims());
        if xd.len() != 4 || wd.len() != 4 || xd[1] != wd[1] || wd[2] != wd[3] || wd[2] % 2 == 0 {
            bail!("conv2d_same: input {xd:?} and kernel {wd:?} do not fit (NCHW, OCkk with odd k)")
        }
        Ok(Dims {
            n: xd[0],
            c: xd[1],
            h: xd[2],
            w: xd[3],
            o: wd[0],
            k: wd[2],
        })
    }
    fn hw(&self) -> usize {
        self.h * self.w
    }
    /// Rows of the column matrix: C·k·k, in the kernel's (c, dy, dx) order.
    fn rows(&self) -> usize {
        self.c * self.k * self.k
    }
}

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

/// `dst (m x n) = [dst +] lhs (m x k) · rhs (k x n)`, strides in elements (row, column).
#[allow(clippy::too_many_arguments)]
fn matmul<T: WithDType>(
    m: usize,
    n: usize,
    k: usize,
    dst: &mut [T],
    accumulate: bool,
    lhs: &[T],
    lhs_rs: usize,
    lhs_cs: usize,
    rhs: &[T],
    rhs_rs: usize,
    rhs_cs: usize,
) {
    // SAFETY: the slices hold the m x n, m x k and k x n matrices at the given strides.
    unsafe {
        gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            accumulate,
            lhs.as_ptr(),
            lhs_cs as isize,
            lhs_rs as isize,
            rhs.as_ptr(),
            rhs_cs as isize,
            rhs_rs as isize,
            if accumulate { T::one() } else { T::zero() },
            T::one(),
            false,
            false,
            false,
            Parallelism::None,
        )
    }
}

/// Splits `0..n` into at most `threads` contiguous ranges.
fn chunks(n: usize, threads: usize) -> Vec<std::ops::Range<usize>> {
    let t = threads.clamp(1, n.max(1));
    (0..t)
        .map(|i| i * n / t..(i + 1) * n / t)
        .filter(|r| !r.is_empty())
        .collect()
}

fn threads() -> usize {
    candle_core::utils::get_num_threads()
}

fn forward<T: WithDType + Send + Sync>(x: &[T], wt: &[T], d: Dims) -> Vec<T> {
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
fn backward<T: WithDType + Send + Sync + std::ops::AddAssign>(
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

struct ConvSame;

impl CustomOp2 for ConvSame {
    fn name(&self) -> &'static str {
        "conv2d-same"
    }
    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let d = Dims::of(l1, l2)?;
        let shape = Shape::from((d.n, d.o, d.h, d.w));
        match s1 {
            CpuStorage::F32(_) => Ok((
                f32::to_cpu_storage_owned(forward(
                    super::cpu_slice::<f32>(s1, l1, "conv2d_same")?,
                    super::cpu_slice::<f32>(s2, l2, "conv2d_same")?,
                    d,
                )),
                shape,
            )),
            CpuStorage::F64(_) => Ok((
                f64::to_cpu_storage_owned(forward(
                    super::cpu_slice::<f64>(s1, l1, "conv2d_same")?,
                    super::cpu_slice::<f64>(s2, l2, "conv2d_same")?,
                    d,
                )),
                shape,
            )),
            _ => bail!("conv2d-same: only f32 and f64"),
        }
    }
    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _y: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let packed = x.apply_op3_no_bwd(w, &grad.contiguous()?, &ConvSameBackward)?;
        let nx = x.elem_count();
        let dx = packed.narrow(0, 0, nx)?.reshape(x.shape())?;
        let dw = packed.narrow(0, nx, w.elem_count())?.reshape(w.shape())?;
        Ok((Some(dx), Some(dw)))
    }
}

struct ConvSameBackward;

impl CustomOp3 for ConvSameBackward {
    fn name(&self) -> &'static str {
        "conv2d-same-backward"
    }
    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let d = Dims::of(l1, l2)?;
        let len = Shape::from(d.n * d.c * d.hw() + d.o * d.rows());
        match s1 {
            CpuStorage::F32(_) => {
                let v = backward(
                    super::cpu_slice::<f32>(s1, l1, "conv2d_same")?,
                    super::cpu_slice::<f32>(s2, l2, "conv2d_same")?,
                    super::cpu_slice::<f32>(s3, l3, "conv2d_same")?,
                    d,
                );
                Ok((f32::to_cpu_storage_owned(v), len))
            }
            CpuStorage::F64(_) => {
                let v = backward(
                    super::cpu_slice::<f64>(s1, l1, "conv2d_same")?,
                    super::cpu_slice::<f64>(s2, l2, "conv2d_same")?,
                    super::cpu_slice::<f64>(s3, l3, "conv2d_same")?,
                    d,
                );
                Ok((f64::to_cpu_storage_owned(v), len))
            }
            _ => bail!("conv2d-same-backward: only f32 and f64"),
        }
    }
}

/// A stride-1 convolution with an odd `k x k` kernel, padded with k/2 zeros so
/// the output keeps H and W. CPU tensors take the custom op; others candle's conv2d.
pub fn conv2d_same(x: &Tensor, w: &Tensor) -> Result<Tensor> {
    let k = w.dim(3)?;
    if x.device().is_cpu() && matches!(x.dtype(), candle_core::DType::F32 | candle_core::DType::F64)
    {
        x.contiguous()?.apply_op2(&w.contiguous()?, ConvSame)
    } else {
        x.conv2d(w, k / 2, 1, 1, 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exec::test_util::{max_abs, randn};
    use candle_core::{DType, Var};

    #[test]
    fn matches_candle_conv2d_values_and_gradients() -> Result<()> {
        for (n, c, o, k, h, w) in [
            (3usize, 2usize, 4usize, 3usize, 5usize, 4usize),
            (1, 1, 1, 3, 1, 1),
            (5, 3, 2, 1, 3, 2),
            (2, 4, 3, 5, 6, 7),
        ] {
            let x = Var::from_tensor(&randn(&[n, c, h, w], DType::F64)?)?;
            let kern = Var::from_tensor(&randn(&[o, c, k, k], DType::F64)?)?;
            let ours = conv2d_same(x.as_tensor(), kern.as_tensor())?;
            let reference = x.as_tensor().conv2d(kern.as_tensor(), k / 2, 1, 1, 1)?;
            assert!(max_abs(&(&ours - &reference)?)? < 1e-12);
            let probe = randn(ours.dims(), DType::F64)?;
            let g1 = (&ours * &probe)?.sum_all()?.backward()?;
            let g2 = (&reference * &probe)?.sum_all()?.backward()?;
            for v in [&x, &kern] {
                let d = (g1.get(v.as_tensor()).unwrap() - g2.get(v.as_tensor()).unwrap())?;
                assert!(max_abs(&d)? < 1e-10, "{:?}", (n, c, o, k, h, w));
            }
        }
        Ok(())
    }
}
