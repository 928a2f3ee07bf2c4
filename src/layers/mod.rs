//! One definition per layer kind: everything the stages between resolve and
//! the plan know about a kind, in one file per kind, behind one trait.
//!
//! | stage | asks the definition for |
//! | --- | --- |
//! | resolve | nothing: it builds an [`Op`] from the syntax (arguments checked) |
//! | graph | [`LayerDef::shape`] (the shape rule), [`LayerDef::emits_latent`], [`LayerDef::describe`] |
//! | verify | the shape rule again for its typed error, [`LayerDef::resolved`], [`LayerDef::flag_effect`] (and a mask that does not fit), [`LayerDef::values`] (`logit`'s domain, the `unbounded` warning), [`LayerDef::parameters`] |
//! | limits | [`LayerDef::param_tensors`], [`LayerDef::largest_tensor`], [`LayerDef::net`] (where a net too large is reported) |
//! | report, lsp | [`LayerDef::keyword`], [`LayerDef::describe`], [`LayerDef::parameters`], [`LayerDef::net`] |
//! | lower | [`LayerDef::lower`]: the forward plan step and its parameter table (the inverse step is the plan op's [`crate::plan::Op::inverse`]) |
//!
//! [`Op`] is the one enum over kinds: [`Op::def`] is the only `match` that
//! lists them, and it has no wildcard arm, so a kind added to [`Op`] without
//! a definition is a compile error; the trait has no default methods, so a
//! definition that forgets a question is one too. The executor does not come
//! here: it builds its layers from the plan's ops (`exec/flow.rs`), so that
//! `exec/` never depends on the front end.
//!
//! A resolved layer may have holes where an argument was bad (already
//! reported): such a layer still has a shape, but is not [`LayerDef::resolved`]
//! and never reaches a `VerifiedFlow`. The methods that only verified layers
//! are asked (tensors, lowering) say so.

mod actnorm;
mod batchnorm;
mod coupling;
mod factor_out;
mod invconv;
mod logit;
mod reverse;
mod squeeze;

pub use actnorm::ActNorm;
pub use batchnorm::BatchNorm;
pub use coupling::{check_mask, Coupling, NetUse};
pub use factor_out::{FactorOut, SplitNet};
pub use invconv::InvConv;
pub use logit::Logit;
pub use reverse::Reverse;
pub use squeeze::Squeeze;

use crate::graph::ShapeError;
use crate::plan::{self, Init, Param};
use crate::resolve::{NetId, NetTemplate};
use crate::shape::Shape;
use crate::span::Span;
use crate::verify::flags::FlagOp;
use crate::verify::VerifyError;

/// One layer of the expanded flow: a kind and its arguments.
#[derive(Clone, Debug, PartialEq)]
pub enum Op {
    Coupling(Coupling),
    Squeeze(Squeeze),
    FactorOut(FactorOut),
    Logit(Logit),
    BatchNorm(BatchNorm),
    ActNorm(ActNorm),
    InvConv(InvConv),
    Reverse(Reverse),
}

impl Op {
    /// The definition of this layer's kind.
    pub fn def(&self) -> &dyn LayerDef {
        match self {
            Op::Coupling(l) => l,
            Op::Squeeze(l) => l,
            Op::FactorOut(l) => l,
            Op::Logit(l) => l,
            Op::BatchNorm(l) => l,
            Op::ActNorm(l) => l,
            Op::InvConv(l) => l,
            Op::Reverse(l) => l,
        }
    }

    /// The layer's keyword, as LANGUAGE.md and the JSON output name it.
    pub fn keyword(&self) -> &'static str {
        self.def().keyword()
    }
}

/// What a layer makes of its input: the shape that goes on and, for
/// `factor_out`, the latent that leaves.
pub type Shapes = (Shape, Option<Shape>);

/// What models a latent a layer sends out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LatentModel {
    /// The flow's `prior` (learned or not).
    Prior,
    /// The layer's own net, given the values that stay (`factor_out(net = N)`):
    /// no learned prior parameters.
    Own,
}

/// What a layer does to the values it is given, as the verifier's range
/// checks see it (image values start in [0,1)).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Values {
    /// Moves values without changing them (`squeeze`, `reverse`,
    /// `factor_out`): values in [0,1) stay there.
    Rearranged,
    /// Needs values in [0,1) and maps them to the real line (`logit`): a
    /// `domain` error on vectors or after a layer that changed the values.
    FromUnitInterval,
    /// A learned map (couplings, normalizations, `invconv`): its output
    /// leaves [0,1), and image values reaching it before any `logit` are
    /// warned about (`unbounded`).
    Learned,
    /// Moves values like [`Values::Rearranged`] (a `logit` may follow), but
    /// models them with a learned net (`factor_out(net = N)`): image values
    /// reaching it before any `logit` are warned about, as for
    /// [`Values::Learned`].
    Split,
}

/// Where a layer is lowered: its index (its parameters are `layer{i}.*`),
/// its input, and the latent it emits, if any.
#[derive(Clone, Copy, Debug)]
pub struct Lowering {
    pub layer: usize,
    pub input: Shape,
    pub latent: Option<usize>,
}

/// A layer's forward plan step. A layer that emits a latent writes two
/// slots (the latent, then the rest); any other, one.
#[derive(Clone, Debug, PartialEq)]
pub struct Lowered {
    pub op: plan::Op,
    /// Whether the step adds to the log-determinant.
    pub logdet: bool,
}

/// Everything the stages ask of one layer kind. No method has a default:
/// a new kind answers every question.
pub trait LayerDef {
    /// The keyword, as written in a `.flow` file and as `check` names the layer.
    fn keyword(&self) -> &'static str;

    /// The layer in words for the table, JSON and graph
    /// (`coupling affine checkerboard(even) res64`); `nets` are the flow's
    /// net templates.
    fn describe(&self, nets: &[NetTemplate]) -> String;

    /// Every argument resolved. A layer with a bad argument (already
    /// reported by resolve) still has a shape but is never verified.
    fn resolved(&self) -> bool;

    /// The net template this layer instantiates, if any: the editor counts
    /// its uses, and a layer too large because of its net is reported at
    /// the net's declaration.
    fn net(&self) -> Option<NetId>;

    /// The shape rule: what the layer makes of an input shape, or why it
    /// does not fit (a typed error, reported by verify at the layer).
    fn shape(&self, input: Shape) -> Result<Shapes, ShapeError>;

    /// Whether the layer sends part of its input to a latent (the graph's
    /// branch, also where the shape is unknown), and what models it.
    fn emits_latent(&self) -> Option<LatentModel>;

    /// Parameters on an input of shape `input`, through `crate::ir::params`;
    /// `None` where an argument they depend on did not resolve.
    fn parameters(&self, input: Shape) -> Option<u128>;

    /// Parameter tensors, as [`LayerDef::lower`] lays out the table (a
    /// verified layer).
    fn param_tensors(&self) -> u128;

    /// Values of the largest tensor the layer makes for one example on
    /// `input` (a verified layer).
    fn largest_tensor(&self, input: Shape) -> u128;

    /// The layer's effect on the `untransformed` flags (`None`: flags stay
    /// where they are), or an argument that does not fit the input (the
    /// error and where to report it). Asked only where the shape rule
    /// accepted `input`.
    fn flag_effect(&self, input: Shape) -> Result<Option<FlagOp>, (VerifyError, Span)>;

    /// What the layer does to the range of the values.
    fn values(&self) -> Values;

    /// The forward plan step, adding the layer's parameters to the table
    /// (a verified layer).
    fn lower(&self, at: Lowering, params: &mut Vec<Param>) -> Lowered;
}

/// One entry of the parameter table, named `layer{i}.{name}` as the
/// executor creates it.
pub fn param(layer: usize, name: &str, shape: Vec<u64>, init: Init) -> Param {
    Param {
        name: format!("layer{layer}.{name}"),
        shape,
        init,
    }
}
