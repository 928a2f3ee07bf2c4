//! Pass `fuse`: each coupling's elementwise tail (mask, `scale * tanh`, `exp`,
//! multiply, add, the log-det row sum) runs as one kernel
//! (`exec::fused`) instead of a chain of tensor ops (affine and additive
//! couplings: a spline has no fused kernel and stays as it is), and
//! `factor_out` (with a net or not) hands out views of its input instead of
//! copies.

use crate::plan::{Op, Plan};

pub fn fuse(plan: &mut Plan) {
    for step in plan.forward.iter_mut() {
        match &mut step.op {
            Op::Coupling { fused, kind, .. } => *fused = kind.has_fused_kernel(),
            Op::FactorOut { view, .. } | Op::SplitOut { view, .. } => *view = true,
            _ => {}
        }
    }
    plan.inverse = super::derive_inverse(&plan.forward);
    plan.passes.push("fuse".into());
}
