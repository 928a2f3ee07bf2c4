//! CIFAR-10 from .bin files and from a real .tar.gz.

use super::util::*;
use crate::data::cifar::read_cifar10_tar_gz;
use crate::data::{load, DataError, Examples};

/// Checks the tiny CIFAR-10's shapes and pixel values.
fn check_tiny(train: &Examples, test: &Examples) {
    assert_eq!(train.shape(), vec![5 * CIFAR_PER_FILE, 3, 32, 32]);
    assert_eq!(test.shape(), vec![CIFAR_PER_FILE, 3, 32, 32]);
    let (Examples::Images { data: tr, .. }, Examples::Images { data: te, .. }) = (train, test)
    else {
        panic!("expected images");
    };
    let at = |d: &[u8], i: usize, c: usize, y: usize, x: usize| d[i * 3072 + c * 1024 + y * 32 + x];
    for i in 0..5 * CIFAR_PER_FILE {
        for (c, y, x) in [(0, 0, 0), (0, 31, 31), (1, 5, 17), (2, 0, 1), (2, 31, 30)] {
            assert_eq!(
                at(tr, i, c, y, x),
                cifar_pixel(i, c, y, x),
                "train {i} {c} {y} {x}"
            );
        }
    }
    for i in 0..CIFAR_PER_FILE {
        for (c, y, x) in [(0, 0, 0), (1, 16, 16), (2, 31, 31)] {
            assert_eq!(at(te, i, c, y, x), cifar_pixel(15 + i, c, y, x));
        }
    }
    // The whole of the first train image, byte for byte (label dropped).
    assert_eq!(&tr[..3072], &cifar_batch(0)[1..3073]);
}

#[test]
fn loads_bins_from_the_official_folder_and_from_data_dir_itself() {
    let tmp = tempfile::tempdir().unwrap();
    write_cifar_bins(&tmp.path().join("cifar-10-batches-bin"));
    let ds = load("cifar10", tmp.path(), None, 0).unwrap();
    assert_eq!(ds.name, "cifar10");
    assert!(ds.source.ends_with("cifar-10-batches-bin"), "{}", ds.source);
    check_tiny(&ds.train, &ds.test);

    let flat = tempfile::tempdir().unwrap();
    write_cifar_bins(flat.path());
    let ds2 = load("cifar10", flat.path(), None, 99).unwrap();
    assert_eq!(ds2.train, ds.train);
    assert_eq!(ds2.test, ds.test);
}

#[test]
fn loads_the_tarball_without_unpacking_it() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(
        tmp.path().join("cifar-10-binary.tar.gz"),
        cifar_tar_gz(&cifar_files()),
    )
    .unwrap();
    let ds = load("cifar10", tmp.path(), None, 0).unwrap();
    assert!(ds.source.ends_with("cifar-10-binary.tar.gz"));
    check_tiny(&ds.train, &ds.test);
    // Nothing was written beside the tarball.
    assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 1);
}

#[test]
fn folder_with_some_files_falls_back_to_the_tarball() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("cifar-10-batches-bin");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("data_batch_1.bin"), cifar_batch(0)).unwrap();
    std::fs::write(
        tmp.path().join("cifar-10-binary.tar.gz"),
        cifar_tar_gz(&cifar_files()),
    )
    .unwrap();
    let ds = load("cifar10", tmp.path(), None, 0).unwrap();
    check_tiny(&ds.train, &ds.test);
}

#[test]
fn bin_of_wrong_length_is_refused_with_its_length() {
    let tmp = tempfile::tempdir().unwrap();
    write_cifar_bins(tmp.path());
    let bad = tmp.path().join("data_batch_3.bin");
    let mut bytes = cifar_batch(6);
    bytes.truncate(3073 * 2 + 100);
    std::fs::write(&bad, &bytes).unwrap();
    let err = load("cifar10", tmp.path(), None, 0).unwrap_err();
    assert!(
        matches!(&err, DataError::BadRecordSize { path, len: 6246, record: 3073, .. } if *path == bad),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(msg.contains(&bad.display().to_string()), "{msg}");
    assert!(msg.contains("6246") && msg.contains("3073"), "{msg}");
    assert!(msg.contains("2 x 3073 + 100"), "{msg}");
}

#[test]
fn bad_label_byte_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    write_cifar_bins(tmp.path());
    let mut bytes = cifar_batch(15);
    bytes[3073] = 42; // label of record 1
    let p = tmp.path().join("test_batch.bin");
    std::fs::write(&p, &bytes).unwrap();
    let err = load("cifar10", tmp.path(), None, 0).unwrap_err();
    assert!(
        matches!(
            &err,
            DataError::BadLabel {
                record: 1,
                label: 42,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("test_batch.bin"), "{err}");
}

#[test]
fn tarball_problems_are_reported() {
    let tmp = tempfile::tempdir().unwrap();
    let tgz = tmp.path().join("cifar-10-binary.tar.gz");
    // Lacking the test batch.
    let mut files = cifar_files();
    files.pop();
    std::fs::write(&tgz, cifar_tar_gz(&files)).unwrap();
    let err = load("cifar10", tmp.path(), None, 0).unwrap_err();
    assert!(matches!(&err, DataError::Archive { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains("lacks member(s) test_batch.bin"), "{msg}");
    assert!(msg.contains(&tgz.display().to_string()), "{msg}");

    // A member of the wrong size names the member inside the tarball.
    let mut files = cifar_files();
    files[1].1.push(0);
    std::fs::write(&tgz, cifar_tar_gz(&files)).unwrap();
    let err = load("cifar10", tmp.path(), None, 0).unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(&err, DataError::BadRecordSize { len: 9220, .. }),
        "{err:?}"
    );
    assert!(
        msg.contains("cifar-10-binary.tar.gz/cifar-10-batches-bin/data_batch_2.bin"),
        "{msg}"
    );

    // Not gzip at all.
    std::fs::write(&tgz, b"this is not a tarball").unwrap();
    let err = load("cifar10", tmp.path(), None, 0).unwrap_err();
    assert!(matches!(&err, DataError::Archive { .. }), "{err:?}");
    assert!(err.to_string().contains("not a readable .tar.gz"), "{err}");

    // Cut short.
    let full = cifar_tar_gz(&cifar_files());
    let cut = &full[..full.len() / 2];
    assert!(matches!(
        read_cifar10_tar_gz(cut, &tgz),
        Err(DataError::Archive { .. })
    ));
}
