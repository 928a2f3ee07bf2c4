//! `coupling affine(mask = M, net = N)`, `coupling additive(...)` and
//! `coupling spline(..., bins = n, bound = B)`: the values a mask keeps pass
//! unchanged and condition, through a fresh instance of net template `N`,
//! the transformation of the others.

use super::{param, LatentModel, LayerDef, Lowered, Lowering, Shapes, Values};
use crate::graph::ShapeError;
use crate::ir::{params, CouplingKind, Mask, NetKind, Parity};
use crate::plan::{self, Init, Param};
use crate::resolve::{NetId, NetTemplate};
use crate::shape::Shape;
use crate::span::Span;
use crate::verify::flags::FlagOp;
use crate::verify::VerifyError;

#[derive(Clone, Debug, PartialEq)]
pub struct Coupling {
    pub kind: CouplingKind,
    /// `None` where the argument was bad (already reported).
    pub mask: Option<Mask>,
    pub mask_span: Span,
    /// `None` where the argument was bad (already reported).
    pub net: Option<NetUse>,
    pub net_span: Span,
}

/// The net template a coupling names: which one, and what it is.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct NetUse {
    pub id: NetId,
    pub kind: NetKind,
    /// One-hot label channels (features) the net receives besides the
    /// masked input: K under `given class(K)`, else 0.
    pub labels: u64,
}

impl Coupling {
    /// The mask and net of a verified coupling.
    fn verified(&self) -> (Mask, NetUse) {
        let missing = "a verified coupling has its mask and net";
        (self.mask.expect(missing), self.net.expect(missing))
    }
}

impl LayerDef for Coupling {
    fn keyword(&self) -> &'static str {
        "coupling"
    }

    fn describe(&self, nets: &[NetTemplate]) -> String {
        let kind = self.kind;
        let mask = self.mask.map_or("?".into(), |m| m.to_string());
        let net = self.net.map_or("?".into(), |n| nets[n.id].name.clone());
        format!("coupling {kind} {mask} {net}")
    }

    fn resolved(&self) -> bool {
        self.mask.is_some() && self.net.is_some()
    }

    fn net(&self) -> Option<NetId> {
        self.net.map(|n| n.id)
    }

    fn shape(&self, input: Shape) -> Result<Shapes, ShapeError> {
        Ok((input, None))
    }

    fn emits_latent(&self) -> Option<LatentModel> {
        None
    }

    fn parameters(&self, input: Shape) -> Option<u128> {
        let net = self.net?;
        Some(params::coupling(
            net.kind,
            input.channels(),
            net.labels,
            self.kind,
        ))
    }

    fn param_tensors(&self) -> u128 {
        params::coupling_tensors(self.verified().1.kind, self.kind)
    }

    /// The net's hidden features or its output (`k` values per input value).
    fn largest_tensor(&self, input: Shape) -> u128 {
        let out = input
            .size()
            .saturating_mul(self.kind.outputs_per_channel() as u128);
        net_hidden(self.verified().1.kind, input).max(out)
    }

    /// The flags of the values the mask transforms become true; a mask
    /// that does not fit the input is reported at the mask.
    fn flag_effect(&self, input: Shape) -> Result<Option<FlagOp>, (VerifyError, Span)> {
        match self.mask {
            Some(mask) => match check_mask(mask, input) {
                Ok(op) => Ok(Some(op)),
                Err(e) => Err((e, self.mask_span)),
            },
            None => Ok(None),
        }
    }

    fn values(&self) -> Values {
        Values::Learned
    }

    /// Unfused at first; the `fuse` pass fuses the kinds that have a fused kernel.
    fn lower(&self, at: Lowering, params: &mut Vec<Param>) -> Lowered {
        let (mask, net) = self.verified();
        coupling_params(at.layer, self.kind, net, at.input, params);
        Lowered {
            op: plan::Op::Coupling {
                layer: at.layer,
                kind: self.kind,
                mask,
                net: net.kind,
                fused: false,
            },
            logdet: true,
        }
    }
}

/// Whether a mask fits a coupling's input; the flag update it implies if so.
pub fn check_mask(mask: Mask, input: Shape) -> Result<FlagOp, VerifyError> {
    // How many values the mask keeps, of how many.
    let (kept, total, op) = match (mask, input) {
        (Mask::Checkerboard(p), Shape::Image { c, h, w }) => {
            let n = h as u128 * w as u128;
            let even = n.div_ceil(2); // positions with h + w even: (0,0) is one
            let kept = if p == Parity::Even { even } else { n - even };
            (kept * c as u128, n * c as u128, FlagOp::Checkerboard(p))
        }
        (Mask::Channel(p), Shape::Image { c, .. }) => {
            if c % 2 == 1 {
                return Err(VerifyError::OddChannels { mask, input });
            }
            (c as u128 / 2, c as u128, FlagOp::Channel(p))
        }
        (Mask::Alternate(p), Shape::Vector { d }) => {
            let even = (d as u128).div_ceil(2);
            let kept = if p == Parity::Even {
                even
            } else {
                d as u128 - even
            };
            (kept, d as u128, FlagOp::Alternate(p))
        }
        (Mask::Half(p), Shape::Vector { d }) => {
            let first = d as u128 / 2;
            let kept = if p == Parity::Even {
                first
            } else {
                d as u128 - first
            };
            (kept, d as u128, FlagOp::Half(p))
        }
        (Mask::Checkerboard(_) | Mask::Channel(_), Shape::Vector { .. }) => {
            return Err(VerifyError::ImageMaskOnVector { mask, input })
        }
        (Mask::Alternate(_) | Mask::Half(_), Shape::Image { .. }) => {
            return Err(VerifyError::VectorMaskOnImage { mask, input })
        }
    };
    if kept == 0 {
        Err(VerifyError::KeepsNothing { mask, input })
    } else if kept == total {
        Err(VerifyError::TransformsNothing { mask, input })
    } else {
        Ok(op)
    }
}

/// A weight-normalized 3x3 conv: direction, gain, bias.
fn wn_conv(i: usize, name: &str, cin: u64, cout: u64, zero: bool) -> [Param; 3] {
    let g = if zero { Init::Zeros } else { Init::Ones };
    [
        param(i, &format!("{name}.v"), vec![cout, cin, 3, 3], Init::Normal),
        param(i, &format!("{name}.g"), vec![cout], g),
        param(i, &format!("{name}.bias"), vec![cout], Init::Zeros),
    ]
}

/// Batch normalization's affine parameters (running statistics are not parameters).
fn bn(i: usize, name: &str, f: u64) -> [Param; 2] {
    [
        param(i, &format!("{name}.gamma"), vec![f], Init::Ones),
        param(i, &format!("{name}.beta"), vec![f], Init::Zeros),
    ]
}

/// The parameters of a coupling, named as `exec::coupling` creates them.
fn coupling_params(i: usize, kind: CouplingKind, net: NetUse, input: Shape, out: &mut Vec<Param>) {
    let c = input.channels();
    net_params(
        i,
        net.kind,
        c + net.labels,
        kind.outputs_per_channel() * c,
        out,
    );
    if kind.has_scale() {
        out.push(param(i, "scale", vec![c], Init::Ones));
    }
}

/// The parameters of layer `i`'s net of `c` inputs (the label's channels
/// included) and `co` outputs per
/// position, under `layer{i}.net.`, as `exec::resnet` and `exec::mlp`
/// create them; the output layer starts at zero.
pub(super) fn net_params(i: usize, net: NetKind, c: u64, co: u64, out: &mut Vec<Param>) {
    match net {
        NetKind::Resnet {
            blocks,
            features: f,
        } => {
            out.extend(wn_conv(i, "net.in_conv", c, f, false));
            for b in 0..blocks {
                out.extend(bn(i, &format!("net.blocks.{b}.bn1"), f));
                out.extend(wn_conv(i, &format!("net.blocks.{b}.conv1"), f, f, false));
                out.extend(bn(i, &format!("net.blocks.{b}.bn2"), f));
                out.extend(wn_conv(i, &format!("net.blocks.{b}.conv2"), f, f, false));
            }
            out.extend(bn(i, "net.out_bn", f));
            out.extend(wn_conv(i, "net.out_conv", f, co, true));
        }
        NetKind::Mlp { hidden: h, layers } => {
            for l in 0..layers {
                let din = if l == 0 { c } else { h };
                out.push(param(
                    i,
                    &format!("net.fc{l}.weight"),
                    vec![h, din],
                    Init::Uniform,
                ));
                out.push(param(i, &format!("net.fc{l}.bias"), vec![h], Init::Uniform));
            }
            out.push(param(i, "net.out.weight", vec![co, h], Init::Zeros));
            out.push(param(i, "net.out.bias", vec![co], Init::Zeros));
        }
    }
}

/// Values of a net's hidden features for one example on `input`.
pub(super) fn net_hidden(net: NetKind, input: Shape) -> u128 {
    match net {
        NetKind::Resnet { features, .. } => (features as u128).saturating_mul(input.positions()),
        NetKind::Mlp { hidden, .. } => hidden as u128,
    }
}
