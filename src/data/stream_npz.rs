//! A streamed split of `.npz` batch files (downsampled ImageNet): the index
//! is each file's image count (from `data.npy`'s header) and labels; images
//! are read a whole member at a time, because a deflated zip member can only
//! be inflated from its start, so that reading one image in the middle
//! costs as much as reading all before it. At most [`MEMBER_CACHE`] decoded
//! members are held (the one a batch reads and the next, for a batch that
//! straddles two). The training order of these sets reads one file at a
//! time ([`super::Order::Blocks`]), so each member is decoded once an epoch.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

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

/// The decoded members held, oldest first, with counters for tests.
#[derive(Debug, Default)]
struct Cache {
    slots: VecDeque<(usize, Arc<Vec<u8>>)>,
    loads: usize,
    max_resident: usize,
}

/// Counters of a member cache.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CacheStats {
    /// Members decoded so far.
    pub loads: usize,
    /// The most members ever held at once.
    pub max_resident: usize,
}

/// `.npz` batch files read a member at a time.
#[derive(Debug)]
pub(crate) struct NpzSource {
    side: usize,
    members: Vec<Member>,
    /// `starts[m]`: the index of member `m`'s first image; one more entry, the total.
    starts: Vec<usize>,
    cache: Mutex<Cache>,
}

impl NpzSource {
    /// A source over `files` (path, number of images), in that order.
    pub(crate) fn new(files: Vec<(PathBuf, usize)>, side: usize) -> NpzSource {
        let mut starts = vec![0];
        for (_, n) in &files {
            starts.push(starts.last().copied().unwrap_or(0) + n);
        }
        NpzSource {
            side,
            members: files
                .into_iter()
                .map(|(path, n)| Member { path, n })
                .collect(),
            starts,
            cache: Mutex::default(),
        }
    }

    /// The member holding image `i`.
    fn member_of(&self, i: usize) -> usize {
        self.starts.partition_point(|&s| s <= i) - 1
    }

    /// Member `m`'s images, from the cache or decoded (evicting the oldest first,
    /// so that no more than [`MEMBER_CACHE`] are ever held).
    fn member(&self, m: usize) -> Result<Arc<Vec<u8>>, DataError> {
        let mut c = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((_, d)) = c.slots.iter().find(|(k, _)| *k == m) {
            return Ok(d.clone());
        }
        while c.slots.len() >= MEMBER_CACHE {
            c.slots.pop_front();
        }
        let member = &self.members[m];
        let (data, labels) = read_npz_batch(&member.path, self.side)?;
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
        let data = Arc::new(data);
        c.slots.push_back((m, data.clone()));
        c.loads += 1;
        c.max_resident = c.max_resident.max(c.slots.len());
        Ok(data)
    }
}

impl Source for NpzSource {
    fn len(&self) -> usize {
        self.starts.last().copied().unwrap_or(0)
    }

    fn example_shape(&self) -> [usize; 3] {
        [3, self.side, self.side]
    }

    fn cache_stats(&self) -> Option<CacheStats> {
        let c = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        Some(CacheStats {
            loads: c.loads,
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
        Ok(Fetched {
            examples: Examples::Images {
                data,
                n: indices.len(),
                c: 3,
                h: self.side,
                w: self.side,
            },
            skipped: Vec::new(),
        })
    }
}
