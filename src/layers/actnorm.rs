//! `actnorm`: a per-channel affine map, initialized from the first batch (Glow).

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
pub struct ActNorm;

impl LayerDef for ActNorm {
    fn keyword(&self) -> &'static str {
        "actnorm"
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

    /// A scale and a bias per channel, counted like batch norm's.
    fn parameters(&self, input: Shape) -> Option<u128> {
        Some(params::batchnorm(input.channels() as u128))
    }

    /// `logs` and `bias`.
    fn param_tensors(&self) -> u128 {
        2
    }

    fn largest_tensor(&self, input: Shape) -> u128 {
        input.size()
    }

    fn flag_effect(&self, _: Shape) -> Result<Option<FlagOp>, (VerifyError, Span)> {
        Ok(None)
    }

    fn values(&self) -> Values {
        Values::Learned
    }

    fn lower(&self, at: Lowering, params: &mut Vec<Param>) -> Lowered {
        let (i, c) = (at.layer, at.input.channels());
        params.push(param(i, "logs", vec![c], Init::Data));
        params.push(param(i, "bias", vec![c], Init::Data));
        Lowered {
            op: plan::Op::ActNorm { layer: i },
            logdet: true,
        }
    }
}
