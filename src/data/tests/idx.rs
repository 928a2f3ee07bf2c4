//! MNIST / Fashion-MNIST IDX files.

use super::util::*;
use crate::data::{idx_dirs, load, load_idx_from, read_idx3_images, DataError, Examples, IdxSet};

fn pixels(e: &Examples) -> &[u8] {
    match e {
        Examples::Images { data, .. } => data,
        Examples::Vectors { .. } => panic!("expected images"),
    }
}

#[test]
fn plain_and_gzipped_idx_load() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("mnist");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("train-images-idx3-ubyte"), idx3(5, 4, 3)).unwrap();
    std::fs::write(dir.join("t10k-images-idx3-ubyte.gz"), gzip(&idx3(2, 4, 3))).unwrap();
    let ds = load("mnist", tmp.path(), None, 0).unwrap();
    assert_eq!(ds.name, "mnist");
    assert_eq!(ds.train.shape(), vec![5, 1, 4, 3]);
    assert_eq!(ds.test.shape(), vec![2, 1, 4, 3]);
    assert_eq!(pixels(&ds.train), &idx3(5, 4, 3)[16..]);
    assert_eq!(pixels(&ds.test), &idx3(2, 4, 3)[16..]);
    assert_eq!(pixels(&ds.train)[7], 21);
}

#[test]
fn gzip_is_detected_by_magic_whatever_the_name() {
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path().join("train-images-idx3-ubyte");
    std::fs::write(&p, gzip(&idx3(3, 2, 2))).unwrap();
    let e = read_idx3_images(&p).unwrap();
    assert_eq!(e.shape(), vec![3, 1, 2, 2]);
    assert_eq!(pixels(&e), &idx3(3, 2, 2)[16..]);
}

#[test]
fn fashion_mnist_loads_from_its_subfolder_with_debian_names() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("fashion-mnist");
    std::fs::create_dir_all(&dir).unwrap();
    // The names Debian's dataset-fashion-mnist installs.
    std::fs::write(
        dir.join("train-images-idx3-ubyte.gz"),
        gzip(&idx3(4, 28, 28)),
    )
    .unwrap();
    std::fs::write(
        dir.join("t10k-images-idx3-ubyte.gz"),
        gzip(&idx3(1, 28, 28)),
    )
    .unwrap();
    std::fs::write(dir.join("train-labels-idx1-ubyte.gz"), gzip(&[0, 0, 8, 1])).unwrap();
    let ds = load("fashion-mnist", tmp.path(), None, 0).unwrap();
    assert_eq!(ds.name, "fashion-mnist");
    assert_eq!(ds.train.shape(), vec![4, 1, 28, 28]);
    assert_eq!(ds.test.shape(), vec![1, 1, 28, 28]);
    assert!(ds.source.ends_with("fashion-mnist"));
}

#[test]
fn dotted_mirror_names_are_accepted() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("train-images.idx3-ubyte"), idx3(2, 3, 3)).unwrap();
    std::fs::write(tmp.path().join("t10k-images.idx3-ubyte"), idx3(2, 3, 3)).unwrap();
    let ds = load_idx_from(IdxSet::Mnist, &[tmp.path().to_path_buf()], tmp.path()).unwrap();
    assert_eq!(ds.train.len(), 2);
}

#[test]
fn truncated_idx_is_refused_with_counts_and_path() {
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path().join("train-images-idx3-ubyte");
    let mut bytes = idx3(10, 28, 28);
    bytes.truncate(16 + 7 * 784 + 5);
    std::fs::write(&p, &bytes).unwrap();
    let err = read_idx3_images(&p).unwrap_err();
    assert!(
        matches!(&err, DataError::Truncated { path, expected: 7840, found: 5493, .. } if *path == p),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(msg.contains(&p.display().to_string()), "{msg}");
    assert!(msg.contains("10 images of 28x28"), "{msg}");
    assert!(msg.contains("7840") && msg.contains("5493"), "{msg}");

    // The same through gzip, and through `load`.
    std::fs::write(&p, gzip(&bytes)).unwrap();
    std::fs::write(tmp.path().join("t10k-images-idx3-ubyte"), idx3(1, 28, 28)).unwrap();
    let err = load_idx_from(IdxSet::Mnist, &[tmp.path().to_path_buf()], tmp.path()).unwrap_err();
    assert!(
        matches!(&err, DataError::Truncated { found: 5493, .. }),
        "{err:?}"
    );

    // Shorter than the header.
    std::fs::write(&p, &bytes[..10]).unwrap();
    let err = read_idx3_images(&p).unwrap_err();
    assert!(
        matches!(
            &err,
            DataError::TooShort {
                needed: 16,
                found: 10,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("10 bytes long"), "{err}");
}

#[test]
fn wrong_magic_is_refused_with_found_and_expected() {
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path().join("t10k-images-idx3-ubyte.gz");
    let mut bytes = idx3(2, 2, 2);
    bytes[3] = 0x01; // a label file's magic
    std::fs::write(&p, gzip(&bytes)).unwrap();
    let err = read_idx3_images(&p).unwrap_err();
    assert!(
        matches!(&err, DataError::BadMagic { found, expected, .. } if found == "0x00000801" && expected == "0x00000803"),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(msg.contains(&p.display().to_string()), "{msg}");
    assert!(
        msg.contains("0x00000801") && msg.contains("0x00000803"),
        "{msg}"
    );
    assert!(msg.contains("label file"), "{msg}");
}

#[test]
fn trailing_bytes_empty_and_bad_gzip_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path().join("x");
    let mut bytes = idx3(2, 2, 2);
    bytes.extend_from_slice(&[1, 2, 3]);
    std::fs::write(&p, &bytes).unwrap();
    let err = read_idx3_images(&p).unwrap_err();
    assert!(
        matches!(
            &err,
            DataError::TrailingBytes {
                expected: 8,
                found: 11,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("3 bytes too many"), "{err}");

    std::fs::write(&p, idx3(0, 28, 28)).unwrap();
    let err = read_idx3_images(&p).unwrap_err();
    assert!(matches!(&err, DataError::Empty { .. }), "{err:?}");

    std::fs::write(&p, [0x1f, 0x8b, 8, 0, 1, 2, 3]).unwrap();
    let err = read_idx3_images(&p).unwrap_err();
    assert!(matches!(&err, DataError::Gzip { .. }), "{err:?}");
    assert!(err.to_string().contains("1f 8b"), "{err}");
}

#[test]
fn train_and_test_of_different_sizes_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("train-images-idx3-ubyte"), idx3(2, 28, 28)).unwrap();
    std::fs::write(tmp.path().join("t10k-images-idx3-ubyte"), idx3(2, 32, 32)).unwrap();
    let err = load_idx_from(IdxSet::Mnist, &[tmp.path().to_path_buf()], tmp.path()).unwrap_err();
    assert!(matches!(&err, DataError::ShapeMismatch { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains("uint8 1x28x28") && msg.contains("uint8 1x32x32"),
        "{msg}"
    );
}

#[test]
fn search_folders() {
    let d = std::path::Path::new("/data");
    let f = idx_dirs(IdxSet::FashionMnist, d);
    assert_eq!(f[0], d.join("fashion-mnist"));
    assert_eq!(f[1], d);
    assert_eq!(
        f[2],
        std::path::Path::new("/usr/share/datasets/fashion-mnist")
    );
    let m = idx_dirs(IdxSet::Mnist, d);
    assert_eq!(&m[..2], &[d.join("mnist"), d.to_path_buf()]);
}
