//! Opening a data set for training and evaluation: the small sets decoded
//! into memory as [`super::load_with`] does, the large image sets streamed
//! (their files indexed, nothing decoded until a batch asks for it).
//!
//! `folder:PATH`, `celeba`, `imagenet32` and `imagenet64` stream when their
//! decoded training split would be larger than [`STREAM_ABOVE_BYTES`], or
//! always with [`LoadOptions::stream`]; both splits then stream. The other
//! sets are small and always in memory.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::folder::{self, FilePlan};
use super::images::{FirstCrop, Labels, LoadOptions};
use super::split::{Split, Streamed};
use super::stream_files::FileSource;
use super::stream_npz::NpzSource;
use super::{imagenet, load_with, DataError, Dataset, Spec};

/// A decoded training split larger than this (1 GiB) is streamed.
pub const STREAM_ABOVE_BYTES: u64 = 1 << 30;

/// The order a training epoch visits its examples in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Order {
    /// A permutation of all the examples, drawn per epoch.
    Shuffled,
    /// Consecutive blocks of these sizes (the `.npz` batch files of
    /// downsampled ImageNet): the blocks in an order drawn per epoch, and
    /// each block's examples in an order drawn per epoch and block, one
    /// block after the other, so that a streamed epoch decodes each file
    /// once. The same whether the set is streamed or in memory.
    Blocks(Vec<usize>),
}

/// A data set opened for training or evaluation.
#[derive(Clone, Debug, PartialEq)]
pub struct Data {
    /// The canonical spec (see [`Dataset::name`]).
    pub name: String,
    /// Where it came from, and whether it streams.
    pub source: String,
    /// The training split.
    pub train: Split,
    /// The test split.
    pub test: Split,
    /// Class labels, where the loader reads them; for a streamed split,
    /// one per file (files that do not decode are found only when read).
    pub labels: Option<Labels>,
    /// The order of a training epoch.
    pub order: Order,
}

impl From<Dataset> for Data {
    fn from(d: Dataset) -> Data {
        Data {
            name: d.name,
            source: d.source,
            train: Split::Memory(d.train),
            test: Split::Memory(d.test),
            labels: d.labels,
            order: Order::Shuffled,
        }
    }
}

/// As [`load_with`], streaming the large image sets (see the module notes).
pub fn open_with(
    spec: &str,
    data_dir: &Path,
    system: bool,
    test_file: Option<&Path>,
    seed: u64,
    opts: &LoadOptions,
) -> Result<Data, DataError> {
    let in_memory = || load_with(spec, data_dir, system, test_file, seed, opts).map(Data::from);
    match Spec::parse(spec)? {
        Spec::Folder(root) => {
            let (name, target) = folder::folder_target(&root, opts)?;
            let test = test_file.map(folder_path);
            let plan = folder::plan_folder(&root, test.as_deref(), seed)?;
            if !streams(plan.train.len(), target, opts) {
                return in_memory();
            }
            let source = format!(
                "{} ({} images, {} classes, {}, resized by {}; streamed)",
                root.display(),
                plan.train.len() + plan.test.len(),
                plan.classes.len(),
                plan.how,
                opts.resize.name()
            );
            let files = folder::label_files(&root, test.as_deref());
            stream_files(name, source, plan, files, folder::no_crop, target, opts)
        }
        Spec::CelebA => {
            let target = folder::celeba_target(opts)?;
            let plan = folder::plan_celeba(data_dir, seed)?;
            if !streams(plan.train.len(), target, opts) {
                return in_memory();
            }
            let source = format!(
                "{} ({}; {c}x{c} central crop, resized by {}; streamed)",
                plan.train_place.display(),
                plan.how,
                opts.resize.name(),
                c = folder::CELEBA_CROP,
            );
            let mut data = stream_files(
                "celeba".into(),
                source,
                plan,
                [String::new(), String::new()],
                folder::celeba_crop,
                target,
                opts,
            )?;
            data.labels = None;
            Ok(data)
        }
        Spec::ImageNet(side) => {
            if test_file.is_some() {
                return in_memory(); // which refuses it
            }
            open_imagenet(side, data_dir, opts)
        }
        _ => in_memory(),
    }
}

/// `folder:` in front of a `--test` folder is allowed.
fn folder_path(t: &Path) -> PathBuf {
    t.to_str()
        .and_then(|s| s.strip_prefix("folder:"))
        .map_or_else(|| t.to_path_buf(), PathBuf::from)
}

/// Whether a training split of `n` images of `target` streams.
fn streams(n: usize, target: [usize; 3], opts: &LoadOptions) -> bool {
    let bytes = (n as u64).saturating_mul(target.iter().map(|&d| d as u64).product());
    opts.stream || bytes > STREAM_ABOVE_BYTES
}

/// Both splits of an image-file data set, streamed.
fn stream_files(
    name: String,
    source: String,
    plan: FilePlan,
    files: [String; 2],
    crop: FirstCrop,
    target: [usize; 3],
    opts: &LoadOptions,
) -> Result<Data, DataError> {
    let split = |files: Vec<PathBuf>| -> Result<Split, DataError> {
        let src = FileSource::new(files, crop, target, opts.resize, opts.strict_images)?;
        Ok(Split::Streamed(Arc::new(Streamed::new(Box::new(src)))))
    };
    Ok(Data {
        name,
        source,
        train: split(plan.train)?,
        test: split(plan.test)?,
        labels: Some(Labels {
            classes: plan.classes,
            train: plan.train_labels,
            test: plan.test_labels,
            files,
        }),
        order: Order::Shuffled,
    })
}

/// `imagenet32`/`64`: in memory when small (the test files make such), else
/// indexed and streamed a batch file at a time.
fn open_imagenet(side: usize, data_dir: &Path, opts: &LoadOptions) -> Result<Data, DataError> {
    let at = imagenet::locate(side, data_dir)?;
    let mut train = Vec::new();
    let mut train_labels = Vec::new();
    for p in &at.train {
        let (n, labels) = imagenet::index_npz_batch(p, side)?;
        train.push((p.clone(), n));
        train_labels.extend(labels);
    }
    let sizes: Vec<usize> = train.iter().map(|(_, n)| *n).collect();
    if !streams(train_labels.len(), [3, side, side], opts) {
        let (ds, sizes) = imagenet::load_imagenet(side, data_dir)?;
        return Ok(Data {
            order: Order::Blocks(sizes),
            ..Data::from(ds)
        });
    }
    let (n_test, test_labels) = imagenet::index_npz_batch(&at.test, side)?;
    let streamed = |files| {
        Split::Streamed(Arc::new(Streamed::new(Box::new(NpzSource::new(
            files, side,
        )))))
    };
    Ok(Data {
        name: format!("imagenet{side}"),
        source: imagenet::describe(&at, train_labels.len(), n_test, "; streamed"),
        train: streamed(train),
        test: streamed(vec![(at.test.clone(), n_test)]),
        labels: Some(Labels {
            classes: Vec::new(),
            train: train_labels,
            test: test_labels,
            files: [&at.folder, &at.test].map(|p| format!("labels.npy in {}", p.display())),
        }),
        order: Order::Blocks(sizes),
    })
}
