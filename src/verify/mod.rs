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
use crate::ir::params;

use serde::Serialize;
use thiserror::Error;

use crate::span::{Code, Coded, Found, Located, Span};

use crate::graph::{infer, FlowGraph, ShapeError};
use crate::ir::{CouplingKind, Mask, NetKind, Parity, Prior};
use crate::resolve::{Op, ResolvedFlow};
use crate::shape::Shape;
use flags::{FlagOp, Flags, Layout};

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

/// A layer of a verified flow: every argument present, every shape known.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CheckedLayer {
    pub op: CheckedOp,
    pub input: Shape,
    pub output: Shape,
    /// The latent a `factor_out` emits.
    pub latent: Option<usize>,
    pub parameters: u128,
    #[serde(skip)]
    pub span: Span,
    pub line: usize,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum CheckedOp {
    Coupling {
        kind: CouplingKind,
        mask: Mask,
        net: NetKind,
        net_name: String,
    },
    Squeeze,
    FactorOut,
    Logit {
        alpha: f64,
    },
    Batchnorm,
    Actnorm,
    Invconv,
    Reverse,
}

impl CheckedOp {
    pub fn keyword(&self) -> &'static str {
        match self {
            CheckedOp::Coupling { .. } => "coupling",
            CheckedOp::Squeeze => "squeeze",
            CheckedOp::FactorOut => "factor_out",
            CheckedOp::Logit { .. } => "logit",
            CheckedOp::Batchnorm => "batchnorm",
            CheckedOp::Actnorm => "actnorm",
            CheckedOp::Invconv => "invconv",
            CheckedOp::Reverse => "reverse",
        }
    }
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
    pub parameters: u128,
    pub graph: FlowGraph,
    _sealed: (),
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
        let mut layer_ok = true;
        let out = match infer(&layer.op, input) {
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
        let mut flag_op = None;
        match &layer.op {
            Op::Coupling(c) => {
                if let Some(mask) = c.mask {
                    match check_mask(mask, input) {
                        Ok(op) => flag_op = Some(op),
                        Err(e) => {
                            push(at(e, c.mask_span));
                            layer_ok = false;
                        }
                    }
                } else {
                    layer_ok = false;
                }
                layer_ok &= c.net.is_some();
            }
            Op::Logit { alpha } => {
                layer_ok &= alpha.is_some();
                if !is_image {
                    push(at(VerifyError::LogitOnVector, layer.span));
                    layer_ok = false;
                } else if let Some((after, line)) = unbounding {
                    push(at(VerifyError::LogitAfter { after, line }, layer.span));
                    layer_ok = false;
                }
                logit_seen = true;
            }
            Op::Squeeze => flag_op = Some(FlagOp::Squeeze),
            Op::Reverse => flag_op = Some(FlagOp::Reverse),
            Op::FactorOut => flag_op = Some(FlagOp::FactorOut),
            Op::InvConv => flag_op = Some(FlagOp::InvConv),
            Op::BatchNorm | Op::ActNorm => {}
        }
        let learned = matches!(
            layer.op,
            Op::Coupling(_) | Op::ActNorm | Op::BatchNorm | Op::InvConv
        );
        if learned && is_image && !logit_seen && !unbounded_warned {
            let w = VerifyError::Unbounded {
                layer: layer.op.keyword(),
            };
            let d = Diagnostic::warning(w, layer.span)
                .expanded_from(&layer.expanded_from)
                .with_help("start the flow with `logit(alpha = 0.05)`, as Real NVP does, so the flow works on the real line");
            push(d);
            unbounded_warned = true;
        }
        if !matches!(layer.op, Op::Squeeze | Op::Reverse | Op::FactorOut) && unbounding.is_none() {
            unbounding = Some((layer.op.keyword(), lines.line(layer.span.start)));
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
        let parameters = checked
            .iter()
            .map(|l: &CheckedLayer| l.parameters)
            .fold(0u128, u128::saturating_add);
        verified = Some(VerifiedFlow {
            name: flow.name.clone(),
            input,
            prior: flow.prior,
            layers: checked,
            latents,
            parameters,
            graph: graph.clone(),
            _sealed: (),
        });
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

fn checked_layer(graph: &FlowGraph, i: usize, input: Shape, output: Shape) -> CheckedLayer {
    let flow = &graph.resolved;
    let layer = &flow.layers[i];
    let op = match &layer.op {
        Op::Coupling(spec) => {
            let net = &flow.nets[spec.net.expect("checked")];
            CheckedOp::Coupling {
                kind: spec.kind,
                mask: spec.mask.expect("checked"),
                net: net.kind,
                net_name: net.name.clone(),
            }
        }
        Op::Squeeze => CheckedOp::Squeeze,
        Op::FactorOut => CheckedOp::FactorOut,
        Op::Logit { alpha } => CheckedOp::Logit {
            alpha: alpha.expect("checked"),
        },
        Op::BatchNorm => CheckedOp::Batchnorm,
        Op::ActNorm => CheckedOp::Actnorm,
        Op::InvConv => CheckedOp::Invconv,
        Op::Reverse => CheckedOp::Reverse,
    };
    CheckedLayer {
        op,
        input,
        output,
        latent: graph.latent_of(i),
        parameters: layer_parameters(flow, i, input).expect("checked"),
        span: layer.span,
        line: 0,
    }
}

/// The parameters of layer `i` on an input of shape `input`; `None` for a
/// coupling whose net did not resolve. Also for flows with errors, where the
/// editor shows each layer's count.
pub fn layer_parameters(flow: &ResolvedFlow, i: usize, input: Shape) -> Option<u128> {
    let c = input.channels();
    Some(match &flow.layers.get(i)?.op {
        Op::Coupling(spec) => {
            let net = flow.nets.get(spec.net?)?;
            params::coupling(net.kind, c, spec.kind)
        }
        Op::Squeeze | Op::FactorOut | Op::Logit { .. } | Op::Reverse => 0,
        Op::BatchNorm | Op::ActNorm => params::batchnorm(c as u128),
        Op::InvConv => params::invconv(c),
    })
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
