//! Running the real binary, and data files the tests make themselves.

use std::path::Path;
use std::process::Command;

pub fn flowc(args: &[&str]) -> (i32, String, String) {
    flowc_in(Path::new("."), args)
}

/// A uint8 .npy of `n` 1x4x4 images: bright diagonal stripes with noise, a
/// structured density the flow can learn.
pub fn write_images(path: &Path, n: usize) {
    let mut body = Vec::with_capacity(n * 16);
    let mut s: u64 = 12345;
    for i in 0..n {
        for y in 0..4 {
            for x in 0..4 {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let noise = (s >> 59) as u8; // 0..31
                let v: u8 = if (x + y + i) % 2 == 0 { 200 } else { 40 };
                body.push(v.saturating_add(noise));
            }
        }
    }
    write_npy(path, "|u1", &format!("{n}, 1, 4, 4"), &body);
}

/// A `.npy` 1.0 file of `body` with dtype `descr` and `shape` ("N, D").
pub fn write_npy(path: &Path, descr: &str, shape: &str, body: &[u8]) {
    let mut header =
        format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': ({shape}), }}");
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
    bytes.extend((header.len() as u16).to_le_bytes());
    bytes.extend(header.as_bytes());
    bytes.extend(body);
    std::fs::write(path, bytes).unwrap();
}

/// The tensors of a run's checkpoint, by name.
pub fn tensors(run: &Path) -> Vec<(String, Vec<f32>)> {
    let t = candle_core::safetensors::load(
        run.join("checkpoint.safetensors"),
        &candle_core::Device::Cpu,
    )
    .unwrap();
    let mut v: Vec<(String, Vec<f32>)> = t
        .into_iter()
        .map(|(k, t)| (k, t.flatten_all().unwrap().to_vec1().unwrap()))
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

/// As [`flowc`], run in `dir` (where outputs without a folder land).
pub fn flowc_in(dir: &Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_flowc"))
        .current_dir(dir)
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}
