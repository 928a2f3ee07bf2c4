//! ActNorm (Glow): per-channel `y = x * exp(logs) + bias`, log-det `positions * sum(logs)`
//! (positions = H*W, or 1 for vectors). Parameters `logs` and `bias` (init 0).
//!
//! Data-dependent init: the first forward with `train = true` on a layer that is not yet
//! initialized sets `logs = -log(std + 1e-6)` and `bias = -mean * exp(logs)` from that batch's
//! per-channel mean and (biased) std, so that the batch comes out with zero mean and unit
//! variance per channel; later batches do not re-initialize. An evaluation forward does not
//! initialize. A layer whose parameters already existed in the `VarBuilder` (e.g. loaded from a
//! checkpoint) counts as initialized; [`ActNorm::set_initialized`] overrides this.
//!
//! ```
//! use candle_core::{DType, Device, Tensor};
//! use candle_nn::{VarBuilder, VarMap};
//! use flowc::exec::{actnorm::ActNorm, FlowLayer};
//! let vm = VarMap::new();
//! let vb = VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
//! let an = ActNorm::new(3, vb.pp("an"))?;
//! let x = Tensor::randn(2f32, 3., (8, 3, 4, 4), &Device::Cpu)?;
//! let (y, logdet) = an.forward(&x, None, true)?; // data init on this batch
//! assert!(an.is_initialized());
//! # Ok::<(), candle_core::Error>(())
//! ```

use super::batchnorm::batch_stats;
use super::{positions, FlowLayer, Given};
use candle_core::{Result, Tensor, Var};
use candle_nn::{Init, VarBuilder};
use std::sync::atomic::{AtomicBool, Ordering};

pub const INIT_EPS: f64 = 1e-6;

#[derive(Debug)]
pub struct ActNorm {
    logs: Var,
    bias: Var,
    initialized: AtomicBool,
}

impl ActNorm {
    pub fn new(channels: usize, vb: VarBuilder) -> Result<Self> {
        let existed = vb.contains_tensor("logs") && vb.contains_tensor("bias");
        let logs = vb.get_with_hints(channels, "logs", Init::Const(0.0))?;
        let bias = vb.get_with_hints(channels, "bias", Init::Const(0.0))?;
        Ok(Self {
            // Shares storage with the VarMap's variable when the VarBuilder is VarMap-backed.
            logs: Var::from_tensor(&logs)?,
            bias: Var::from_tensor(&bias)?,
            initialized: AtomicBool::new(existed),
        })
    }
    pub fn is_initialized(&self) -> bool {
        self.initialized.load(Ordering::SeqCst)
    }
    pub fn set_initialized(&self, v: bool) {
        self.initialized.store(v, Ordering::SeqCst)
    }
    pub fn logs(&self) -> &Tensor {
        self.logs.as_tensor()
    }
    pub fn bias(&self) -> &Tensor {
        self.bias.as_tensor()
    }

    fn data_init(&self, x: &Tensor) -> Result<()> {
        let c = self.logs.dim(0)?;
        let (mean, var, _) = batch_stats(&x.detach())?;
        let (mean, var) = (mean.reshape(c)?, var.reshape(c)?);
        let logs = (var.sqrt()? + INIT_EPS)?.log()?.neg()?;
        let bias = (mean * logs.exp()?)?.neg()?;
        self.logs.set(&logs.to_dtype(self.logs.dtype())?)?;
        self.bias.set(&bias.to_dtype(self.bias.dtype())?)?;
        self.set_initialized(true);
        Ok(())
    }
}

impl FlowLayer for ActNorm {
    fn mark_initialized(&self) {
        self.set_initialized(true);
    }
    fn forward(&self, x: &Tensor, _given: Given, train: bool) -> Result<(Tensor, Tensor)> {
        if train && !self.is_initialized() {
            self.data_init(x)?;
        }
        let y = super::channel::affine(x, &self.logs.exp()?, &self.bias)?;
        let logdet = (self.logs.as_tensor().sum_all()? * positions(x) as f64)?;
        Ok((y, logdet.broadcast_as(x.dim(0)?)?))
    }

    fn inverse(&self, y: &Tensor, _given: Given) -> Result<Tensor> {
        let inv = self.logs.neg()?.exp()?;
        super::channel::affine(y, &inv, &(self.bias.neg()? * &inv)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exec::test_util::*;
    use candle_core::{DType, Device};
    use candle_nn::VarMap;

    #[test]
    fn actnorm_data_init_on_first_training_batch_only() -> Result<()> {
        let vm = VarMap::new();
        let vb = VarBuilder::from_varmap(&vm, DType::F64, &Device::Cpu);
        let an = ActNorm::new(3, vb.pp("an"))?;
        let x = randn(&[6, 3, 4, 4], DType::F64)?.affine(3.0, 2.0)?;
        // evaluation does not initialize: identity
        let (y, ld) = an.forward(&x, None, false)?;
        assert!(!an.is_initialized());
        assert_eq!(max_abs_diff(&y, &x)?, 0.0);
        assert_eq!(max_abs(&ld)?, 0.0);
        // first training batch: zero mean, unit variance per channel
        let (y, ld) = an.forward(&x, None, true)?;
        assert!(an.is_initialized());
        let (m, v, _) = crate::exec::batchnorm::batch_stats(&y)?;
        assert!(max_abs(&m)? < 1e-10);
        assert!(max_abs(&(v - 1.0)?)? < 1e-5);
        // the VarMap sees the initialized values
        let logs_vm = vm.data().lock().unwrap()["an.logs"].as_tensor().clone();
        assert_eq!(max_abs_diff(&logs_vm, an.logs())?, 0.0);
        assert!(max_abs(&logs_vm)? > 0.1);
        let expect = an.logs().sum_all()?.to_scalar::<f64>()? * 16.0;
        for l in ld.to_vec1::<f64>()? {
            assert!((l - expect).abs() < 1e-10);
        }
        // a second batch does not re-initialize
        let before = an.logs().to_vec1::<f64>()?;
        an.forward(&(randn(&[6, 3, 4, 4], DType::F64)? * 0.1)?, None, true)?;
        assert_eq!(an.logs().to_vec1::<f64>()?, before);
        // building again on the same VarMap finds existing parameters: initialized
        assert!(ActNorm::new(3, vb.pp("an"))?.is_initialized());
        Ok(())
    }

    #[test]
    fn actnorm_roundtrip_and_logdet() -> Result<()> {
        for shape in [&[2, 3, 4, 4][..], &[3, 5]] {
            let vm = VarMap::new();
            let an = ActNorm::new(
                shape[1],
                VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu),
            )?;
            an.forward(&randn(shape, DType::F32)?, None, true)?;
            randomize(&vm, 0.5)?;
            check_roundtrip(&an, &randn(shape, DType::F32)?, 1e-4)?;

            let vm = VarMap::new();
            let an = ActNorm::new(
                shape[1],
                VarBuilder::from_varmap(&vm, DType::F64, &Device::Cpu),
            )?;
            an.set_initialized(true);
            randomize(&vm, 0.5)?;
            check_logdet(&an, &randn(shape, DType::F64)?, false)?;
        }
        Ok(())
    }
}
