//! Stage 6, lower: a [`VerifiedFlow`] to an execution [`Plan`], then the
//! passes that improve it, each its own function:
//!
//! | pass | file | what it does |
//! | --- | --- | --- |
//! | (lowering) | `mod.rs` | one step per layer, unfused, factor-out as a copy; the inverse derived from the forward |
//! | normalize | `normalize.rs` | composes runs of permutations into one gather, drops identities, cancels squeeze/unsqueeze pairs |
//! | fuse | `fuse.rs` | couplings run as one fused kernel; factor-out becomes a view |
//! | schedule | `schedule.rs` | frees each slot after its last use, in both directions |
//!
//! Only a `VerifiedFlow` can be lowered, so no plan comes from a program
//! with errors.

pub mod fuse;
pub mod normalize;
pub mod schedule;

use crate::ir::{CouplingKind, NetKind};
use crate::plan::{Init, Op, Param, Perm, Plan, Slot, SlotId, Step};
use crate::shape::Shape;
use crate::verify::{CheckedOp, VerifiedFlow};

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
    for (i, l) in v.layers.iter().enumerate() {
        let (op, logdet) = match &l.op {
            CheckedOp::Logit { alpha } => (Op::Logit { alpha: *alpha }, true),
            CheckedOp::Coupling {
                kind, mask, net, ..
            } => {
                coupling_params(i, *kind, *net, l.input, &mut params);
                (
                    Op::Coupling {
                        layer: i,
                        kind: *kind,
                        mask: *mask,
                        net: *net,
                        fused: false,
                    },
                    true,
                )
            }
            CheckedOp::Squeeze => (Op::Squeeze, false),
            CheckedOp::Reverse => (
                Op::Permute {
                    perm: Perm::Reverse(l.input.channels() as usize),
                },
                false,
            ),
            CheckedOp::Batchnorm => {
                let c = l.input.channels();
                params.push(param(i, "log_gamma", vec![c], Init::Zeros));
                params.push(param(i, "beta", vec![c], Init::Zeros));
                (Op::BatchNorm { layer: i }, true)
            }
            CheckedOp::Actnorm => {
                let c = l.input.channels();
                params.push(param(i, "logs", vec![c], Init::Data));
                params.push(param(i, "bias", vec![c], Init::Data));
                (Op::ActNorm { layer: i }, true)
            }
            CheckedOp::Invconv => {
                let c = l.input.channels();
                params.push(param(i, "lower", vec![c, c], Init::Zeros));
                params.push(param(i, "upper", vec![c, c], Init::Zeros));
                params.push(param(i, "log_s", vec![c], Init::Zeros));
                (Op::InvConv { layer: i }, true)
            }
            CheckedOp::FactorOut => {
                let k = l.latent.expect("factor_out has a latent");
                let z = new_slot(&mut slots, v.latents[k]);
                slots[z].name = format!("z{k}");
                latents[k] = z;
                let rest = new_slot(&mut slots, l.output);
                forward.push(Step {
                    op: Op::FactorOut {
                        latent: k,
                        view: false,
                    },
                    inputs: vec![cur],
                    outputs: vec![z, rest],
                    logdet: false,
                    free: vec![],
                });
                cur = rest;
                continue;
            }
        };
        let out = new_slot(&mut slots, l.output);
        forward.push(Step {
            op,
            inputs: vec![cur],
            outputs: vec![out],
            logdet,
            free: vec![],
        });
        cur = out;
    }
    let last = latents.len() - 1;
    if cur == 0 {
        // No layer changes x: the latent is a copy-free alias of the input.
        latents[last] = 0;
    } else {
        slots[cur].name = format!("z{last}");
        latents[last] = cur;
    }
    let mut plan = Plan {
        flow: v.name.clone(),
        input: v.input,
        prior: v.prior,
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

/// The inverse pass: the forward steps backwards, each inverted, reading what
/// its forward step wrote and writing what it read.
pub fn derive_inverse(forward: &[Step]) -> Vec<Step> {
    forward
        .iter()
        .rev()
        .map(|s| {
            let op = match &s.op {
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
                Op::Permute { perm } => Op::Permute {
                    perm: perm.inverse(),
                },
                Op::BatchNorm { layer } => Op::BatchNormInverse { layer: *layer },
                Op::BatchNormInverse { layer } => Op::BatchNorm { layer: *layer },
                Op::ActNorm { layer } => Op::ActNormInverse { layer: *layer },
                Op::ActNormInverse { layer } => Op::ActNorm { layer: *layer },
                Op::InvConv { layer } => Op::InvConvInverse { layer: *layer },
                Op::InvConvInverse { layer } => Op::InvConv { layer: *layer },
            };
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

fn param(layer: usize, name: &str, shape: Vec<u64>, init: Init) -> Param {
    Param {
        name: format!("layer{layer}.{name}"),
        shape,
        init,
    }
}

/// A weight-normalized 3x3 conv: direction, gain, bias.
fn wn_conv(i: usize, name: &str, cin: u64, cout: u64, zero: bool) -> [Param; 3] {
    let g = if zero { Init::Zeros } else { Init::Ones };
    [
        param(i, &format!("{name}.v"), vec![cout, cin, 3, 3], Init::Normal),
        param(i, &format!("{name}.g"), vec![cout], g),
        param(i, &format!("{name}.bias"), vec![cout], Init::Zeros),
    ]
}

/// Batch normalization's affine parameters (running statistics are not parameters).
fn bn(i: usize, name: &str, f: u64) -> [Param; 2] {
    [
        param(i, &format!("{name}.gamma"), vec![f], Init::Ones),
        param(i, &format!("{name}.beta"), vec![f], Init::Zeros),
    ]
}

/// The parameters of a coupling, named as `exec::coupling` creates them.
fn coupling_params(i: usize, kind: CouplingKind, net: NetKind, input: Shape, out: &mut Vec<Param>) {
    let c = input.channels();
    let k = kind.outputs_per_channel();
    match net {
        NetKind::Resnet {
            blocks,
            features: f,
        } => {
            out.extend(wn_conv(i, "net.in_conv", c, f, false));
            for b in 0..blocks {
                out.extend(bn(i, &format!("net.blocks.{b}.bn1"), f));
                out.extend(wn_conv(i, &format!("net.blocks.{b}.conv1"), f, f, false));
                out.extend(bn(i, &format!("net.blocks.{b}.bn2"), f));
                out.extend(wn_conv(i, &format!("net.blocks.{b}.conv2"), f, f, false));
            }
            out.extend(bn(i, "net.out_bn", f));
            out.extend(wn_conv(i, "net.out_conv", f, k * c, true));
        }
        NetKind::Mlp { hidden: h, layers } => {
            for l in 0..layers {
                let din = if l == 0 { c } else { h };
                out.push(param(
                    i,
                    &format!("net.fc{l}.weight"),
                    vec![h, din],
                    Init::Uniform,
                ));
                out.push(param(i, &format!("net.fc{l}.bias"), vec![h], Init::Uniform));
            }
            out.push(param(i, "net.out.weight", vec![k * c, h], Init::Zeros));
            out.push(param(i, "net.out.bias", vec![k * c], Init::Zeros));
        }
    }
    if kind == CouplingKind::Affine {
        out.push(param(i, "scale", vec![c], Init::Ones));
    }
}
