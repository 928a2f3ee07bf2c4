//! Labels of every data set that has them, read and split with their
//! examples; label files refused with what was found and where.

use std::path::Path;

use super::util::*;
use crate::data::labels::{attach_files, FASHION_MNIST_CLASSES};
use crate::data::{load, open_with, DataError, Examples, LoadOptions, FASHION_MNIST_SYSTEM_DIR};

#[test]
fn cifar10_keeps_each_record_label() {
    let tmp = tempfile::tempdir().unwrap();
    write_cifar_bins(tmp.path());
    let ds = load("cifar10", tmp.path(), None, 0).unwrap();
    let l = ds.labels.expect("CIFAR-10 has labels");
    // The tiny batches label image g with g % 10 (train 0..15, test 15..18).
    assert_eq!(l.train, (0..15).map(|g| g % 10).collect::<Vec<u32>>());
    assert_eq!(l.test, (15..18).map(|g| g % 10).collect::<Vec<u32>>());
    assert_eq!(l.classes[3], "cat");
    let from_tar = tempfile::tempdir().unwrap();
    std::fs::write(
        from_tar.path().join("cifar-10-binary.tar.gz"),
        cifar_tar_gz(&cifar_files()),
    )
    .unwrap();
    let tl = load("cifar10", from_tar.path(), None, 0)
        .unwrap()
        .labels
        .unwrap();
    assert_eq!((tl.train, tl.test), (l.train, l.test));
}

fn idx1(labels: &[u8]) -> Vec<u8> {
    let mut b = 0x0000_0801u32.to_be_bytes().to_vec();
    b.extend((labels.len() as u32).to_be_bytes());
    b.extend(labels);
    b
}

#[test]
fn idx_sets_read_the_label_files_beside_the_images() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("fashion-mnist");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("train-images-idx3-ubyte.gz"),
        gzip(&idx3(4, 28, 28)),
    )
    .unwrap();
    std::fs::write(dir.join("t10k-images-idx3-ubyte"), idx3(2, 28, 28)).unwrap();
    // Without label files: loads, unlabelled.
    let ds = load("fashion-mnist", tmp.path(), None, 0).unwrap();
    assert!(ds.labels.is_none());
    std::fs::write(
        dir.join("train-labels-idx1-ubyte.gz"),
        gzip(&idx1(&[9, 0, 3, 3])),
    )
    .unwrap();
    std::fs::write(dir.join("t10k-labels-idx1-ubyte"), idx1(&[1, 8])).unwrap();
    let l = load("fashion-mnist", tmp.path(), None, 0)
        .unwrap()
        .labels
        .unwrap();
    assert_eq!(
        (l.train.as_slice(), l.test.as_slice()),
        (&[9, 0, 3, 3][..], &[1, 8][..])
    );
    assert_eq!(l.classes[9], "Ankle boot");
    assert!(
        l.files[1].ends_with("t10k-labels-idx1-ubyte"),
        "{:?}",
        l.files
    );
    // A label file that does not fit its images is refused, named.
    std::fs::write(dir.join("t10k-labels-idx1-ubyte"), idx1(&[1, 8, 2])).unwrap();
    let e = load("fashion-mnist", tmp.path(), None, 0)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("t10k-labels-idx1-ubyte: 3 labels, expected 2, one per image of"),
        "{e}"
    );
    std::fs::write(dir.join("t10k-labels-idx1-ubyte"), idx1(&[1, 10])).unwrap();
    let e = load("fashion-mnist", tmp.path(), None, 0)
        .unwrap_err()
        .to_string();
    assert!(
        e.ends_with("t10k-labels-idx1-ubyte: label 1 is 10, expected a class index in 0..=9"),
        "{e}"
    );
}

#[test]
fn real_fashion_mnist_has_6000_and_1000_of_each_class() {
    let sys = Path::new(FASHION_MNIST_SYSTEM_DIR);
    if !sys.join("train-labels-idx1-ubyte.gz").is_file() {
        println!(
            "note: skipped: {} lacks the real Fashion-MNIST labels",
            sys.display()
        );
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let l = load("fashion-mnist", tmp.path(), None, 0)
        .unwrap()
        .labels
        .unwrap();
    for (split, per) in [(&l.train, 6000), (&l.test, 1000)] {
        let mut counts = [0; 10];
        split.iter().for_each(|&c| counts[c as usize] += 1);
        assert_eq!(counts, [per; 10]);
    }
    assert_eq!(l.classes, FASHION_MNIST_CLASSES.map(String::from));
}

fn points_and_labels(spec: &str) -> (Vec<[f32; 2]>, Vec<u32>) {
    let ds = load(spec, Path::new("."), None, 3).unwrap();
    let Examples::Vectors { data, .. } = ds.train else {
        panic!("vectors")
    };
    let labels = ds.labels.expect("labels").train;
    (data.chunks(2).map(|p| [p[0], p[1]]).collect(), labels)
}

#[test]
fn toy_labels_are_the_part_each_point_came_from() {
    // Eight Gaussians: a point is nearest its own centre but for the tails
    // beyond half the distance between centres (3.06 sigma: 0.2%).
    let (pts, labels) = points_and_labels("toy:eight-gaussians");
    let r = crate::data::toy::EIGHT_GAUSSIANS_RADIUS;
    let nearest = |p: &[f32; 2]| {
        let d = |k: u32| {
            let a = f64::from(k) * std::f64::consts::PI / 4.0;
            (f64::from(p[0]) - r * a.cos()).hypot(f64::from(p[1]) - r * a.sin())
        };
        (0..8).min_by(|&a, &b| d(a).total_cmp(&d(b))).unwrap()
    };
    let wrong = pts
        .iter()
        .zip(&labels)
        .filter(|(p, &l)| nearest(p) != l)
        .count();
    assert!(
        wrong < pts.len() / 200,
        "{wrong} of {} off their centre",
        pts.len()
    );
    let mut counts = [0usize; 8];
    labels.iter().for_each(|&l| counts[l as usize] += 1);
    assert!(
        counts.iter().all(|&c| c.abs_diff(pts.len() / 8) < 300),
        "{counts:?}"
    );
    // Two moons: the arcs' mean heights are 2/pi (upper, 0) and 0.5 - 2/pi
    // (lower, 1), then y -> 2y - 0.2.
    let (pts, labels) = points_and_labels("toy:two-moons");
    let mean_y = |k: u32| {
        let ys: Vec<f64> = pts
            .iter()
            .zip(&labels)
            .filter(|(_, &l)| l == k)
            .map(|(p, _)| f64::from(p[1]))
            .collect();
        ys.iter().sum::<f64>() / ys.len() as f64
    };
    let want = 2.0 * (2.0 / std::f64::consts::PI) - 0.2;
    assert!(
        (mean_y(0) - want).abs() < 0.02,
        "upper moon mean height {}",
        mean_y(0)
    );
    let want = 2.0 * (0.5 - 2.0 / std::f64::consts::PI) - 0.2;
    assert!(
        (mean_y(1) - want).abs() < 0.02,
        "lower moon mean height {}",
        mean_y(1)
    );
    assert!(load("toy:checkerboard", Path::new("."), None, 0)
        .unwrap()
        .labels
        .is_none());
}

fn write(dir: &Path, name: &str, bytes: Vec<u8>) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

#[test]
fn npy_label_files_are_split_with_their_examples() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    // 30 vectors whose first value is the row; labels row % 7.
    let rows: Vec<f32> = (0..30).flat_map(|i| [i as f32, 0.0]).collect();
    let x = write(dir, "x.npy", npy("<f4", &[30, 2], &f32_bytes(&rows)));
    let y: Vec<u8> = (0..30u8).map(|i| i % 7).collect();
    let yf = write(dir, "y.npy", npy("|u1", &[30], &y));
    let spec = format!("npy:{}", x.display());
    let open = |test: Option<&Path>| open_with(&spec, dir, false, test, 5, &LoadOptions::default());
    let mut data = open(None).unwrap();
    attach_files(&mut data, [Some(&yf), None], None, 5).unwrap();
    let l = data.labels.clone().unwrap();
    let ds = load(&spec, dir, None, 5).unwrap();
    for (ex, labels) in [(&ds.train, &l.train), (&ds.test, &l.test)] {
        let Examples::Vectors { data: v, n, .. } = ex else {
            panic!("vectors")
        };
        assert_eq!(labels.len(), *n);
        for (row, &label) in v.chunks(2).zip(labels) {
            assert_eq!(row[0] as u32 % 7, label);
        }
    }
    // With a test file, both label files; each counted against its split.
    let t = write(dir, "t.npy", npy("<f4", &[2, 2], &f32_bytes(&[0.0; 4])));
    let tl = write(dir, "tl.npy", npy("<i4", &[2], &[1, 0, 0, 0, 6, 0, 0, 0]));
    let mut data = open(Some(&t)).unwrap();
    attach_files(&mut data, [Some(&yf), Some(&tl)], Some(&t), 5).unwrap();
    assert_eq!(data.labels.as_ref().unwrap().test, [1, 6]);
    let e = attach_files(&mut data, [Some(&yf), None], Some(&t), 5)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("--labels") && e.contains("give --test-labels as well"),
        "{e}"
    );
    let e = attach_files(&mut data, [Some(&tl), Some(&tl)], Some(&t), 5)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("tl.npy: 2 labels, expected 30, one per image of"),
        "{e}"
    );
    let mut data = open(None).unwrap();
    let e = attach_files(&mut data, [None, Some(&tl)], None, 5)
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("--test-labels") && e.contains("need --test"),
        "{e}"
    );
    // Data sets with their own labels, or none to give, take no files.
    let mut toy = open_with(
        "toy:two-moons",
        dir,
        false,
        None,
        0,
        &LoadOptions::default(),
    )
    .unwrap();
    let e = attach_files(&mut toy, [Some(&yf), None], None, 0).unwrap_err();
    assert!(matches!(e, DataError::LabelsNotApplicable { .. }), "{e}");
    assert!(
        e.to_string()
            .contains("toy:two-moons brings its own labels"),
        "{e}"
    );
}
