//! Loader throughput (not a timed test): `folder:PATH` on a generated folder
//! of 64x64 JPEGs (10 class folders), decoded, fitted to 3x32x32 (a 2:1
//! shrink) and to 3x64x64 (a copy), in images per second: all at once into
//! memory, and streamed (one epoch of batches of 64 through the loader
//! thread, nothing else running); beside one training step of
//! `realnvp_small` (3x32x32, batch 64) in images per second, so that the
//! two can be compared; then 16 training steps of `realnvp_small` on the
//! folder in memory and streamed, whose rates should agree (`flowc::train`
//! prints the time the streamed steps waited for data).
//!
//! Run: `cargo bench --bench data`. `FLOWC_BENCH_IMAGES` sets the number of
//! images (default 10,000); `FLOWC_BENCH_DIR` the folder of the benchmark
//! flows (default `../shared/bench`); without `realnvp_small.flow` there the
//! training is left out.

use std::path::{Path, PathBuf};
use std::time::Instant;

use flowc::data::{load_with, open_with, Data, LoadOptions, PREFETCH_DEPTH};
use flowc::train::order::BatchPlan;

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
    for target in [[3usize, 32, 32], [3, 64, 64]] {
        let rates: Vec<f64> = (0..3).map(|_| streamed_rate(&spec, target)).collect();
        let [c, h, w] = target;
        println!(
            "streamed loader, 64x64 JPEG -> {c}x{h}x{w}, batch 64: {:.0} images/s (median of 3 epochs, {} decoding threads, {PREFETCH_DEPTH} batches ahead)",
            median(rates),
            flowc::data::loader_threads()
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
    for stream in [false, true] {
        let rate = train_rate(&source, &spec, stream, tmp.path());
        let how = if stream { "streamed" } else { "in memory" };
        println!("realnvp_small, 16 training steps of 64 on the folder {how}: {rate:.1} images/s");
    }
}

/// Options for the folder at `target`.
fn options(target: [usize; 3], stream: bool) -> LoadOptions {
    LoadOptions {
        target: Some(target),
        stream,
        ..LoadOptions::default()
    }
}

/// Images per second of one streamed epoch at batch 64, the consumer doing nothing.
fn streamed_rate(spec: &str, target: [usize; 3]) -> f64 {
    let data = open_with(spec, Path::new("."), false, None, 0, &options(target, true)).unwrap();
    let n = data.train.len();
    let plan = BatchPlan::new(data.order.clone(), 0, 64, n, 0, (n / 64) as u64);
    let t = Instant::now();
    let mut images = 0;
    for b in data.train.batches(Box::new(plan), PREFETCH_DEPTH) {
        images += b.unwrap().examples.len();
    }
    images as f64 / t.elapsed().as_secs_f64()
}

/// Images per second of 16 training steps at batch 64 (the whole `train`:
/// with its one evaluation and checkpoint at the end).
fn train_rate(source: &str, spec: &str, stream: bool, tmp: &Path) -> f64 {
    let opts = options([3, 32, 32], stream);
    let data: Data = open_with(spec, Path::new("."), false, None, 0, &opts).unwrap();
    let out = tmp.join(if stream { "run-streamed" } else { "run-memory" });
    let cfg = flowc::train::TrainConfig {
        steps: Some(16),
        epochs: None,
        batch: 64,
        lr: 1e-3,
        l2: 5e-5,
        clip: 100.0,
        seed: 0,
        out,
        eval_every: 1000,
        eval_examples: 64,
        resume: false,
        flip: true,
        data: spec.to_string(),
        test_data: None,
        cosine: false,
        allow_repeats: false,
        given: vec![],
        interrupt: flowc::train::Interrupt::never(),
    };
    let t = Instant::now();
    flowc::train::train(source, &data, &cfg, &candle_core::Device::Cpu).unwrap();
    (16 * 64) as f64 / t.elapsed().as_secs_f64()
}
