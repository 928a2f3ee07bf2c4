//! MNIST and Fashion-MNIST, from IDX image files.
//!
//! An IDX image file is: the magic number 0x00000803 (two zero bytes, type
//! 0x08 = unsigned byte, 3 dimensions), then N, H, W as big-endian u32, then
//! N x H x W pixel bytes, row-major. Files may be gzipped (detected by the
//! magic bytes 1f 8b, whatever the file name). The label files
//! (`train-labels-idx1-ubyte`, `t10k-labels-idx1-ubyte`, see
//! [`super::labels`]) are read when they sit beside the image files; a set
//! without them loads, unlabelled.

use std::path::{Path, PathBuf};

use super::files::{dedup_dirs, find_all, read_maybe_gzip, Lookup};
use super::labels::{
    self, FASHION_MNIST_CLASSES, IDX_TEST_LABELS, IDX_TRAIN_LABELS, MNIST_CLASSES,
};
use super::{DataError, Dataset, Examples, Labels, NotFound};

/// The magic number of an IDX file of unsigned bytes with 3 dimensions.
pub const IDX3_UBYTE_MAGIC: u32 = 0x0000_0803;
/// Bytes in an IDX3 header: magic + 3 dimensions.
pub const IDX3_HEADER_BYTES: usize = 16;

/// Where MNIST comes from.
pub const MNIST_URL: &str = "http://yann.lecun.com/exdb/mnist/";
/// Where Fashion-MNIST comes from.
pub const FASHION_MNIST_URL: &str = "https://github.com/zalandoresearch/fashion-mnist";
/// Where Debian's `dataset-fashion-mnist` package installs the (gzipped) files.
pub const FASHION_MNIST_SYSTEM_DIR: &str = "/usr/share/datasets/fashion-mnist";
/// Where a system-wide MNIST is looked for, if it exists.
pub const MNIST_SYSTEM_DIR: &str = "/usr/share/datasets/mnist";

/// Which of the two IDX data sets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IdxSet {
    /// MNIST digits.
    Mnist,
    /// Zalando's Fashion-MNIST.
    FashionMnist,
}

impl IdxSet {
    /// The spec name (`mnist`, `fashion-mnist`), also the sub-folder looked in.
    pub fn name(self) -> &'static str {
        match self {
            IdxSet::Mnist => "mnist",
            IdxSet::FashionMnist => "fashion-mnist",
        }
    }

    fn display_name(self) -> &'static str {
        match self {
            IdxSet::Mnist => "MNIST",
            IdxSet::FashionMnist => "Fashion-MNIST",
        }
    }

    /// The class names, by label.
    pub fn classes(self) -> &'static [&'static str; 10] {
        match self {
            IdxSet::Mnist => &MNIST_CLASSES,
            IdxSet::FashionMnist => &FASHION_MNIST_CLASSES,
        }
    }

    fn system_dir(self) -> &'static str {
        match self {
            IdxSet::Mnist => MNIST_SYSTEM_DIR,
            IdxSet::FashionMnist => FASHION_MNIST_SYSTEM_DIR,
        }
    }

    fn get_it(self, data_dir: &Path) -> String {
        match self {
            IdxSet::Mnist => format!(
                "The official files come from {MNIST_URL}: put train-images-idx3-ubyte.gz and \
                 t10k-images-idx3-ubyte.gz (gzipped or not) in {}.",
                data_dir.join("mnist").display()
            ),
            IdxSet::FashionMnist => format!(
                "The official files come from {FASHION_MNIST_URL}: put train-images-idx3-ubyte.gz \
                 and t10k-images-idx3-ubyte.gz (gzipped or not) in {}; on Debian or Ubuntu, \
                 `apt-get install dataset-fashion-mnist` installs them in {FASHION_MNIST_SYSTEM_DIR}.",
                data_dir.join("fashion-mnist").display()
            ),
        }
    }
}

/// The names a file with official name `base` is looked for under: as is,
/// gzipped, and with the dot form some mirrors use (`train-images.idx3-ubyte`).
fn candidate_names(base: &str) -> Vec<String> {
    let dotted = base.replacen("-idx", ".idx", 1);
    vec![
        base.to_string(),
        format!("{base}.gz"),
        dotted.clone(),
        format!("{dotted}.gz"),
    ]
}

/// The official name of the training image file.
pub const IDX_TRAIN_IMAGES: &str = "train-images-idx3-ubyte";
/// The official name of the test image file.
pub const IDX_TEST_IMAGES: &str = "t10k-images-idx3-ubyte";

/// The folders an IDX data set is looked for in, in order:
/// `data_dir/<name>/`, `data_dir/`, then the system folder
/// (`/usr/share/datasets/<name>`; for MNIST only if it exists).
pub fn idx_dirs(set: IdxSet, data_dir: &Path) -> Vec<PathBuf> {
    let mut dirs = vec![data_dir.join(set.name()), data_dir.to_path_buf()];
    let sys = PathBuf::from(set.system_dir());
    if set == IdxSet::FashionMnist || sys.is_dir() {
        dirs.push(sys);
    }
    dedup_dirs(dirs)
}

/// Parses an IDX3 unsigned-byte image file (already decompressed).
/// Returns (pixels, n, h, w).
pub(crate) fn parse_idx3(
    mut bytes: Vec<u8>,
    path: &Path,
) -> Result<(Vec<u8>, usize, usize, usize), DataError> {
    if bytes.len() < IDX3_HEADER_BYTES {
        // Say "bad magic" before "too short" when even the magic is wrong.
        if bytes.len() >= 4 {
            check_magic(&bytes, path)?;
        }
        return Err(DataError::TooShort {
            path: path.to_path_buf(),
            what: "an IDX image header (magic + N, H, W as big-endian u32)".to_string(),
            needed: IDX3_HEADER_BYTES as u64,
            found: bytes.len() as u64,
        });
    }
    check_magic(&bytes, path)?;
    let be = |i: usize| u32::from_be_bytes([bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]]);
    let (n, h, w) = (be(4), be(8), be(12));
    let what = format!("IDX header says {n} images of {h}x{w}");
    // Each factor is below 2^32, so the product fits in u128; saturate to u64.
    let expected = (u128::from(n) * u128::from(h) * u128::from(w)).min(u128::from(u64::MAX)) as u64;
    let found = (bytes.len() - IDX3_HEADER_BYTES) as u64;
    super::files::check_payload(path, what, expected, found)?;
    bytes.drain(..IDX3_HEADER_BYTES);
    Ok((bytes, n as usize, h as usize, w as usize))
}

fn check_magic(bytes: &[u8], path: &Path) -> Result<(), DataError> {
    let magic = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
    if magic != IDX3_UBYTE_MAGIC {
        let hint = if magic == 0x0000_0801 {
            " (0x00000801 is an IDX label file: give the image file)"
        } else {
            ""
        };
        return Err(DataError::BadMagic {
            path: path.to_path_buf(),
            found: format!("0x{magic:08x}"),
            expected: format!("0x{IDX3_UBYTE_MAGIC:08x}"),
            format: format!("IDX file of unsigned bytes with 3 dimensions{hint}"),
        });
    }
    Ok(())
}

/// Reads one IDX3 image file (gzipped or not) into `Examples::Images` with one channel.
pub fn read_idx3_images(path: &Path) -> Result<Examples, DataError> {
    let bytes = read_maybe_gzip(path)?;
    let (data, n, h, w) = parse_idx3(bytes, path)?;
    Ok(Examples::Images {
        data,
        n,
        c: 1,
        h,
        w,
    })
}

/// Loads an IDX data set from the first of `dirs` that holds both the train
/// and the test image file. `data_dir` only shapes the "not found" hint.
pub fn load_idx_from(set: IdxSet, dirs: &[PathBuf], data_dir: &Path) -> Result<Dataset, DataError> {
    let wanted = vec![
        candidate_names(IDX_TRAIN_IMAGES),
        candidate_names(IDX_TEST_IMAGES),
    ];
    match find_all(dirs, &wanted) {
        Lookup::Found(paths) => {
            let train = read_idx3_images(&paths[0])?;
            let test = read_idx3_images(&paths[1])?;
            if train.example_shape() != test.example_shape() {
                return Err(DataError::ShapeMismatch {
                    train_path: paths[0].clone(),
                    train_shape: train.describe_example(),
                    test_path: paths[1].clone(),
                    test_shape: test.describe_example(),
                });
            }
            let folder = paths[0].parent().unwrap_or(Path::new("."));
            let labels = read_labels(set, folder, [(&paths[0], &train), (&paths[1], &test)])?;
            Ok(Dataset {
                name: set.name().to_string(),
                source: folder.display().to_string(),
                train,
                test,
                labels,
            })
        }
        Lookup::Missing(incomplete) => Err(DataError::NotFound(Box::new(NotFound {
            dataset: set.display_name().to_string(),
            files: wanted.into_iter().flatten().collect(),
            dirs: dirs.to_vec(),
            incomplete,
            archives: Vec::new(),
            get_it: set.get_it(data_dir),
        }))),
    }
}

/// The label files beside the image files in `folder`, when both are there,
/// checked against the images' counts (`images`: train, test).
fn read_labels(
    set: IdxSet,
    folder: &Path,
    images: [(&PathBuf, &Examples); 2],
) -> Result<Option<Labels>, DataError> {
    let wanted = vec![
        candidate_names(IDX_TRAIN_LABELS),
        candidate_names(IDX_TEST_LABELS),
    ];
    let Lookup::Found(paths) = find_all(&[folder.to_path_buf()], &wanted) else {
        return Ok(None);
    };
    let classes = set.classes();
    let mut read = [(); 2].map(|_| Vec::new());
    for ((path, (image_path, ex)), out) in paths.iter().zip(images).zip(&mut read) {
        let bytes = read_maybe_gzip(path)?;
        *out = labels::parse_idx1(&bytes, path, ex.len(), classes.len(), image_path)?;
    }
    let [train, test] = read;
    let files = [0, 1].map(|i| paths[i].display().to_string());
    Ok(Some(Labels::named(classes, train, test, files)))
}
