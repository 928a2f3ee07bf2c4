//! Pass `normalize`: fold what can be folded before anything runs.
//! Runs of permutations compose into one gather (two `reverse`s vanish), and a
//! `squeeze` directly undone by an `unsqueeze` (or the other way) disappears.

use crate::plan::{Op, Perm, Plan, SlotId, Step};

pub fn normalize(plan: &mut Plan) {
    let mut out: Vec<Step> = vec![];
    // Slots that a removed step would have produced, and what to read instead.
    let mut alias: Vec<SlotId> = (0..plan.slots.len()).collect();
    for mut step in std::mem::take(&mut plan.forward) {
        for s in step.inputs.iter_mut() {
            *s = alias[*s];
        }
        let prev = out.last();
        let chained = prev.is_some_and(|p| {
            p.outputs.len() == 1
                && step.inputs == p.outputs
                && !plan.latents.contains(&p.outputs[0])
        });
        if chained {
            let p = out.last().unwrap();
            match (&p.op, &step.op) {
                (Op::Permute { perm: a }, Op::Permute { perm: b }) => {
                    let composed = compose(a, b);
                    let input = p.inputs[0];
                    out.pop();
                    match composed {
                        None => alias[step.outputs[0]] = input,
                        Some(perm) => out.push(Step {
                            op: Op::Permute { perm },
                            inputs: vec![input],
                            ..step
                        }),
                    }
                    continue;
                }
                (Op::Squeeze, Op::Unsqueeze) | (Op::Unsqueeze, Op::Squeeze) => {
                    alias[step.outputs[0]] = p.inputs[0];
                    out.pop();
                    continue;
                }
                _ => {}
            }
        }
        out.push(step);
    }
    for z in plan.latents.iter_mut() {
        *z = alias[*z];
    }
    plan.forward = out;
    plan.inverse = super::derive_inverse(&plan.forward);
    plan.passes.push("normalize".into());
}

/// `a` then `b`: `out[c] = mid[b[c]] = in[a[b[c]]]`; `None` for the identity.
/// Two reverses cancel without listing their indices (C may be 10^9).
fn compose(a: &Perm, b: &Perm) -> Option<Perm> {
    if let (Perm::Reverse(x), Perm::Reverse(y)) = (a, b) {
        if x == y {
            return None;
        }
    }
    let (a, b) = (a.indices(), b.indices());
    let composed: Vec<usize> = b.iter().map(|&i| a[i]).collect();
    let identity = composed.iter().enumerate().all(|(i, &j)| i == j);
    (!identity).then_some(Perm::Gather(composed))
}
