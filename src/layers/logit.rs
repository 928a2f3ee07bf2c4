//! `logit(alpha = A)`: values in [0,1) to the real line,
//! `y = logit(alpha + (1 - 2 alpha) x)`.

use super::{LatentModel, LayerDef, Lowered, Lowering, Shapes, Values};
use crate::graph::ShapeError;
use crate::plan::{self, Param};
use crate::resolve::{NetId, NetTemplate};
use crate::shape::Shape;
use crate::span::Span;
use crate::verify::flags::FlagOp;
use crate::verify::VerifyError;

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Logit {
    /// `None` where the argument was bad (already reported).
    pub alpha: Option<f64>,
}

impl LayerDef for Logit {
    fn keyword(&self) -> &'static str {
        "logit"
    }

    fn describe(&self, _: &[NetTemplate]) -> String {
        match self.alpha {
            Some(a) => format!("logit({a})"),
            None => self.keyword().into(),
        }
    }

    fn resolved(&self) -> bool {
        self.alpha.is_some()
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
        Ok(None)
    }

    fn values(&self) -> Values {
        Values::FromUnitInterval
    }

    fn lower(&self, _: Lowering, _: &mut Vec<Param>) -> Lowered {
        Lowered {
            op: plan::Op::Logit {
                alpha: self.alpha.expect("a verified logit has its alpha"),
            },
            logdet: true,
        }
    }
}
