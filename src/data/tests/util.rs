//! Helpers that write small data sets in the official formats.

use std::io::Write;
use std::path::Path;

use flate2::write::GzEncoder;
use flate2::Compression;

use crate::data::{CIFAR10_TEST_FILE, CIFAR10_TRAIN_FILES};

/// Records per tiny CIFAR-10 batch file.
pub const CIFAR_PER_FILE: usize = 3;

/// The pixel the tiny CIFAR-10 has at image `g` (global index: train images
/// 0..15, then test images 15..18), channel `c`, row `y`, column `x`.
pub fn cifar_pixel(g: usize, c: usize, y: usize, x: usize) -> u8 {
    ((g * 37 + c * 101 + y * 7 + x * 3) % 256) as u8
}

/// One tiny CIFAR-10 batch file's bytes: images `first..first + CIFAR_PER_FILE`.
pub fn cifar_batch(first: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for g in first..first + CIFAR_PER_FILE {
        out.push((g % 10) as u8);
        for c in 0..3 {
            for y in 0..32 {
                for x in 0..32 {
                    out.push(cifar_pixel(g, c, y, x));
                }
            }
        }
    }
    out
}

/// (file name, bytes) of the six tiny batch files.
pub fn cifar_files() -> Vec<(&'static str, Vec<u8>)> {
    let mut v: Vec<(&'static str, Vec<u8>)> = CIFAR10_TRAIN_FILES
        .iter()
        .enumerate()
        .map(|(i, n)| (*n, cifar_batch(i * CIFAR_PER_FILE)))
        .collect();
    v.push((CIFAR10_TEST_FILE, cifar_batch(5 * CIFAR_PER_FILE)));
    v
}

/// Writes the tiny batch files into `dir`.
pub fn write_cifar_bins(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    for (name, bytes) in cifar_files() {
        std::fs::write(dir.join(name), bytes).unwrap();
    }
}

/// A gzipped tarball laid out like the official one (with its extra files),
/// holding `files` under `cifar-10-batches-bin/`.
pub fn cifar_tar_gz(files: &[(&str, Vec<u8>)]) -> Vec<u8> {
    let gz = GzEncoder::new(Vec::new(), Compression::fast());
    let mut b = tar::Builder::new(gz);
    let mut add = |path: &str, bytes: &[u8]| {
        let mut h = tar::Header::new_gnu();
        h.set_size(bytes.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, path, bytes).unwrap();
    };
    add(
        "cifar-10-batches-bin/batches.meta.txt",
        b"airplane\nautomobile\n",
    );
    for (name, bytes) in files {
        add(&format!("cifar-10-batches-bin/{name}"), bytes);
    }
    add("cifar-10-batches-bin/readme.html", b"<html></html>");
    b.into_inner().unwrap().finish().unwrap()
}

/// An IDX3 unsigned-byte file: header then `n*h*w` pixels (value (i*h*w + p) * 3 % 256).
pub fn idx3(n: u32, h: u32, w: u32) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&0x0000_0803u32.to_be_bytes());
    for d in [n, h, w] {
        out.extend_from_slice(&d.to_be_bytes());
    }
    for i in 0..(n * h * w) as usize {
        out.push((i * 3 % 256) as u8);
    }
    out
}

/// Gzips bytes.
pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = GzEncoder::new(Vec::new(), Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

/// A `.npy` file's bytes.
pub fn npy(descr: &str, shape: &[usize], data: &[u8]) -> Vec<u8> {
    crate::data::npy::npy_bytes(descr, shape, data)
}

/// Little-endian bytes of f32 values.
pub fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}
