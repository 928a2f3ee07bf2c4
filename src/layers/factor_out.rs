//! `factor_out`: the first `floor(C/2)` channels (features) leave as a
//! latent; the rest go on. `factor_out(net = N)` (Glow's split prior): the
//! latent `z` is modelled given the rest `r`, `(m, s) = N(r)`,
//! `z ~ N(m, exp(s)^2)`, instead of by the flow's prior.

use super::coupling::{net_hidden, net_params};
use super::{LatentModel, LayerDef, Lowered, Lowering, NetUse, Shapes, Values};
use crate::graph::ShapeError;
use crate::ir::params;
use crate::plan::{self, Param};
use crate::resolve::{NetId, NetTemplate};
use crate::shape::Shape;
use crate::span::Span;
use crate::verify::flags::FlagOp;
use crate::verify::VerifyError;

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FactorOut {
    /// `factor_out(net = N)`: the net that models the latent; `None` for
    /// a plain `factor_out`.
    pub split: Option<SplitNet>,
}

/// The net of `factor_out(net = N)`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SplitNet {
    /// `None` where the argument was bad (already reported).
    pub net: Option<NetUse>,
    pub span: Span,
}

impl FactorOut {
    /// The net of a verified `factor_out(net = N)`; `None` for a plain one.
    fn verified_net(&self) -> Option<NetUse> {
        self.split
            .map(|s| s.net.expect("a verified factor_out has its net"))
    }
}

impl LayerDef for FactorOut {
    fn keyword(&self) -> &'static str {
        "factor_out"
    }

    fn describe(&self, nets: &[NetTemplate]) -> String {
        match self.split {
            None => self.keyword().into(),
            Some(s) => {
                let net = s.net.map_or("?".into(), |n| nets[n.id].name.clone());
                format!("factor_out {net}")
            }
        }
    }

    fn resolved(&self) -> bool {
        self.split.is_none_or(|s| s.net.is_some())
    }

    fn net(&self) -> Option<NetId> {
        self.split.and_then(|s| s.net).map(|n| n.id)
    }

    fn shape(&self, input: Shape) -> Result<Shapes, ShapeError> {
        let c = input.channels();
        if c < 2 {
            let unit = if input.is_image() {
                "channels"
            } else {
                "features"
            };
            return Err(ShapeError::FactorOutSingle { input, unit });
        }
        Ok((
            input.with_channels(c - c / 2),
            Some(input.with_channels(c / 2)),
        ))
    }

    fn emits_latent(&self) -> Option<LatentModel> {
        Some(match self.split {
            None => LatentModel::Prior,
            Some(_) => LatentModel::Own,
        })
    }

    fn parameters(&self, input: Shape) -> Option<u128> {
        match self.split {
            None => Some(0),
            Some(s) => {
                let net = s.net?;
                Some(params::split_prior(net.kind, input.channels(), net.labels))
            }
        }
    }

    fn param_tensors(&self) -> u128 {
        self.verified_net()
            .map_or(0, |n| params::net_tensors(n.kind))
    }

    /// The input; with a net, also its hidden features (its output, `m`
    /// and `s`, is as large as the input at most).
    fn largest_tensor(&self, input: Shape) -> u128 {
        let hidden = self.verified_net().map_or(0, |n| net_hidden(n.kind, input));
        input.size().max(hidden)
    }

    fn flag_effect(&self, _: Shape) -> Result<Option<FlagOp>, (VerifyError, Span)> {
        Ok(Some(FlagOp::FactorOut))
    }

    fn values(&self) -> Values {
        match self.split {
            None => Values::Rearranged,
            Some(_) => Values::Split,
        }
    }

    /// A copy at first; the `fuse` pass makes it a view. With a net, the
    /// step also standardizes the latent, `(z - m) exp(-s)`, and adds `-s`
    /// to the log-determinant (the split prior's density is the standard
    /// normal's of that, plus the log-det).
    fn lower(&self, at: Lowering, params: &mut Vec<Param>) -> Lowered {
        let latent = at.latent.expect("factor_out has a latent");
        match self.verified_net() {
            None => Lowered {
                op: plan::Op::FactorOut {
                    latent,
                    view: false,
                },
                logdet: false,
            },
            Some(n) => {
                let c = at.input.channels();
                net_params(at.layer, n.kind, c - c / 2 + n.labels, 2 * (c / 2), params);
                Lowered {
                    op: plan::Op::SplitOut {
                        layer: at.layer,
                        latent,
                        net: n.kind,
                        view: false,
                    },
                    logdet: true,
                }
            }
        }
    }
}
