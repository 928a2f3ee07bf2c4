//! `folder:PATH` and `celeba`: data sets made of image files (see
//! [`super::images`] for how each file is read and fitted).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::images::{self, Labels, LoadOptions};
use super::{split_indices, DataError, Dataset, Examples};

/// CelebA's aligned images, as the official release unpacks them.
pub const CELEBA_IMAGE_DIR: &str = "img_align_celeba";
/// CelebA's official partition: `NAME.jpg K`, K = 0 train, 1 valid, 2 test.
pub const CELEBA_PARTITION_FILE: &str = "list_eval_partition.txt";
/// The side of the centered square taken from each aligned CelebA image
/// before resizing (Real NVP, appendix: a 148x148 central crop of the
/// 178x218 images). For 178x218 it starts at x = 15, y = 35.
pub const CELEBA_CROP: u32 = 148;
/// Where CelebA comes from.
pub const CELEBA_URL: &str = "https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html";

fn refs(v: &[PathBuf]) -> Vec<&Path> {
    v.iter().map(|p| p.as_path()).collect()
}

/// `, N skipped` for a source line, or nothing.
fn skipped_note(skipped: &[(PathBuf, String)]) -> String {
    if skipped.is_empty() {
        String::new()
    } else {
        format!(", {} skipped", skipped.len())
    }
}

fn target_of(spec: &str, opts: &LoadOptions) -> Result<[usize; 3], DataError> {
    let t = opts.target.ok_or_else(|| DataError::NeedsTarget {
        spec: spec.to_string(),
    })?;
    images::check_channels(spec, t)?;
    Ok(t)
}

/// Decodes one split; an error when none of its files decodes.
fn decode_split(
    files: &[&Path],
    first_crop: impl Fn(u32, u32) -> Option<(u32, u32, u32, u32)> + Sync,
    target: [usize; 3],
    opts: &LoadOptions,
    skipped: &mut Vec<(PathBuf, String)>,
    place: &Path,
) -> Result<(Examples, Vec<usize>), DataError> {
    let d = images::decode_files(files, first_crop, target, opts)?;
    let none = d.kept.is_empty();
    skipped.extend(d.skipped);
    if none {
        return Err(DataError::NoneDecoded {
            path: place.to_path_buf(),
            count: files.len(),
        });
    }
    Ok((d.examples, d.kept))
}

/// The files of an image data set's two splits, before any is decoded.
pub(crate) struct FilePlan {
    /// Training files, and their labels (empty: unlabelled).
    pub train: Vec<PathBuf>,
    pub train_labels: Vec<u32>,
    /// Test files, and their labels.
    pub test: Vec<PathBuf>,
    pub test_labels: Vec<u32>,
    /// Class names.
    pub classes: Vec<String>,
    /// How the split was made, for the source line.
    pub how: String,
    /// The folder of each split, for messages.
    pub train_place: PathBuf,
    pub test_place: PathBuf,
}

/// The first crop of `folder:PATH`: none.
pub(crate) fn no_crop(_: u32, _: u32) -> Option<(u32, u32, u32, u32)> {
    None
}

/// The first crop of `celeba`: the central [`CELEBA_CROP`] square.
pub(crate) fn celeba_crop(w: u32, h: u32) -> Option<(u32, u32, u32, u32)> {
    let s = CELEBA_CROP.min(w).min(h);
    Some(((w - s) / 2, (h - s) / 2, s, s))
}

/// `folder:PATH`'s name and checked target.
pub(crate) fn folder_target(
    root: &Path,
    opts: &LoadOptions,
) -> Result<(String, [usize; 3]), DataError> {
    let name = format!("folder:{}", root.display());
    let target = target_of(&name, opts)?;
    Ok((name, target))
}

/// Where a folder's labels come from (train, test), for messages.
pub(crate) fn label_files(root: &Path, test: Option<&Path>) -> [String; 2] {
    [root, test.unwrap_or(root)].map(|d| format!("the class subfolders of {}", d.display()))
}

/// `celeba`'s checked target.
pub(crate) fn celeba_target(opts: &LoadOptions) -> Result<[usize; 3], DataError> {
    target_of("celeba", opts)
}

/// `folder:PATH`, with `test` (another folder) as the test split, or else the
/// 90/10 split of [`split_indices`] by `seed` over the sorted file list.
pub(crate) fn load_folder(
    root: &Path,
    test: Option<&Path>,
    seed: u64,
    opts: &LoadOptions,
) -> Result<Dataset, DataError> {
    let (name, target) = folder_target(root, opts)?;
    let plan = plan_folder(root, test, seed)?;
    let mut skipped = Vec::new();
    let (train, kept_train) = decode_split(
        &refs(&plan.train),
        no_crop,
        target,
        opts,
        &mut skipped,
        &plan.train_place,
    )?;
    let (test_ex, kept_test) = decode_split(
        &refs(&plan.test),
        no_crop,
        target,
        opts,
        &mut skipped,
        &plan.test_place,
    )?;
    images::report_skipped(&skipped, plan.train.len() + plan.test.len());
    let labels = Labels {
        classes: plan.classes,
        train: kept_train.iter().map(|&i| plan.train_labels[i]).collect(),
        test: kept_test.iter().map(|&i| plan.test_labels[i]).collect(),
        files: label_files(root, test),
    };
    Ok(Dataset {
        source: format!(
            "{} ({} images, {} classes, {}, resized by {}){}",
            root.display(),
            train.len() + test_ex.len(),
            labels.classes.len(),
            plan.how,
            opts.resize.name(),
            skipped_note(&skipped)
        ),
        name,
        train,
        test: test_ex,
        labels: Some(labels),
    })
}

/// The files of `folder:PATH`'s splits (see [`load_folder`]).
pub(crate) fn plan_folder(
    root: &Path,
    test: Option<&Path>,
    seed: u64,
) -> Result<FilePlan, DataError> {
    let listing = images::list_folder(root)?;
    let (train_files, train_labels, test_files, test_labels, how) = match test {
        Some(t) => {
            let tl = images::list_folder(t)?;
            let index: HashMap<&str, u32> = listing
                .classes
                .iter()
                .enumerate()
                .map(|(i, c)| (c.as_str(), i as u32))
                .collect();
            let mut test_labels = Vec::new();
            for (_, l) in &tl.files {
                let class = tl.classes.get(*l as usize);
                let mapped = match class {
                    Some(c) => *index
                        .get(c.as_str())
                        .ok_or_else(|| DataError::UnknownClass {
                            test: t.to_path_buf(),
                            class: c.clone(),
                            train: root.to_path_buf(),
                        })?,
                    None => 0,
                };
                test_labels.push(mapped);
            }
            let train: Vec<PathBuf> = listing.files.iter().map(|(p, _)| p.clone()).collect();
            let test: Vec<PathBuf> = tl.files.into_iter().map(|(p, _)| p).collect();
            let labels = listing.files.iter().map(|(_, l)| *l).collect();
            (
                train,
                labels,
                test,
                test_labels,
                format!("{} (test)", t.display()),
            )
        }
        None => {
            let n = listing.files.len();
            if n < 2 {
                return Err(DataError::TooFewToSplit {
                    path: root.to_path_buf(),
                    n,
                });
            }
            let (tr, te) = split_indices(n, seed);
            let pick = |idx: &[usize]| -> (Vec<PathBuf>, Vec<u32>) {
                idx.iter().map(|&i| listing.files[i].clone()).unzip()
            };
            let (a, al) = pick(&tr);
            let (b, bl) = pick(&te);
            (
                a,
                al,
                b,
                bl,
                format!("split {}/{} by seed {seed}", tr.len(), te.len()),
            )
        }
    };
    Ok(FilePlan {
        train: train_files,
        train_labels,
        test: test_files,
        test_labels,
        classes: listing.classes,
        how,
        train_place: root.to_path_buf(),
        test_place: test.unwrap_or(root).to_path_buf(),
    })
}

/// Where CelebA's folder is looked for: `DATA/img_align_celeba/`, then
/// `DATA/celeba/img_align_celeba/`.
pub fn celeba_dirs(data_dir: &Path) -> Vec<PathBuf> {
    vec![
        data_dir.join(CELEBA_IMAGE_DIR),
        data_dir.join("celeba").join(CELEBA_IMAGE_DIR),
    ]
}

/// Reads `list_eval_partition.txt`: file name -> partition (0, 1, 2).
fn read_partition(path: &Path) -> Result<HashMap<String, u8>, DataError> {
    let text = std::fs::read_to_string(path).map_err(|e| DataError::io(path, e))?;
    let mut map = HashMap::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let bad = || DataError::BadPartition {
            path: path.to_path_buf(),
            line: i + 1,
            text: line.to_string(),
        };
        let mut parts = line.split_whitespace();
        let (Some(file), Some(k), None) = (parts.next(), parts.next(), parts.next()) else {
            return Err(bad());
        };
        let k: u8 = k.parse().ok().filter(|k| *k <= 2).ok_or_else(bad)?;
        map.insert(file.to_string(), k);
    }
    Ok(map)
}

/// `celeba`: the aligned images, a [`CELEBA_CROP`]-square central crop, then
/// resized to the flow's size by `opts.resize` (for a square flow, a plain
/// resize). Train: partition 0; test: partition 2 (valid, 1, is not used);
/// without the partition file, the 90/10 split by `seed`.
pub(crate) fn load_celeba(
    data_dir: &Path,
    seed: u64,
    opts: &LoadOptions,
) -> Result<Dataset, DataError> {
    let target = celeba_target(opts)?;
    let plan = plan_celeba(data_dir, seed)?;
    let dir = &plan.train_place;
    let mut skipped = Vec::new();
    let (train, _) = decode_split(
        &refs(&plan.train),
        celeba_crop,
        target,
        opts,
        &mut skipped,
        dir,
    )?;
    let (test, _) = decode_split(
        &refs(&plan.test),
        celeba_crop,
        target,
        opts,
        &mut skipped,
        dir,
    )?;
    images::report_skipped(&skipped, plan.train.len() + plan.test.len());
    Ok(Dataset {
        name: "celeba".to_string(),
        source: format!(
            "{} ({}; {CELEBA_CROP}x{CELEBA_CROP} central crop, resized by {}){}",
            dir.display(),
            plan.how,
            opts.resize.name(),
            skipped_note(&skipped)
        ),
        train,
        test,
        labels: None,
    })
}

/// The files of `celeba`'s splits (see [`load_celeba`]); unlabelled.
pub(crate) fn plan_celeba(data_dir: &Path, seed: u64) -> Result<FilePlan, DataError> {
    let dirs = celeba_dirs(data_dir);
    let Some(dir) = dirs.iter().find(|d| d.is_dir()) else {
        return Err(DataError::NotFound(Box::new(super::NotFound {
            dataset: "CelebA".to_string(),
            files: vec![format!("{CELEBA_IMAGE_DIR}/")],
            dirs: vec![data_dir.to_path_buf(), data_dir.join("celeba")],
            incomplete: Vec::new(),
            archives: Vec::new(),
            get_it: format!(
                "Get the aligned images (img_align_celeba.zip) and {CELEBA_PARTITION_FILE} from {CELEBA_URL} and unzip them there."
            ),
        })));
    };
    let files = images::image_files_under(dir)?;
    if files.is_empty() {
        return Err(DataError::NoImages { path: dir.clone() });
    }
    let parent = dir.parent().unwrap_or(data_dir);
    let partition_file = [
        parent.join(CELEBA_PARTITION_FILE),
        dir.join(CELEBA_PARTITION_FILE),
    ]
    .into_iter()
    .find(|p| p.is_file());
    let (train_files, test_files, how) = match &partition_file {
        Some(pf) => {
            let part = read_partition(pf)?;
            let by_name: HashMap<String, &PathBuf> = files
                .iter()
                .map(|p| {
                    (
                        p.file_name()
                            .unwrap_or_default()
                            .to_string_lossy()
                            .into_owned(),
                        p,
                    )
                })
                .collect();
            let mut listed: Vec<(&String, &u8)> = part.iter().collect();
            listed.sort();
            let missing: Vec<&String> = listed
                .iter()
                .filter(|(n, _)| !by_name.contains_key(n.as_str()))
                .map(|(n, _)| *n)
                .collect();
            if let Some(first) = missing.first() {
                return Err(DataError::PartitionMissing {
                    partition: pf.clone(),
                    dir: dir.clone(),
                    first: first.to_string(),
                    count: missing.len(),
                });
            }
            let of = |k: u8| -> Vec<PathBuf> {
                listed
                    .iter()
                    .filter(|(_, p)| **p == k)
                    .map(|(n, _)| by_name[n.as_str()].clone())
                    .collect()
            };
            (of(0), of(2), format!("partition of {}", pf.display()))
        }
        None => {
            let n = files.len();
            if n < 2 {
                return Err(DataError::TooFewToSplit {
                    path: dir.clone(),
                    n,
                });
            }
            let (tr, te) = split_indices(n, seed);
            let pick = |idx: &[usize]| idx.iter().map(|&i| files[i].clone()).collect();
            (
                pick(&tr),
                pick(&te),
                format!(
                    "no {CELEBA_PARTITION_FILE}: split {}/{} by seed {seed}",
                    tr.len(),
                    te.len()
                ),
            )
        }
    };
    Ok(FilePlan {
        train_labels: Vec::new(),
        test_labels: Vec::new(),
        train: train_files,
        test: test_files,
        classes: Vec::new(),
        how,
        train_place: dir.clone(),
        test_place: dir.clone(),
    })
}
