//! Stage 6, lower: a [`VerifiedFlow`] to an execution [`Plan`], then the
//! passes that improve it, each its own function:
//!
//! | pass | file | what it does |
//! | --- | --- | --- |
//! | (lowering) | `mod.rs` | one step per layer (each kind's [`LayerDef::lower`](crate::layers::LayerDef::lower)), unfused, factor-out as a copy; the inverse derived from the forward ([`crate::plan::Op::inverse`]) |
//! | normalize | `normalize.rs` | composes runs of permutations into one gather, drops identities, cancels squeeze/unsqueeze pairs |
//! | fuse | `fuse.rs` | couplings run as one fused kernel; factor-out becomes a view |
//! | schedule | `schedule.rs` | frees each slot after its last use, in both directions |
//!
//! Only a `VerifiedFlow` can be lowered, so no plan comes from a program
//! with errors.

pub mod fuse;
pub mod normalize;
pub mod schedule;

use crate::ir::{Base, Condition, Prior};
use crate::layers::{LatentModel, Lowered, Lowering};
use crate::plan::{Init, Op, Param, Plan, Slot, SlotId, Step};
use crate::shape::Shape;
use crate::verify::VerifiedFlow;

/// Where `flowc compile --stop-after` stops.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum)]
pub enum Pass {
    Lower,
    Normalize,
    Fuse,
    Schedule,
}

/// Lowers and runs every pass up to and including `stop_after`.
pub fn compile(v: &VerifiedFlow, stop_after: Pass) -> Plan {
    let mut plan = lower(v);
    if stop_after >= Pass::Normalize {
        normalize::normalize(&mut plan);
    }
    if stop_after >= Pass::Fuse {
        fuse::fuse(&mut plan);
    }
    if stop_after >= Pass::Schedule {
        schedule::schedule(&mut plan);
    }
    plan
}

/// The direct translation: one forward step per layer.
pub fn lower(v: &VerifiedFlow) -> Plan {
    // The learned prior's rows: one per class of a conditioned flow.
    let rows = Condition::label_channels(v.graph.resolved.condition).max(1);
    let mut slots = vec![Slot {
        name: "x".into(),
        shape: v.input,
    }];
    let mut latents = vec![SlotId::MAX; v.latents.len()];
    let mut forward = vec![];
    let mut params = vec![];
    let mut cur = 0;
    let new_slot = |slots: &mut Vec<Slot>, shape: Shape| {
        slots.push(Slot {
            name: format!("t{}", slots.len()),
            shape,
        });
        slots.len() - 1
    };
    let learned = v.prior == Prior::LearnedNormal;
    for (i, l) in v.layers.iter().enumerate() {
        let at = Lowering {
            layer: i,
            input: l.input,
            latent: l.latent,
        };
        let Lowered { op, logdet } = l.op.def().lower(at, &mut params);
        let mut outputs = vec![];
        if let Some(k) = l.latent {
            // The latent leaves first; the rest goes on. A latent with its
            // own model leaves standardized (`e`).
            let z = new_slot(&mut slots, v.latents[k]);
            let own = v.latent_models[k] == LatentModel::Own;
            slots[z].name = format!("{}{k}", if own { "e" } else { "z" });
            latents[k] = z;
            outputs.push(z);
        }
        outputs.push(new_slot(&mut slots, l.output));
        let next = outputs[outputs.len() - 1];
        forward.push(Step {
            op,
            inputs: vec![cur],
            outputs,
            logdet,
            free: vec![],
        });
        cur = next;
        if let (Some(k), true) = (l.latent, learned) {
            if v.latent_models[k] == LatentModel::Prior {
                latents[k] =
                    standardize(k, latents[k], rows, &mut slots, &mut forward, &mut params);
            }
        }
    }
    let last = latents.len() - 1;
    if cur == 0 {
        // No layer changes x: the latent is a copy-free alias of the input.
        latents[last] = 0;
    } else {
        slots[cur].name = format!("z{last}");
        latents[last] = cur;
    }
    if learned {
        latents[last] = standardize(
            last,
            latents[last],
            rows,
            &mut slots,
            &mut forward,
            &mut params,
        );
    }
    let bases = v
        .latent_models
        .iter()
        .map(|m| match m {
            LatentModel::Prior => v.prior.base(),
            LatentModel::Own => Base::Normal,
        })
        .collect();
    let mut plan = Plan {
        flow: v.name.clone(),
        input: v.input,
        condition: v.graph.resolved.condition,
        prior: v.prior,
        bases,
        slots,
        x: 0,
        latents,
        forward,
        inverse: vec![],
        params,
        passes: vec!["lower".into()],
    };
    plan.inverse = derive_inverse(&plan.forward);
    plan
}

/// The learned prior's step on latent `k` in slot `z`: its parameters
/// `prior.z{k}.mean` and `prior.z{k}.log_std`, `[rows, C]` (a row per
/// class of a conditioned flow, else one), and the slot `e{k}` it writes,
/// which it returns.
fn standardize(
    k: usize,
    z: SlotId,
    rows: u64,
    slots: &mut Vec<Slot>,
    forward: &mut Vec<Step>,
    params: &mut Vec<Param>,
) -> SlotId {
    let shape = slots[z].shape;
    for name in ["mean", "log_std"] {
        params.push(Param {
            name: format!("prior.z{k}.{name}"),
            shape: vec![rows, shape.channels()],
            init: Init::Zeros,
        });
    }
    slots.push(Slot {
        name: format!("e{k}"),
        shape,
    });
    let e = slots.len() - 1;
    forward.push(Step {
        op: Op::LearnedPrior { latent: k },
        inputs: vec![z],
        outputs: vec![e],
        logdet: true,
        free: vec![],
    });
    e
}

/// The inverse pass: the forward steps backwards, each inverted, reading what
/// its forward step wrote and writing what it read.
pub fn derive_inverse(forward: &[Step]) -> Vec<Step> {
    forward
        .iter()
        .rev()
        .map(|s| {
            let op = s.op.inverse();
            Step {
                op,
                inputs: s.outputs.clone(),
                outputs: s.inputs.clone(),
                logdet: false,
                free: vec![],
            }
        })
        .collect()
}
