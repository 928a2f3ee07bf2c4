//! Throughput of compiled flows on the CPU: examples (images) per second for
//! density (`log_prob`, evaluation mode), sampling (`sample(batch, 1.0)`) and
//! one training step (mean negative log-likelihood, AdamW, lr 1e-3, no weight
//! decay), on random data of the flow's input shape.
//!
//! The flows are the side-by-side benchmark flows of `../shared/bench/`
//! (`realnvp_small`, `realnvp_fashion`, `moons`; `realnvp_cifar10` only with
//! `FLOWC_BENCH_CIFAR=1`, it is slow on a small machine). `FLOWC_BENCH_DIR`
//! overrides that folder. Run: `cargo bench --bench flows` (filter with e.g.
//! `cargo bench --bench flows -- realnvp_small`); `scripts/bench_peer.sh`
//! compares the results with the PyTorch reference.
//!
//! Results: `target/criterion/<flow>/<density|sample|train>/new/estimates.json`.

use std::path::PathBuf;
use std::time::Duration;

use candle_core::{DType, Device, Tensor};
use candle_nn::{AdamW, Optimizer, ParamsAdamW, VarBuilder, VarMap};
use criterion::{
    criterion_group, criterion_main, BenchmarkId, Criterion, SamplingMode, Throughput,
};
use flowc::exec::Flow;

/// (file stem, batch size)
const FLOWS: &[(&str, usize)] = &[
    ("realnvp_small", 64),
    ("realnvp_fashion", 64),
    ("moons", 512),
];
const CIFAR: (&str, usize) = ("realnvp_cifar10", 64);

fn bench_dir() -> PathBuf {
    match std::env::var_os("FLOWC_BENCH_DIR") {
        Some(d) => PathBuf::from(d),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/bench"),
    }
}

/// A batch of random data of the flow's input shape: images are 8-bit values
/// dequantized into (0, 1) (`(k + u) / 256`), vectors standard normal.
fn data(input: flowc::Shape, batch: usize, dev: &Device) -> candle_core::Result<Tensor> {
    let mut dims = vec![batch];
    dims.extend(input.dims().into_iter().map(|d| d as usize));
    if input.is_image() {
        let k = Tensor::rand(0f32, 256f32, dims.as_slice(), dev)?
            .floor()?
            .clamp(0f32, 255f32)?;
        let u = Tensor::rand(0f32, 1f32, dims.as_slice(), dev)?;
        (k + u)? / 256.0
    } else {
        Tensor::randn(0f32, 1f32, dims.as_slice(), dev)
    }
}

fn all_finite(t: &Tensor) -> bool {
    t.flatten_all()
        .and_then(|t| t.to_dtype(DType::F32))
        .and_then(|t| t.to_vec1::<f32>())
        .map(|v| v.iter().all(|x| x.is_finite()))
        .unwrap_or(false)
}

fn scalar(t: &Tensor) -> f32 {
    t.to_dtype(DType::F32)
        .and_then(|t| t.to_scalar::<f32>())
        .unwrap_or(f32::NAN)
}

fn bench_flow(c: &mut Criterion, name: &str, batch: usize) {
    let path = bench_dir().join(format!("{name}.flow"));
    let source =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let plan = match flowc::compile(&source) {
        Ok(plan) => plan,
        Err(d) => panic!("{}: does not compile: {d:?}", path.display()),
    };
    let dev = Device::Cpu;
    let vm = VarMap::new();
    let flow = Flow::new(&plan, VarBuilder::from_varmap(&vm, DType::F32, &dev), &dev)
        .expect("build the flow");
    let x = data(plan.input, batch, &dev).expect("random data");
    let mut opt = AdamW::new(
        vm.all_vars(),
        ParamsAdamW {
            lr: 1e-3,
            weight_decay: 0.0,
            ..Default::default()
        },
    )
    .expect("optimizer");
    let dims = plan.input.size() as f64;

    // Sanity: the numbers should be finite before we time anything. Done on
    // the first call of the density benchmark, so that flows that a filter
    // (`cargo bench --bench flows -- moons`) leaves out cost nothing.
    let sanity = || {
        let lp = flow.log_prob(&x, false).expect("log_prob");
        let nll0 = -(scalar(&lp.mean_all().unwrap()) as f64);
        eprintln!(
            "{name}: {} parameters, batch {batch}, initial nll {:.4} nats ({:.4} nats/dim), log_prob finite: {}",
            plan.parameter_count(),
            nll0,
            nll0 / dims,
            all_finite(&lp)
        );
        let s = flow.sample(batch, 1.0).expect("sample");
        if !all_finite(&s) {
            eprintln!("{name}: WARNING: sample(batch, 1.0) has non-finite values");
        }
    };
    let mut checked = false;

    let mut g = c.benchmark_group(name);
    g.throughput(Throughput::Elements(batch as u64));
    g.sample_size(10);
    g.sampling_mode(SamplingMode::Flat);
    g.warm_up_time(Duration::from_millis(500));
    g.measurement_time(Duration::from_secs(if name == "moons" { 2 } else { 5 }));

    g.bench_function(BenchmarkId::new("density", batch), |b| {
        if !checked {
            sanity();
            checked = true;
        }
        b.iter(|| flow.log_prob(std::hint::black_box(&x), false).unwrap())
    });
    g.bench_function(BenchmarkId::new("sample", batch), |b| {
        b.iter(|| flow.sample(batch, 1.0).unwrap())
    });
    let mut last_loss = f32::NAN;
    let mut steps = 0usize;
    let mut first_bad: Option<(usize, f32)> = None;
    g.bench_function(BenchmarkId::new("train", batch), |b| {
        b.iter(|| {
            let loss = flow
                .log_prob(std::hint::black_box(&x), true)
                .unwrap()
                .mean_all()
                .unwrap()
                .neg()
                .unwrap();
            opt.backward_step(&loss).unwrap();
            // Reading the loss back is a synchronisation point on the CPU anyway.
            last_loss = scalar(&loss);
            steps += 1;
            if !last_loss.is_finite() && first_bad.is_none() {
                first_bad = Some((steps, last_loss));
            }
        })
    });
    g.finish();
    if steps == 0 {
        return;
    }
    eprintln!(
        "{name}: after {steps} training steps on one batch, loss {:.4} nats ({:.4} nats/dim)",
        last_loss,
        last_loss as f64 / dims
    );
    if let Some((step, v)) = first_bad {
        eprintln!("{name}: WARNING: non-finite training loss ({v}) first at step {step}");
    }
}

fn flows(c: &mut Criterion) {
    for &(name, batch) in FLOWS {
        bench_flow(c, name, batch);
    }
    if std::env::var("FLOWC_BENCH_CIFAR").is_ok_and(|v| v == "1") {
        bench_flow(c, CIFAR.0, CIFAR.1);
    }
}

criterion_group!(benches, flows);
criterion_main!(benches);
