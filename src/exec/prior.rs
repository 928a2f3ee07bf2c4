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
//! `[K, C]` under `given class(K)` (the example's label picks the row), `[1, C]`
//! without.

use candle_core::{Result, Tensor};
use candle_nn::{Init, VarBuilder};

use super::{channel_shape, positions, FlowLayer, Given};

pub struct LearnedPrior {
    mean: Tensor,
    log_std: Tensor,
}

impl LearnedPrior {
    /// The prior of a latent of `c` channels (features), with a row of
    /// parameters for each of `rows` classes (1 without a condition).
    pub fn new(c: usize, rows: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            mean: vb.get_with_hints((rows, c), "mean", Init::Const(0.0))?,
            log_std: vb.get_with_hints((rows, c), "log_std", Init::Const(0.0))?,
        })
    }

    /// `(m, s)` shaped to broadcast over `x`: `[1, C, 1, 1]` or `[1, C]`, or
    /// with `given`, each example's row (`[N, C, 1, 1]` or `[N, C]`).
    pub fn mean_log_std(&self, x: &Tensor, given: Given) -> Result<(Tensor, Tensor)> {
        let c = self.mean.dim(1)?;
        let mut shape = channel_shape(x.rank(), c);
        let rows = |p: &Tensor| match given {
            Some(y) => y.to_dtype(p.dtype())?.matmul(p),
            None => Ok(p.clone()),
        };
        let (m, s) = (rows(&self.mean)?, rows(&self.log_std)?);
        shape[0] = m.dim(0)?;
        Ok((m.reshape(shape.clone())?, s.reshape(shape)?))
    }
}

impl FlowLayer for LearnedPrior {
    fn forward(&self, z: &Tensor, given: Given, _train: bool) -> Result<(Tensor, Tensor)> {
        let (m, s) = self.mean_log_std(z, given)?;
        let e = z.broadcast_sub(&m)?.broadcast_mul(&s.neg()?.exp()?)?;
        // -sum(s) over the latent's values: per row, times the positions.
        let per_row = (s.flatten_from(1)?.sum(1)? * -(positions(z) as f64))?;
        let logdet = per_row.broadcast_as(z.dim(0)?)?.contiguous()?;
        Ok((e, logdet))
    }

    fn inverse(&self, e: &Tensor, given: Given) -> Result<Tensor> {
        let (m, s) = self.mean_log_std(e, given)?;
        e.broadcast_mul(&s.exp()?)?.broadcast_add(&m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exec::test_util::{check_logdet, check_roundtrip, max_abs_diff, randn};
    use candle_core::{DType, Device};
    use candle_nn::VarMap;

    /// A prior on `c` channels with mean `0.3 c - 0.5` and log-std `0.2 - 0.15 c`.
    fn set_prior(c: usize, dtype: DType) -> Result<(VarMap, LearnedPrior)> {
        let vm = VarMap::new();
        let prior = LearnedPrior::new(c, 1, VarBuilder::from_varmap(&vm, dtype, &Device::Cpu))?;
        let m: Vec<f64> = (0..c).map(|i| 0.3 * i as f64 - 0.5).collect();
        let s: Vec<f64> = (0..c).map(|i| 0.2 - 0.15 * i as f64).collect();
        let data = vm.data().lock().unwrap();
        data["mean"].set(&Tensor::from_vec(m, (1, c), &Device::Cpu)?.to_dtype(dtype)?)?;
        data["log_std"].set(&Tensor::from_vec(s, (1, c), &Device::Cpu)?.to_dtype(dtype)?)?;
        drop(data);
        Ok((vm, prior))
    }

    /// `log N(e; 0, 1) + logdet` is `log N(z; m, exp(s)^2)`, summed per
    /// example, computed value by value in f64.
    #[test]
    fn learned_prior_density_is_the_normal_with_its_mean_and_std() -> Result<()> {
        for shape in [&[2, 3, 4, 5][..], &[4, 6]] {
            let c = shape[1];
            let (_vm, prior) = set_prior(c, DType::F64)?;
            let z = randn(shape, DType::F64)?.affine(1.5, 0.2)?;
            let (e, logdet) = prior.forward(&z, None, true)?;
            let base = crate::exec::flow::base_log_density(crate::ir::Base::Normal, &e)?;
            let got: Vec<f64> = (base.flatten_from(1)?.sum(1)? + logdet)?.to_vec1()?;
            let per = z.elem_count() / shape[0] / c;
            let zs: Vec<f64> = z.flatten_all()?.to_vec1()?;
            for (n, got) in got.iter().enumerate() {
                let mut want = 0.0;
                for ch in 0..c {
                    let (m, s) = (0.3 * ch as f64 - 0.5, 0.2 - 0.15 * ch as f64);
                    for p in 0..per {
                        let v = zs[(n * c + ch) * per + p];
                        let u = (v - m) / s.exp();
                        want += -0.5 * u * u - s - 0.5 * (2.0 * std::f64::consts::PI).ln();
                    }
                }
                assert!((got - want).abs() < 1e-10, "{shape:?}: {got} vs {want}");
            }
        }
        Ok(())
    }

    #[test]
    fn learned_prior_roundtrip_and_logdet() -> Result<()> {
        for shape in [&[2, 3, 4, 4][..], &[3, 5]] {
            let (_vm, prior) = set_prior(shape[1], DType::F32)?;
            check_roundtrip(&prior, &randn(shape, DType::F32)?, 1e-5)?;
            let (_vm, prior) = set_prior(shape[1], DType::F64)?;
            check_logdet(&prior, &randn(shape, DType::F64)?, false)?;
        }
        Ok(())
    }

    #[test]
    fn fresh_learned_prior_is_the_standard_normal() -> Result<()> {
        let vm = VarMap::new();
        let vb = VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
        let prior = LearnedPrior::new(3, 1, vb)?;
        let z = randn(&[4, 3, 2, 2], DType::F32)?;
        let (e, logdet) = prior.forward(&z, None, false)?;
        assert_eq!(max_abs_diff(&e, &z)?, 0.0);
        assert_eq!(logdet.to_vec1::<f32>()?, vec![0.0; 4]);
        Ok(())
    }
}
