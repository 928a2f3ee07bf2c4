//! `factor_out`: the first `floor(C/2)` channels (features) leave as a
//! latent; the rest go on.

use super::{LayerDef, Lowered, Lowering, Shapes, Values};
use crate::graph::ShapeError;
use crate::plan::{self, Param};
use crate::resolve::{NetId, NetTemplate};
use crate::shape::Shape;
use crate::span::Span;
use crate::verify::flags::FlagOp;
use crate::verify::VerifyError;

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FactorOut;

impl LayerDef for FactorOut {
    fn keyword(&self) -> &'static str {
        "factor_out"
    }

    fn describe(&self, _: &[NetTemplate]) -> String {
        self.keyword().into()
    }

    fn resolved(&self) -> bool {
        true
    }

    fn net(&self) -> Option<NetId> {
        None
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

    fn emits_latent(&self) -> bool {
        true
    }

    fn parameters(&self, _: Shape) -> Option<u128> {
        Some(0)
    }

    fn param_tensors(&self) -> u128 {
        0
    }

    fn largest_tensor(&self, input: Shape) -> u128 {
        input.size()
    }

    fn flag_effect(&self, _: Shape) -> Result<Option<FlagOp>, (VerifyError, Span)> {
        Ok(Some(FlagOp::FactorOut))
    }

    fn values(&self) -> Values {
        Values::Rearranged
    }

    /// A copy at first; the `fuse` pass makes it a view.
    fn lower(&self, at: Lowering, _: &mut Vec<Param>) -> Lowered {
        Lowered {
            op: plan::Op::FactorOut {
                latent: at.latent.expect("factor_out has a latent"),
                view: false,
            },
            logdet: false,
        }
    }
}
