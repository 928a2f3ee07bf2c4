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
        .filter(|r| r.start < r.end)
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
    let next = AtomicUsize::new(0);
    run_parts(parts, |_| Some(next.fetch_add(1, Ordering::Relaxed)), f)
}

/// [`map_parts`] for parts that cost about the same, in an order where
/// neighbours share work (a batch's runs of examples): each thread starts
/// on its own contiguous run of them (as [`chunks`] deals them), and one
/// that has finished its run takes the last part of the run with the most
/// left. On a quiet machine that is the static split; when the host slows
/// one CPU for a while (another tenant on its core, which a 2-vCPU cloud
/// machine sees for seconds at a time), the other thread takes over the
/// slow one's tail instead of waiting for it at the barrier.
pub fn map_balanced<P: Send, R: Send>(parts: Vec<P>, f: impl Fn(P) -> R + Sync) -> Vec<R> {
    let runs = Mutex::new(chunks(parts.len(), threads()));
    run_parts(parts, |thread| take_balanced(&runs, thread), f)
}

/// The next part for `thread`: the front of its own run, else the back of
/// the longest run left; `None` when every part is taken.
fn take_balanced(runs: &Mutex<Vec<Range<usize>>>, thread: usize) -> Option<usize> {
    let mut runs = runs.lock().expect("runs");
    if let Some(own) = runs.get_mut(thread).filter(|r| r.start < r.end) {
        own.start += 1;
        return Some(own.start - 1);
    }
    let longest = runs.iter_mut().max_by_key(|r| r.len())?;
    if longest.start == longest.end {
        return None;
    }
    longest.end -= 1;
    Some(longest.end)
}

/// Runs `f` on `parts` on the pool; each thread (its index in the pool)
/// takes the index of its next part from `next` until that is `None` or
/// past the end.
fn run_parts<P: Send, R: Send>(
    parts: Vec<P>,
    next: impl Fn(usize) -> Option<usize> + Sync,
    f: impl Fn(P) -> R + Sync,
) -> Vec<R> {
    let pool = candle_core::utils::barrier_pool();
    if parts.len() <= 1 || IN_PART.get() || pool.n_workers() == 0 {
        return parts.into_iter().map(f).collect();
    }
    let inputs: Vec<Mutex<Option<P>>> = parts.into_iter().map(|p| Mutex::new(Some(p))).collect();
    let results: Vec<Mutex<Option<R>>> = inputs.iter().map(|_| Mutex::new(None)).collect();
    // A panic must not unwind through the pool: it would poison the pool's
    // lock, and every candle op after it would fail. It is caught here and
    // resumed on the caller once every part has stopped.
    let panicked = Mutex::new(None);
    // The pool numbers its workers 0.. and the caller after them.
    pool.execute(|thread| {
        let outer = IN_PART.replace(true);
        while let Some(i) = next(thread).filter(|&i| i < inputs.len()) {
            let part = inputs[i]
                .lock()
                .expect("a part")
                .take()
                .expect("taken once");
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

/// Values below which [`zeros`] clears on the caller alone.
const MIN_ZEROS_PER_THREAD: usize = 1 << 14;

/// `len` zeros, cleared by the threads: a fused op's output, which its
/// parts then write over. Cleared on the caller alone (`vec![0; len]`),
/// the outputs were 0.4% of a 2-thread evaluation, all of it serial.
pub fn zeros<T: Copy + Default + Send + Sync>(len: usize) -> Vec<T> {
    let threads = threads().min(len / MIN_ZEROS_PER_THREAD).max(1);
    if threads == 1 {
        return vec![T::default(); len];
    }
    let mut v = Vec::with_capacity(len);
    let parts = v.spare_capacity_mut()[..len]
        .chunks_mut(len.div_ceil(threads))
        .collect();
    map_parts(parts, |part| {
        part.fill(std::mem::MaybeUninit::new(T::default()))
    });
    // SAFETY: the parts cover the first `len` values, and each part wrote
    // all of its values (a panic in one would have unwound out of
    // `map_parts` before this point).
    unsafe { v.set_len(len) };
    v
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
    fn a_thread_takes_its_own_run_then_the_back_of_the_longest() {
        let runs = Mutex::new(vec![0..3, 3..8]);
        let order: Vec<_> = std::iter::from_fn(|| take_balanced(&runs, 0)).collect();
        assert_eq!(order, vec![0, 1, 2, 7, 6, 5, 4, 3]);
        let runs = Mutex::new(vec![0..3, 3..8]);
        let takes = [1, 1, 0, 2, 0, 0, 0, 1, 0];
        let got: Vec<_> = takes.iter().map(|&t| take_balanced(&runs, t)).collect();
        // Thread 2 has no run of its own: it steals from the longest.
        let want = [3, 4, 0, 7, 1, 2, 6, 5].map(Some);
        assert_eq!(got[..8], want);
        assert_eq!(got[8], None);
    }

    #[test]
    fn balanced_parts_run_once_in_order_and_a_slow_part_holds_up_no_other() {
        let out = map_balanced((0..37).collect(), |i: usize| i * i);
        assert_eq!(out, (0..37).map(|i| i * i).collect::<Vec<_>>());
        // Part 0 holds its thread for long. Whichever thread runs it, no
        // part of its run waits for it: another thread takes them first.
        let ran = map_balanced((0..8).collect(), |i| {
            let at = (std::thread::current().id(), std::time::Instant::now());
            if i == 0 {
                std::thread::sleep(std::time::Duration::from_millis(300));
            }
            at
        });
        let waited = ran[1..4]
            .iter()
            .filter(|&&(thread, start)| thread == ran[0].0 && start > ran[0].1)
            .count();
        assert_eq!(waited, if threads() > 1 { 0 } else { 3 });
    }

    #[test]
    fn zeros_are_zeros_at_every_size() {
        for len in [
            0,
            1,
            MIN_ZEROS_PER_THREAD * 2 - 1,
            MIN_ZEROS_PER_THREAD * 5 + 3,
        ] {
            // Fill the allocator's free lists with non-zero values first.
            drop(vec![7f32; len]);
            let z = zeros::<f32>(len);
            assert_eq!(z.len(), len);
            assert!(z.iter().all(|&v| v == 0.0));
        }
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
