//! Spec parsing, missing data sets, and the test-file option.

use std::path::{Path, PathBuf};

use super::util::*;
use crate::data::{load, load_idx_from, DataError, IdxSet, Spec, Toy};

#[test]
fn specs_parse() {
    assert_eq!(Spec::parse("cifar10").unwrap(), Spec::Cifar10);
    assert_eq!(Spec::parse("mnist").unwrap(), Spec::Idx(IdxSet::Mnist));
    assert_eq!(
        Spec::parse("fashion-mnist").unwrap(),
        Spec::Idx(IdxSet::FashionMnist)
    );
    assert_eq!(
        Spec::parse("npy:rel/x.npy").unwrap(),
        Spec::Npy(PathBuf::from("rel/x.npy"))
    );
    assert_eq!(
        Spec::parse("toy:8gaussians").unwrap(),
        Spec::Toy(Toy::EightGaussians)
    );
    assert_eq!(
        Spec::parse("toy:two-spirals").unwrap().name(),
        "toy:two-spirals"
    );
}

#[test]
fn unknown_spec_lists_the_accepted_names() {
    for bad in ["foo", "", "npy:", "CIFAR10", "toy"] {
        let err = load(bad, Path::new("."), None, 0).unwrap_err();
        assert!(
            matches!(&err, DataError::UnknownSpec { spec } if spec == bad),
            "{err:?}"
        );
        let msg = err.to_string();
        for name in [
            "cifar10",
            "mnist",
            "fashion-mnist",
            "npy:PATH",
            "toy:NAME",
            "two-moons",
            "pinwheel",
        ] {
            assert!(msg.contains(name), "{msg} lacks {name}");
        }
        assert!(msg.contains(&format!("`{bad}`")), "{msg}");
    }
}

#[test]
fn unknown_toy_lists_the_toy_names() {
    let err = load("toy:spiral", Path::new("."), None, 0).unwrap_err();
    assert!(
        matches!(&err, DataError::UnknownToy { name } if name == "spiral"),
        "{err:?}"
    );
    let msg = err.to_string();
    for n in crate::data::TOY_NAMES {
        assert!(msg.contains(n), "{msg}");
    }
}

#[test]
fn missing_cifar_names_every_file_folder_archive_and_the_url() {
    let tmp = tempfile::tempdir().unwrap();
    let err = load("cifar10", tmp.path(), None, 0).unwrap_err();
    let DataError::NotFound(nf) = &err else {
        panic!("{err:?}")
    };
    let (dirs, files, archives) = (&nf.dirs, &nf.files, &nf.archives);
    assert_eq!(
        dirs,
        &vec![
            tmp.path().join("cifar-10-batches-bin"),
            tmp.path().to_path_buf()
        ]
    );
    assert_eq!(files.len(), 6);
    assert_eq!(archives, &vec![tmp.path().join("cifar-10-binary.tar.gz")]);
    let msg = err.to_string();
    println!("{msg}");
    for f in ["data_batch_1.bin", "data_batch_5.bin", "test_batch.bin"] {
        assert!(msg.contains(f), "{msg}");
    }
    for p in [
        tmp.path().join("cifar-10-batches-bin"),
        tmp.path().join("cifar-10-binary.tar.gz"),
    ] {
        assert!(msg.contains(&p.display().to_string()), "{msg}");
    }
    assert!(
        msg.contains("https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz"),
        "{msg}"
    );
}

#[test]
fn missing_mnist_names_folders_files_and_what_is_incomplete() {
    let tmp = tempfile::tempdir().unwrap();
    let a = tmp.path().join("mnist");
    let b = tmp.path().to_path_buf();
    std::fs::create_dir_all(&a).unwrap();
    std::fs::write(a.join("train-images-idx3-ubyte.gz"), gzip(&idx3(1, 2, 2))).unwrap();
    let err = load_idx_from(IdxSet::Mnist, &[a.clone(), b.clone()], tmp.path()).unwrap_err();
    assert!(matches!(&err, DataError::NotFound(_)), "{err:?}");
    let msg = err.to_string();
    println!("{msg}");
    assert!(msg.contains(&format!("  {}\n", b.display())), "{msg}");
    assert!(
        msg.contains(&format!("  {} (has some", a.display())),
        "{msg}"
    );
    assert!(
        msg.contains("lacks t10k-images-idx3-ubyte or t10k-images-idx3-ubyte.gz"),
        "{msg}"
    );
    for f in [
        "train-images-idx3-ubyte",
        "train-images-idx3-ubyte.gz",
        "t10k-images-idx3-ubyte.gz",
    ] {
        assert!(msg.contains(f), "{msg}");
    }
    assert!(msg.contains("http://yann.lecun.com/exdb/mnist/"), "{msg}");

    let err =
        load_idx_from(IdxSet::FashionMnist, std::slice::from_ref(&b), tmp.path()).unwrap_err();
    let msg = err.to_string();
    assert!(msg.starts_with("Fashion-MNIST not found"), "{msg}");
    assert!(
        msg.contains("https://github.com/zalandoresearch/fashion-mnist"),
        "{msg}"
    );
    assert!(
        msg.contains("apt-get install dataset-fashion-mnist"),
        "{msg}"
    );
}

#[test]
fn test_file_only_for_npy() {
    let err = load("toy:circles", Path::new("."), Some(Path::new("t.npy")), 0).unwrap_err();
    assert!(
        matches!(&err, DataError::TestFileNotApplicable { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("t.npy"), "{err}");
}

#[test]
fn missing_npy_file_names_it() {
    let err = load("npy:/nonexistent/x.npy", Path::new("."), None, 0).unwrap_err();
    assert!(matches!(&err, DataError::Io { .. }), "{err:?}");
    assert!(err.to_string().contains("/nonexistent/x.npy"), "{err}");
}

#[test]
fn errors_are_send_sync_static_and_small() {
    fn assert_traits<T: std::error::Error + Send + Sync + 'static>() {}
    assert_traits::<DataError>();
    assert!(std::mem::size_of::<DataError>() <= 128);
}
