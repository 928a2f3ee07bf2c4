//! `reverse`: the channels (features) in reverse order.

use super::{LatentModel, LayerDef, Lowered, Lowering, Shapes, Values};
use crate::graph::ShapeError;
use crate::plan::{self, Param, Perm};
use crate::resolve::{NetId, NetTemplate};
use crate::shape::Shape;
use crate::span::Span;
use crate::verify::flags::FlagOp;
use crate::verify::VerifyError;

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Reverse;

impl LayerDef for Reverse {
    fn keyword(&self) -> &'static str {
        "reverse"
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
        Ok((input, None))
    }

    fn emits_latent(&self) -> Option<LatentModel> {
        None
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
        Ok(Some(FlagOp::Reverse))
    }

    fn values(&self) -> Values {
        Values::Rearranged
    }

    fn lower(&self, at: Lowering, _: &mut Vec<Param>) -> Lowered {
        Lowered {
            op: plan::Op::Permute {
                perm: Perm::Reverse(at.input.channels() as usize),
            },
            logdet: false,
        }
    }
}
