//! `invconv`: an invertible 1x1 convolution over the channels of an image
//! (Glow), in LU form.

use super::{param, LatentModel, LayerDef, Lowered, Lowering, Shapes, Values};
use crate::graph::ShapeError;
use crate::ir::params;
use crate::plan::{self, Init, Param};
use crate::resolve::{NetId, NetTemplate};
use crate::shape::Shape;
use crate::span::Span;
use crate::verify::flags::FlagOp;
use crate::verify::VerifyError;

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct InvConv;

impl LayerDef for InvConv {
    fn keyword(&self) -> &'static str {
        "invconv"
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
        if input.is_image() {
            Ok((input, None))
        } else {
            Err(ShapeError::InvConvVector { input })
        }
    }

    fn emits_latent(&self) -> Option<LatentModel> {
        None
    }

    fn parameters(&self, input: Shape) -> Option<u128> {
        Some(params::invconv(input.channels()))
    }

    /// `lower`, `upper` and `log_s`.
    fn param_tensors(&self) -> u128 {
        3
    }

    fn largest_tensor(&self, input: Shape) -> u128 {
        input.size()
    }

    fn flag_effect(&self, _: Shape) -> Result<Option<FlagOp>, (VerifyError, Span)> {
        Ok(Some(FlagOp::InvConv))
    }

    fn values(&self) -> Values {
        Values::Learned
    }

    /// Full `C x C` matrices for L and U, of which only the strict triangles
    /// are parameters, so the table holds more values than `parameters`.
    fn lower(&self, at: Lowering, params: &mut Vec<Param>) -> Lowered {
        let (i, c) = (at.layer, at.input.channels());
        params.push(param(i, "lower", vec![c, c], Init::Zeros));
        params.push(param(i, "upper", vec![c, c], Init::Zeros));
        params.push(param(i, "log_s", vec![c], Init::Zeros));
        Lowered {
            op: plan::Op::InvConv { layer: i },
            logdet: true,
        }
    }
}
