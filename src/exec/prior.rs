//! `prior normal(learned)`: a latent `z ~ N(m, exp(s)^2)` with a learned
//! mean `m` and log standard deviation `s` per channel (feature), both
//! starting at 0 (the standard normal). Run as the bijection that
//! standardizes the latent,
//!
//! ```text
//! e = (z - m) * exp(-s)      logdet = -sum(s) over the latent's values
//! z = m + exp(s) * e
//! ```
//!
//! so that `log N(z; m, exp(s)^2) = log N(e; 0, 1) - sum(s)`: the flow
//! scores `e` with the standard normal and adds the log-det, and sampling
//! draws `e` (at temperature `T`, `e ~ N(0, T^2)`: the standard deviation
//! scaled around the mean, as Glow). Parameters `mean` and `log_std` are
//! `[1, C]`: one row per class (a condition would pick the row), one row
//! without.

use candle_core::{Result, Tensor};
use candle_nn::{Init, VarBuilder};

use super::{channel_shape, positions, zero_logdet, FlowLayer};

pub struct LearnedPrior {
    mean: Tensor,
    log_std: Tensor,
}

impl LearnedPrior {
    /// The prior of a latent of `c` channels (features).
    pub fn new(c: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            mean: vb.get_with_hints((1, c), "mean", Init::Const(0.0))?,
            log_std: vb.get_with_hints((1, c), "log_std", Init::Const(0.0))?,
        })
    }

    /// `(m, s)` shaped to broadcast over `x` (`[1, C, 1, 1]` or `[1, C]`).
    pub fn mean_log_std(&self, x: &Tensor) -> Result<(Tensor, Tensor)> {
        let shape = channel_shape(x.rank(), self.mean.dim(1)?);
        Ok((
            self.mean.reshape(shape.clone())?,
            self.log_std.reshape(shape)?,
        ))
    }
}

impl FlowLayer for LearnedPrior {
    fn forward(&self, z: &Tensor, _train: bool) -> Result<(Tensor, Tensor)> {
        let (m, s) = self.mean_log_std(z)?;
        let e = z.broadcast_sub(&m)?.broadcast_mul(&s.neg()?.exp()?)?;
        let per_example = (self.log_std.sum_all()? * -(positions(z) as f64))?;
        let logdet = zero_logdet(z)?.broadcast_add(&per_example)?;
        Ok((e, logdet))
    }

    fn inverse(&self, e: &Tensor) -> Result<Tensor> {
        let (m, s) = self.mean_log_std(e)?;
        e.broadcast_mul(&s.exp()?)?.broadcast_add(&m)
    }
}
