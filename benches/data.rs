//! Loader throughput (not a timed test): `folder:PATH` on a generated folder
//! of 64x64 JPEGs (10 class folders), decoded, fitted to 3x32x32 (a 2:1
//! shrink) and to 3x64x64 (a copy), in images per second, beside one
//! training step of `realnvp_small` (3x32x32, batch 64) in images per
//! second, so that the two can be compared.
//!
//! Run: `cargo bench --bench data`. `FLOWC_BENCH_IMAGES` sets the number of
//! images (default 10,000); `FLOWC_BENCH_DIR` the folder of the benchmark
//! flows (default `../shared/bench`); without `realnvp_small.flow` there the
//! training step is left out.

use std::path::{Path, PathBuf};
use std::time::Instant;

use flowc::data::{load_with, LoadOptions};

fn write_jpegs(dir: &Path, n: u32) {
    for i in 0..n {
        let class = dir.join(format!("class{}", i % 10));
        std::fs::create_dir_all(&class).unwrap();
        let img: image::RgbImage = image::ImageBuffer::from_fn(64, 64, |x, y| {
            let v = |k: u32| (k % 256) as u8;
            image::Rgb([v(x * 4 + i), v(y * 4 + 2 * i), v(x * y + i)])
        });
        img.save(class.join(format!("{i:05}.jpg"))).unwrap();
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let n: u32 = std::env::var("FLOWC_BENCH_IMAGES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10_000);
    let tmp = tempfile::tempdir().unwrap();
    let t = Instant::now();
    write_jpegs(tmp.path(), n);
    println!(
        "wrote {n} 64x64 JPEGs in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let spec = format!("folder:{}", tmp.path().display());
    for target in [[3usize, 32, 32], [3, 64, 64]] {
        let opts = LoadOptions {
            target: Some(target),
            ..LoadOptions::default()
        };
        let rates: Vec<f64> = (0..3)
            .map(|_| {
                let t = Instant::now();
                let ds = load_with(&spec, Path::new("."), false, None, 0, &opts).unwrap();
                (ds.train.len() + ds.test.len()) as f64 / t.elapsed().as_secs_f64()
            })
            .collect();
        let [c, h, w] = target;
        println!(
            "loader, 64x64 JPEG -> {c}x{h}x{w}: {:.0} images/s (median of 3, {} threads)",
            median(rates),
            rayon::current_num_threads()
        );
    }
    let dir = std::env::var_os("FLOWC_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("../shared/bench"));
    let Ok(source) = std::fs::read_to_string(dir.join("realnvp_small.flow")) else {
        println!(
            "no {}: training step left out",
            dir.join("realnvp_small.flow").display()
        );
        return;
    };
    let plan = flowc::compile(&source).expect("realnvp_small compiles");
    let opts = flowc::bench::Options {
        iters: 3,
        ..flowc::bench::Options::default()
    };
    let r = flowc::bench::run(&plan, "realnvp_small", &opts, &candle_core::Device::Cpu).unwrap();
    println!(
        "realnvp_small train step, batch {}: {:.1} images/s",
        r.batch, r.train_per_s
    );
}
