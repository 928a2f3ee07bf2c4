//! Stage 4, verify: is the graph a bijection with consistent shapes?
//!
//! Checks every layer against the shape flowing into it (shapes, masks,
//! `factor_out`, `logit`'s domain), accounts for every dimension (the latents
//! add up to the input, each layer keeps what it takes in), and warns about
//! dimensions no coupling transformed and image values that reach a learned
//! layer unbounded. Only a flow with no error becomes a [`VerifiedFlow`], the
//! sole input of the later stages.

pub mod flags;
pub mod limits;

use thiserror::Error;

use crate::span::{Code, Coded, Found, Located, Span};

use crate::graph::{FlowGraph, ShapeError};
use crate::ir::{params, Condition, Mask, Prior};
use crate::layers::{LatentModel, Op, Values};
use crate::resolve::ResolvedFlow;
use crate::shape::Shape;
use flags::{Flags, Layout};

/// This stage's problems at their places (gathered by `crate::diag`).
type Diagnostic = Located<VerifyError>;
type Diagnostics = Found<VerifyError>;

/// Problems the verifier finds (and its warnings).
#[derive(Clone, Debug, Error, PartialEq)]
pub enum VerifyError {
    #[error(transparent)]
    Shape(#[from] ShapeError),
    #[error("mask {mask} needs an image; this coupling's input is a vector of {input} features")]
    ImageMaskOnVector { mask: Mask, input: Shape },
    #[error("mask {mask} needs a vector; this coupling's input is an image {input}")]
    VectorMaskOnImage { mask: Mask, input: Shape },
    #[error("mask {mask} needs an even number of channels; this coupling's input is {input}")]
    OddChannels { mask: Mask, input: Shape },
    #[error("mask {mask} would keep nothing on input {input}, so the net would see no values")]
    KeepsNothing { mask: Mask, input: Shape },
    #[error("mask {mask} would transform nothing on input {input}")]
    TransformsNothing { mask: Mask, input: Shape },
    #[error("logit needs values in [0,1), but this flow's input is a vector of real values")]
    LogitOnVector,
    #[error("logit needs values in [0,1), but here they come from `{after}` (line {line}), which does not keep them there")]
    LogitAfter { after: &'static str, line: usize },
    #[error("layer {layer} takes {input} values per example but passes on {output} and sends {latent} to a latent")]
    Accounting {
        layer: usize,
        input: u128,
        output: u128,
        latent: u128,
    },
    #[error("{count} of the {total} latent dimensions were never transformed by a coupling")]
    Untransformed { count: u128, total: u128 },
    #[error("image values in [0,1) reach this `{layer}` without a `logit` first")]
    Unbounded { layer: &'static str },
    #[error("{}", limits::message(.holder, *.measure, *.found))]
    TooLarge {
        holder: String,
        measure: limits::Measure,
        found: u128,
    },
}

impl VerifyError {
    pub fn code(&self) -> Code {
        use VerifyError::*;
        match self {
            Shape(e) => e.code(),
            ImageMaskOnVector { .. }
            | VectorMaskOnImage { .. }
            | OddChannels { .. }
            | KeepsNothing { .. }
            | TransformsNothing { .. } => Code::Mask,
            LogitOnVector | LogitAfter { .. } => Code::Domain,
            Accounting { .. } => Code::Shape,
            Untransformed { .. } => Code::Untransformed,
            Unbounded { .. } => Code::Unbounded,
            TooLarge { .. } => Code::BadArgument,
        }
    }
}

/// A layer of a verified flow: every argument present
/// ([`crate::layers::LayerDef::resolved`]), every shape known.
#[derive(Clone, Debug, PartialEq)]
pub struct CheckedLayer {
    pub op: Op,
    pub input: Shape,
    pub output: Shape,
    /// The latent a `factor_out` emits.
    pub latent: Option<usize>,
    pub parameters: u128,
    pub span: Span,
    pub line: usize,
}

/// A flow that passed verification. Only [`verify`] makes one, so nothing
/// downstream (lowering, execution) ever sees an unverified program.
#[derive(Clone, Debug)]
#[allow(clippy::manual_non_exhaustive)] // sealed within the crate too, not only outside it
pub struct VerifiedFlow {
    pub name: String,
    pub input: Shape,
    pub prior: Prior,
    pub layers: Vec<CheckedLayer>,
    pub latents: Vec<Shape>,
    /// What models each latent: the prior, or the `factor_out` that emits it.
    pub latent_models: Vec<LatentModel>,
    /// Layers' and the learned prior's parameters.
    pub parameters: u128,
    pub graph: FlowGraph,
    _sealed: (),
}

impl VerifiedFlow {
    /// The learned prior's parameters on latent `k` (none for a fixed prior
    /// or a latent with its own model).
    pub fn prior_parameters(&self, k: usize) -> u128 {
        match (self.prior, self.latent_models[k]) {
            (Prior::LearnedNormal, LatentModel::Prior) => {
                let classes = Condition::label_channels(self.graph.resolved.condition).max(1);
                params::learned_prior(self.latents[k].channels(), classes)
            }
            (Prior::Normal | Prior::Logistic, _) | (Prior::LearnedNormal, LatentModel::Own) => 0,
        }
    }

    /// The learned prior's parameter tensors, as `lower` lays them out: a
    /// mean and a log-std for each latent it models.
    pub fn prior_tensors(&self) -> u128 {
        let modelled = (0..self.latents.len()).filter(|&k| self.prior_parameters(k) > 0);
        2 * modelled.count() as u128
    }
}

/// Verifies a flow graph. Returns the verified flow when there is no error
/// (warnings allowed), and every diagnostic found either way.
pub fn verify(graph: FlowGraph, source: &str) -> (Option<VerifiedFlow>, Diagnostics) {
    let mut diags = Diagnostics::default();
    let flow = &graph.resolved;
    let lines = LineIndex::new(source);
    let mut push = |d: Diagnostic| diags.push(d);
    // The first layer that maps image values off [0,1), for `logit`'s domain.
    let mut unbounding: Option<(&'static str, usize)> = None;
    let mut unbounded_warned = false;
    let mut logit_seen = false;
    let mut flags = flow.input.map(|s| Flags::new(layout(s)));
    let mut checked = Vec::new();
    let mut complete = !flow.incomplete;
    let mut sizes = limits::Sizes::new(flow, &mut push);
    for (i, layer) in flow.layers.iter().enumerate() {
        let at = |e: VerifyError, span: Span| {
            Diagnostic::error(e, span).expanded_from(&layer.expanded_from)
        };
        let Some(input) = graph.input_shape(i) else {
            complete = false;
            continue;
        };
        let is_image = input.is_image();
        let def = layer.op.def();
        let mut layer_ok = def.resolved();
        let out = match def.shape(input) {
            Ok((out, latent)) => {
                let (i_n, o_n, l_n) = (input.size(), out.size(), latent.map_or(0, |l| l.size()));
                if i_n != o_n + l_n {
                    push(at(
                        VerifyError::Accounting {
                            layer: i,
                            input: i_n,
                            output: o_n,
                            latent: l_n,
                        },
                        layer.span,
                    ));
                    layer_ok = false;
                }
                out
            }
            Err(e) => {
                push(at(e.into(), layer.span));
                complete = false;
                continue;
            }
        };
        let flag_op = match def.flag_effect(input) {
            Ok(op) => op,
            Err((e, span)) => {
                push(at(e, span));
                layer_ok = false;
                None
            }
        };
        let values = def.values();
        if values == Values::FromUnitInterval {
            if !is_image {
                push(at(VerifyError::LogitOnVector, layer.span));
                layer_ok = false;
            } else if let Some((after, line)) = unbounding {
                push(at(VerifyError::LogitAfter { after, line }, layer.span));
                layer_ok = false;
            }
            logit_seen = true;
        }
        let learned = matches!(values, Values::Learned | Values::Split);
        if learned && is_image && !logit_seen && !unbounded_warned {
            let w = VerifyError::Unbounded {
                layer: def.keyword(),
            };
            let d = Diagnostic::warning(w, layer.span)
                .expanded_from(&layer.expanded_from)
                .with_help("start the flow with `logit(alpha = 0.05)`, as Real NVP does, so the flow works on the real line");
            push(d);
            unbounded_warned = true;
        }
        let moves = matches!(values, Values::Rearranged | Values::Split);
        if !moves && unbounding.is_none() {
            unbounding = Some((def.keyword(), lines.line(layer.span.start)));
        }
        if let (Some(f), Some(op)) = (flags.as_mut(), flag_op) {
            f.apply(op);
        }
        if layer_ok {
            let c = checked_layer(&graph, i, input, out);
            sizes.layer(flow, layer, &c, &mut push);
            checked.push(c);
        } else {
            complete = false;
        }
    }
    sizes.finish(&mut push);
    let latents: Vec<Option<Shape>> = graph.latent_shapes();
    let mut verified = None;
    if complete && latents.iter().all(Option::is_some) {
        let latents: Vec<Shape> = latents.into_iter().flatten().collect();
        let input = flow.input.expect("complete flows have an input");
        let total: u128 = latents.iter().map(Shape::size).sum();
        if total != input.size() {
            let e = VerifyError::Accounting {
                layer: flow.layers.len(),
                input: input.size(),
                output: total,
                latent: 0,
            };
            push(Diagnostic::error(e, flow.span));
        }
        if let Some(f) = &flags {
            let count = f.untransformed();
            if count > 0 {
                let w = VerifyError::Untransformed { count, total };
                let help = "add couplings with the complementary mask, so that every value is transformed at least once";
                push(Diagnostic::warning(w, graph_name_span(&graph)).with_help(help));
            }
        }
        let mut latent_models = vec![LatentModel::Prior; latents.len()];
        for l in &checked {
            if let (Some(k), Some(m)) = (l.latent, l.op.def().emits_latent()) {
                latent_models[k] = m;
            }
        }
        let layers = checked
            .iter()
            .map(|l: &CheckedLayer| l.parameters)
            .fold(0u128, u128::saturating_add);
        let mut v = VerifiedFlow {
            name: flow.name.clone(),
            input,
            prior: flow.prior,
            layers: checked,
            latents,
            latent_models,
            parameters: layers,
            graph: graph.clone(),
            _sealed: (),
        };
        v.parameters = (0..v.latents.len())
            .map(|k| v.prior_parameters(k))
            .fold(layers, u128::saturating_add);
        verified = Some(v);
    }
    let mut all = diags;
    all.sort_and_dedup();
    if all.has_errors() {
        verified = None;
    }
    // Line numbers for the checked layers.
    if let Some(v) = verified.as_mut() {
        for l in &mut v.layers {
            l.line = lines.line(l.span.start);
        }
    }
    (verified, all)
}

fn graph_name_span(graph: &FlowGraph) -> Span {
    let s = graph.resolved.span;
    Span::new(s.start, s.start + 4) // the `flow` keyword
}

fn layout(shape: Shape) -> Layout {
    match shape {
        Shape::Image { c, h, w } => Layout::Image { c, h, w },
        Shape::Vector { d } => Layout::Vector { d },
    }
}

fn checked_layer(graph: &FlowGraph, i: usize, input: Shape, output: Shape) -> CheckedLayer {
    let layer = &graph.resolved.layers[i];
    CheckedLayer {
        op: layer.op.clone(),
        input,
        output,
        latent: graph.latent_of(i),
        parameters: layer.op.def().parameters(input).expect("checked"),
        span: layer.span,
        line: 0,
    }
}

/// The parameters of layer `i` on an input of shape `input`; `None` for a
/// coupling whose net did not resolve. Also for flows with errors, where the
/// editor shows each layer's count.
pub fn layer_parameters(flow: &ResolvedFlow, i: usize, input: Shape) -> Option<u128> {
    flow.layers.get(i)?.op.def().parameters(input)
}

/// Byte offset to 1-based line, by binary search over line starts.
pub struct LineIndex {
    starts: Vec<usize>,
}

impl LineIndex {
    pub fn new(source: &str) -> LineIndex {
        let mut starts = vec![0];
        starts.extend(source.match_indices('\n').map(|(i, _)| i + 1));
        LineIndex { starts }
    }
    pub fn line(&self, offset: usize) -> usize {
        self.starts.partition_point(|&s| s <= offset)
    }
}

impl Coded for VerifyError {
    fn code(&self) -> Code {
        VerifyError::code(self)
    }
}
