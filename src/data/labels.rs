//! Class labels: which data sets carry them, their classes, and the readers
//! of label files. A flow written `given class(K)` trains and evaluates on
//! them; other flows ignore them.
//!
//! | data set | labels | classes |
//! | --- | --- | --- |
//! | `cifar10` | each record's label byte | 10, named |
//! | `mnist`, `fashion-mnist` | `train-labels-idx1-ubyte`, `t10k-labels-idx1-ubyte` (gzipped or not) beside the image files; none if absent | 10, named |
//! | `npy:PATH` | `--labels FILE.npy` (one integer per example of PATH, split with it), `--test-labels FILE.npy` (with `--test`) | up to the largest label |
//! | `toy:NAME` | the part a point was drawn from ([`super::Toy::classes`]); none for checkerboard | 2, 8 or 5 |
//! | `folder:PATH`, `imagenet32`/`64` | the class subfolder; `labels.npy` | as found |
//! | `celeba` | none | |

use std::path::Path;

use super::npy::parse_int_array;
use super::{split_indices, Data, DataError, Labels, Spec};

/// CIFAR-10's classes, by label.
pub const CIFAR10_CLASSES: [&str; 10] = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
];
/// Fashion-MNIST's classes, by label.
pub const FASHION_MNIST_CLASSES: [&str; 10] = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
];
/// MNIST's classes: the digits.
pub const MNIST_CLASSES: [&str; 10] = ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"];

/// The magic number of an IDX file of unsigned bytes with 1 dimension.
pub const IDX1_UBYTE_MAGIC: u32 = 0x0000_0801;
/// The official name of the training label file.
pub const IDX_TRAIN_LABELS: &str = "train-labels-idx1-ubyte";
/// The official name of the test label file.
pub const IDX_TEST_LABELS: &str = "t10k-labels-idx1-ubyte";

/// Which split a label belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Which {
    /// The training split.
    Train,
    /// The test split.
    Test,
}

impl Labels {
    /// Labels named by `classes`, read from `files` (train, test).
    pub fn named(classes: &[&str], train: Vec<u32>, test: Vec<u32>, files: [String; 2]) -> Labels {
        Labels {
            classes: classes.iter().map(|c| c.to_string()).collect(),
            train,
            test,
            files,
        }
    }

    /// The first label at or above `k` (training split first): its split,
    /// its index and its value.
    pub fn first_at_or_above(&self, k: usize) -> Option<(Which, usize, u32)> {
        let find = |v: &[u32], which| {
            let i = v.iter().position(|&l| l as usize >= k)?;
            Some((which, i, v[i]))
        };
        find(&self.train, Which::Train).or_else(|| find(&self.test, Which::Test))
    }

    /// Where a split's labels came from.
    pub fn file(&self, which: Which) -> &str {
        match which {
            Which::Train => &self.files[0],
            Which::Test => &self.files[1],
        }
    }
}

/// Parses an IDX1 unsigned-byte label file (already decompressed) of `n`
/// labels, each below `classes`; `images` names the file they label.
pub(crate) fn parse_idx1(
    bytes: &[u8],
    path: &Path,
    n: usize,
    classes: usize,
    images: &Path,
) -> Result<Vec<u32>, DataError> {
    if bytes.len() < 8 {
        return Err(DataError::TooShort {
            path: path.to_path_buf(),
            what: "an IDX label header (magic + N as big-endian u32)".to_string(),
            needed: 8,
            found: bytes.len() as u64,
        });
    }
    let be = |i: usize| u32::from_be_bytes([bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]]);
    if be(0) != IDX1_UBYTE_MAGIC {
        return Err(DataError::BadMagic {
            path: path.to_path_buf(),
            found: format!("0x{:08x}", be(0)),
            expected: format!("0x{IDX1_UBYTE_MAGIC:08x}"),
            format: "IDX label file of unsigned bytes with 1 dimension".to_string(),
        });
    }
    let count = be(4) as u64;
    let what = format!("IDX header says {count} labels");
    super::files::check_payload(path, what, count, (bytes.len() - 8) as u64)?;
    if count as usize != n {
        return Err(DataError::LabelCount {
            path: path.to_path_buf(),
            found: count as usize,
            expected: n,
            images: images.to_path_buf(),
        });
    }
    checked(bytes[8..].iter().map(|&b| i64::from(b)), path, classes)
}

/// Reads `--labels` or `--test-labels`: a `.npy` file of `n` integers (shape
/// `(n,)` or `(n, 1)`), each a class index (`0..=u32::MAX`); `images` names
/// the file they label.
pub fn read_npy_labels(path: &Path, n: usize, images: &Path) -> Result<Vec<u32>, DataError> {
    let bytes = std::fs::read(path).map_err(|e| DataError::io(path, e))?;
    let (shape, values) = parse_int_array(&bytes, path)?;
    let fits = matches!(shape.as_slice(), [_] | [_, 1]);
    if !fits {
        return Err(DataError::NpyNdim {
            path: path.to_path_buf(),
            dtype: "integer".to_string(),
            shape,
            expected: format!(
                "(N,) or (N, 1): one label per example of {}",
                images.display()
            ),
        });
    }
    if values.len() != n {
        return Err(DataError::LabelCount {
            path: path.to_path_buf(),
            found: values.len(),
            expected: n,
            images: images.to_path_buf(),
        });
    }
    checked(values.into_iter(), path, u32::MAX as usize + 1)
}

/// Gives `npy:PATH` its labels: `files` are `--labels` and `--test-labels`.
/// Without a test file (`test_data`, `--test`), `--labels` labels every
/// example of PATH and is split as PATH is (by `seed`); with one, `--labels`
/// labels PATH and `--test-labels` the test file, and both are needed.
/// Other data sets take no label files.
pub fn attach_files(
    data: &mut Data,
    files: [Option<&Path>; 2],
    test_data: Option<&Path>,
    seed: u64,
) -> Result<(), DataError> {
    let not = |option, file: &Path, why: String| DataError::LabelsNotApplicable {
        option,
        file: file.to_path_buf(),
        why,
    };
    let path = match (Spec::parse(&data.name)?, files) {
        (_, [None, None]) => return Ok(()),
        (Spec::Npy(path), _) => path,
        (_, [Some(f), _] | [None, Some(f)]) => {
            let option = if files[0].is_some() {
                "--labels"
            } else {
                "--test-labels"
            };
            let why = match &data.labels {
                Some(_) => format!("{} brings its own labels", data.name),
                None => format!("only npy:PATH takes label files, not {}", data.name),
            };
            return Err(not(option, f, why));
        }
    };
    let (train, test) = match (test_data, files) {
        (None, [Some(f), None]) => {
            let n = data.train.len() + data.test.len();
            let all = read_npy_labels(f, n, &path)?;
            let (tr, te) = split_indices(n, seed);
            let pick = |idx: Vec<usize>| idx.into_iter().map(|i| all[i]).collect::<Vec<u32>>();
            (
                (pick(tr), f.display().to_string()),
                (pick(te), f.display().to_string()),
            )
        }
        (None, [_, Some(f)]) => {
            let why = "a test split's labels need --test (the test file they label); without it, \
                       --labels labels the whole of PATH and is split with it"
                .to_string();
            return Err(not("--test-labels", f, why));
        }
        (Some(t), [Some(f), Some(g)]) => (
            (
                read_npy_labels(f, data.train.len(), &path)?,
                f.display().to_string(),
            ),
            (
                read_npy_labels(g, data.test.len(), t)?,
                g.display().to_string(),
            ),
        ),
        (Some(t), [Some(f), None] | [None, Some(f)]) => {
            let (option, other) = match files[0] {
                Some(_) => ("--labels", "--test-labels"),
                None => ("--test-labels", "--labels"),
            };
            let why = format!(
                "with --test {}, both splits need labels: give {other} as well",
                t.display()
            );
            return Err(not(option, f, why));
        }
        (_, [None, None]) => return Ok(()),
    };
    data.labels = Some(Labels {
        classes: Vec::new(),
        train: train.0,
        test: test.0,
        files: [train.1, test.1],
    });
    Ok(())
}

/// The labels, each checked to be in `0..classes`.
fn checked(
    values: impl Iterator<Item = i64>,
    path: &Path,
    classes: usize,
) -> Result<Vec<u32>, DataError> {
    values
        .enumerate()
        .map(|(index, value)| match u32::try_from(value) {
            Ok(l) if (l as usize) < classes => Ok(l),
            _ => Err(DataError::BadLabelValue {
                path: path.to_path_buf(),
                index,
                value,
                expected: format!("a class index in 0..={}", classes - 1),
            }),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn idx1(labels: &[u8], count: u32) -> Vec<u8> {
        let mut b = IDX1_UBYTE_MAGIC.to_be_bytes().to_vec();
        b.extend(count.to_be_bytes());
        b.extend(labels);
        b
    }

    #[test]
    fn idx1_labels_are_read_and_checked() {
        let (p, img) = (Path::new("l.idx1"), Path::new("i.idx3"));
        assert_eq!(
            parse_idx1(&idx1(&[3, 0, 9], 3), p, 3, 10, img).unwrap(),
            [3, 0, 9]
        );
        let e = parse_idx1(&idx1(&[3, 10], 2), p, 2, 10, img)
            .unwrap_err()
            .to_string();
        assert_eq!(e, "l.idx1: label 1 is 10, expected a class index in 0..=9");
        let e = parse_idx1(&idx1(&[3, 1], 2), p, 5, 10, img)
            .unwrap_err()
            .to_string();
        assert_eq!(e, "l.idx1: 2 labels, expected 5, one per image of i.idx3");
        let e = parse_idx1(&idx1(&[3], 2), p, 2, 10, img).unwrap_err();
        assert!(matches!(e, DataError::Truncated { .. }), "{e}");
        let mut wrong = idx1(&[1], 1);
        wrong[3] = 3;
        let e = parse_idx1(&wrong, p, 1, 10, img).unwrap_err().to_string();
        assert!(e.contains("bad magic number 0x00000803"), "{e}");
    }

    #[test]
    fn npy_labels_are_read_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, descr: &str, shape: &[usize], data: &[u8]| {
            let p = dir.path().join(name);
            std::fs::write(&p, super::super::npy::npy_bytes(descr, shape, data)).unwrap();
            p
        };
        let img = Path::new("x.npy");
        let ok = write("ok.npy", "<i8", &[3], &[2, 0, 0, 0, 0, 0, 0, 0].repeat(3));
        assert_eq!(read_npy_labels(&ok, 3, img).unwrap(), [2, 2, 2]);
        let col = write("col.npy", "|u1", &[2, 1], &[4, 1]);
        assert_eq!(read_npy_labels(&col, 2, img).unwrap(), [4, 1]);
        let neg = write("neg.npy", "|i1", &[2], &[1, 0xff]);
        let e = read_npy_labels(&neg, 2, img).unwrap_err().to_string();
        assert!(
            e.ends_with("neg.npy: label 1 is -1, expected a class index in 0..=4294967295"),
            "{e}"
        );
        let e = read_npy_labels(&col, 3, img).unwrap_err().to_string();
        assert!(
            e.ends_with("col.npy: 2 labels, expected 3, one per image of x.npy"),
            "{e}"
        );
        let wide = write("wide.npy", "|u1", &[1, 2], &[4, 1]);
        let e = read_npy_labels(&wide, 1, img).unwrap_err().to_string();
        assert!(e.contains("(N,) or (N, 1)"), "{e}");
        let floats = write("f.npy", "<f4", &[1], &[0, 0, 0, 0]);
        assert!(read_npy_labels(&floats, 1, img).is_err());
    }

    #[test]
    fn the_first_label_too_large_is_found_train_first() {
        let l = Labels::named(&[], vec![0, 1, 2], vec![5, 0], ["a".into(), "b".into()]);
        assert_eq!(l.first_at_or_above(3), Some((Which::Test, 0, 5)));
        assert_eq!(l.first_at_or_above(2), Some((Which::Train, 2, 2)));
        assert_eq!(l.first_at_or_above(6), None);
        assert_eq!(l.file(Which::Test), "b");
    }
}
