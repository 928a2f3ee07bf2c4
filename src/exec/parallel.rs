//! The CPU kernels' threads: a batch split into contiguous example ranges,
//! one part each on candle's barrier pool (the calling thread runs one of
//! them), and partial sums added in a fixed order (so a result does not
//! depend on which thread finished first).
//!
//! Why candle's pool and not rayon's: its workers spin for a while after a
//! call before they sleep, and the caller works instead of waiting. A train
//! step makes thousands of short parallel calls, between candle's own
//! elementwise ops on the same pool; on rayon each call woke a sleeping
//! worker (and then the caller), and one CPU sat idle for a fifth of the
//! step (ARCHITECTURE.md, `parallel.rs`).

use std::cell::Cell;
use std::ops::Range;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

/// Splits `0..n` into at most `threads` contiguous ranges.
pub fn chunks(n: usize, threads: usize) -> Vec<std::ops::Range<usize>> {
    let t = threads.clamp(1, n.max(1));
    (0..t)
        .map(|i| i * n / t..(i + 1) * n / t)
        .filter(|r| !r.is_empty())
        .collect()
}

/// Threads of the CPU kernels: the caller and candle's pool workers
/// (`CANDLE_NUM_THREADS`, else `RAYON_NUM_THREADS`, else the cores).
pub fn threads() -> usize {
    candle_core::utils::barrier_pool().n_workers() + 1
}

thread_local! {
    /// Set while this thread runs a part: a nested call runs inline (the
    /// pool takes one call at a time).
    static IN_PART: Cell<bool> = const { Cell::new(false) };
}

/// `f` on each of `parts`, results in the order of the parts. The threads
/// of [`threads`] take the parts in turn as they come free (a worker that
/// is late to a call leaves its part to the caller); what a part computes
/// must not depend on which thread runs it.
pub fn map_parts<P: Send, R: Send>(parts: Vec<P>, f: impl Fn(P) -> R + Sync) -> Vec<R> {
    let pool = candle_core::utils::barrier_pool();
    if parts.len() <= 1 || IN_PART.get() || pool.n_workers() == 0 {
        return parts.into_iter().map(f).collect();
    }
    let inputs: Vec<Mutex<Option<P>>> = parts.into_iter().map(|p| Mutex::new(Some(p))).collect();
    let results: Vec<Mutex<Option<R>>> = inputs.iter().map(|_| Mutex::new(None)).collect();
    let next = AtomicUsize::new(0);
    // A panic must not unwind through the pool: it would poison the pool's
    // lock, and every candle op after it would fail. It is caught here and
    // resumed on the caller once every part has stopped.
    let panicked = Mutex::new(None);
    pool.execute(|_| {
        let outer = IN_PART.replace(true);
        loop {
            let i = next.fetch_add(1, Ordering::Relaxed);
            let Some(input) = inputs.get(i) else { break };
            let part = input.lock().expect("a part").take().expect("taken once");
            match catch_unwind(AssertUnwindSafe(|| f(part))) {
                Ok(r) => *results[i].lock().expect("a result") = Some(r),
                Err(payload) => *panicked.lock().expect("a payload") = Some(payload),
            }
        }
        IN_PART.set(outer);
    });
    if let Some(payload) = panicked.into_inner().expect("a payload") {
        resume_unwind(payload);
    }
    results
        .into_iter()
        .map(|r| r.into_inner().expect("a result").expect("every part ran"))
        .collect()
}

/// Runs `f(examples, their part of out)` on contiguous example ranges, one
/// a thread ([`map_parts`]); `out` holds `per` values per example. Results
/// come back in the order of the ranges, so sums of them do not depend on
/// the threads' timing. (Four ranges a thread, taken as threads come free,
/// measured 6-12% slower on realnvp_fashion's 28x28 maps: smaller chunks
/// of tiles, more partial sums.)
pub fn par<R: Send>(
    n: usize,
    out: &mut [f32],
    per: usize,
    f: impl Fn(Range<usize>, &mut [f32]) -> R + Sync,
) -> Vec<R> {
    let ranges = chunks(n, threads());
    let mut parts = Vec::with_capacity(ranges.len());
    let mut rest = out;
    for r in ranges {
        let (mine, tail) = rest.split_at_mut(r.len() * per);
        rest = tail;
        parts.push((r, mine));
    }
    map_parts(parts, |(r, mine)| f(r, mine))
}

/// Work (multiply-adds) below which a task is not worth a thread: a
/// hand-off to the pool costs microseconds (a wake-up after its spin).
pub const MIN_WORK_PER_THREAD: usize = 1 << 15;

/// Threads for `work` multiply-adds: [`threads`], fewer for small work.
pub fn threads_for(work: usize) -> usize {
    threads().min(work / MIN_WORK_PER_THREAD).max(1)
}

/// Runs `f(rows)` for at most `threads` contiguous ranges of `0..n`, results in order.
pub fn par_ranges<R: Send>(
    n: usize,
    threads: usize,
    f: impl Fn(Range<usize>) -> R + Sync,
) -> Vec<R> {
    map_parts(chunks(n, threads), f)
}

/// Per-channel sums over a batch, in f64, added from each thread's partials
/// in a fixed order.
pub fn add_parts(parts: Vec<Vec<f64>>, len: usize) -> Vec<f64> {
    let mut total = vec![0f64; len];
    for p in parts {
        for (t, v) in total.iter_mut().zip(p) {
            *t += v;
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_part_runs_once_and_results_keep_their_order() {
        let out: Vec<usize> = map_parts((0..7).collect(), |i| i * i);
        assert_eq!(out, vec![0, 1, 4, 9, 16, 25, 36]);
        let mut ys = vec![0f32; 10 * 3];
        let sums = par(10, &mut ys, 3, |r, mine| {
            for (k, v) in mine.iter_mut().enumerate() {
                *v = (r.start * 3 + k) as f32;
            }
            r.len()
        });
        assert_eq!(sums.iter().sum::<usize>(), 10);
        assert!(ys.iter().enumerate().all(|(i, &v)| v == i as f32));
    }

    #[test]
    fn a_nested_call_runs_inline() {
        let out = map_parts(vec![3usize, 4], |n| map_parts((0..n).collect(), |i| i + 1));
        assert_eq!(out, vec![vec![1, 2, 3], vec![1, 2, 3, 4]]);
    }

    #[test]
    fn a_panicking_part_reaches_the_caller_and_the_pool_goes_on() {
        for failing in [0, 1] {
            let caught = catch_unwind(|| {
                map_parts(vec![0, 1], |i| assert!(i != failing, "part {i} fails"));
            });
            assert!(caught.is_err());
            assert_eq!(map_parts(vec![1, 2], |i| i * 10), vec![10, 20]);
            // candle's own ops share the pool, and still run.
            let dev = candle_core::Device::Cpu;
            let t = candle_core::Tensor::ones(1 << 20, candle_core::DType::F32, &dev).unwrap();
            let sum = (&t + &t).unwrap().sum_all().unwrap();
            assert_eq!(sum.to_scalar::<f32>().unwrap(), (1 << 21) as f32);
        }
    }
}
