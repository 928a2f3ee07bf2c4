//! `batchnorm`: per-channel normalization by batch statistics (running
//! averages at evaluation), as a bijection with a learned affine map.

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
pub struct BatchNorm;

impl LayerDef for BatchNorm {
    fn keyword(&self) -> &'static str {
        "batchnorm"
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

    fn parameters(&self, input: Shape) -> Option<u128> {
        Some(params::batchnorm(input.channels() as u128))
    }

    /// `log_gamma` and `beta`.
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
        params.push(param(i, "log_gamma", vec![c], Init::Zeros));
        params.push(param(i, "beta", vec![c], Init::Zeros));
        Lowered {
            op: plan::Op::BatchNorm { layer: i },
            logdet: true,
        }
    }
}
