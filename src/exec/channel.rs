//! Per-channel operations as custom ops: `y = x * a[c] + b[c]` and the batch
//! mean and variance of each channel, with their backward passes.
//!
//! candle reduces a `[N, C, H, W]` tensor over dims (0, 2, 3) along a generic
//! strided path, some 100 times slower than a contiguous loop; every
//! broadcast of a `[1, C, 1, 1]` parameter pays that in its backward pass.
//! Batch normalization, conv biases and actnorm are all such broadcasts, so
//! they go through these kernels instead. Other devices use candle's ops.
//!
//! ```
//! use candle_core::{Device, Tensor};
//! let x = Tensor::randn(0f32, 1., (4, 3, 2, 2), &Device::Cpu)?;
//! let (mean, var) = flowc::exec::channel::moments(&x)?;
//! let a = (var + 1e-5)?.sqrt()?.recip()?;
//! let b = (mean.neg()? * &a)?;
//! let normalized = flowc::exec::channel::affine(&x, &a, &b)?;
//! # Ok::<(), candle_core::Error>(())
//! ```

// The kernels are written once for f32 and f64; the f64 instance casts to itself.
#![allow(clippy::unnecessary_cast)]

use candle_core::{
    bail, CpuStorage, CustomOp1, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor,
};

/// (N, C, S): batch, channels, values per channel per example.
fn ncs(shape: &Shape) -> Result<(usize, usize, usize)> {
    let d = shape.dims();
    if d.len() < 2 {
        bail!("per-channel ops need rank >= 2, got {d:?}")
    }
    Ok((d[0], d[1], d[2..].iter().product()))
}

/// `y[n, c, s] = x[n, c, s] * a[c] + b[c]`.
struct Affine;

macro_rules! per_type {
    ($s:expr, $name:expr, |$t:ident| $body:expr) => {
        match $s {
            CpuStorage::F32(_) => {
                type $t = f32;
                $body
            }
            CpuStorage::F64(_) => {
                type $t = f64;
                $body
            }
            _ => bail!("{}: only f32 and f64", $name),
        }
    };
}

impl CustomOp3 for Affine {
    fn name(&self) -> &'static str {
        "channel-affine"
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
        let (n, c, s) = ncs(l1.shape())?;
        per_type!(s1, self.name(), |T| {
            let (x, a, b) = (
                super::cpu_slice::<T>(s1, l1, "per-channel op")?,
                super::cpu_slice::<T>(s2, l2, "per-channel op")?,
                super::cpu_slice::<T>(s3, l3, "per-channel op")?,
            );
            if a.len() != c || b.len() != c {
                bail!("channel-affine: a and b need {c} elements")
            }
            let mut y = Vec::with_capacity(x.len());
            for i in 0..n {
                for ch in 0..c {
                    let (ai, bi) = (a[ch], b[ch]);
                    let row = &x[(i * c + ch) * s..(i * c + ch + 1) * s];
                    y.extend(row.iter().map(|&v| v * ai + bi));
                }
            }
            Ok((
                <T as candle_core::WithDType>::to_cpu_storage_owned(y),
                l1.shape().clone(),
            ))
        })
    }
    fn bwd(
        &self,
        x: &Tensor,
        a: &Tensor,
        _b: &Tensor,
        _y: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let dx = affine(grad, a, &a.zeros_like()?)?;
        let sums = grad
            .contiguous()?
            .apply_op2_no_bwd(&x.contiguous()?, &Sums)?;
        Ok((Some(dx), Some(sums.get(0)?), Some(sums.get(1)?)))
    }
}

/// `[sum(g * x), sum(g)]` per channel, shape (2, C): the gradients of `a` and `b`.
struct Sums;

impl CustomOp2 for Sums {
    fn name(&self) -> &'static str {
        "channel-sums"
    }
    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (n, c, s) = ncs(l1.shape())?;
        per_type!(s1, self.name(), |T| {
            let (g, x) = (
                super::cpu_slice::<T>(s1, l1, "per-channel op")?,
                super::cpu_slice::<T>(s2, l2, "per-channel op")?,
            );
            let mut gx = vec![0f64; c];
            let mut gs = vec![0f64; c];
            for i in 0..n {
                for ch in 0..c {
                    let r = (i * c + ch) * s..(i * c + ch + 1) * s;
                    let (mut p, mut q) = (0f64, 0f64);
                    for (&gv, &xv) in g[r.clone()].iter().zip(&x[r]) {
                        p += (gv * xv) as f64;
                        q += gv as f64;
                    }
                    gx[ch] += p;
                    gs[ch] += q;
                }
            }
            let out: Vec<T> = gx.into_iter().chain(gs).map(|v| v as T).collect();
            Ok((
                <T as candle_core::WithDType>::to_cpu_storage_owned(out),
                Shape::from((2, c)),
            ))
        })
    }
}

/// Batch mean and biased variance per channel, shape (2, C), accumulated in f64.
struct Moments;

impl CustomOp1 for Moments {
    fn name(&self) -> &'static str {
        "channel-moments"
    }
    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout) -> Result<(CpuStorage, Shape)> {
        let (n, c, s) = ncs(l1.shape())?;
        let m = (n * s) as f64;
        per_type!(s1, self.name(), |T| {
            let x = super::cpu_slice::<T>(s1, l1, "per-channel op")?;
            let mut sum = vec![0f64; c];
            for i in 0..n {
                for ch in 0..c {
                    sum[ch] += x[(i * c + ch) * s..(i * c + ch + 1) * s]
                        .iter()
                        .map(|&v| v as f64)
                        .sum::<f64>();
                }
            }
            let mean: Vec<f64> = sum.iter().map(|v| v / m).collect();
            let mut sq = vec![0f64; c];
            for i in 0..n {
                for ch in 0..c {
                    let mu = mean[ch];
                    sq[ch] += x[(i * c + ch) * s..(i * c + ch + 1) * s]
                        .iter()
                        .map(|&v| (v as f64 - mu).powi(2))
                        .sum::<f64>();
                }
            }
            let out: Vec<T> = mean
                .iter()
                .copied()
                .chain(sq.iter().map(|v| v / m))
                .map(|v| v as T)
                .collect();
            Ok((
                <T as candle_core::WithDType>::to_cpu_storage_owned(out),
                Shape::from((2, c)),
            ))
        })
    }
    fn bwd(&self, x: &Tensor, res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        // d mean / dx = 1/M; d var / dx = 2 (x - mean) / M.
        let (n, _, s) = ncs(x.shape())?;
        let m = (n * s) as f64;
        let (gm, gv, mean) = (grad.get(0)?, grad.get(1)?, res.get(0)?);
        let a = (&gv * (2.0 / m))?;
        let b = ((&gm / m)? - (&a * &mean)?)?;
        Ok(Some(affine(x, &a, &b)?))
    }
}

/// `x * a[c] + b[c]` for `x` of shape `[N, C, ...]` and `a`, `b` of `C` elements.
pub fn affine(x: &Tensor, a: &Tensor, b: &Tensor) -> Result<Tensor> {
    let c = x.dim(1)?;
    let (a, b) = (a.flatten_all()?, b.flatten_all()?);
    if x.device().is_cpu() {
        x.contiguous()?
            .apply_op3(&a.contiguous()?, &b.contiguous()?, Affine)
    } else {
        let s = super::channel_shape(x.rank(), c);
        x.broadcast_mul(&a.reshape(s.clone())?)?
            .broadcast_add(&b.reshape(s)?)
    }
}

/// Batch mean and biased variance of each channel of `[N, C, ...]`, each of `C` elements.
pub fn moments(x: &Tensor) -> Result<(Tensor, Tensor)> {
    if x.device().is_cpu() {
        let mv = x.contiguous()?.apply_op1(Moments)?;
        Ok((mv.get(0)?, mv.get(1)?))
    } else {
        let dims = super::non_channel_dims(x.rank());
        let mean = x.mean_keepdim(dims.clone())?;
        let var = x.broadcast_sub(&mean)?.sqr()?.mean_keepdim(dims)?;
        Ok((mean.flatten_all()?, var.flatten_all()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exec::test_util::{max_abs, randn};
    use candle_core::{DType, Var};

    /// Values and gradients against the same expressions in plain candle ops.
    #[test]
    fn affine_and_moments_match_candle_ops() -> Result<()> {
        for shape in [vec![3usize, 4, 5, 2], vec![5, 3], vec![2, 1, 3, 3]] {
            let c = shape[1];
            let x = Var::from_tensor(&randn(&shape, DType::F64)?)?;
            let a = Var::from_tensor(&randn(&[c], DType::F64)?)?;
            let b = Var::from_tensor(&randn(&[c], DType::F64)?)?;
            let s = crate::exec::channel_shape(shape.len(), c);
            let dims = crate::exec::non_channel_dims(shape.len());
            let probe = randn(&shape, DType::F64)?;
            let probe_c = randn(&[c], DType::F64)?;
            // f = sum(affine(x) * probe) + sum(var * probe_c) + sum(mean)
            let ours = {
                let (mean, var) = moments(x.as_tensor())?;
                let y = affine(x.as_tensor(), a.as_tensor(), b.as_tensor())?;
                ((y * &probe)?.sum_all()? + (var * &probe_c)?.sum_all()? + mean.sum_all()?)?
            };
            let reference = {
                let mean = x.as_tensor().mean_keepdim(dims.clone())?;
                let var = x
                    .as_tensor()
                    .broadcast_sub(&mean)?
                    .sqr()?
                    .mean_keepdim(dims)?;
                let y = x
                    .as_tensor()
                    .broadcast_mul(&a.as_tensor().reshape(s.clone())?)?
                    .broadcast_add(&b.as_tensor().reshape(s)?)?;
                ((y * &probe)?.sum_all()?
                    + (var.flatten_all()? * &probe_c)?.sum_all()?
                    + mean.sum_all()?)?
            };
            assert!(max_abs(&(&ours - &reference)?)? < 1e-10);
            let (g1, g2) = (ours.backward()?, reference.backward()?);
            for v in [&x, &a, &b] {
                let d = (g1.get(v.as_tensor()).unwrap() - g2.get(v.as_tensor()).unwrap())?;
                assert!(max_abs(&d)? < 1e-9, "{shape:?}");
            }
        }
        Ok(())
    }
}
