//! A stack deep enough for a deep flow. candle walks an autograd graph
//! recursively: `backward`'s topological sort, and the drop of a tensor whose
//! graph is a chain through every layer (the latents and the log-det of a
//! forward pass with parameters, in evaluation too). Each plan step puts a few
//! ops on that chain; measured on vector flows of mlp couplings and image
//! flows of resnet couplings, the drop needs 350 to 450 bytes of stack per
//! step: 20,000 couplings about 7 MiB (a test thread has 2, the main thread
//! 8), 100,000 about 35 MiB. A training step may also chain every parameter
//! tensor (a gradient norm or an L2 term summed one tensor at a time, some
//! 250 bytes a node). So whatever runs a flow from the library (`check
//! --numeric`, the tests) runs on a thread whose stack grows with the plan;
//! the CLI runs every command on a 1 GiB stack (`cli::STACK_BYTES`).

use crate::plan::Plan;

/// Stack per plan step: four times what was measured.
pub const STACK_PER_STEP: usize = 2 << 10;
/// Stack per parameter tensor: four times a node of a chain through them.
pub const STACK_PER_PARAM: usize = 1 << 10;
/// Stack for everything else (Rust's main thread has 8 MiB).
pub const STACK_BASE: usize = 16 << 20;

/// The stack a thread running (or training) `plan` should have.
pub fn stack_size(plan: &Plan) -> usize {
    let steps = plan.forward.len().saturating_mul(STACK_PER_STEP);
    let params = plan.params.len().saturating_mul(STACK_PER_PARAM);
    STACK_BASE.saturating_add(steps).saturating_add(params)
}

/// Runs `f` on a thread with a stack for `plan` ([`stack_size`]) and returns
/// what it returns (a panic in `f` resumes here). Only address space is
/// reserved: pages are used as the stack reaches them. If the thread cannot
/// be made, `f` runs here.
pub fn with_stack_for<T: Send>(plan: &Plan, f: impl FnOnce() -> T + Send) -> T {
    let job = std::sync::Mutex::new(Some(f));
    // Borrows `job` only, so it is `Copy`: still here if the spawn fails.
    let run = || {
        let f = job.lock().unwrap().take().expect("the job runs once");
        f()
    };
    std::thread::scope(|scope| {
        let thread = std::thread::Builder::new()
            .name("flowc-deep-stack".into())
            .stack_size(stack_size(plan))
            .spawn_scoped(scope, run);
        match thread {
            Ok(handle) => handle
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic)),
            Err(_) => run(),
        }
    })
}
