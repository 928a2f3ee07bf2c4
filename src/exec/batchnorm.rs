//! Batch normalization: the plain network layer used inside conditioners ([`BatchNorm`]) and
//! the flow bijection ([`BatchNormFlow`], Real NVP).
//!
//! Both normalize per channel (dim 1) over all other dims, use batch statistics in training and
//! running averages otherwise, and update the running averages only in a training forward:
//! `running = (1 - momentum) * running + momentum * batch` with momentum 0.1, the running
//! variance fed with the unbiased batch variance (as PyTorch); eps defaults to 1e-5.
//! Running statistics are not parameters: they live in [`RunningStats`] (`Var`s owned by the
//! layer, not registered in the `VarMap`), readable and settable for checkpoints.
//!
//! [`BatchNormFlow`]: `y = (x - mean) / sqrt(var + eps) * exp(log_gamma) + beta`, i.e. gamma is
//! parametrized as `log_gamma` (init 0) so it stays positive; `beta` init 0. Log-det per
//! example: `positions * sum_c(log_gamma_c - 0.5 * log(var_c + eps))` (positions = H*W, or 1
//! for vectors). In training the statistics are those of the batch and gradients flow through
//! them; the log-det treats them as constants (as Real NVP does). The inverse uses the running
//! averages.
//!
//! ```
//! use candle_core::{DType, Device, Tensor};
//! use candle_nn::{VarBuilder, VarMap};
//! use flowc::exec::{batchnorm::BatchNormFlow, FlowLayer};
//! let vm = VarMap::new();
//! let vb = VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
//! let bn = BatchNormFlow::new(3, vb.pp("bn"))?;
//! let x = Tensor::randn(0f32, 1., (4, 3, 2, 2), &Device::Cpu)?;
//! let (y, logdet) = bn.forward(&x, None, true)?; // batch statistics, running stats updated
//! let (y_eval, _) = bn.forward(&x, None, false)?; // running statistics
//! let x2 = bn.inverse(&y_eval, None)?;
//! # Ok::<(), candle_core::Error>(())
//! ```

use super::{channel_shape, positions, FlowLayer, Given};
use candle_core::{bail, DType, Device, Result, Tensor, Var};
use candle_nn::{Init, VarBuilder};

pub const DEFAULT_EPS: f64 = 1e-5;
pub const DEFAULT_MOMENTUM: f64 = 0.1;

/// Per-channel batch mean and biased variance, both of shape `[1, C, 1, ..]`, and the number
/// of values per channel.
pub(crate) fn batch_stats(x: &Tensor) -> Result<(Tensor, Tensor, usize)> {
    if x.rank() < 2 {
        bail!("batch statistics need rank >= 2, got {:?}", x.dims())
    }
    let count = x.elem_count() / x.dim(1)?;
    let s = channel_shape(x.rank(), x.dim(1)?);
    let (mean, var) = super::channel::moments(x)?;
    Ok((mean.reshape(s.clone())?, var.reshape(s)?, count))
}

/// Running mean (init 0) and variance (init 1) per channel.
#[derive(Debug, Clone)]
pub struct RunningStats {
    mean: Var,
    var: Var,
    momentum: f64,
}

impl RunningStats {
    pub fn new(channels: usize, dtype: DType, device: &Device) -> Result<Self> {
        Ok(Self {
            mean: Var::zeros(channels, dtype, device)?,
            var: Var::ones(channels, dtype, device)?,
            momentum: DEFAULT_MOMENTUM,
        })
    }
    pub fn mean(&self) -> &Tensor {
        self.mean.as_tensor()
    }
    pub fn var(&self) -> &Tensor {
        self.var.as_tensor()
    }
    pub fn momentum(&self) -> f64 {
        self.momentum
    }
    /// The running mean and variance as checkpoint buffers under `prefix`.
    pub fn buffers(&self, prefix: &str, out: &mut Vec<(String, Var)>) {
        out.push((format!("{prefix}running_mean"), self.mean.clone()));
        out.push((format!("{prefix}running_var"), self.var.clone()));
    }
    /// Overwrites the running statistics (e.g. from a checkpoint).
    pub fn set(&self, mean: &Tensor, var: &Tensor) -> Result<()> {
        self.mean.set(&mean.to_dtype(self.mean.dtype())?)?;
        self.var.set(&var.to_dtype(self.var.dtype())?)
    }
    /// Folds in a batch: `mean`, biased `var` (any shape with C elements), `count` values.
    pub(crate) fn update(&self, mean: &Tensor, var: &Tensor, count: usize) -> Result<()> {
        let c = self.mean.dim(0)?;
        let unbiased = if count > 1 {
            count as f64 / (count - 1) as f64
        } else {
            1.0
        };
        let m = self.momentum;
        let mean = mean.detach().reshape(c)?.to_dtype(self.mean.dtype())?;
        let var = var.detach().reshape(c)?.to_dtype(self.var.dtype())?;
        let new_mean = ((self.mean.as_tensor() * (1.0 - m))? + (mean * m)?)?;
        let new_var = ((self.var.as_tensor() * (1.0 - m))? + (var * (m * unbiased))?)?;
        self.mean.set(&new_mean)?;
        self.var.set(&new_var)
    }
    /// Running mean and variance reshaped to broadcast against a rank-`rank` input.
    fn broadcastable(&self, rank: usize, dtype: DType) -> Result<(Tensor, Tensor)> {
        let s = channel_shape(rank, self.mean.dim(0)?);
        Ok((
            self.mean.as_tensor().reshape(s.clone())?.to_dtype(dtype)?,
            self.var.as_tensor().reshape(s)?.to_dtype(dtype)?,
        ))
    }
}

/// Plain batch normalization with affine `gamma` (init 1) / `beta` (init 0), for conditioners.
#[derive(Debug, Clone)]
pub struct BatchNorm {
    gamma: Tensor,
    beta: Tensor,
    stats: RunningStats,
    eps: f64,
}

impl BatchNorm {
    pub fn new(channels: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            gamma: vb.get_with_hints(channels, "gamma", Init::Const(1.0))?,
            beta: vb.get_with_hints(channels, "beta", Init::Const(0.0))?,
            stats: RunningStats::new(channels, vb.dtype(), vb.device())?,
            eps: DEFAULT_EPS,
        })
    }
    pub fn running_stats(&self) -> &RunningStats {
        &self.stats
    }
    pub fn gamma(&self) -> &Tensor {
        &self.gamma
    }
    pub fn beta(&self) -> &Tensor {
        &self.beta
    }
    pub fn eps(&self) -> f64 {
        self.eps
    }
    pub fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let (mean, var) = if train {
            let (mean, var, count) = batch_stats(x)?;
            self.stats.update(&mean, &var, count)?;
            (mean, var)
        } else {
            self.stats.broadcastable(x.rank(), x.dtype())?
        };
        // One per-channel affine map: a = gamma / sqrt(var + eps), b = beta - mean * a.
        let a = (self.gamma.clone() * (var.flatten_all()? + self.eps)?.sqrt()?.recip()?)?;
        let b = (&self.beta - (mean.flatten_all()? * &a)?)?;
        super::channel::affine(x, &a, &b)
    }
}

/// Batch normalization as a flow bijection (see the module doc).
#[derive(Debug, Clone)]
pub struct BatchNormFlow {
    log_gamma: Tensor,
    beta: Tensor,
    stats: RunningStats,
    eps: f64,
}

impl BatchNormFlow {
    pub fn new(channels: usize, vb: VarBuilder) -> Result<Self> {
        Self::with_eps(channels, DEFAULT_EPS, vb)
    }
    pub fn with_eps(channels: usize, eps: f64, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            log_gamma: vb.get_with_hints(channels, "log_gamma", Init::Const(0.0))?,
            beta: vb.get_with_hints(channels, "beta", Init::Const(0.0))?,
            stats: RunningStats::new(channels, vb.dtype(), vb.device())?,
            eps,
        })
    }
    pub fn running_stats(&self) -> &RunningStats {
        &self.stats
    }
    pub fn eps(&self) -> f64 {
        self.eps
    }
}

impl FlowLayer for BatchNormFlow {
    fn buffers(&self, prefix: &str, out: &mut Vec<(String, Var)>) {
        self.stats.buffers(prefix, out);
    }
    fn forward(&self, x: &Tensor, _given: Given, train: bool) -> Result<(Tensor, Tensor)> {
        let (mean, var) = if train {
            let (mean, var, count) = batch_stats(x)?;
            self.stats.update(&mean, &var, count)?;
            (mean, var)
        } else {
            self.stats.broadcastable(x.rank(), x.dtype())?
        };
        let var_eps = (var + self.eps)?;
        let a = (self.log_gamma.exp()? * var_eps.flatten_all()?.sqrt()?.recip()?)?;
        let b = (&self.beta - (mean.flatten_all()? * &a)?)?;
        let y = super::channel::affine(x, &a, &b)?;
        let per_channel = (self.log_gamma.clone() - (var_eps.flatten_all()?.log()? * 0.5)?)?;
        let logdet = (per_channel.sum_all()? * positions(x) as f64)?;
        let logdet = logdet.broadcast_as(x.dim(0)?)?;
        Ok((y, logdet))
    }

    fn inverse(&self, y: &Tensor, _given: Given) -> Result<Tensor> {
        let (mean, var) = self.stats.broadcastable(y.rank(), y.dtype())?;
        // x = (y - beta) * sqrt(var + eps) / gamma + mean, per channel.
        let a = (self.log_gamma.neg()?.exp()? * (var.flatten_all()? + self.eps)?.sqrt()?)?;
        let b = (mean.flatten_all()? - (&self.beta * &a)?)?;
        super::channel::affine(y, &a, &b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exec::test_util::*;
    use candle_nn::VarMap;

    fn vec_of(t: &Tensor) -> Vec<f64> {
        t.to_dtype(DType::F64)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap()
    }

    #[test]
    fn running_stats_updated_only_in_training() -> Result<()> {
        for flow in [false, true] {
            let vm = VarMap::new();
            let vb = VarBuilder::from_varmap(&vm, DType::F64, &Device::Cpu);
            let plain = BatchNorm::new(2, vb.pp("a"))?;
            let fl = BatchNormFlow::new(2, vb.pp("b"))?;
            let stats = if flow {
                fl.running_stats().clone()
            } else {
                plain.running_stats().clone()
            };
            let run = |x: &Tensor, train: bool| -> Result<Tensor> {
                if flow {
                    Ok(fl.forward(x, None, train)?.0)
                } else {
                    plain.forward(x, train)
                }
            };
            let x = randn(&[3, 2, 2, 2], DType::F64)?.affine(2.0, 0.5)?;
            // eval: running stats untouched, output uses them (mean 0, var 1 at start)
            let y = run(&x, false)?;
            assert_eq!(vec_of(stats.mean()), [0.0, 0.0]);
            assert_eq!(vec_of(stats.var()), [1.0, 1.0]);
            let expect = (&x / (1.0 + DEFAULT_EPS).sqrt())?;
            assert!(max_abs_diff(&y, &expect)? < 1e-12);
            // train: batch statistics used, running stats updated with momentum 0.1
            let y = run(&x, true)?;
            let (m, v, count) = batch_stats(&x)?;
            let (m, v) = (vec_of(&m), vec_of(&v));
            assert_eq!(count, 12);
            let rm = vec_of(stats.mean());
            let rv = vec_of(stats.var());
            for c in 0..2 {
                assert!((rm[c] - 0.1 * m[c]).abs() < 1e-12);
                assert!((rv[c] - (0.9 + 0.1 * v[c] * 12.0 / 11.0)).abs() < 1e-12);
            }
            let (ym, yv, _) = batch_stats(&y)?;
            assert!(max_abs(&ym)? < 1e-12);
            for v in vec_of(&yv) {
                assert!((v - 1.0).abs() < 1e-3);
            }
            // another eval pass leaves them alone
            run(&x, false)?;
            assert_eq!(vec_of(stats.mean()), rm);
            assert_eq!(vec_of(stats.var()), rv);
        }
        Ok(())
    }

    #[test]
    fn running_stats_are_not_parameters() -> Result<()> {
        let vm = VarMap::new();
        let vb = VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
        let _a = BatchNorm::new(3, vb.pp("a"))?;
        let _b = BatchNormFlow::new(3, vb.pp("b"))?;
        let mut names: Vec<String> = vm.data().lock().unwrap().keys().cloned().collect();
        names.sort();
        assert_eq!(names, ["a.beta", "a.gamma", "b.beta", "b.log_gamma"]);
        Ok(())
    }

    /// Trains the running stats on a few shifted batches, then randomizes the parameters.
    fn prepared(dtype: DType, c: usize, shape: &[usize]) -> Result<(VarMap, BatchNormFlow)> {
        let vm = VarMap::new();
        let vb = VarBuilder::from_varmap(&vm, dtype, &Device::Cpu);
        let bn = BatchNormFlow::new(c, vb)?;
        for _ in 0..3 {
            let x = randn(shape, dtype)?.affine(1.5, 0.3)?;
            bn.forward(&x, None, true)?;
        }
        randomize(&vm, 0.5)?;
        Ok((vm, bn))
    }

    #[test]
    fn batchnorm_flow_roundtrip() -> Result<()> {
        for shape in [&[4, 3, 4, 4][..], &[6, 5]] {
            let (_vm, bn) = prepared(DType::F32, shape[1], shape)?;
            let x = randn(shape, DType::F32)?;
            check_roundtrip(&bn, &x, 1e-4)?;
        }
        Ok(())
    }

    #[test]
    fn batchnorm_flow_logdet_matches_jacobian() -> Result<()> {
        for shape in [&[2, 2, 4, 4][..], &[2, 5]] {
            let (_vm, bn) = prepared(DType::F64, shape[1], shape)?;
            let x = randn(shape, DType::F64)?;
            check_logdet(&bn, &x, false)?;
        }
        Ok(())
    }

    #[test]
    fn batchnorm_flow_train_logdet_formula() -> Result<()> {
        let (_vm, bn) = prepared(DType::F64, 2, &[3, 2, 2, 2])?;
        let x = randn(&[3, 2, 2, 2], DType::F64)?;
        let (_, ld) = bn.forward(&x, None, true)?;
        let (_, v, _) = batch_stats(&x)?;
        let lg = vec_of(&bn.log_gamma);
        let v = vec_of(&v);
        let expect: f64 = 4.0
            * (0..2)
                .map(|c| lg[c] - 0.5 * (v[c] + DEFAULT_EPS).ln())
                .sum::<f64>();
        for l in vec_of(&ld) {
            assert!((l - expect).abs() < 1e-10);
        }
        Ok(())
    }
}
