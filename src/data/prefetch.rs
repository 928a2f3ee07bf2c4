//! Batches decoded ahead of the step: one loader thread walks the plan (the
//! index lists of the coming batches, in order), has each batch decoded by
//! its split's source (a folder's files on the source's own worker pool),
//! and hands it over through a channel. The thread waits before decoding
//! while `depth` decoded batches wait (the [`Counters`] gate), so memory is
//! bounded by `depth + 1` batches (those waiting and the one the consumer
//! holds) plus the source's own cache.
//!
//! A failure (a file with `--strict-images`, an unreadable archive) is sent
//! in place of its batch and ends the thread; a panic in a decoder is caught
//! and sent the same way, so the consumer gets an error, never a hang. When
//! the consumer drops its [`Batches`], the gate closes and the thread ends
//! at its next wait or send; the drop waits for it (at most the batch being
//! decoded).

use std::sync::mpsc::{channel, Receiver};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

use super::split::{Fetched, Streamed};
use super::{DataError, Examples};

/// The index lists of the batches to read, in order.
pub type Plan = Box<dyn Iterator<Item = Vec<usize>> + Send>;

/// How many decoded batches may wait for the step by default.
pub const PREFETCH_DEPTH: usize = 3;

/// The gate between a loader thread and its consumer: how many decoded
/// batches wait. The thread decodes a batch only while fewer than `depth`
/// wait, and only the thread counts up, so the count never passes `depth`
/// (the channel itself is unbounded; this is its bound).
#[derive(Debug, Default)]
pub struct Counters {
    gate: Mutex<Gate>,
    turn: Condvar,
}

#[derive(Debug, Default)]
struct Gate {
    ready: usize,
    max_ready: usize,
    decoded: usize,
    /// The consumer is gone.
    closed: bool,
    /// The plan ended and every batch was sent.
    done: bool,
}

impl Counters {
    fn gate(&self) -> std::sync::MutexGuard<'_, Gate> {
        self.gate.lock().unwrap_or_else(|p| p.into_inner())
    }
    /// Decoded batches waiting now.
    pub fn ready(&self) -> usize {
        self.gate().ready
    }
    /// The most decoded batches that ever waited at once.
    pub fn max_ready(&self) -> usize {
        self.gate().max_ready
    }
    /// Batches decoded so far.
    pub fn decoded(&self) -> usize {
        self.gate().decoded
    }
    /// Blocks the thread until fewer than `depth` batches wait; false once
    /// the consumer is gone.
    fn wait_for_room(&self, depth: usize) -> bool {
        let mut g = self.gate();
        while g.ready >= depth && !g.closed {
            g = self.turn.wait(g).unwrap_or_else(|p| p.into_inner());
        }
        !g.closed
    }
    fn decoded_one(&self) {
        let mut g = self.gate();
        g.decoded += 1;
        g.ready += 1;
        g.max_ready = g.max_ready.max(g.ready);
    }
    fn taken_one(&self) {
        let mut g = self.gate();
        g.ready = g.ready.saturating_sub(1);
        self.turn.notify_all();
    }
    fn close(&self) {
        self.gate().closed = true;
        self.turn.notify_all();
    }
}

enum Msg {
    Batch(Fetched),
    Failed(DataError),
}

/// The batches of a plan, in order: each a [`Fetched`] or the error that
/// stopped the loader (after which the iterator ends).
pub enum Batches<'a> {
    /// From examples in memory, taken as asked for.
    Inline {
        /// The examples.
        ex: &'a Examples,
        /// What is left of the plan.
        plan: Plan,
    },
    /// From a loader thread.
    Prefetched(Prefetch),
}

impl<'a> Batches<'a> {
    pub(crate) fn inline(ex: &'a Examples, plan: Plan) -> Batches<'a> {
        Batches::Inline { ex, plan }
    }

    pub(crate) fn prefetched(split: Arc<Streamed>, plan: Plan, depth: usize) -> Batches<'a> {
        Batches::Prefetched(Prefetch::start(split, plan, depth))
    }

    /// The loader thread's counters (none for examples in memory).
    pub fn counters(&self) -> Option<&Counters> {
        match self {
            Batches::Inline { .. } => None,
            Batches::Prefetched(p) => Some(&p.counters),
        }
    }
}

impl Iterator for Batches<'_> {
    type Item = Result<Fetched, DataError>;

    fn next(&mut self) -> Option<Self::Item> {
        match self {
            Batches::Inline { ex, plan } => {
                let idx = plan.next()?;
                if let Err(e) = super::split::check_indices(&idx, ex.len()) {
                    return Some(Err(e));
                }
                Some(Ok(Fetched {
                    examples: ex.select(&idx),
                    indices: idx,
                    skipped: Vec::new(),
                }))
            }
            Batches::Prefetched(p) => p.next(),
        }
    }
}

/// A loader thread and the receiving end of its channel.
pub struct Prefetch {
    rx: Option<Receiver<Msg>>,
    thread: Option<JoinHandle<()>>,
    counters: Arc<Counters>,
    finished: bool,
}

impl Prefetch {
    /// Starts the loader thread on `plan`; at most `depth` (at least 1)
    /// decoded batches wait for the consumer.
    pub fn start(split: Arc<Streamed>, plan: Plan, depth: usize) -> Prefetch {
        let depth = depth.max(1);
        let mut plan = Lookahead::new(plan, LOOKAHEAD);
        let (tx, rx) = channel::<Msg>();
        let counters = Arc::new(Counters::default());
        let c = counters.clone();
        let thread = std::thread::Builder::new()
            .name("flowc-loader".to_string())
            .spawn(move || loop {
                if !c.wait_for_room(depth) {
                    return;
                }
                let Some(idx) = plan.next(&split) else {
                    c.gate().done = true;
                    return;
                };
                let got = catch(|| split.fetch(&idx));
                let msg = match got {
                    Ok(f) => {
                        c.decoded_one();
                        Msg::Batch(f)
                    }
                    Err(e) => Msg::Failed(e),
                };
                let failed = matches!(msg, Msg::Failed(_));
                // A closed channel: the consumer is gone, nothing to do.
                if tx.send(msg).is_err() || failed {
                    return;
                }
            });
        match thread {
            Ok(t) => Prefetch {
                rx: Some(rx),
                thread: Some(t),
                counters,
                finished: false,
            },
            Err(e) => {
                // No thread: the first `next` says why.
                let (tx, rx) = channel();
                let _ = tx.send(Msg::Failed(DataError::LoaderStopped {
                    reason: format!("cannot start the loader thread: {e}"),
                }));
                Prefetch {
                    rx: Some(rx),
                    thread: None,
                    counters,
                    finished: false,
                }
            }
        }
    }

    fn next(&mut self) -> Option<Result<Fetched, DataError>> {
        if self.finished {
            return None;
        }
        let rx = self.rx.as_ref()?;
        match rx.recv() {
            Ok(Msg::Batch(f)) => {
                self.counters.taken_one();
                Some(Ok(f))
            }
            Ok(Msg::Failed(e)) => {
                self.finished = true;
                Some(Err(e))
            }
            Err(_) => {
                self.finished = true;
                if self.counters.gate().done {
                    None
                } else {
                    Some(Err(DataError::LoaderStopped {
                        reason: "its thread ended without a result".to_string(),
                    }))
                }
            }
        }
    }
}

impl Drop for Prefetch {
    fn drop(&mut self) {
        // Closing the gate and the channel ends the thread at its next
        // wait or send.
        self.counters.close();
        drop(self.rx.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// How many batches past the one being decoded the loader tells its source
/// about ([`super::Source::ahead`]), so that a source that reads in large
/// units (an `.npz` member) starts on the next unit before a batch needs it.
pub const LOOKAHEAD: usize = 32;

/// A plan read `k` batches ahead of the one it hands out.
struct Lookahead {
    plan: Plan,
    buffer: std::collections::VecDeque<Vec<usize>>,
    k: usize,
}

impl Lookahead {
    fn new(plan: Plan, k: usize) -> Lookahead {
        Lookahead {
            plan,
            buffer: std::collections::VecDeque::with_capacity(k + 1),
            k,
        }
    }

    /// The next batch; each batch entering the window is shown to `split`.
    fn next(&mut self, split: &Streamed) -> Option<Vec<usize>> {
        while self.buffer.len() <= self.k {
            let Some(idx) = self.plan.next() else { break };
            split.ahead(&idx);
            self.buffer.push_back(idx);
        }
        self.buffer.pop_front()
    }
}

/// Runs `f`, turning a panic (a decoder's, on a file it chokes on) into an error.
pub(crate) fn catch<T>(f: impl FnOnce() -> Result<T, DataError>) -> Result<T, DataError> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or_else(|p| {
        Err(DataError::LoaderStopped {
            reason: format!("a decoder panicked: {}", panic_text(&p)),
        })
    })
}

/// The message of a caught panic.
pub(crate) fn panic_text(p: &Box<dyn std::any::Any + Send>) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".to_string())
}
