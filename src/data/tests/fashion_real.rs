//! The real Fashion-MNIST, when Debian's `dataset-fashion-mnist` is installed.

use std::path::Path;

use crate::data::{load, Examples, FASHION_MNIST_SYSTEM_DIR};

#[test]
fn real_fashion_mnist_when_installed() {
    let sys = Path::new(FASHION_MNIST_SYSTEM_DIR);
    if !sys.join("train-images-idx3-ubyte.gz").is_file() {
        println!(
            "note: skipped: {} lacks the real Fashion-MNIST (apt-get install dataset-fashion-mnist)",
            sys.display()
        );
        return;
    }
    // An empty data dir, so the system folder is what is found.
    let tmp = tempfile::tempdir().unwrap();
    let ds = load("fashion-mnist", tmp.path(), None, 0).unwrap();
    assert_eq!(ds.source, FASHION_MNIST_SYSTEM_DIR);
    assert_eq!(ds.train.shape(), vec![60_000, 1, 28, 28]);
    assert_eq!(ds.test.shape(), vec![10_000, 1, 28, 28]);
    let Examples::Images { data, .. } = &ds.train else {
        panic!("expected images")
    };
    // The published training-set mean pixel is 0.2860 * 255 ≈ 72.94.
    let mean = data.iter().map(|&b| f64::from(b)).sum::<f64>() / data.len() as f64;
    assert!((mean - 72.94).abs() < 0.1, "mean pixel {mean}");
}
