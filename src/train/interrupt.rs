//! Ctrl-C and SIGTERM during `flowc train`. The first one only raises a flag:
//! the loop finishes its step, saves a checkpoint and returns, and the CLI
//! exits 130 (SIGINT) or 143 (SIGTERM). A second one exits at once with that
//! status; the last checkpoint stays whole, as it is only ever replaced by
//! a rename.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

pub use signal_hook::consts::{SIGINT, SIGTERM};

/// Whether, and by which signal, the run was asked to stop.
#[derive(Clone, Debug, Default)]
pub struct Interrupt {
    raised: Arc<AtomicBool>,
    signal: Arc<AtomicUsize>,
}

impl Interrupt {
    /// A flag nothing raises (library use, tests).
    pub fn never() -> Interrupt {
        Interrupt::default()
    }

    /// Installs the handlers for SIGINT and SIGTERM.
    pub fn install() -> std::io::Result<Interrupt> {
        let i = Interrupt::default();
        for sig in [SIGINT, SIGTERM] {
            // The shutdown goes first: it fires only once the flag is up,
            // that is on the second signal.
            signal_hook::flag::register_conditional_shutdown(
                sig,
                exit_status(sig) as i32,
                Arc::clone(&i.raised),
            )?;
            signal_hook::flag::register_usize(sig, Arc::clone(&i.signal), sig as usize)?;
            signal_hook::flag::register(sig, Arc::clone(&i.raised))?;
        }
        Ok(i)
    }

    /// Raises the flag as the handler of `signal` would (for callers that
    /// stop a run themselves, and tests).
    pub fn raise(&self, signal: i32) {
        self.signal.store(signal as usize, Ordering::SeqCst);
        self.raised.store(true, Ordering::SeqCst);
    }

    /// The signal that asked the run to stop, if one did.
    pub fn raised(&self) -> Option<i32> {
        self.raised
            .load(Ordering::SeqCst)
            .then(|| self.signal.load(Ordering::SeqCst) as i32)
    }
}

/// The shell's convention: 128 + the signal's number.
pub fn exit_status(signal: i32) -> u8 {
    (128 + signal).clamp(0, 255) as u8
}

/// The signal's name, for messages.
pub fn name(signal: i32) -> &'static str {
    match signal {
        SIGINT => "SIGINT",
        SIGTERM => "SIGTERM",
        _ => "a signal",
    }
}
