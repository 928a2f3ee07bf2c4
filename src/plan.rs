//! The execution plan: the compiled form of a flow, what the executor runs.
//!
//! A plan holds named tensor slots, the forward steps (`x -> latents, log-det`)
//! and the inverse steps (`latents -> x`, derived from the forward ones by
//! [`crate::lower`]), and when each slot can be freed. It is plain data (serde),
//! printed by `flowc compile --emit plan` in a stable text form.

use std::fmt;

use serde::Serialize;

use crate::ir::{Base, Condition, CouplingKind, Mask, NetKind, Prior};
use crate::shape::Shape;

pub type SlotId = usize;

/// A named tensor of the plan (per example; the batch dimension is free).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Slot {
    pub name: String,
    pub shape: Shape,
}

/// A channel permutation.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub enum Perm {
    /// Reverse the order of `C` channels.
    Reverse(usize),
    /// `out[c] = in[index[c]]`, the composition of several permutations.
    Gather(Vec<usize>),
}

impl Perm {
    pub fn indices(&self) -> Vec<usize> {
        match self {
            Perm::Reverse(c) => (0..*c).rev().collect(),
            Perm::Gather(ix) => ix.clone(),
        }
    }
    pub fn inverse(&self) -> Perm {
        match self {
            Perm::Reverse(c) => Perm::Reverse(*c),
            Perm::Gather(ix) => {
                let mut inv = vec![0; ix.len()];
                for (o, &i) in ix.iter().enumerate() {
                    inv[i] = o;
                }
                Perm::Gather(inv)
            }
        }
    }
}

/// What a step computes. `layer` is the index of the source layer, whose
/// parameters live under `layer{i}.` in the parameter table.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Op {
    Logit {
        alpha: f64,
    },
    /// Inverse of `logit`: `x = (sigmoid(y) - alpha) / (1 - 2 alpha)`.
    Sigmoid {
        alpha: f64,
    },
    /// `fused`: the elementwise tail (mask, scale*tanh, exp, mul, add, log-det
    /// row sum) runs as one kernel; otherwise as a chain of tensor ops.
    Coupling {
        layer: usize,
        kind: CouplingKind,
        mask: Mask,
        net: NetKind,
        fused: bool,
    },
    CouplingInverse {
        layer: usize,
        kind: CouplingKind,
        mask: Mask,
        net: NetKind,
        fused: bool,
    },
    Squeeze,
    Unsqueeze,
    /// Splits off the first floor(C/2) channels as latent `latent`; `view`:
    /// a narrow of the input instead of a copy.
    FactorOut {
        latent: usize,
        view: bool,
    },
    /// Inverse of `factor_out`: concatenates latent and rest.
    FactorIn {
        latent: usize,
    },
    /// `factor_out(net = N)`: splits as `FactorOut`, then standardizes the
    /// latent by layer `layer`'s net of the rest, `e = (z - m) exp(-s)`
    /// with `(m, s) = N(rest)`; log-det `-sum(s)`. Writes `e` and the rest.
    SplitOut {
        layer: usize,
        latent: usize,
        net: NetKind,
        view: bool,
    },
    /// Inverse of `split_out`: `z = m + exp(s) e` from the rest, which is
    /// known first, then concatenates `z` and the rest.
    SplitIn {
        layer: usize,
        latent: usize,
        net: NetKind,
    },
    /// `prior normal(learned)` on latent `latent`: `e = (z - m) exp(-s)`
    /// with its learned per-channel `(m, s)`; log-det `-sum(s)`.
    LearnedPrior {
        latent: usize,
    },
    /// Inverse of `learned_prior`: `z = m + exp(s) e`.
    LearnedPriorInverse {
        latent: usize,
    },
    Permute {
        perm: Perm,
    },
    BatchNorm {
        layer: usize,
    },
    BatchNormInverse {
        layer: usize,
    },
    ActNorm {
        layer: usize,
    },
    ActNormInverse {
        layer: usize,
    },
    InvConv {
        layer: usize,
    },
    InvConvInverse {
        layer: usize,
    },
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Step {
    pub op: Op,
    pub inputs: Vec<SlotId>,
    pub outputs: Vec<SlotId>,
    /// Whether this step adds to the log-determinant.
    pub logdet: bool,
    /// Slots no later step reads; the executor drops them after this step.
    pub free: Vec<SlotId>,
}

/// One parameter of the flow, as the executor creates it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Param {
    pub name: String,
    pub shape: Vec<u64>,
    pub init: Init,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Init {
    Zeros,
    Ones,
    /// Kaiming-normal (weight-norm directions, linear weights).
    Normal,
    /// Uniform in +-1/sqrt(fan_in) (linear layers, as candle-nn).
    Uniform,
    /// Set from the first training batch (actnorm).
    Data,
}

/// The compiled flow.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Plan {
    pub flow: String,
    pub input: Shape,
    /// `given class(K)`: every conditioner net also takes the one-hot label.
    pub condition: Option<Condition>,
    pub prior: Prior,
    /// The fixed distribution of each latent slot (by the order of
    /// `latents`): the standard normal where a learned or split prior
    /// standardized it, else the prior's.
    pub bases: Vec<Base>,
    pub slots: Vec<Slot>,
    /// The input slot of the forward pass (and output of the inverse).
    pub x: SlotId,
    /// The latent slots, in the order of LANGUAGE.md.
    pub latents: Vec<SlotId>,
    pub forward: Vec<Step>,
    pub inverse: Vec<Step>,
    pub params: Vec<Param>,
    /// The passes run so far, in order.
    pub passes: Vec<String>,
}

impl Op {
    /// The source layer whose parameters this step uses.
    pub fn layer(&self) -> Option<usize> {
        match self {
            Op::Coupling { layer, .. }
            | Op::CouplingInverse { layer, .. }
            | Op::BatchNorm { layer }
            | Op::BatchNormInverse { layer }
            | Op::ActNorm { layer }
            | Op::ActNormInverse { layer }
            | Op::InvConv { layer }
            | Op::InvConvInverse { layer }
            | Op::SplitOut { layer, .. }
            | Op::SplitIn { layer, .. } => Some(*layer),
            Op::Logit { .. }
            | Op::Sigmoid { .. }
            | Op::Squeeze
            | Op::Unsqueeze
            | Op::FactorOut { .. }
            | Op::FactorIn { .. }
            | Op::LearnedPrior { .. }
            | Op::LearnedPriorInverse { .. }
            | Op::Permute { .. } => None,
        }
    }

    /// The step that undoes this one (a factor-in undone is a view).
    pub fn inverse(&self) -> Op {
        match self {
            Op::Logit { alpha } => Op::Sigmoid { alpha: *alpha },
            Op::Sigmoid { alpha } => Op::Logit { alpha: *alpha },
            Op::Coupling {
                layer,
                kind,
                mask,
                net,
                fused,
            } => Op::CouplingInverse {
                layer: *layer,
                kind: *kind,
                mask: *mask,
                net: *net,
                fused: *fused,
            },
            Op::CouplingInverse {
                layer,
                kind,
                mask,
                net,
                fused,
            } => Op::Coupling {
                layer: *layer,
                kind: *kind,
                mask: *mask,
                net: *net,
                fused: *fused,
            },
            Op::Squeeze => Op::Unsqueeze,
            Op::Unsqueeze => Op::Squeeze,
            Op::FactorOut { latent, .. } => Op::FactorIn { latent: *latent },
            Op::FactorIn { latent } => Op::FactorOut {
                latent: *latent,
                view: true,
            },
            Op::SplitOut {
                layer, latent, net, ..
            } => Op::SplitIn {
                layer: *layer,
                latent: *latent,
                net: *net,
            },
            Op::SplitIn { layer, latent, net } => Op::SplitOut {
                layer: *layer,
                latent: *latent,
                net: *net,
                view: true,
            },
            Op::LearnedPrior { latent } => Op::LearnedPriorInverse { latent: *latent },
            Op::LearnedPriorInverse { latent } => Op::LearnedPrior { latent: *latent },
            Op::Permute { perm } => Op::Permute {
                perm: perm.inverse(),
            },
            Op::BatchNorm { layer } => Op::BatchNormInverse { layer: *layer },
            Op::BatchNormInverse { layer } => Op::BatchNorm { layer: *layer },
            Op::ActNorm { layer } => Op::ActNormInverse { layer: *layer },
            Op::ActNormInverse { layer } => Op::ActNorm { layer: *layer },
            Op::InvConv { layer } => Op::InvConvInverse { layer: *layer },
            Op::InvConvInverse { layer } => Op::InvConv { layer: *layer },
        }
    }
}

impl Plan {
    pub fn latent_shapes(&self) -> Vec<Shape> {
        self.latents.iter().map(|&s| self.slots[s].shape).collect()
    }
    pub fn parameter_count(&self) -> u128 {
        self.params
            .iter()
            .map(|p| p.shape.iter().map(|&d| d as u128).product::<u128>())
            .sum()
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let net = |n: &NetKind| match n {
            NetKind::Resnet { blocks, features } => {
                format!("resnet(blocks={blocks}, features={features})")
            }
            NetKind::Mlp { hidden, layers } => format!("mlp(hidden={hidden}, layers={layers})"),
        };
        let kind = |k: &CouplingKind| match k {
            CouplingKind::Spline { bins, bound } => format!("spline(bins={bins}, bound={bound})"),
            CouplingKind::Affine | CouplingKind::Additive => k.to_string(),
        };
        match self {
            Op::Logit { alpha } => write!(f, "logit alpha={alpha}"),
            Op::Sigmoid { alpha } => write!(f, "sigmoid alpha={alpha}"),
            Op::Coupling {
                layer,
                kind: k,
                mask,
                net: n,
                fused,
            }
            | Op::CouplingInverse {
                layer,
                kind: k,
                mask,
                net: n,
                fused,
            } => {
                let name = if matches!(self, Op::Coupling { .. }) {
                    "coupling"
                } else {
                    "coupling_inverse"
                };
                let tail = if *fused {
                    "fused".to_string()
                } else if matches!(self, Op::Coupling { .. }) {
                    match k {
                        CouplingKind::Affine => {
                            "mask, net, scale*tanh, exp, mul, add, rowsum".into()
                        }
                        CouplingKind::Additive => "mask, net, add".into(),
                        CouplingKind::Spline { .. } => "mask, net, spline, rowsum".into(),
                    }
                } else {
                    match k {
                        CouplingKind::Affine => "mask, net, scale*tanh, sub, exp(-s), mul".into(),
                        CouplingKind::Additive => "mask, net, sub".into(),
                        CouplingKind::Spline { .. } => "mask, net, spline_inverse".into(),
                    }
                };
                write!(
                    f,
                    "{name} layer{layer} {} {mask} {} [{tail}]",
                    kind(k),
                    net(n)
                )
            }
            Op::Squeeze => write!(f, "squeeze"),
            Op::Unsqueeze => write!(f, "unsqueeze"),
            Op::FactorOut { latent, view } => write!(
                f,
                "factor_out z{latent} [{}]",
                if *view { "view" } else { "copy" }
            ),
            Op::FactorIn { latent } => write!(f, "factor_in z{latent}"),
            Op::SplitOut {
                layer,
                latent,
                net: n,
                view,
            } => write!(
                f,
                "split_out z{latent} layer{layer} {} [{}, (z - m) * exp(-s)]",
                net(n),
                if *view { "view" } else { "copy" }
            ),
            Op::SplitIn {
                layer,
                latent,
                net: n,
            } => write!(
                f,
                "split_in z{latent} layer{layer} {} [m + exp(s) * e]",
                net(n)
            ),
            Op::LearnedPrior { latent } => write!(f, "learned_prior z{latent} [(z - m) * exp(-s)]"),
            Op::LearnedPriorInverse { latent } => {
                write!(f, "learned_prior_inverse z{latent} [m + exp(s) * e]")
            }
            Op::Permute {
                perm: Perm::Reverse(c),
            } => write!(f, "permute reverse({c})"),
            Op::Permute {
                perm: Perm::Gather(ix),
            } => {
                let shown: Vec<String> = ix.iter().take(16).map(|i| i.to_string()).collect();
                let more = if ix.len() > 16 { ", ..." } else { "" };
                write!(f, "permute gather[{}{more}]", shown.join(", "))
            }
            Op::BatchNorm { layer } => write!(f, "batchnorm layer{layer}"),
            Op::BatchNormInverse { layer } => write!(f, "batchnorm_inverse layer{layer}"),
            Op::ActNorm { layer } => write!(f, "actnorm layer{layer}"),
            Op::ActNormInverse { layer } => write!(f, "actnorm_inverse layer{layer}"),
            Op::InvConv { layer } => write!(f, "invconv layer{layer}"),
            Op::InvConvInverse { layer } => write!(f, "invconv_inverse layer{layer}"),
        }
    }
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let prior = self.prior.as_str();
        writeln!(
            f,
            "plan {} (passes: {})",
            self.flow,
            if self.passes.is_empty() {
                "none".into()
            } else {
                self.passes.join(", ")
            }
        )?;
        let given = match self.condition {
            Some(c) => format!(" given class({})", c.classes),
            None => String::new(),
        };
        writeln!(
            f,
            "  input %{}: {}{given}   prior {prior}",
            self.slots[self.x].name, self.input
        )?;
        let latents: Vec<String> = self
            .latents
            .iter()
            .map(|&s| format!("%{}: {}", self.slots[s].name, self.slots[s].shape))
            .collect();
        writeln!(f, "  latents {}", latents.join(", "))?;
        writeln!(
            f,
            "  parameters {} in {} tensors",
            self.parameter_count(),
            self.params.len()
        )?;
        for (title, steps) in [("forward", &self.forward), ("inverse", &self.inverse)] {
            writeln!(f, "\n{title}:")?;
            for step in steps.iter() {
                let names = |ids: &[SlotId]| {
                    ids.iter()
                        .map(|&s| format!("%{}", self.slots[s].name))
                        .collect::<Vec<_>>()
                        .join(", ")
                };
                let shapes: Vec<String> = step
                    .outputs
                    .iter()
                    .map(|&s| self.slots[s].shape.to_string())
                    .collect();
                let mut line = format!(
                    "  {} = {} {}",
                    names(&step.outputs),
                    step.op,
                    names(&step.inputs)
                );
                line = format!("{line:<96} : {}", shapes.join(", "));
                if step.logdet {
                    line.push_str("  +logdet");
                }
                if !step.free.is_empty() {
                    line.push_str(&format!("  free {}", names(&step.free)));
                }
                writeln!(f, "{line}")?;
            }
        }
        Ok(())
    }
}
