//! A split of a data set as training and evaluation read it: its examples
//! in memory, or a [`Source`] that decodes the examples of a batch when the
//! batch is asked for (a streamed split; [`super::prefetch`] asks ahead of
//! the step, on its own thread).

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use super::prefetch::{Batches, Plan};
use super::stream_npz::CacheStats;
use super::{DataError, Examples};

/// A file that did not decode while streaming, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Skip {
    /// The example's index in its split.
    pub index: usize,
    /// Its file.
    pub path: PathBuf,
    /// What the decoder said.
    pub reason: String,
}

/// The examples of a batch in the order asked for, less those whose files
/// did not decode (listed in `skipped`).
#[derive(Clone, Debug, PartialEq)]
pub struct Fetched {
    /// The examples that decoded.
    pub examples: Examples,
    /// Their indices in the split, in order (for their labels).
    pub indices: Vec<usize>,
    /// The ones that did not.
    pub skipped: Vec<Skip>,
}

/// Where a streamed split's examples come from: files, or the members of
/// `.npz` archives. Implementations decode only what `fetch` asks for and
/// keep at most a bounded cache.
pub trait Source: Send + Sync + std::fmt::Debug {
    /// The number of examples (files that do not decode included: that is
    /// known only when they are read).
    fn len(&self) -> usize;
    /// Whether there are none.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// One example's `[c, h, w]`.
    fn example_shape(&self) -> [usize; 3];
    /// The examples at `indices` (each below `len`), decoded.
    fn fetch(&self, indices: &[usize]) -> Result<Fetched, DataError>;
    /// The counters of a source that caches decoded data (`.npz` members).
    fn cache_stats(&self) -> Option<CacheStats> {
        None
    }
    /// `indices` will be fetched after the batches before them: a source
    /// that reads in large units may start on theirs now. A hint only (a
    /// fetch must not depend on it), and it must not block for long.
    fn ahead(&self, _indices: &[usize]) {}
}

/// Which files of a streamed split were found not to decode: each is named
/// once, the first [`SkipLog::NAMED`] of them, and all are counted.
#[derive(Debug, Default)]
pub struct SkipLog {
    seen: Mutex<BTreeSet<usize>>,
}

impl SkipLog {
    /// How many skipped files are named; the rest are counted.
    pub const NAMED: usize = 10;

    /// Records `skipped`; the warning lines to show for the ones not seen before.
    pub fn note(&self, skipped: &[Skip]) -> Vec<String> {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        let mut lines = Vec::new();
        for s in skipped {
            if !seen.insert(s.index) {
                continue;
            }
            match seen.len() {
                k if k <= Self::NAMED => lines.push(format!(
                    "warning: skipped {}: {} (left out of its batches; --strict-images stops at it)",
                    s.path.display(),
                    s.reason
                )),
                k if k == Self::NAMED + 1 => lines.push(
                    "warning: more files do not decode; they are counted at the end".to_string(),
                ),
                _ => {}
            }
        }
        lines
    }

    /// How many different files did not decode so far.
    pub fn count(&self) -> usize {
        self.seen.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

/// A streamed split: its source and the log of files that did not decode.
#[derive(Debug)]
pub struct Streamed {
    source: Box<dyn Source>,
    skips: Arc<SkipLog>,
}

impl Streamed {
    /// A streamed split reading `source`.
    pub fn new(source: Box<dyn Source>) -> Streamed {
        Streamed {
            source,
            skips: Arc::default(),
        }
    }

    /// The examples at `indices`; an index past the end is an error (the
    /// sources may assume none).
    pub fn fetch(&self, indices: &[usize]) -> Result<Fetched, DataError> {
        check_indices(indices, self.len())?;
        self.source.fetch(indices)
    }

    /// Tells the source which examples come later (see [`Source::ahead`]).
    pub fn ahead(&self, indices: &[usize]) {
        if check_indices(indices, self.len()).is_ok() {
            self.source.ahead(indices);
        }
    }

    /// The source's number of examples.
    pub fn len(&self) -> usize {
        self.source.len()
    }

    /// Whether it has none.
    pub fn is_empty(&self) -> bool {
        self.source.is_empty()
    }
}

/// The first `k` examples of a streamed split.
#[derive(Debug)]
struct Head {
    inner: Arc<Streamed>,
    k: usize,
}

impl Source for Head {
    fn len(&self) -> usize {
        self.k.min(self.inner.len())
    }
    fn example_shape(&self) -> [usize; 3] {
        self.inner.source.example_shape()
    }
    fn fetch(&self, indices: &[usize]) -> Result<Fetched, DataError> {
        self.inner.fetch(indices)
    }
    fn cache_stats(&self) -> Option<CacheStats> {
        self.inner.source.cache_stats()
    }
    fn ahead(&self, indices: &[usize]) {
        self.inner.ahead(indices)
    }
}

/// An error for an index past the end of a split of `n`.
pub(crate) fn check_indices(indices: &[usize], n: usize) -> Result<(), DataError> {
    match indices.iter().find(|&&i| i >= n) {
        Some(i) => Err(DataError::LoaderStopped {
            reason: format!("example {i} asked of a split of {n}"),
        }),
        None => Ok(()),
    }
}

/// One split of a data set: in memory, or streamed from disk.
#[derive(Clone, Debug)]
pub enum Split {
    /// Every example decoded, in memory.
    Memory(Examples),
    /// Decoded a batch at a time (images only).
    Streamed(Arc<Streamed>),
}

impl PartialEq for Split {
    /// In-memory splits compare their examples; streamed ones are equal
    /// only to themselves.
    fn eq(&self, other: &Split) -> bool {
        match (self, other) {
            (Split::Memory(a), Split::Memory(b)) => a == b,
            (Split::Streamed(a), Split::Streamed(b)) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }
}

impl From<Examples> for Split {
    fn from(ex: Examples) -> Split {
        Split::Memory(ex)
    }
}

impl Split {
    /// The number of examples.
    pub fn len(&self) -> usize {
        match self {
            Split::Memory(ex) => ex.len(),
            Split::Streamed(s) => s.len(),
        }
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether the examples are decoded a batch at a time.
    pub fn is_streamed(&self) -> bool {
        matches!(self, Split::Streamed(_))
    }

    /// Whether the examples are images (streamed splits always are).
    pub fn is_images(&self) -> bool {
        !matches!(self, Split::Memory(Examples::Vectors { .. }))
    }

    /// The shape of one example: `[c, h, w]` or `[d]`.
    pub fn example_shape(&self) -> Vec<usize> {
        match self {
            Split::Memory(ex) => ex.example_shape(),
            Split::Streamed(s) => s.source.example_shape().to_vec(),
        }
    }

    /// `uint8 3x64x64` or `f32 2`.
    pub fn describe_example(&self) -> String {
        match self {
            Split::Memory(ex) => ex.describe_example(),
            Split::Streamed(s) => {
                let [c, h, w] = s.source.example_shape();
                format!("uint8 {c}x{h}x{w}")
            }
        }
    }

    /// The examples at `indices` (each below `len`), in that order, less
    /// files that do not decode.
    pub fn fetch(&self, indices: &[usize]) -> Result<Fetched, DataError> {
        match self {
            Split::Memory(ex) => {
                check_indices(indices, ex.len())?;
                Ok(Fetched {
                    examples: ex.select(indices),
                    indices: indices.to_vec(),
                    skipped: Vec::new(),
                })
            }
            Split::Streamed(s) => s.fetch(indices),
        }
    }

    /// The first `k` examples: a copy of them in memory, or the same
    /// stream cut short.
    pub fn head(&self, k: usize) -> Split {
        match self {
            Split::Memory(ex) => {
                Split::Memory(ex.select(&(0..k.min(ex.len())).collect::<Vec<_>>()))
            }
            Split::Streamed(s) => Split::Streamed(Arc::new(Streamed {
                source: Box::new(Head {
                    inner: s.clone(),
                    k,
                }),
                skips: s.skips.clone(),
            })),
        }
    }

    /// The counters of a streamed split's cache, if it has one.
    pub fn cache_stats(&self) -> Option<CacheStats> {
        match self {
            Split::Memory(_) => None,
            Split::Streamed(s) => s.source.cache_stats(),
        }
    }

    /// Records files found not to decode; the warning lines to show.
    pub fn note_skips(&self, skipped: &[Skip]) -> Vec<String> {
        match self {
            Split::Memory(_) => Vec::new(),
            Split::Streamed(s) => s.skips.note(skipped),
        }
    }

    /// How many different files of this split did not decode so far.
    pub fn skipped_count(&self) -> usize {
        match self {
            Split::Memory(_) => 0,
            Split::Streamed(s) => s.skips.count(),
        }
    }

    /// The batches `plan` lists, in order: taken from memory as they are
    /// asked for, or decoded ahead on a loader thread, at most `depth`
    /// decoded batches waiting (see [`super::prefetch`]).
    pub fn batches(&self, plan: Plan, depth: usize) -> Batches<'_> {
        match self {
            Split::Memory(ex) => Batches::inline(ex, plan),
            Split::Streamed(s) => Batches::prefetched(s.clone(), plan, depth),
        }
    }
}

/// What evaluation reads: a split, or examples in memory.
pub trait Batched {
    /// The number of examples.
    fn count(&self) -> usize;
    /// The batches `plan` lists, in order (see [`Split::batches`]).
    fn batches_of(&self, plan: Plan, depth: usize) -> Batches<'_>;
    /// Warning lines for files found not to decode.
    fn skips(&self, skipped: &[Skip]) -> Vec<String>;
}

impl Batched for Split {
    fn count(&self) -> usize {
        self.len()
    }
    fn batches_of(&self, plan: Plan, depth: usize) -> Batches<'_> {
        self.batches(plan, depth)
    }
    fn skips(&self, skipped: &[Skip]) -> Vec<String> {
        self.note_skips(skipped)
    }
}

impl Batched for Examples {
    fn count(&self) -> usize {
        self.len()
    }
    fn batches_of(&self, plan: Plan, _depth: usize) -> Batches<'_> {
        Batches::inline(self, plan)
    }
    fn skips(&self, _skipped: &[Skip]) -> Vec<String> {
        Vec::new()
    }
}
