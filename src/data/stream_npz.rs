//! A streamed split of `.npz` batch files (downsampled ImageNet): the index
//! is each file's image count (from `data.npy`'s header) and labels; images
//! are read a whole member at a time, because a deflated zip member can only
//! be inflated from its start, so that reading one image in the middle
//! costs as much as reading all before it. At most [`MEMBER_CACHE`] decoded
//! members are held, counting the one being decoded: the one batches read
//! now and the next in the batches the loader looks ahead to
//! ([`super::prefetch::LOOKAHEAD`]), decoded on a thread of its own while
//! the current one is read, so that the step does not wait for it. The training order of these sets
//! reads one file at a time ([`super::Order::Blocks`]), so each member is
//! decoded once an epoch.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use super::imagenet::read_npz_batch;
use super::split::{Fetched, Source};
use super::{DataError, Examples};

/// How many decoded members are held at most.
pub const MEMBER_CACHE: usize = 2;

/// One `.npz` file of the split.
#[derive(Debug)]
struct Member {
    path: PathBuf,
    n: usize,
}

/// The decoded members held, oldest first, the one being decoded, and
/// counters for tests. At most one member is decoded at a time, and
/// `slots.len()` plus the one being decoded never passes [`MEMBER_CACHE`].
#[derive(Debug, Default)]
struct Cache {
    slots: VecDeque<(usize, Arc<Vec<u8>>)>,
    loading: Option<usize>,
    loads: usize,
    ahead: usize,
    max_resident: usize,
}

impl Cache {
    fn find(&self, m: usize) -> Option<Arc<Vec<u8>>> {
        self.slots
            .iter()
            .find(|(k, _)| *k == m)
            .map(|(_, d)| d.clone())
    }

    /// Makes room for one more member and marks `m` as being decoded;
    /// false when there is no room: every member held is in use (a batch
    /// holds it), which only a hint meets.
    fn start(&mut self, m: usize) -> bool {
        while self.slots.len() + 1 > MEMBER_CACHE {
            // The oldest member no batch holds (the cache's is the only
            // reference), so memory is what the cache counts.
            let Some(k) = self
                .slots
                .iter()
                .position(|(_, d)| Arc::strong_count(d) == 1)
            else {
                return false;
            };
            self.slots.remove(k);
        }
        self.loading = Some(m);
        self.loads += 1;
        self.max_resident = self.max_resident.max(self.slots.len() + 1);
        true
    }
}

/// Counters of a member cache.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CacheStats {
    /// Members decoded so far (ahead of need or not).
    pub loads: usize,
    /// Of those, the ones decoded ahead, on their own thread.
    pub ahead: usize,
    /// The most members ever held at once, the one being decoded counted.
    pub max_resident: usize,
}

/// The cache and the signal that a decode finished.
#[derive(Debug, Default)]
struct Shared {
    cache: Mutex<Cache>,
    finished: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Cache> {
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Ends the decode of `m`: keeps it if it decoded, wakes the waiters.
    fn finish(&self, m: usize, data: Option<Arc<Vec<u8>>>) {
        let mut c = self.lock();
        c.loading = None;
        if let Some(d) = data {
            c.slots.push_back((m, d));
        }
        self.finished.notify_all();
    }
}

/// `.npz` batch files read a member at a time; the member after the one
/// read now, in the loader's look-ahead ([`Source::ahead`]), is decoded on
/// its own thread meanwhile, so the step does not wait for it.
#[derive(Debug)]
pub(crate) struct NpzSource {
    side: usize,
    members: Arc<Vec<Member>>,
    /// `starts[m]`: the index of member `m`'s first image; one more entry, the total.
    starts: Vec<usize>,
    shared: Arc<Shared>,
    /// The members the loader's look-ahead will read, in order (repeats in
    /// a row collapsed).
    coming: Mutex<VecDeque<usize>>,
}

/// Reads member `m` and checks it is what the index says.
fn read_member(members: &[Member], m: usize, side: usize) -> Result<Vec<u8>, DataError> {
    let member = &members[m];
    let (data, labels) = read_npz_batch(&member.path, side)?;
    if labels.len() != member.n {
        return Err(DataError::Archive {
            path: member.path.clone(),
            reason: format!(
                "holds {} images now, {} when the data set was opened (it changed)",
                labels.len(),
                member.n
            ),
        });
    }
    Ok(data)
}

impl NpzSource {
    /// A source over `files` (path, number of images), in that order.
    pub(crate) fn new(files: Vec<(PathBuf, usize)>, side: usize) -> NpzSource {
        let mut starts = vec![0];
        for (_, n) in &files {
            starts.push(starts.last().copied().unwrap_or(0) + n);
        }
        let members = files
            .into_iter()
            .map(|(path, n)| Member { path, n })
            .collect();
        NpzSource {
            side,
            members: Arc::new(members),
            starts,
            shared: Arc::default(),
            coming: Mutex::default(),
        }
    }

    /// The member holding image `i` (below `len`).
    fn member_of(&self, i: usize) -> usize {
        self.starts.partition_point(|&s| s <= i) - 1
    }

    /// Member `m`'s images: from the cache, after the decode of it under
    /// way, or decoded here.
    fn member(&self, m: usize) -> Result<Arc<Vec<u8>>, DataError> {
        let mut c = self.shared.lock();
        loop {
            if let Some(d) = c.find(m) {
                return Ok(d);
            }
            if c.loading.is_none() {
                break;
            }
            c = self
                .shared
                .finished
                .wait(c)
                .unwrap_or_else(|p| p.into_inner());
        }
        if !c.start(m) {
            // Unreachable from `fetch`, which holds no member when it
            // asks for one; said rather than assumed.
            return Err(DataError::LoaderStopped {
                reason: "no room to decode an .npz member: every one held is in use".into(),
            });
        }
        drop(c);
        let got = read_member(&self.members, m, self.side).map(Arc::new);
        self.shared.finish(m, got.as_ref().ok().cloned());
        got
    }

    /// Forgets the members hinted before `m` (read now); the one hinted after it.
    fn passed(&self, m: usize) -> Option<usize> {
        let mut coming = self.coming.lock().unwrap_or_else(|p| p.into_inner());
        while coming.front().is_some_and(|&k| k != m) {
            coming.pop_front();
        }
        coming.get(1).copied()
    }

    /// Starts decoding member `m` on its own thread, if nothing is being
    /// decoded, it is not held, and there is room.
    fn load_ahead(&self, m: usize) {
        let mut c = self.shared.lock();
        if c.loading.is_some() || c.find(m).is_some() || !c.start(m) {
            return;
        }
        c.ahead += 1;
        drop(c);
        let (shared, members, side) = (self.shared.clone(), self.members.clone(), self.side);
        let spawned = std::thread::Builder::new()
            .name("flowc-npz".into())
            .spawn(move || {
                // A failure is left to the fetch that needs the member,
                // which decodes it again and reports it.
                let got = std::panic::catch_unwind(|| read_member(&members, m, side));
                shared.finish(m, got.ok().and_then(Result::ok).map(Arc::new));
            });
        if spawned.is_err() {
            self.shared.finish(m, None);
        }
    }
}

impl Source for NpzSource {
    fn len(&self) -> usize {
        self.starts.last().copied().unwrap_or(0)
    }

    fn example_shape(&self) -> [usize; 3] {
        [3, self.side, self.side]
    }

    fn ahead(&self, indices: &[usize]) {
        let mut coming = self.coming.lock().unwrap_or_else(|p| p.into_inner());
        for &i in indices {
            let m = self.member_of(i);
            if coming.back() != Some(&m) {
                coming.push_back(m);
            }
        }
    }

    fn cache_stats(&self) -> Option<CacheStats> {
        let c = self.shared.lock();
        Some(CacheStats {
            loads: c.loads,
            ahead: c.ahead,
            max_resident: c.max_resident,
        })
    }

    fn fetch(&self, indices: &[usize]) -> Result<Fetched, DataError> {
        let row = 3 * self.side * self.side;
        let mut data = Vec::with_capacity(indices.len() * row);
        // The member a run of indices reads, held across the run.
        let mut held: Option<(usize, Arc<Vec<u8>>)> = None;
        for &i in indices {
            let m = self.member_of(i);
            if held.as_ref().is_none_or(|(k, _)| *k != m) {
                // Let go of the last member before one more is decoded.
                drop(held.take());
                held = Some((m, self.member(m)?));
            }
            let (_, bytes) = held.as_ref().expect("set above");
            let at = (i - self.starts[m]) * row;
            data.extend_from_slice(&bytes[at..at + row]);
        }
        if let Some((m, _)) = &held {
            // The member after this one in the loader's look-ahead, decoded
            // now while this one is still being read.
            if let Some(next) = self.passed(*m) {
                self.load_ahead(next);
            }
        }
        Ok(Fetched {
            examples: Examples::Images {
                data,
                n: indices.len(),
                c: 3,
                h: self.side,
                w: self.side,
            },
            indices: indices.to_vec(),
            skipped: Vec::new(),
        })
    }
}
