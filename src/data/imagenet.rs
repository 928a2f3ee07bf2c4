//! `imagenet32` and `imagenet64`: the official downsampled ImageNet
//! (Chrabaszcz, Loshchilov and Hutter 2017, "A Downsampled Variant of
//! ImageNet as an Alternative to the CIFAR datasets"), in its `.npz` release:
//! `train_data_batch_1.npz` .. `train_data_batch_10.npz` and `val_data.npz`.
//!
//! An `.npz` file is a zip archive of `.npy` files (members stored or
//! deflated); each of these holds `data.npy`, uint8 of shape (N, 3 S S) with
//! each row the red plane, then green, then blue, each row-major (so it
//! reshapes to (N, 3, S, S) as it is), and `labels.npy`, integers 1..=1000
//! (stored here as 0..=999). Other members (`mean.npy`) are ignored.
//! Train: the ten training batches in order; test: `val_data` (the 50,000
//! validation images, the test set of Real NVP and of the papers after it).

use std::io::Read;
use std::path::{Path, PathBuf};

use super::files::{dedup_dirs, find_all, Lookup};
use super::images::Labels;
use super::npy::{parse_int_array, parse_u8_array};
use super::{DataError, Dataset, Examples, NotFound};

/// The training batch files' names, without `.npz`.
pub const IMAGENET_TRAIN_BATCHES: usize = 10;
/// The validation (test) file's name, without `.npz`.
pub const IMAGENET_TEST_FILE: &str = "val_data";
/// Where the files come from.
pub const IMAGENET_URL: &str =
    "https://image-net.org/download-images.php (Downsampled ImageNet 32x32 / 64x64, npz format)";

/// Where `imagenet{side}` is looked for: `DATA/imagenet{side}/`,
/// `DATA/Imagenet{side}_train_npz/` (the train zip's folder, the validation
/// file beside it or in `DATA/Imagenet{side}_val_npz/`), then `DATA/`.
pub fn imagenet_dirs(side: usize, data_dir: &Path) -> Vec<PathBuf> {
    dedup_dirs(vec![
        data_dir.join(format!("imagenet{side}")),
        data_dir.join(format!("Imagenet{side}")),
        data_dir.join(format!("Imagenet{side}_train_npz")),
        data_dir.to_path_buf(),
    ])
}

fn train_names() -> Vec<String> {
    (1..=IMAGENET_TRAIN_BATCHES)
        .map(|i| format!("train_data_batch_{i}.npz"))
        .collect()
}

/// Reads one `.npz` batch: images (N, 3, side, side) and 0-based labels.
pub(crate) fn read_npz_batch(path: &Path, side: usize) -> Result<(Vec<u8>, Vec<u32>), DataError> {
    let bad = |reason: String| DataError::Archive {
        path: path.to_path_buf(),
        reason,
    };
    let file = std::fs::File::open(path).map_err(|e| DataError::io(path, e))?;
    let mut zip = zip::ZipArchive::new(std::io::BufReader::new(file))
        .map_err(|e| bad(format!("not a readable .npz (zip) file: {e}")))?;
    let mut member = |name: &str| -> Result<Vec<u8>, DataError> {
        let mut m = zip.by_name(name).map_err(|_| {
            bad(format!(
                "has no member {name} (expected data.npy and labels.npy)"
            ))
        })?;
        let mut out = Vec::with_capacity(m.size() as usize);
        m.read_to_end(&mut out)
            .map_err(|e| bad(format!("member {name}: {e}")))?;
        Ok(out)
    };
    let data_bytes = member("data.npy")?;
    let label_bytes = member("labels.npy")?;
    let data_path = path.join("data.npy");
    let (shape, data) = parse_u8_array(&data_bytes, &data_path)?;
    let row = 3 * side * side;
    if shape.len() != 2 || shape[1] != row as u64 {
        return Err(DataError::NpyNdim {
            path: data_path,
            dtype: "'|u1'".to_string(),
            shape,
            expected: format!("2 dims (N, {row}) for {side}x{side} RGB images"),
        });
    }
    let n = shape[0] as usize;
    let labels_path = path.join("labels.npy");
    let (lshape, labels) = parse_int_array(&label_bytes, &labels_path)?;
    if lshape.len() != 1 || lshape[0] as usize != n {
        return Err(DataError::NpyNdim {
            path: labels_path,
            dtype: "integer".to_string(),
            shape: lshape,
            expected: format!("1 dim of {n} labels, one per image of data.npy"),
        });
    }
    let labels = labels_from(&labels, path)?;
    Ok((data.to_vec(), labels))
}

/// Downsampled ImageNet's 1-based labels, checked, 0-based.
fn labels_from(labels: &[i64], path: &Path) -> Result<Vec<u32>, DataError> {
    labels
        .iter()
        .enumerate()
        .map(|(i, &l)| {
            if (1..=1000).contains(&l) {
                Ok(l as u32 - 1)
            } else {
                Err(DataError::Archive {
                    path: path.to_path_buf(),
                    reason: format!(
                        "labels.npy element {i} is {l}, expected 1..=1000 (downsampled ImageNet labels are 1-based)"
                    ),
                })
            }
        })
        .collect()
}

/// How many bytes of `data.npy` are read to find its header when indexing.
const HEADER_PREFIX: u64 = 64 * 1024;

/// Indexes one `.npz` batch without decoding its images: the number of
/// images (from `data.npy`'s header, checked against the member's size)
/// and the labels. Reading a deflated member's header inflates only its
/// beginning.
pub(crate) fn index_npz_batch(path: &Path, side: usize) -> Result<(usize, Vec<u32>), DataError> {
    let bad = |reason: String| DataError::Archive {
        path: path.to_path_buf(),
        reason,
    };
    let file = std::fs::File::open(path).map_err(|e| DataError::io(path, e))?;
    let mut zip = zip::ZipArchive::new(std::io::BufReader::new(file))
        .map_err(|e| bad(format!("not a readable .npz (zip) file: {e}")))?;
    let missing = |name: &str| {
        bad(format!(
            "has no member {name} (expected data.npy and labels.npy)"
        ))
    };
    let (prefix, size) = {
        let m = zip.by_name("data.npy").map_err(|_| missing("data.npy"))?;
        let size = m.size();
        let mut prefix = Vec::new();
        m.take(HEADER_PREFIX)
            .read_to_end(&mut prefix)
            .map_err(|e| bad(format!("member data.npy: {e}")))?;
        (prefix, size)
    };
    let data_path = path.join("data.npy");
    let (shape, start) = super::npy::u8_header(&prefix, &data_path)?;
    let row = 3 * side * side;
    if shape.len() != 2 || shape[1] != row as u64 {
        return Err(DataError::NpyNdim {
            path: data_path,
            dtype: "'|u1'".to_string(),
            shape,
            expected: format!("2 dims (N, {row}) for {side}x{side} RGB images"),
        });
    }
    let n = shape[0];
    let what = format!("the .npy header says shape {shape:?} of '|u1'");
    let payload = n.saturating_mul(row as u64);
    super::files::check_payload(&data_path, what, payload, size.saturating_sub(start as u64))?;
    let mut label_bytes = Vec::new();
    zip.by_name("labels.npy")
        .map_err(|_| missing("labels.npy"))?
        .read_to_end(&mut label_bytes)
        .map_err(|e| bad(format!("member labels.npy: {e}")))?;
    let labels_path = path.join("labels.npy");
    let (lshape, labels) = parse_int_array(&label_bytes, &labels_path)?;
    if lshape.len() != 1 || lshape[0] != n {
        return Err(DataError::NpyNdim {
            path: labels_path,
            dtype: "integer".to_string(),
            shape: lshape,
            expected: format!("1 dim of {n} labels, one per image of data.npy"),
        });
    }
    Ok((n as usize, labels_from(&labels, path)?))
}

/// The images of `paths` one after the other, their labels, and how many
/// each file holds.
fn read_batches(
    paths: &[PathBuf],
    side: usize,
) -> Result<(Examples, Vec<u32>, Vec<usize>), DataError> {
    let mut data = Vec::new();
    let mut labels = Vec::new();
    let mut sizes = Vec::new();
    for p in paths {
        let (d, l) = read_npz_batch(p, side)?;
        data.extend_from_slice(&d);
        sizes.push(l.len());
        labels.extend(l);
    }
    Ok((
        Examples::Images {
            n: labels.len(),
            data,
            c: 3,
            h: side,
            w: side,
        },
        labels,
        sizes,
    ))
}

/// Where a downsampled ImageNet's files are.
pub(crate) struct Located {
    /// The folder of the training batches.
    pub folder: PathBuf,
    /// The ten training batches, in order.
    pub train: Vec<PathBuf>,
    /// `val_data.npz`.
    pub test: PathBuf,
}

/// Finds `imagenet{side}`'s files (see [`imagenet_dirs`]).
pub(crate) fn locate(side: usize, data_dir: &Path) -> Result<Located, DataError> {
    let dirs = imagenet_dirs(side, data_dir);
    let wanted: Vec<Vec<String>> = train_names().into_iter().map(|n| vec![n]).collect();
    let train_paths = match find_all(&dirs, &wanted) {
        Lookup::Found(p) => p,
        Lookup::Missing(incomplete) => return Err(not_found(side, dirs, incomplete)),
    };
    let folder = train_paths[0].parent().unwrap_or(data_dir).to_path_buf();
    let test_file = format!("{IMAGENET_TEST_FILE}.npz");
    let val_dirs = dedup_dirs(vec![
        folder.clone(),
        data_dir.join(format!("Imagenet{side}_val_npz")),
        data_dir.join(format!("Imagenet{side}_val")),
        data_dir.to_path_buf(),
    ]);
    let test_path = match find_all(&val_dirs, &[vec![test_file.clone()]]) {
        Lookup::Found(p) => p[0].clone(),
        Lookup::Missing(_) => return Err(not_found(side, val_dirs, Vec::new())),
    };
    Ok(Located {
        folder,
        train: train_paths,
        test: test_path,
    })
}

/// The source line of a downsampled ImageNet.
pub(crate) fn describe(at: &Located, train: usize, test: usize, how: &str) -> String {
    format!(
        "{} ({train} train images in {IMAGENET_TRAIN_BATCHES} batches), {} ({test} test images){how}",
        at.folder.display(),
        at.test.display(),
    )
}

/// `imagenet32` (`side` 32) or `imagenet64` (`side` 64), in memory, with
/// the number of images of each training batch file.
pub(crate) fn load_imagenet(
    side: usize,
    data_dir: &Path,
) -> Result<(Dataset, Vec<usize>), DataError> {
    let at = locate(side, data_dir)?;
    let (train, train_labels, sizes) = read_batches(&at.train, side)?;
    let (test, test_labels, _) = read_batches(std::slice::from_ref(&at.test), side)?;
    let ds = Dataset {
        name: format!("imagenet{side}"),
        source: describe(&at, train.len(), test.len(), ""),
        train,
        test,
        labels: Some(Labels {
            classes: Vec::new(),
            train: train_labels,
            test: test_labels,
            files: [&at.folder, &at.test].map(|p| format!("labels.npy in {}", p.display())),
        }),
    };
    Ok((ds, sizes))
}

fn not_found(
    side: usize,
    dirs: Vec<PathBuf>,
    incomplete: Vec<(PathBuf, Vec<String>)>,
) -> DataError {
    let mut files = train_names();
    files.push(format!("{IMAGENET_TEST_FILE}.npz"));
    DataError::NotFound(Box::new(NotFound {
        dataset: format!("Downsampled ImageNet {side}x{side}"),
        files,
        dirs,
        incomplete,
        archives: Vec::new(),
        get_it: format!(
            "Get Imagenet{side}_train_npz.zip and Imagenet{side}_val_npz.zip from {IMAGENET_URL} and unzip them there."
        ),
    }))
}
