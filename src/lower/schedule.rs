//! Pass `schedule`: decide when each slot can go. A slot is freed right after
//! the last step that reads it, so a pass holds only the tensors still ahead
//! of it (candle's autograd keeps what the backward pass needs on its own).
//! Latents and the input are results, never freed.

use crate::plan::{Plan, SlotId, Step};

pub fn schedule(plan: &mut Plan) {
    let forward_keep: Vec<SlotId> = plan.latents.clone();
    free_after_last_use(&mut plan.forward, &forward_keep, plan.slots.len());
    free_after_last_use(&mut plan.inverse, &[plan.x], plan.slots.len());
    plan.passes.push("schedule".into());
}

fn free_after_last_use(steps: &mut [Step], keep: &[SlotId], n: usize) {
    let mut last = vec![None; n];
    for (i, s) in steps.iter().enumerate() {
        for &slot in &s.inputs {
            last[slot] = Some(i);
        }
    }
    for s in steps.iter_mut() {
        s.free.clear();
    }
    for (slot, at) in last.into_iter().enumerate() {
        if let Some(at) = at {
            if !keep.contains(&slot) {
                steps[at].free.push(slot);
            }
        }
    }
}
