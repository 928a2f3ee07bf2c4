//! The CPU kernels' threads: a batch split into contiguous example ranges,
//! one task each on the rayon pool, and partial sums added in a fixed order
//! (so a result does not depend on which thread finished first).

use std::ops::Range;

use rayon::prelude::*;

/// Splits `0..n` into at most `threads` contiguous ranges.
pub fn chunks(n: usize, threads: usize) -> Vec<std::ops::Range<usize>> {
    let t = threads.clamp(1, n.max(1));
    (0..t)
        .map(|i| i * n / t..(i + 1) * n / t)
        .filter(|r| !r.is_empty())
        .collect()
}

/// Threads of the CPU kernels: candle's count, read once (without
/// `RAYON_NUM_THREADS` candle reads /proc/cpuinfo on every call).
pub fn threads() -> usize {
    static THREADS: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *THREADS.get_or_init(candle_core::utils::get_num_threads)
}

/// Runs `f(examples, their part of out)` on contiguous example ranges, one
/// task each on the rayon pool; `out` holds `per` values per example.
/// Results come back in the order of the ranges.
pub fn par<R: Send>(
    n: usize,
    out: &mut [f32],
    per: usize,
    f: impl Fn(Range<usize>, &mut [f32]) -> R + Sync,
) -> Vec<R> {
    let ranges = chunks(n, threads());
    let mut parts = Vec::with_capacity(ranges.len());
    let mut rest = out;
    for r in &ranges {
        let (mine, tail) = rest.split_at_mut(r.len() * per);
        rest = tail;
        parts.push(mine);
    }
    if ranges.len() == 1 {
        // One range runs here: rayon would hand it to a pool thread and wait.
        return vec![f(ranges[0].clone(), parts.pop().expect("one part"))];
    }
    ranges
        .into_par_iter()
        .zip(parts.into_par_iter())
        .map(|(r, mine)| f(r, mine))
        .collect()
}

/// Work (multiply-adds) below which a task is not worth a thread: a
/// hand-off to the pool costs microseconds, a sleep and a wake-up.
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
    let ranges = chunks(n, threads);
    if ranges.len() == 1 {
        return vec![f(ranges[0].clone())];
    }
    ranges.into_par_iter().map(&f).collect()
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
