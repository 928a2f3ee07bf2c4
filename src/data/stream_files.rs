//! A streamed split of image files (`folder:PATH`, `celeba`): the list of
//! files is the index; a batch's files are decoded and fitted when the batch
//! is fetched, on a small pool of worker threads of its own (not rayon's
//! global pool, which the training step's kernels use: a decode queued there
//! would wait behind them, or they behind it). Nothing decoded is kept
//! between batches: a file costs about 0.1 ms to decode at 64x64, far less
//! than its share of a training step, so a cache would buy nothing.

use std::path::PathBuf;

use rayon::prelude::*;

use super::images::{decode_one, FirstCrop, Resize};
use super::split::{Fetched, Skip, Source};
use super::{DataError, Examples};

/// How many threads decode a batch: enough to stay ahead of a step on a
/// few cores, few enough to leave the step its cores.
pub fn loader_threads() -> usize {
    std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, 4)
}

/// Image files decoded a batch at a time.
pub(crate) struct FileSource {
    files: Vec<PathBuf>,
    first_crop: FirstCrop,
    target: [usize; 3],
    resize: Resize,
    strict: bool,
    pool: rayon::ThreadPool,
}

impl std::fmt::Debug for FileSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileSource")
            .field("files", &self.files.len())
            .field("target", &self.target)
            .finish()
    }
}

impl FileSource {
    /// A source over `files`, each fitted to `target` after `first_crop`.
    pub(crate) fn new(
        files: Vec<PathBuf>,
        first_crop: FirstCrop,
        target: [usize; 3],
        resize: Resize,
        strict: bool,
    ) -> Result<FileSource, DataError> {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(loader_threads())
            .thread_name(|i| format!("flowc-decode-{i}"))
            .build()
            .map_err(|e| DataError::LoaderStopped {
                reason: format!("cannot start the decoding threads: {e}"),
            })?;
        Ok(FileSource {
            files,
            first_crop,
            target,
            resize,
            strict,
            pool,
        })
    }
}

impl Source for FileSource {
    fn len(&self) -> usize {
        self.files.len()
    }

    fn example_shape(&self) -> [usize; 3] {
        self.target
    }

    fn fetch(&self, indices: &[usize]) -> Result<Fetched, DataError> {
        let results: Vec<Result<Vec<u8>, String>> = self.pool.install(|| {
            indices
                .par_iter()
                .map(|&i| decode_one(&self.files[i], &self.first_crop, self.target, self.resize))
                .collect()
        });
        let [c, h, w] = self.target;
        let mut data = Vec::with_capacity(indices.len() * c * h * w);
        let mut skipped = Vec::new();
        let mut decoded = Vec::with_capacity(indices.len());
        for (&i, r) in indices.iter().zip(results) {
            match r {
                Ok(px) => {
                    data.extend_from_slice(&px);
                    decoded.push(i);
                }
                Err(reason) if self.strict => {
                    return Err(DataError::BadImage {
                        path: self.files[i].clone(),
                        reason,
                    })
                }
                Err(reason) => skipped.push(Skip {
                    index: i,
                    path: self.files[i].clone(),
                    reason,
                }),
            }
        }
        if !indices.is_empty() && skipped.len() == indices.len() {
            return Err(DataError::BatchNoneDecoded {
                count: indices.len(),
                first: skipped[0].path.clone(),
                reason: skipped[0].reason.clone(),
            });
        }
        let n = indices.len() - skipped.len();
        Ok(Fetched {
            examples: Examples::Images { data, n, c, h, w },
            indices: decoded,
            skipped,
        })
    }
}
