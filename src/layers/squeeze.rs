//! `squeeze`: each 2x2 patch of an image into channels, `C x H x W -> 4C x H/2 x W/2`.

use super::{LatentModel, LayerDef, Lowered, Lowering, Shapes, Values};
use crate::graph::ShapeError;
use crate::plan::{self, Param};
use crate::resolve::{NetId, NetTemplate};
use crate::shape::Shape;
use crate::span::Span;
use crate::verify::flags::FlagOp;
use crate::verify::VerifyError;

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Squeeze;

impl LayerDef for Squeeze {
    fn keyword(&self) -> &'static str {
        "squeeze"
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
        match input {
            Shape::Image { c, h, w } if h % 2 == 0 && w % 2 == 0 => Ok((
                Shape::Image {
                    c: 4 * c,
                    h: h / 2,
                    w: w / 2,
                },
                None,
            )),
            Shape::Image { .. } => Err(ShapeError::SqueezeOdd { input }),
            Shape::Vector { .. } => Err(ShapeError::SqueezeVector { input }),
        }
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
        Ok(Some(FlagOp::Squeeze))
    }

    fn values(&self) -> Values {
        Values::Rearranged
    }

    fn lower(&self, _: Lowering, _: &mut Vec<Param>) -> Lowered {
        Lowered {
            op: plan::Op::Squeeze,
            logdet: false,
        }
    }
}
