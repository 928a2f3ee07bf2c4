//! Stride-1 "same" convolutions (odd square kernels, zero padding) as a
//! custom op with its backward. Two paths: [`direct`], AVX-512 kernels for
//! 3x3 kernels in f32 that read the input in place on a zero-bordered grid
//! (what every Real NVP conditioner uses, on every machine with AVX-512),
//! and [`im2col`], the portable path for everything else (f64, other
//! kernel sizes, other CPUs), which is also the reference the direct path
//! is tested against. Examples are split between threads; each thread
//! accumulates its own kernel gradient and the partials are summed in a
//! fixed order, so results do not depend on scheduling.
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

#[cfg(target_arch = "x86_64")]
pub(crate) mod direct;
mod im2col;

#[cfg(target_arch = "x86_64")]
use crate::exec::parallel::par;
#[cfg(target_arch = "x86_64")]
#[doc(hidden)] // public for benches/kernels.rs
pub mod layer;
#[cfg(target_arch = "x86_64")]
mod winograd;

/// Sizes of one convolution.
#[derive(Clone, Copy, Debug)]
pub(super) struct Dims {
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

fn forward_f32(x: &[f32], wt: &[f32], d: Dims) -> Vec<f32> {
    #[cfg(target_arch = "x86_64")]
    if direct_fits(d) {
        return forward_direct(x, wt, d);
    }
    im2col::forward(x, wt, d)
}

fn backward_f32(x: &[f32], wt: &[f32], gy: &[f32], d: Dims) -> Vec<f32> {
    #[cfg(target_arch = "x86_64")]
    if direct_fits(d) {
        return backward_direct(x, wt, gy, d);
    }
    im2col::backward(x, wt, gy, d)
}

/// Whether the AVX-512 kernels of [`direct`] take this convolution.
fn direct_fits(d: Dims) -> bool {
    #[cfg(target_arch = "x86_64")]
    return d.k == 3 && direct::available();
    #[cfg(not(target_arch = "x86_64"))]
    return false;
}

#[cfg(target_arch = "x86_64")]
fn forward_direct(x: &[f32], wt: &[f32], d: Dims) -> Vec<f32> {
    let g = direct::Grid::new(d.h, d.w);
    let wpk = direct::pack_kernel(wt, d.o, d.c, false);
    let (per_in, per_out) = (d.c * d.hw(), d.o * d.hw());
    let mut y = crate::exec::parallel::zeros(d.n * per_out);
    par(d.n, &mut y, per_out, |r, mine| {
        let mut xp = direct::padded(&g, d.c);
        let mut res = crate::exec::scratch::any(g.result_len(d.o));
        for (e, out) in r.zip(mine.chunks_mut(per_out)) {
            g.pad(&x[e * per_in..][..per_in], d.c, &mut xp);
            direct::conv_example(&g, &xp, d.c, &wpk, d.o, &mut res);
            g.unpack(&res, d.o, out);
        }
    });
    y
}

/// `[dx | dw]`, as [`im2col::backward`]: the input gradient by the
/// transposed kernel, the kernel gradient by [`layer::KernelGrad`]'s
/// direct path (this op is the f32 reference the fused ops are tested
/// against, so it keeps the more exact kernels).
#[cfg(target_arch = "x86_64")]
fn backward_direct(x: &[f32], wt: &[f32], gy: &[f32], d: Dims) -> Vec<f32> {
    use layer::{Algorithm, KernelGrad, Pre};
    let g = direct::Grid::new(d.h, d.w);
    let wpk = direct::pack_kernel(wt, d.o, d.c, true);
    let kgrad = KernelGrad::with(Algorithm::Direct, d.h, d.w, d.c, d.o);
    let (per_in, per_out) = (d.c * d.hw(), d.o * d.hw());
    let mut out = crate::exec::parallel::zeros(d.n * per_in + d.o * d.rows());
    let (dx, dw) = out.split_at_mut(d.n * per_in);
    let partials = par(d.n, dx, per_in, |r, mine| {
        let mut gp = direct::padded(&g, d.o);
        let mut res = crate::exec::scratch::any(g.result_len(d.c));
        for (e, dxe) in r.clone().zip(mine.chunks_mut(per_in)) {
            g.pad(&gy[e * per_out..][..per_out], d.o, &mut gp);
            direct::conv_example(&g, &gp, d.o, &wpk, d.c, &mut res);
            g.unpack(&res, d.c, dxe);
        }
        kgrad.part(x, Pre::Identity, gy, r)
    });
    // Summed over threads in a fixed order.
    kgrad.add_parts(&partials, dw);
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
                f32::to_cpu_storage_owned(forward_f32(
                    super::cpu_slice::<f32>(s1, l1, "conv2d_same")?,
                    super::cpu_slice::<f32>(s2, l2, "conv2d_same")?,
                    d,
                )),
                shape,
            )),
            CpuStorage::F64(_) => Ok((
                f64::to_cpu_storage_owned(im2col::forward(
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
        crate::exec::packed_grads(x, w, grad, &ConvSameBackward)
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
                let v = backward_f32(
                    super::cpu_slice::<f32>(s1, l1, "conv2d_same")?,
                    super::cpu_slice::<f32>(s2, l2, "conv2d_same")?,
                    super::cpu_slice::<f32>(s3, l3, "conv2d_same")?,
                    d,
                );
                Ok((f32::to_cpu_storage_owned(v), len))
            }
            CpuStorage::F64(_) => {
                let v = im2col::backward(
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
    use crate::exec::test_util::{max_abs, max_abs_diff, randn};
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

    /// The f32 path (the AVX-512 kernels where the CPU has them) against
    /// the f64 im2col path, values and both gradients, on awkward sizes:
    /// batch 1, 1x1 and odd maps, channel counts off every block size.
    #[test]
    fn f32_matches_f64_reference_on_awkward_sizes() -> Result<()> {
        for (n, c, o, h, w) in [
            (1usize, 1usize, 1usize, 1usize, 1usize),
            (3, 2, 5, 7, 5),
            (2, 3, 32, 32, 32),
            (5, 12, 24, 16, 16),
            (1, 33, 9, 3, 11),
            (4, 64, 12, 6, 9),
            (2, 17, 70, 13, 2),
        ] {
            let x64 = randn(&[n, c, h, w], DType::F64)?;
            let k64 = randn(&[o, c, 3, 3], DType::F64)?;
            let probe = randn(&[n, o, h, w], DType::F64)?;
            let grads = |x: &Tensor, k: &Tensor| -> Result<(Tensor, Tensor, Tensor)> {
                let (xv, kv) = (Var::from_tensor(x)?, Var::from_tensor(k)?);
                let y = conv2d_same(xv.as_tensor(), kv.as_tensor())?;
                let g = (&y * probe.to_dtype(x.dtype())?)?.sum_all()?.backward()?;
                let dx = g.get(xv.as_tensor()).unwrap().clone();
                let dk = g.get(kv.as_tensor()).unwrap().clone();
                Ok((y, dx, dk))
            };
            let reference = grads(&x64, &k64)?;
            let ours = grads(&x64.to_dtype(DType::F32)?, &k64.to_dtype(DType::F32)?)?;
            // f32 sums of c*9 (values, input gradient over o*9) or n*h*w
            // (kernel gradient) products of standard normals.
            let scale = |terms: usize| 1e-6 * (terms as f64).sqrt().max(1.0) * 4.0;
            let cases = [
                ("y", &ours.0, &reference.0, c * 9),
                ("dx", &ours.1, &reference.1, o * 9),
                ("dk", &ours.2, &reference.2, n * h * w),
            ];
            for (what, a, b, terms) in cases {
                let err = max_abs_diff(a, b)?;
                let tol = scale(terms) * (terms as f64).sqrt();
                assert!(err < tol, "{what} {:?}: {err} > {tol}", (n, c, o, h, w));
            }
        }
        Ok(())
    }
}
