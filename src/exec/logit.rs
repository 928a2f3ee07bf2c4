//! Logit preprocessing (Real NVP): `p = alpha + (1 - 2 alpha) x`, `y = logit(p) = log p - log(1-p)`.
//! Log-det per example: `sum(log(1 - 2 alpha) - log p - log(1 - p))`.
//! Inverse: `x = (sigmoid(y) - alpha) / (1 - 2 alpha)`. No parameters; `train` has no effect.
//! `x` is expected in `[0, 1]` (dequantized data); `alpha` in `[0, 0.5)` (Real NVP: 0.05).
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

use super::{FlowLayer, Given};
use candle_core::{bail, Result, Tensor};

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
        let a = self.alpha;
        let p = x.affine(1.0 - 2.0 * a, a)?;
        let log_p = p.log()?;
        let log_q = p.affine(-1.0, 1.0)?.log()?;
        let y = (&log_p - &log_q)?;
        let per_elem = (log_p + log_q)?.affine(-1.0, (1.0 - 2.0 * a).ln())?;
        let logdet = per_elem.flatten_from(1)?.sum(1)?;
        Ok((y, logdet))
    }

    fn inverse(&self, y: &Tensor, _given: Given) -> Result<Tensor> {
        let a = self.alpha;
        let sig = y.neg()?.exp()?.affine(1.0, 1.0)?.recip()?;
        sig.affine(1.0 / (1.0 - 2.0 * a), -a / (1.0 - 2.0 * a))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exec::test_util::*;
    use candle_core::Device;

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
}
