//! Reused f32 buffers for the CPU kernels: the padded planes, results and
//! activations that every convolution of every step needs again in the
//! same sizes.
//!
//! Why: a fresh buffer of more than 128 KiB comes from `mmap`, and every
//! page of it is faulted in and cleared by the kernel on first touch, with
//! both threads queueing on the process's page-table lock. A training step
//! of a Real NVP asks for hundreds of them. Buffers here go back to a pool
//! when dropped and are handed out again for the same key.
//!
//! A key names a *use*, not just a length: a padded buffer only ever has
//! its interior written, so its borders stay zero from its first handing
//! out, as long as it is only reused for the same grid and plane count.
//!
//! A buffer starts on a 64-byte boundary (a cache line, one AVX-512
//! vector). The kernels load and store whole vectors at multiples of 16
//! values from a buffer's start; from the allocator's 16-byte boundaries
//! every one of them could straddle two lines, and which did changed with
//! any change of the allocation pattern: realnvp_fashion's Winograd input
//! transform took 47-65% more time in one build than in the one before it,
//! realnvp_small's 18% less, the code of both the same.

use std::cell::RefCell;
use std::collections::HashMap;
use std::ops::{Deref, DerefMut};

/// What a buffer is for, and its geometry.
pub type Key = (&'static str, [usize; 3]);

/// Buffers kept at most per thread, in f32 values (1 GiB): more are freed on drop.
const KEEP: usize = 1 << 28;

#[derive(Default)]
struct Pool {
    free: HashMap<Key, Vec<Vec<f32>>>,
    kept: usize,
}

thread_local! {
    /// One pool a thread: the kernels' threads take and drop buffers
    /// thousands of times a step, and one pool behind a lock had them
    /// queueing on it.
    static POOL: RefCell<Pool> = RefCell::new(Pool::default());
}

/// A buffer of the pool; goes back to it when dropped.
pub struct Buf {
    key: Key,
    /// [`SLACK`] values more than asked for: the buffer is `data[start..][..len]`.
    data: Vec<f32>,
    start: usize,
    len: usize,
}

/// Values of slack for a 64-byte boundary.
const SLACK: usize = 64 / std::mem::size_of::<f32>() - 1;

/// A buffer of `len` values for `key`. A new one is zeroed; a reused one
/// holds what its last user left, which for one key is zero wherever that
/// use never writes (an `any` buffer: NaN under [`poison`]).
pub fn take(key: Key, len: usize) -> Buf {
    let reused = POOL
        .try_with(|p| {
            let mut p = p.borrow_mut();
            let v = p.free.get_mut(&key)?.pop()?;
            p.kept -= v.len();
            Some(v)
        })
        .ok()
        .flatten()
        .filter(|v| v.len() == len + SLACK);
    let data = match reused {
        Some(mut v) if key.0 == "any" && poison() => {
            v.fill(f32::NAN);
            v
        }
        Some(v) => v,
        None => vec![0f32; len + SLACK],
    };
    // The same allocation comes back for a key, and with it the same start.
    let start = data.as_ptr().align_offset(64);
    Buf {
        key,
        data,
        start,
        len,
    }
}

/// `FLOWC_POISON_SCRATCH` set: a reused `any` buffer starts as NaN rather
/// than as its last user left it, so a kernel that reads a value it never
/// wrote shows (tests/train.rs runs training with it and without).
fn poison() -> bool {
    static P: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *P.get_or_init(|| std::env::var_os("FLOWC_POISON_SCRATCH").is_some())
}

/// A buffer whose every value the caller overwrites.
pub fn any(len: usize) -> Buf {
    take(("any", [len, 0, 0]), len)
}

impl Drop for Buf {
    fn drop(&mut self) {
        let data = std::mem::take(&mut self.data);
        // A thread that is exiting has no pool left: the buffer is freed.
        let _ = POOL.try_with(|p| {
            let mut p = p.borrow_mut();
            if p.kept + data.len() <= KEEP {
                p.kept += data.len();
                p.free.entry(self.key).or_default().push(data);
            }
        });
    }
}

impl Deref for Buf {
    type Target = [f32];
    fn deref(&self) -> &[f32] {
        &self.data[self.start..][..self.len]
    }
}

impl DerefMut for Buf {
    fn deref_mut(&mut self) -> &mut [f32] {
        &mut self.data[self.start..][..self.len]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reuses_by_key_and_keeps_what_was_left() {
        let key = ("test-pool", [7, 1, 2]);
        let mut a = take(key, 100);
        assert!(a.iter().all(|&v| v == 0.0));
        a[3] = 5.0;
        let ptr = a.as_ptr();
        drop(a);
        let b = take(key, 100);
        assert_eq!(b.as_ptr(), ptr, "the same buffer comes back");
        assert_eq!(b[3], 5.0);
        assert_eq!(b.len(), 100);
        assert_eq!(b.as_ptr() as usize % 64, 0, "on a cache line's start");
        // Another key never gets it.
        let c = take(("test-pool", [8, 1, 2]), 100);
        assert!(c.iter().all(|&v| v == 0.0));
    }
}
