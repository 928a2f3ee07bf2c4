//! Logit preprocessing (Real NVP): `p = alpha + (1 - 2 alpha) x`, `y = logit(p) = log p - log(1-p)`.
//! Log-det per example: `sum(log(1 - 2 alpha) - log p - log(1 - p))`.
//! Inverse: `x = (sigmoid(y) - alpha) / (1 - 2 alpha)`. No parameters; `train` has no effect.
//! `x` is expected in `[0, 1]` (dequantized data); `alpha` in `[0, 0.5)` (Real NVP: 0.05).
//!
//! On the CPU in f32 both directions are one custom op each, split over the
//! threads by examples (the log-det summed in f64); their gradients are
//! candle ops. Elsewhere (f64, CUDA) they are candle ops throughout, the
//! reference the fused ops are tested against. Why: as eight serial candle
//! ops the forward was 0.2-0.25% of a 2-thread evaluation's samples, all on
//! the calling thread while the others waited.
//!
//! ```
//! use candle_core::{DType, Device, Tensor};
//! use flowc::exec::{logit::Logit, FlowLayer};
//! let layer = Logit::new(0.05)?;
//! let x = Tensor::rand(0f32, 1., (2, 3, 4, 4), &Device::Cpu)?;
//! let (y, logdet) = layer.forward(&x, None, true)?;
//! let x2 = layer.inverse(&y, None)?;
//! # Ok::<(), candle_core::Error>(())
//! ```

use super::parallel::{par, zeros};
use super::{cpu_slice, FlowLayer, Given};
use candle_core::{bail, CpuStorage, CustomOp1, DType, Layout, Result, Shape, Tensor};

pub const DEFAULT_ALPHA: f64 = 0.05;

#[derive(Debug, Clone, Copy)]
pub struct Logit {
    alpha: f64,
}

impl Logit {
    pub fn new(alpha: f64) -> Result<Self> {
        if !(0.0..0.5).contains(&alpha) {
            bail!("logit alpha must be in [0, 0.5), got {alpha}")
        }
        Ok(Self { alpha })
    }
    pub fn alpha(&self) -> f64 {
        self.alpha
    }
}

impl Default for Logit {
    fn default() -> Self {
        Self {
            alpha: DEFAULT_ALPHA,
        }
    }
}

impl FlowLayer for Logit {
    fn forward(&self, x: &Tensor, _given: Given, _train: bool) -> Result<(Tensor, Tensor)> {
        if !fused(x) {
            return self.forward_reference(x);
        }
        let (n, nd) = (x.dim(0)?, x.elem_count());
        let packed = x.contiguous()?.apply_op1(LogitFwd { alpha: self.alpha })?;
        let y = packed.narrow(0, 0, nd)?.reshape(x.shape())?;
        Ok((y, packed.narrow(0, nd, n)?))
    }

    fn inverse(&self, y: &Tensor, _given: Given) -> Result<Tensor> {
        if !fused(y) {
            return self.inverse_reference(y);
        }
        y.contiguous()?.apply_op1(LogitInv { alpha: self.alpha })
    }
}

/// Whether the fused ops run `x`: a non-empty f32 tensor `[N, ..]` on the CPU.
fn fused(x: &Tensor) -> bool {
    x.device().is_cpu() && x.dtype() == DType::F32 && x.rank() > 1 && x.elem_count() > 0
}

impl Logit {
    /// The forward in candle ops.
    fn forward_reference(&self, x: &Tensor) -> Result<(Tensor, Tensor)> {
        let a = self.alpha;
        let p = x.affine(1.0 - 2.0 * a, a)?;
        let log_p = p.log()?;
        let log_q = p.affine(-1.0, 1.0)?.log()?;
        let y = (&log_p - &log_q)?;
        let per_elem = (log_p + log_q)?.affine(-1.0, (1.0 - 2.0 * a).ln())?;
        let logdet = per_elem.flatten_from(1)?.sum(1)?;
        Ok((y, logdet))
    }

    /// The inverse in candle ops.
    fn inverse_reference(&self, y: &Tensor) -> Result<Tensor> {
        let a = self.alpha;
        let sig = y.neg()?.exp()?.affine(1.0, 1.0)?.recip()?;
        sig.affine(1.0 / (1.0 - 2.0 * a), -a / (1.0 - 2.0 * a))
    }
}

/// The forward: `[y (N*D) | logdet (N)]`.
struct LogitFwd {
    alpha: f64,
}

impl CustomOp1 for LogitFwd {
    fn name(&self) -> &'static str {
        "logit"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = cpu_slice::<f32>(s, l, self.name())?;
        let (n, nd) = (l.dims()[0], x.len());
        let d = nd / n;
        let mut out = zeros::<f32>(nd + n);
        let (ys, lds) = out.split_at_mut(nd);
        let (a, scale) = (self.alpha as f32, (1.0 - 2.0 * self.alpha) as f32);
        let ld_const = d as f64 * (1.0 - 2.0 * self.alpha).ln();
        let parts = par(n, ys, d, |r, ys| {
            let xs = &x[r.start * d..r.end * d];
            let mut mine = vec![];
            for (xe, ye) in xs.chunks_exact(d).zip(ys.chunks_exact_mut(d)) {
                let mut sum = 0f64;
                for (y, &x) in ye.iter_mut().zip(xe) {
                    let p = a + scale * x;
                    let (log_p, log_q) = (p.ln(), (1.0 - p).ln());
                    *y = log_p - log_q;
                    sum += (log_p + log_q) as f64;
                }
                mine.push((ld_const - sum) as f32);
            }
            mine
        });
        for (ld, v) in lds.iter_mut().zip(parts.into_iter().flatten()) {
            *ld = v;
        }
        Ok((CpuStorage::F32(out), Shape::from(nd + n)))
    }

    /// `dy/dx = c (1/p + 1/q)` and `d logdet/dx = c (1/q - 1/p)`, with
    /// `c = 1 - 2 alpha`, `p = alpha + c x`, `q = 1 - p`.
    fn bwd(&self, x: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let (n, nd) = (x.dim(0)?, x.elem_count());
        let c = 1.0 - 2.0 * self.alpha;
        let p = x.affine(c, self.alpha)?;
        let (inv_p, inv_q) = (p.recip()?, p.affine(-1.0, 1.0)?.recip()?);
        let gy = grad.narrow(0, 0, nd)?.reshape(x.shape())?;
        let mut per_example = vec![1; x.rank()];
        per_example[0] = n;
        let gl = grad.narrow(0, nd, n)?.reshape(per_example)?;
        let dy = gy.mul(&(&inv_p + &inv_q)?)?;
        let dl = (&inv_q - &inv_p)?.broadcast_mul(&gl)?;
        Ok(Some((dy + dl)?.affine(c, 0.0)?))
    }
}

/// The inverse: `x = (sigmoid(y) - alpha) / (1 - 2 alpha)`.
struct LogitInv {
    alpha: f64,
}

impl CustomOp1 for LogitInv {
    fn name(&self) -> &'static str {
        "logit-inverse"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let y = cpu_slice::<f32>(s, l, self.name())?;
        let mut out = zeros::<f32>(y.len());
        let (a, c) = (self.alpha as f32, (1.0 - 2.0 * self.alpha) as f32);
        let per = y.len() / l.dims()[0];
        par(l.dims()[0], &mut out, per, |r, xs| {
            let ys = &y[r.start * per..r.end * per];
            for (x, &y) in xs.iter_mut().zip(ys) {
                *x = (1.0 / (1.0 + (-y).exp()) - a) / c;
            }
        });
        Ok((CpuStorage::F32(out), l.shape().clone()))
    }

    /// `dx/dy = s (1 - s) / (1 - 2 alpha)`, `s = sigmoid(y)`.
    fn bwd(&self, y: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let s = y.neg()?.exp()?.affine(1.0, 1.0)?.recip()?;
        let ds = s.mul(&s.affine(-1.0, 1.0)?)?;
        Ok(Some(
            grad.mul(&ds)?.affine(1.0 / (1.0 - 2.0 * self.alpha), 0.0)?,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exec::test_util::*;
    use candle_core::{Device, Var};

    #[test]
    fn logit_roundtrip_and_logdet() -> Result<()> {
        let layer = Logit::new(0.05)?;
        for shape in [&[3, 2, 4, 4][..], &[4, 5]] {
            let x = Tensor::rand(0f32, 1., shape, &Device::Cpu)?;
            check_roundtrip(&layer, &x, 1e-4)?;
            let x = Tensor::rand(0f64, 1., shape, &Device::Cpu)?;
            check_logdet(&layer, &x, false)?;
        }
        assert!(Logit::new(0.5).is_err());
        Ok(())
    }

    /// Uniform values in (0, 1) from the seeded test stream.
    fn unit(shape: &[usize]) -> Result<Tensor> {
        let z = randn(shape, DType::F64)?;
        candle_nn::ops::sigmoid(&z)?.to_dtype(DType::F32)
    }

    /// `d/dx [sum(y * wy) + sum(ld * wl)]`, the weights cast to `x`'s type.
    fn loss_grad(y: &Tensor, ld: &Tensor, w: &(Tensor, Tensor), x: &Var) -> Result<Tensor> {
        let (wy, wl) = (w.0.to_dtype(y.dtype())?, w.1.to_dtype(y.dtype())?);
        let loss = ((y * &wy)?.sum_all()? + (ld * &wl)?.sum_all()?)?;
        Ok(loss.backward()?.get(x).expect("a gradient").clone())
    }

    #[test]
    fn fused_ops_match_the_candle_ops_in_values_and_gradients() -> Result<()> {
        let layer = Logit::new(0.05)?;
        // Odd sizes, one example, one value, and enough to split over threads.
        for shape in [&[3, 2, 5, 7][..], &[1, 1, 1, 1], &[4, 1], &[5, 3, 40, 40]] {
            let x = unit(shape)?;
            let (x32, x64) = (
                Var::from_tensor(&x)?,
                Var::from_tensor(&x.to_dtype(DType::F64)?)?,
            );
            assert!(fused(&x32) && !fused(&x64));
            let (y, ld) = layer.forward(&x32, None, true)?;
            let (y_ref, ld_ref) = layer.forward(&x64, None, true)?;
            assert!(max_abs_diff(&y, &y_ref)? < 1e-5, "{shape:?}");
            // The log-det is summed in f64: within f32 rounding of its size.
            let size = max_abs(&ld_ref)?.max(1.0);
            assert!(max_abs_diff(&ld, &ld_ref)? < 1e-6 * size, "{shape:?}");
            let w = (randn(y.dims(), DType::F64)?, randn(ld.dims(), DType::F64)?);
            let (g, g_ref) = (
                loss_grad(&y, &ld, &w, &x32)?,
                loss_grad(&y_ref, &ld_ref, &w, &x64)?,
            );
            let size = max_abs(&g_ref)?.max(1.0);
            assert!(max_abs_diff(&g, &g_ref)? < 1e-5 * size, "{shape:?}");

            // The inverse, and its gradient, at the forward's outputs.
            let (y32, y64) = (
                Var::from_tensor(&y)?,
                Var::from_tensor(&y.to_dtype(DType::F64)?)?,
            );
            let (back, back_ref) = (layer.inverse(&y32, None)?, layer.inverse(&y64, None)?);
            assert!(max_abs_diff(&back, &back_ref)? < 1e-6, "{shape:?}");
            assert!(max_abs_diff(&back, &x)? < 1e-5, "{shape:?}");
            let zero = (w.0.clone(), Tensor::zeros(1, DType::F64, &Device::Cpu)?);
            let gl = Tensor::zeros(1, DType::F32, &Device::Cpu)?;
            let g = loss_grad(&back, &gl, &zero, &y32)?;
            let g_ref = loss_grad(&back_ref, &gl.to_dtype(DType::F64)?, &zero, &y64)?;
            assert!(max_abs_diff(&g, &g_ref)? < 1e-6, "{shape:?}");
        }
        Ok(())
    }
}
