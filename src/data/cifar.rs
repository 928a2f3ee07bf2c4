//! CIFAR-10, from the official binary release.
//!
//! Each batch file is a run of 3073-byte records: one label byte (0..=9),
//! then 3072 pixel bytes, channel-major: the 32x32 red plane, then green,
//! then blue, each row-major. That is already (C, H, W) order, so the pixel
//! bytes are copied as they are. Labels are checked (0..=9) and kept, for
//! flows `given class(10)` (see [`super::labels`]).

use std::io::Read;
use std::path::{Path, PathBuf};

use super::files::{find_all, read_file, Lookup};
use super::labels::CIFAR10_CLASSES;
use super::{DataError, Dataset, Examples, Labels, NotFound};

/// Bytes in one record: 1 label byte + 3 x 32 x 32 pixel bytes.
pub const CIFAR10_RECORD_BYTES: usize = 1 + CIFAR10_IMAGE_BYTES;
/// Pixel bytes in one image.
pub const CIFAR10_IMAGE_BYTES: usize = 3 * 32 * 32;
/// The five training batch files, in the order their images are concatenated.
pub const CIFAR10_TRAIN_FILES: [&str; 5] = [
    "data_batch_1.bin",
    "data_batch_2.bin",
    "data_batch_3.bin",
    "data_batch_4.bin",
    "data_batch_5.bin",
];
/// The test batch file.
pub const CIFAR10_TEST_FILE: &str = "test_batch.bin";
/// The folder the official tarball unpacks to.
pub const CIFAR10_DIR: &str = "cifar-10-batches-bin";
/// The official tarball's file name.
pub const CIFAR10_ARCHIVE: &str = "cifar-10-binary.tar.gz";
/// Where the official tarball comes from.
pub const CIFAR10_URL: &str = "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz";

const RECORD_WHAT: &str = "CIFAR-10 (1 label byte + 3072 pixel bytes)";

/// Checks one batch file's bytes and appends its pixel bytes to `out`;
/// returns the number of images.
pub(crate) fn parse_batch(
    bytes: &[u8],
    path: &Path,
    out: &mut Vec<u8>,
    labels: &mut Vec<u32>,
) -> Result<usize, DataError> {
    let len = bytes.len();
    if !len.is_multiple_of(CIFAR10_RECORD_BYTES) {
        return Err(DataError::BadRecordSize {
            path: path.to_path_buf(),
            len: len as u64,
            record: CIFAR10_RECORD_BYTES,
            what: RECORD_WHAT.to_string(),
        });
    }
    if len == 0 {
        return Err(DataError::Empty {
            path: path.to_path_buf(),
            what: "0 bytes, no CIFAR-10 records".to_string(),
        });
    }
    let n = len / CIFAR10_RECORD_BYTES;
    out.reserve(n * CIFAR10_IMAGE_BYTES);
    for (i, rec) in bytes.chunks_exact(CIFAR10_RECORD_BYTES).enumerate() {
        let label = rec[0];
        if label > 9 {
            return Err(DataError::BadLabel {
                path: path.to_path_buf(),
                record: i,
                label,
            });
        }
        out.extend_from_slice(&rec[1..]);
        labels.push(u32::from(label));
    }
    Ok(n)
}

/// CIFAR-10's labels, from the batch files in `from`.
fn labels(train: Vec<u32>, test: Vec<u32>, from: &str) -> Labels {
    let files = [
        format!("the label bytes of data_batch_1..5.bin in {from}"),
        format!("the label bytes of {CIFAR10_TEST_FILE} in {from}"),
    ];
    Labels::named(&CIFAR10_CLASSES, train, test, files)
}

fn images(data: Vec<u8>, n: usize) -> Examples {
    Examples::Images {
        data,
        n,
        c: 3,
        h: 32,
        w: 32,
    }
}

/// The folders CIFAR-10's batch files are looked for in, in order.
pub fn cifar10_dirs(data_dir: &Path) -> Vec<PathBuf> {
    vec![data_dir.join(CIFAR10_DIR), data_dir.to_path_buf()]
}

/// Loads CIFAR-10 from `data_dir/cifar-10-batches-bin/`, else from `data_dir`
/// itself, else by streaming `data_dir/cifar-10-binary.tar.gz` (nothing is
/// written to disk). The first folder that holds all six batch files wins.
pub(crate) fn load_cifar10(data_dir: &Path) -> Result<Dataset, DataError> {
    let dirs = cifar10_dirs(data_dir);
    let wanted: Vec<Vec<String>> = CIFAR10_TRAIN_FILES
        .iter()
        .chain(std::iter::once(&CIFAR10_TEST_FILE))
        .map(|n| vec![n.to_string()])
        .collect();
    let incomplete = match find_all(&dirs, &wanted) {
        Lookup::Found(paths) => {
            let (mut train, mut train_labels) = (Vec::new(), Vec::new());
            let mut n_train = 0;
            for p in &paths[..5] {
                n_train += parse_batch(&read_file(p)?, p, &mut train, &mut train_labels)?;
            }
            let (mut test, mut test_labels) = (Vec::new(), Vec::new());
            let n_test = parse_batch(
                &read_file(&paths[5])?,
                &paths[5],
                &mut test,
                &mut test_labels,
            )?;
            let folder = paths[5].parent().unwrap_or(Path::new("."));
            return Ok(Dataset {
                name: "cifar10".to_string(),
                source: folder.display().to_string(),
                train: images(train, n_train),
                test: images(test, n_test),
                labels: Some(labels(
                    train_labels,
                    test_labels,
                    &folder.display().to_string(),
                )),
            });
        }
        Lookup::Missing(incomplete) => incomplete,
    };
    let archive = data_dir.join(CIFAR10_ARCHIVE);
    if archive.is_file() {
        let file = std::fs::File::open(&archive).map_err(|e| DataError::io(&archive, e))?;
        let (train, test, [tl, vl]) = read_cifar10_tar_gz(std::io::BufReader::new(file), &archive)?;
        return Ok(Dataset {
            name: "cifar10".to_string(),
            source: archive.display().to_string(),
            train,
            test,
            labels: Some(labels(tl, vl, &archive.display().to_string())),
        });
    }
    Err(DataError::NotFound(Box::new(NotFound {
        dataset: "CIFAR-10".to_string(),
        files: wanted.into_iter().flatten().collect(),
        dirs,
        incomplete,
        archives: vec![archive],
        get_it: format!(
            "The official binary release is {CIFAR10_URL}: put it in {} as is \
             (it is read without unpacking), or unpack it there.",
            data_dir.display()
        ),
    })))
}

/// Reads CIFAR-10's six batch files out of a gzipped tarball, streamed from
/// `reader`; `path` names the tarball in errors. Members are matched by file
/// name, in any folder.
pub(crate) fn read_cifar10_tar_gz<R: Read>(
    reader: R,
    path: &Path,
) -> Result<(Examples, Examples, [Vec<u32>; 2]), DataError> {
    let bad = |what: &str, e: std::io::Error| DataError::Archive {
        path: path.to_path_buf(),
        reason: format!("not a readable .tar.gz ({what}): {e}"),
    };
    let gz = flate2::read::MultiGzDecoder::new(reader);
    let mut archive = tar::Archive::new(gz);
    // Slot i holds (pixels, labels, count) of CIFAR10_TRAIN_FILES[i]; slot 5 the test batch.
    type Batch = (Vec<u8>, Vec<u32>, usize);
    let mut slots: Vec<Option<Batch>> = vec![None; 6];
    let entries = archive.entries().map_err(|e| bad("listing members", e))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| bad("reading a member header", e))?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let member: PathBuf = match entry.path() {
            Ok(p) => p.into_owned(),
            Err(_) => continue,
        };
        let Some(fname) = member.file_name().and_then(|f| f.to_str()) else {
            continue;
        };
        let slot = match CIFAR10_TRAIN_FILES.iter().position(|n| *n == fname) {
            Some(i) => i,
            None if fname == CIFAR10_TEST_FILE => 5,
            None => continue,
        };
        if slots[slot].is_some() {
            continue; // the first member of a name wins
        }
        let member_path = path.join(&member);
        let mut bytes = Vec::new();
        entry
            .read_to_end(&mut bytes)
            .map_err(|e| bad(&format!("reading member {}", member.display()), e))?;
        let (mut pixels, mut labels) = (Vec::new(), Vec::new());
        let n = parse_batch(&bytes, &member_path, &mut pixels, &mut labels)?;
        slots[slot] = Some((pixels, labels, n));
    }
    let missing: Vec<&str> = CIFAR10_TRAIN_FILES
        .iter()
        .copied()
        .chain(std::iter::once(CIFAR10_TEST_FILE))
        .zip(&slots)
        .filter(|(_, s)| s.is_none())
        .map(|(n, _)| n)
        .collect();
    if !missing.is_empty() {
        return Err(DataError::Archive {
            path: path.to_path_buf(),
            reason: format!(
                "the tarball lacks member(s) {} (expected {CIFAR10_DIR}/data_batch_1.bin … \
                 data_batch_5.bin and {CIFAR10_DIR}/{CIFAR10_TEST_FILE}, as in {CIFAR10_URL})",
                missing.join(", ")
            ),
        });
    }
    let mut slots = slots.into_iter().map(|s| s.unwrap_or_default());
    let (mut train, mut train_labels) = (Vec::new(), Vec::new());
    let mut n_train = 0;
    for _ in 0..5 {
        let (px, labels, n) = slots.next().unwrap_or_default();
        if train.is_empty() {
            train = px;
        } else {
            train.extend_from_slice(&px);
        }
        train_labels.extend(labels);
        n_train += n;
    }
    let (test, test_labels, n_test) = slots.next().unwrap_or_default();
    let labels = [train_labels, test_labels];
    Ok((images(train, n_train), images(test, n_test), labels))
}
