//! Data-set loaders: CIFAR-10, MNIST, Fashion-MNIST, downsampled ImageNet,
//! CelebA, folders of PNG/JPEG images, NumPy `.npy` files and 2-D toy sets,
//! returned as plain Rust data (no tensors): [`load`] decodes everything
//! into memory; [`open_with`] streams the large image sets instead (a
//! [`Split`] whose batches are decoded ahead of the step by
//! [`prefetch`]), with memory bounded by a few batches and a small cache.
//!
//! ```no_run
//! use std::path::Path;
//! let ds = flowc::data::load("mnist", Path::new("data"), None, 0)?;
//! assert_eq!(ds.train.example_shape(), vec![1, 28, 28]);
//! # Ok::<(), flowc::data::DataError>(())
//! ```
//!
//! | spec | where it is looked for | train / test |
//! | --- | --- | --- |
//! | `cifar10` | `DATA/cifar-10-batches-bin/`, `DATA/`, then `DATA/cifar-10-binary.tar.gz` (streamed, not unpacked) | 50,000 / 10,000 of 3x32x32 |
//! | `mnist` | `DATA/mnist/`, `DATA/`, `/usr/share/datasets/mnist` (if it exists) | 60,000 / 10,000 of 1x28x28 |
//! | `fashion-mnist` | `DATA/fashion-mnist/`, `DATA/`, `/usr/share/datasets/fashion-mnist` (Debian's `dataset-fashion-mnist`) | 60,000 / 10,000 of 1x28x28 |
//! | `npy:PATH` | `PATH` (relative to the working directory) | 90% / 10%, shuffled by the seed, or all / the test file |
//! | `toy:NAME` | generated (see [`toy`]) | 50,000 from the seed / a fixed 10,000 |
//! | `imagenet32`, `imagenet64` | `DATA/imagenet32/`, `DATA/Imagenet32_train_npz/` (+ `_val_npz/`), `DATA/` (see [`imagenet_dirs`]) | `train_data_batch_1..10.npz` / `val_data.npz`, 3x32x32 or 3x64x64 |
//! | `celeba` | `DATA/img_align_celeba/`, `DATA/celeba/img_align_celeba/` | `list_eval_partition.txt` 0 / 2 (else 90% / 10% by the seed); 148x148 central crop, resized to the flow |
//! | `folder:PATH` | every PNG/JPEG under `PATH` | 90% / 10% by the seed, or all / the `--test` folder; fitted to the flow by [`Resize`] |
//!
//! `folder:PATH` and `celeba` need the flow's input shape ([`LoadOptions`]);
//! see [`images`] for how a file becomes an example.

mod cifar;
mod error;
mod files;
mod folder;
mod idx;
mod imagenet;
pub mod images;
pub mod labels;
mod npy;
mod open;
pub mod prefetch;
mod rng;
mod split;
mod stream_files;
mod stream_npz;
pub mod toy;

#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};

pub use cifar::{
    cifar10_dirs, CIFAR10_ARCHIVE, CIFAR10_DIR, CIFAR10_IMAGE_BYTES, CIFAR10_RECORD_BYTES,
    CIFAR10_TEST_FILE, CIFAR10_TRAIN_FILES, CIFAR10_URL,
};
pub use error::{DataError, NotFound};
pub use folder::{celeba_dirs, CELEBA_CROP, CELEBA_IMAGE_DIR, CELEBA_PARTITION_FILE, CELEBA_URL};
pub use idx::{
    idx_dirs, load_idx_from, read_idx3_images, IdxSet, FASHION_MNIST_SYSTEM_DIR, FASHION_MNIST_URL,
    IDX3_UBYTE_MAGIC, IDX_TEST_IMAGES, IDX_TRAIN_IMAGES, MNIST_SYSTEM_DIR, MNIST_URL,
};
pub use imagenet::{imagenet_dirs, IMAGENET_TEST_FILE, IMAGENET_TRAIN_BATCHES};
pub use images::{Labels, LoadOptions, Resize, RESIZE_FILTER};
pub use npy::{npy_header, read_npy, read_npy_values, NPY_MAGIC};
pub use open::{open_with, Data, Order, STREAM_ABOVE_BYTES};
pub use prefetch::{Batches, Counters, Plan, PREFETCH_DEPTH};
pub use split::{Batched, Fetched, Skip, SkipLog, Source, Split, Streamed};
pub use stream_files::loader_threads;
pub use stream_npz::{CacheStats, MEMBER_CACHE};
pub use toy::{
    toy_entropy, toy_log_density, toy_sample, Toy, TOY_NAMES, TOY_TEST_SEED, TOY_TEST_SIZE,
    TOY_TRAIN_SIZE,
};

/// The examples of one split: uint8 images (N, C, H, W) or f32 vectors
/// (N, D), row-major (C order) in `data`.
#[derive(Clone, Debug, PartialEq)]
pub enum Examples {
    /// `data.len() == n * c * h * w`, pixel values 0..=255 as stored.
    Images {
        /// Pixels, (N, C, H, W) row-major.
        data: Vec<u8>,
        /// Number of images.
        n: usize,
        /// Channels.
        c: usize,
        /// Height.
        h: usize,
        /// Width.
        w: usize,
    },
    /// `data.len() == n * d`.
    Vectors {
        /// Values, (N, D) row-major.
        data: Vec<f32>,
        /// Number of vectors.
        n: usize,
        /// Dimension of each.
        d: usize,
    },
}

impl Examples {
    /// The number of examples.
    pub fn len(&self) -> usize {
        match self {
            Examples::Images { n, .. } | Examples::Vectors { n, .. } => *n,
        }
    }

    /// Whether there are no examples.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The shape of one example: `[c, h, w]` or `[d]`.
    pub fn example_shape(&self) -> Vec<usize> {
        match self {
            Examples::Images { c, h, w, .. } => vec![*c, *h, *w],
            Examples::Vectors { d, .. } => vec![*d],
        }
    }

    /// The shape of the whole split: `[n, c, h, w]` or `[n, d]`.
    pub fn shape(&self) -> Vec<usize> {
        let mut s = vec![self.len()];
        s.extend(self.example_shape());
        s
    }

    /// Numbers per example (`c*h*w` or `d`).
    pub fn example_size(&self) -> usize {
        self.example_shape().iter().product()
    }

    /// `uint8 1x28x28` or `f32 2`: the element type and one example's shape.
    pub fn describe_example(&self) -> String {
        let dims: Vec<String> = self.example_shape().iter().map(|d| d.to_string()).collect();
        let ty = match self {
            Examples::Images { .. } => "uint8",
            Examples::Vectors { .. } => "f32",
        };
        format!("{ty} {}", dims.join("x"))
    }

    /// The examples at `indices`, in that order.
    ///
    /// # Panics
    /// If an index is not below [`Examples::len`].
    pub fn select(&self, indices: &[usize]) -> Examples {
        let k = self.example_size();
        match self {
            Examples::Images { data, c, h, w, .. } => Examples::Images {
                data: gather(data, k, indices),
                n: indices.len(),
                c: *c,
                h: *h,
                w: *w,
            },
            Examples::Vectors { data, d, .. } => Examples::Vectors {
                data: gather(data, k, indices),
                n: indices.len(),
                d: *d,
            },
        }
    }
}

fn gather<T: Copy>(data: &[T], k: usize, indices: &[usize]) -> Vec<T> {
    let mut out = Vec::with_capacity(indices.len() * k);
    for &i in indices {
        out.extend_from_slice(&data[i * k..(i + 1) * k]);
    }
    out
}

/// A data set: its train and test splits.
#[derive(Clone, Debug, PartialEq)]
pub struct Dataset {
    /// The canonical spec (`cifar10`, `mnist`, `fashion-mnist`, `imagenet32`,
    /// `imagenet64`, `celeba`, `folder:PATH`, `npy:PATH`, `toy:NAME`).
    pub name: String,
    /// Where it came from: a folder, a tarball, a file, or how it was generated.
    pub source: String,
    /// The training split.
    pub train: Examples,
    /// The test split.
    pub test: Examples,
    /// Class labels, where the data set has them (see [`labels`]).
    pub labels: Option<Labels>,
}

/// A parsed `--data` spec.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Spec {
    /// `cifar10`.
    Cifar10,
    /// `mnist` or `fashion-mnist`.
    Idx(IdxSet),
    /// `npy:PATH`.
    Npy(PathBuf),
    /// `toy:NAME`.
    Toy(Toy),
    /// `imagenet32` (32) or `imagenet64` (64).
    ImageNet(usize),
    /// `celeba`.
    CelebA,
    /// `folder:PATH`.
    Folder(PathBuf),
}

impl Spec {
    /// Parses `cifar10`, `mnist`, `fashion-mnist`, `imagenet32`, `imagenet64`,
    /// `celeba`, `folder:PATH`, `npy:PATH` or `toy:NAME` (also `cifar-10`,
    /// `fashion_mnist`, and FFJORD's toy names).
    pub fn parse(spec: &str) -> Result<Spec, DataError> {
        let unknown = || DataError::UnknownSpec {
            spec: spec.to_string(),
        };
        if let Some(path) = spec.strip_prefix("npy:") {
            if path.is_empty() {
                return Err(unknown());
            }
            return Ok(Spec::Npy(PathBuf::from(path)));
        }
        if let Some(path) = spec.strip_prefix("folder:") {
            if path.is_empty() {
                return Err(unknown());
            }
            return Ok(Spec::Folder(PathBuf::from(path)));
        }
        if let Some(name) = spec.strip_prefix("toy:") {
            return Toy::from_name(name)
                .map(Spec::Toy)
                .ok_or_else(|| DataError::UnknownToy {
                    name: name.to_string(),
                });
        }
        match spec {
            "cifar10" | "cifar-10" => Ok(Spec::Cifar10),
            "mnist" => Ok(Spec::Idx(IdxSet::Mnist)),
            "fashion-mnist" | "fashion_mnist" => Ok(Spec::Idx(IdxSet::FashionMnist)),
            "imagenet32" => Ok(Spec::ImageNet(32)),
            "imagenet64" => Ok(Spec::ImageNet(64)),
            "celeba" => Ok(Spec::CelebA),
            _ => Err(unknown()),
        }
    }

    /// The canonical spec text.
    pub fn name(&self) -> String {
        match self {
            Spec::Cifar10 => "cifar10".to_string(),
            Spec::Idx(set) => set.name().to_string(),
            Spec::Npy(p) => format!("npy:{}", p.display()),
            Spec::Toy(t) => format!("toy:{}", t.name()),
            Spec::ImageNet(side) => format!("imagenet{side}"),
            Spec::CelebA => "celeba".to_string(),
            Spec::Folder(p) => format!("folder:{}", p.display()),
        }
    }
}

/// Loads the data set `spec` (see the module table).
///
/// * `data_dir`: where `cifar10`, `mnist` and `fashion-mnist` are looked for.
/// * `test_file`: for `npy:PATH` only, a second `.npy` file used as the test
///   split (the whole of PATH is then the train split); an error for other specs.
/// * `seed`: shuffles the 90/10 split of `npy:PATH`, and generates the toy
///   training points. Nothing else depends on it.
pub fn load(
    spec: &str,
    data_dir: &Path,
    test_file: Option<&Path>,
    seed: u64,
) -> Result<Dataset, DataError> {
    load_in(spec, data_dir, true, test_file, seed)
}

/// As [`load`]; `system` says whether the system folders
/// (`/usr/share/datasets/...`) may be used after `data_dir` (not when the
/// user named the folder: then only it is searched).
pub fn load_in(
    spec: &str,
    data_dir: &Path,
    system: bool,
    test_file: Option<&Path>,
    seed: u64,
) -> Result<Dataset, DataError> {
    load_with(
        spec,
        data_dir,
        system,
        test_file,
        seed,
        &LoadOptions::default(),
    )
}

/// As [`load_in`], with the options of image folders (`opts.target`, the
/// flow's input shape, is needed by `folder:PATH` and `celeba`). For
/// `folder:PATH`, `test_file` is the test folder (`folder:` in front of it is
/// allowed).
pub fn load_with(
    spec: &str,
    data_dir: &Path,
    system: bool,
    test_file: Option<&Path>,
    seed: u64,
    opts: &LoadOptions,
) -> Result<Dataset, DataError> {
    let parsed = Spec::parse(spec)?;
    if let (Some(t), false) = (test_file, matches!(parsed, Spec::Npy(_) | Spec::Folder(_))) {
        return Err(DataError::TestFileNotApplicable {
            spec: spec.to_string(),
            test_file: t.to_path_buf(),
        });
    }
    match parsed {
        Spec::Cifar10 => cifar::load_cifar10(data_dir),
        Spec::Idx(set) => {
            let mut dirs = idx_dirs(set, data_dir);
            if !system {
                dirs.retain(|d| d.starts_with(data_dir));
            }
            load_idx_from(set, &dirs, data_dir)
        }
        Spec::Npy(path) => load_npy(&path, test_file, seed),
        Spec::Toy(toy) => Ok(load_toy(toy, seed)),
        Spec::ImageNet(side) => imagenet::load_imagenet(side, data_dir).map(|(d, _)| d),
        Spec::CelebA => folder::load_celeba(data_dir, seed, opts),
        Spec::Folder(path) => {
            let test = test_file.map(|t| {
                t.to_str()
                    .and_then(|s| s.strip_prefix("folder:"))
                    .map_or_else(|| t.to_path_buf(), PathBuf::from)
            });
            folder::load_folder(&path, test.as_deref(), seed, opts)
        }
    }
}

/// `npy:PATH`: the whole file split 90/10 by `seed`, or all of it as train
/// and `test_file` as test.
fn load_npy(path: &Path, test_file: Option<&Path>, seed: u64) -> Result<Dataset, DataError> {
    let all = read_npy(path)?;
    let name = format!("npy:{}", path.display());
    if let Some(tf) = test_file {
        let test = read_npy(tf)?;
        if std::mem::discriminant(&all) != std::mem::discriminant(&test)
            || all.example_shape() != test.example_shape()
        {
            return Err(DataError::ShapeMismatch {
                train_path: path.to_path_buf(),
                train_shape: all.describe_example(),
                test_path: tf.to_path_buf(),
                test_shape: test.describe_example(),
            });
        }
        return Ok(Dataset {
            name,
            source: format!("{} (train), {} (test)", path.display(), tf.display()),
            train: all,
            test,
            labels: None,
        });
    }
    let n = all.len();
    if n < 2 {
        return Err(DataError::TooFewToSplit {
            path: path.to_path_buf(),
            n,
        });
    }
    let (train_idx, test_idx) = split_indices(n, seed);
    Ok(Dataset {
        name,
        source: format!(
            "{} (split {}/{} by seed {seed})",
            path.display(),
            train_idx.len(),
            test_idx.len()
        ),
        train: all.select(&train_idx),
        test: all.select(&test_idx),
        labels: None,
    })
}

/// The 90/10 split of `n >= 2` examples (for n < 2 all go to train):
/// `round(n / 10)` (halves up) of them, at least 1
/// and at most n − 1, chosen by a Fisher–Yates shuffle seeded by `seed`, go
/// to test; the rest to train. Both index lists are in increasing order, so
/// examples keep their file order within each split.
pub fn split_indices(n: usize, seed: u64) -> (Vec<usize>, Vec<usize>) {
    if n < 2 {
        return ((0..n).collect(), Vec::new());
    }
    let n_test = n.saturating_add(5) / 10;
    let n_test = n_test.clamp(1, n - 1);
    let mut perm: Vec<usize> = (0..n).collect();
    rng::Rng::new(rng::derive_seed(seed, "npy-split")).shuffle(&mut perm);
    let (test, train) = perm.split_at(n_test);
    let mut train = train.to_vec();
    let mut test = test.to_vec();
    train.sort_unstable();
    test.sort_unstable();
    (train, test)
}

fn load_toy(toy: Toy, seed: u64) -> Dataset {
    let to_vectors = |pts: Vec<[f64; 2]>| Examples::Vectors {
        n: pts.len(),
        d: 2,
        data: pts
            .iter()
            .flat_map(|p| [p[0] as f32, p[1] as f32])
            .collect(),
    };
    let train_seed = rng::derive_seed(seed, &format!("toy-train:{}", toy.name()));
    let test_seed = rng::derive_seed(TOY_TEST_SEED, &format!("toy-test:{}", toy.name()));
    let (train, train_labels) = toy.sample_labelled(TOY_TRAIN_SIZE, train_seed);
    let (test, test_labels) = toy.sample_labelled(TOY_TEST_SIZE, test_seed);
    let labels = toy.classes().map(|_| Labels {
        classes: Vec::new(),
        train: train_labels,
        test: test_labels,
        files: [0, 1].map(|_| format!("the part each point of toy:{} was drawn from", toy.name())),
    });
    Dataset {
        name: format!("toy:{}", toy.name()),
        source: format!(
            "generated: {TOY_TRAIN_SIZE} train points from seed {seed}, \
             {TOY_TEST_SIZE} fixed test points"
        ),
        train: to_vectors(train),
        test: to_vectors(test),
        labels,
    }
}
