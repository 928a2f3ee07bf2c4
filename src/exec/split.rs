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

use candle_core::{bail, Result, Tensor};
use candle_nn::VarBuilder;

use super::mlp::Mlp;
use super::resnet::ResNet;
use super::squeeze::{factor_in, factor_out};
use super::Conditioner;
use crate::ir::NetKind;

pub struct SplitPrior {
    net: Box<dyn Conditioner + Send + Sync>,
    /// Channels (features) that leave: `floor(C/2)`.
    leave: usize,
}

impl SplitPrior {
    /// The split prior of a `factor_out` whose input has shape `shape`
    /// (`[C, H, W]` or `[D]`, no batch dim).
    pub fn new(shape: &[usize], net: NetKind, vb: VarBuilder) -> Result<Self> {
        let c = shape[0];
        let (leave, stay) = (c / 2, c - c / 2);
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
    pub fn mean_log_std(&self, r: &Tensor, train: bool) -> Result<(Tensor, Tensor)> {
        let h = self.net.forward(&r.contiguous()?, train)?;
        Ok((
            h.narrow(1, 0, self.leave)?,
            h.narrow(1, self.leave, self.leave)?,
        ))
    }

    /// `x -> (e, r, logdet)`.
    pub fn forward(&self, x: &Tensor, train: bool) -> Result<(Tensor, Tensor, Tensor)> {
        let (z, r) = factor_out(x)?;
        let (m, s) = self.mean_log_std(&r, train)?;
        let e = ((z - m)? * s.neg()?.exp()?)?;
        let logdet = s.flatten_from(1)?.sum(1)?.neg()?;
        Ok((e, r, logdet))
    }

    /// `(e, r) -> x`.
    pub fn inverse(&self, e: &Tensor, r: &Tensor) -> Result<Tensor> {
        let (m, s) = self.mean_log_std(r, false)?;
        let z = ((e * s.exp()?)? + m)?;
        factor_in(&z, r)
    }

    /// Running statistics of the net's batch normalizations.
    pub fn buffers(&self, prefix: &str, out: &mut Vec<(String, candle_core::Var)>) {
        self.net.buffers(&format!("{prefix}net."), out);
    }
}
