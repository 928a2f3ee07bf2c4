//! `flowc bench`: the throughput of a compiled flow, what a user sizes a
//! model with before training it and what the side-by-side comparison with
//! the PyTorch peer (`scripts/bench_peer.sh`) reads.
//!
//! Three measurements on one random batch of the flow's input shape (8-bit
//! pixels dequantized to `(k + u) / 256` for images, standard normal for
//! vectors), each warmed up and then timed `iters` times, reported as the
//! median in examples per second, and the fastest run beside it (`*_best_per_s`:
//! on a shared machine other load only ever slows a run, so the fastest is
//! the closest to what the flow runs at alone):
//! - *density*: `log p(x)` in evaluation mode, no gradients;
//! - *sample*: `x = f^-1(z)`, `z ~ N(0, I)` at temperature 1, evaluation mode;
//! - *train*: `-mean log p(x)` in training mode, its backward and one Adam
//!   update (lr 1e-3; no L2, no clipping), the step of `flowc train`.
//!
//! ```no_run
//! let plan = flowc::compile("flow f { input vector(2) net m = mlp(hidden = 8, layers = 1) \
//!     coupling affine(mask = alternate(even), net = m) }").unwrap();
//! let opts = flowc::bench::Options { batch: 16, iters: 3, ..Default::default() };
//! let report = flowc::bench::run(&plan, "f", &opts, &candle_core::Device::Cpu)?;
//! assert!(report.train_per_s > 0.0);
//! # Ok::<(), String>(())
//! ```

use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use serde::Serialize;

use crate::plan::Plan;
use crate::train::{adam::Adam, rng, rng::Rng};

#[derive(Clone, Debug)]
pub struct Options {
    pub batch: usize,
    /// Timed runs of each measurement (the median is reported).
    pub iters: usize,
    /// Untimed runs before them.
    pub warmup: usize,
    pub seed: u64,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            batch: 64,
            iters: 5,
            warmup: 1,
            seed: 0,
        }
    }
}

/// The JSON object of `flowc bench --format json`.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub flow: String,
    pub batch: usize,
    pub threads: usize,
    pub device: String,
    pub parameters: u128,
    pub density_per_s: f64,
    pub sample_per_s: f64,
    pub train_per_s: f64,
    /// The fastest of the timed runs, examples per second.
    pub density_best_per_s: f64,
    pub sample_best_per_s: f64,
    pub train_best_per_s: f64,
    /// Peak resident memory of the process so far (VmHWM), MiB.
    pub peak_rss_mib: f64,
}

/// Seconds a call: the median and the fastest of the timed calls.
struct Timing {
    median: f64,
    best: f64,
}

/// `iters` timed calls of `f` after `warmup` untimed ones.
fn time_calls(
    warmup: usize,
    iters: usize,
    mut f: impl FnMut() -> Result<(), String>,
) -> Result<Timing, String> {
    for _ in 0..warmup {
        f()?;
    }
    let mut times = Vec::with_capacity(iters);
    for _ in 0..iters {
        let t = Instant::now();
        f()?;
        times.push(t.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    Ok(Timing {
        median: times[times.len() / 2],
        best: times[0],
    })
}

/// A batch of random inputs of the flow's input shape.
fn random_batch(plan: &Plan, batch: usize, seed: u64, device: &Device) -> Result<Tensor, String> {
    let input = plan.input;
    let mut dims = vec![batch];
    dims.extend(input.dims().iter().map(|&d| d as usize));
    let mut r = Rng::keyed(seed, rng::NOISE, 0);
    let n = batch * input.size() as usize;
    let v: Vec<f32> = if input.is_image() {
        (0..n)
            .map(|_| ((r.below(256) as f64 + r.uniform()) / 256.0) as f32)
            .collect()
    } else {
        (0..n).map(|_| r.normal() as f32).collect()
    };
    Tensor::from_vec(v, dims, device).map_err(|e| e.to_string())
}

/// Peak resident set size of this process, MiB (0 where /proc is missing).
pub fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

/// Measures `plan` with fresh parameters (initialized as `flowc train` does).
pub fn run(plan: &Plan, name: &str, opts: &Options, device: &Device) -> Result<Report, String> {
    if opts.batch == 0 || opts.iters == 0 {
        return Err("--batch and --iters must be at least 1".into());
    }
    let err = |e: candle_core::Error| e.to_string();
    let varmap = candle_nn::VarMap::new();
    let vb = candle_nn::VarBuilder::from_varmap(&varmap, DType::F32, device);
    let flow = crate::exec::Flow::new(plan, vb, device).map_err(err)?;
    crate::train::init_params(&varmap, plan, opts.seed).map_err(err)?;
    let x = random_batch(plan, opts.batch, opts.seed, device)?;
    // A conditioned flow runs on labels 0, 1, .., K-1, 0, ...
    let labels = flow
        .labels_if_given(opts.batch, |i| i as u32)
        .map_err(err)?;
    let given = labels.as_ref();
    let sync = || device.synchronize().map_err(err);

    // Training first: actnorm initializes from its first training batch.
    let vars = varmap.data().lock().expect("varmap").clone();
    let mut adam = Adam::new(vars.into_iter().collect(), 1e-3, 0.0, 0.0).map_err(err)?;
    let train = time_calls(opts.warmup, opts.iters, || {
        let loss = flow
            .log_prob_given(&x, given, true)
            .and_then(|lp| lp.mean_all()?.neg())
            .map_err(err)?;
        let grads = loss.backward().map_err(err)?;
        adam.step(&grads)
            .map_err(err)?
            .map_err(|n| format!("non-finite gradient norm {n}"))?;
        sync()
    })?;
    let density = time_calls(opts.warmup, opts.iters, || {
        flow.log_prob_given(&x, given, false).map_err(err)?;
        sync()
    })?;
    let sample = time_calls(opts.warmup, opts.iters, || {
        flow.sample_given(opts.batch, 1.0, given).map_err(err)?;
        sync()
    })?;
    let b = opts.batch as f64;
    Ok(Report {
        flow: name.to_string(),
        batch: opts.batch,
        threads: candle_core::utils::get_num_threads(),
        device: if device.is_cpu() { "cpu" } else { "cuda" }.to_string(),
        parameters: plan.parameter_count(),
        density_per_s: b / density.median,
        sample_per_s: b / sample.median,
        train_per_s: b / train.median,
        density_best_per_s: b / density.best,
        sample_best_per_s: b / sample.best,
        train_best_per_s: b / train.best,
        peak_rss_mib: peak_rss_mib(),
    })
}
