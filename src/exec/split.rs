//! `factor_out(net = N)`, Glow's split prior: the latent `z` (the first
//! `floor(C/2)` channels) is modelled given the rest `r`,
//! `(m, s) = N(r)`, `z ~ N(m, exp(s)^2)` per value. Run as a split that
//! standardizes the latent,
//!
//! ```text
//! (z, r) = split(x)   (m, s) = N(r)   e = (z - m) * exp(-s)   logdet = -sum(s)
//! x = cat(m + exp(s) * e, r)          with (m, s) from N(r): r is known first
//! ```
//!
//! so that `log N(z; m, exp(s)^2) = log N(e; 0, 1) - sum(s)`. The net's
//! output has `2 floor(C/2)` channels (features): `m` first, then `s`; its
//! output layer starts at zero, so a fresh split prior is the standard
//! normal. Parameters under `net`; `inverse` runs the net in evaluation mode.
//! Under `given class(K)` the net also takes the one-hot label (`K` more
//! input channels, see [`super::with_labels`]).

use candle_core::{bail, Result, Tensor};
use candle_nn::VarBuilder;

use super::mlp::Mlp;
use super::resnet::ResNet;
use super::squeeze::{factor_in, factor_out};
use super::{with_labels, Conditioner, Given};
use crate::ir::NetKind;

pub struct SplitPrior {
    net: Box<dyn Conditioner + Send + Sync>,
    /// Channels (features) that leave: `floor(C/2)`.
    leave: usize,
}

impl SplitPrior {
    /// The split prior of a `factor_out` whose input has shape `shape`
    /// (`[C, H, W]` or `[D]`, no batch dim), its net also taking `labels`
    /// one-hot label channels (0 without a condition).
    pub fn new(shape: &[usize], net: NetKind, labels: usize, vb: VarBuilder) -> Result<Self> {
        let c = shape[0];
        let (leave, stay) = (c / 2, c - c / 2 + labels);
        let net: Box<dyn Conditioner + Send + Sync> = match (net, shape.len()) {
            (NetKind::Resnet { blocks, features }, 3) => Box::new(ResNet::new(
                stay,
                2 * leave,
                blocks as usize,
                features as usize,
                vb.pp("net"),
            )?),
            (NetKind::Mlp { hidden, layers }, 1) => Box::new(Mlp::new(
                stay,
                2 * leave,
                hidden as usize,
                layers as usize,
                vb.pp("net"),
            )?),
            (net, _) => bail!("net {net:?} does not fit examples of shape {shape:?}"),
        };
        Ok(Self { net, leave })
    }

    /// `(m, s) = N(r)`, each shaped as the latent.
    pub fn mean_log_std(&self, r: &Tensor, given: Given, train: bool) -> Result<(Tensor, Tensor)> {
        let h = self
            .net
            .forward(&with_labels(&r.contiguous()?, given)?, train)?;
        Ok((
            h.narrow(1, 0, self.leave)?,
            h.narrow(1, self.leave, self.leave)?,
        ))
    }

    /// `x -> (e, r, logdet)`.
    pub fn forward(
        &self,
        x: &Tensor,
        given: Given,
        train: bool,
    ) -> Result<(Tensor, Tensor, Tensor)> {
        let (z, r) = factor_out(x)?;
        let (m, s) = self.mean_log_std(&r, given, train)?;
        let e = ((z - m)? * s.neg()?.exp()?)?;
        let logdet = s.flatten_from(1)?.sum(1)?.neg()?;
        Ok((e, r, logdet))
    }

    /// `(e, r) -> x`.
    pub fn inverse(&self, e: &Tensor, r: &Tensor, given: Given) -> Result<Tensor> {
        let (m, s) = self.mean_log_std(r, given, false)?;
        let z = ((e * s.exp()?)? + m)?;
        factor_in(&z, r)
    }

    /// Running statistics of the net's batch normalizations.
    pub fn buffers(&self, prefix: &str, out: &mut Vec<(String, candle_core::Var)>) {
        self.net.buffers(&format!("{prefix}net."), out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exec::test_util::{jacobian_fd, log_abs_det, max_abs_diff, randn, randomize};
    use candle_core::{DType, Device};
    use candle_nn::VarMap;

    fn nets() -> [(Vec<usize>, NetKind); 2] {
        [
            (
                vec![5, 4, 4],
                NetKind::Resnet {
                    blocks: 1,
                    features: 6,
                },
            ),
            (
                vec![7],
                NetKind::Mlp {
                    hidden: 10,
                    layers: 2,
                },
            ),
        ]
    }

    /// A split prior with every parameter drawn from N(0, std^2); fresh for `std = 0`.
    fn build(shape: &[usize], net: NetKind, dtype: DType, std: f64) -> Result<SplitPrior> {
        let vm = VarMap::new();
        let vb = VarBuilder::from_varmap(&vm, dtype, &Device::Cpu);
        let prior = SplitPrior::new(shape, net, 0, vb)?;
        if std > 0.0 {
            randomize(&vm, std)?;
        }
        Ok(prior)
    }

    /// `log N(e; 0, 1) + logdet` is `log N(z; m(r), exp(s(r))^2)` with the
    /// net's own output, value by value in f64.
    #[test]
    fn split_prior_density_is_the_normal_the_net_gives() -> Result<()> {
        for (shape, net) in nets() {
            let prior = build(&shape, net, DType::F64, 0.3)?;
            let mut dims = vec![3];
            dims.extend(&shape);
            let x = randn(&dims, DType::F64)?;
            let (e, r, logdet) = prior.forward(&x, None, false)?;
            let base = crate::exec::flow::base_log_density(crate::ir::Base::Normal, &e)?;
            let got: Vec<f64> = (base.flatten_from(1)?.sum(1)? + logdet)?.to_vec1()?;
            let (m, s) = prior.mean_log_std(&r, None, false)?;
            let z = x.narrow(1, 0, shape[0] / 2)?;
            let flat = |t: &Tensor| -> Result<Vec<Vec<f64>>> { t.flatten_from(1)?.to_vec2() };
            let (z, m, s) = (flat(&z)?, flat(&m)?, flat(&s)?);
            assert!(s[0].iter().any(|v| v.abs() > 1e-3), "s is not trivial");
            for n in 0..3 {
                let want: f64 = (0..z[n].len())
                    .map(|i| {
                        let u = (z[n][i] - m[n][i]) * (-s[n][i]).exp();
                        -0.5 * u * u - s[n][i] - 0.5 * (2.0 * std::f64::consts::PI).ln()
                    })
                    .sum();
                assert!(
                    (got[n] - want).abs() < 1e-10,
                    "{shape:?}: {} vs {want}",
                    got[n]
                );
            }
        }
        Ok(())
    }

    #[test]
    fn split_prior_roundtrip_and_logdet() -> Result<()> {
        for (shape, net) in nets() {
            let mut dims = vec![2];
            dims.extend(&shape);
            let prior = build(&shape, net, DType::F32, 0.3)?;
            let x = randn(&dims, DType::F32)?;
            let (e, r, _) = prior.forward(&x, None, false)?;
            let back = prior.inverse(&e, &r, None)?;
            assert!(max_abs_diff(&back, &x)? < 1e-5, "{shape:?}");
            // The log-det of x -> (e, r) against a finite-difference Jacobian.
            let prior = build(&shape, net, DType::F64, 0.3)?;
            let mut one = vec![1];
            one.extend(&shape);
            let map = |v: &[f64]| -> Result<Vec<f64>> {
                let x = Tensor::from_slice(v, one.as_slice(), &Device::Cpu)?;
                let (e, r, _) = prior.forward(&x, None, false)?;
                Tensor::cat(&[e.flatten_all()?, r.flatten_all()?], 0)?.to_vec1()
            };
            for _ in 0..2 {
                let x = randn(&one, DType::F64)?;
                let (_, _, logdet) = prior.forward(&x, None, false)?;
                let ld = logdet.to_vec1::<f64>()?[0];
                let j = jacobian_fd(&map, &x.flatten_all()?.to_vec1()?, 1e-5)?;
                let want = log_abs_det(&j, x.elem_count());
                assert!(
                    (ld - want).abs() < 1e-6 * want.abs().max(1.0),
                    "{ld} vs {want}"
                );
            }
        }
        Ok(())
    }

    #[test]
    fn fresh_split_prior_is_the_standard_normal() -> Result<()> {
        for (shape, net) in nets() {
            let prior = build(&shape, net, DType::F32, 0.0)?;
            let mut dims = vec![4];
            dims.extend(&shape);
            let x = randn(&dims, DType::F32)?;
            let (e, _, logdet) = prior.forward(&x, None, true)?;
            assert_eq!(max_abs_diff(&e, &x.narrow(1, 0, shape[0] / 2)?)?, 0.0);
            assert_eq!(logdet.to_vec1::<f32>()?, vec![0.0; 4]);
        }
        Ok(())
    }
}
