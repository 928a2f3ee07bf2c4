//! The convolution kernels alone, in GFLOP/s (2·N·O·C·9·H·W per call), on
//! the shapes of the benchmark flows' conditioners at batch 64: where a
//! change to `exec/conv/` shows first. Run: `cargo bench --bench kernels`.

use candle_core::{Device, Tensor, Var};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

fn kernels(c: &mut Criterion) {
    let dev = Device::Cpu;
    let mut g = c.benchmark_group("conv3x3");
    g.sample_size(10);
    // (channels in, channels out, map size): scale 1, after the squeeze, final scale.
    for (ci, co, hw) in [(32usize, 32usize, 32usize), (32, 32, 16), (64, 64, 16)] {
        let n = 64;
        let x = Var::from_tensor(&Tensor::randn(0f32, 1., (n, ci, hw, hw), &dev).unwrap()).unwrap();
        let w = Var::from_tensor(&Tensor::randn(0f32, 0.1, (co, ci, 3, 3), &dev).unwrap()).unwrap();
        let flops = 2 * n * co * ci * 9 * hw * hw;
        g.throughput(Throughput::Elements(flops as u64));
        g.bench_function(format!("forward {ci}->{co} {hw}x{hw}"), |b| {
            b.iter(|| flowc::exec::conv::conv2d_same(x.as_tensor(), w.as_tensor()).unwrap())
        });
        // A forward and the input and kernel gradients: three times its work.
        g.throughput(Throughput::Elements(3 * flops as u64));
        g.bench_function(format!("forward+backward {ci}->{co} {hw}x{hw}"), |b| {
            b.iter(|| {
                let y = flowc::exec::conv::conv2d_same(x.as_tensor(), w.as_tensor()).unwrap();
                y.sum_all().unwrap().backward().unwrap()
            })
        });
    }
    g.finish();
}

/// One thread's forward of a conditioner's convolution by each algorithm
/// of `exec::conv::layer`, in direct-equivalent GFLOP/s: where the choice
/// between them is made.
#[cfg(target_arch = "x86_64")]
fn algorithms(c: &mut Criterion) {
    use flowc::exec::conv::layer::{Algorithm, Conv3x3, Pre};
    let mut g = c.benchmark_group("conv3x3 algorithm");
    g.sample_size(10);
    g.warm_up_time(std::time::Duration::from_millis(500));
    g.measurement_time(std::time::Duration::from_secs(2));
    for (ci, co, hw) in [
        (32usize, 32usize, 32usize),
        (32, 32, 16),
        (64, 64, 16),
        (32, 32, 28),
        (64, 64, 14),
        (3, 32, 32),
        (32, 6, 32),
        (12, 32, 16),
        (64, 12, 16),
        (64, 64, 3),
        (128, 128, 2),
    ] {
        let n = 16;
        let x: Vec<f32> = (0..n * ci * hw * hw)
            .map(|i| ((i * 7919) % 1000) as f32 / 1000.0)
            .collect();
        let w: Vec<f32> = (0..co * ci * 9)
            .map(|i| ((i * 104729) % 1000) as f32 / 1e4)
            .collect();
        g.throughput(Throughput::Elements((2 * n * co * ci * 9 * hw * hw) as u64));
        for alg in [Algorithm::Direct, Algorithm::Winograd] {
            let conv = Conv3x3::with(alg, hw, hw, &w, co, ci, false);
            g.bench_function(format!("{alg:?} {ci}->{co} {hw}x{hw}"), |b| {
                b.iter(|| {
                    conv.run(&x, 0..n, Pre::Identity, |_, res, _| {
                        assert!(res[0].is_finite())
                    })
                })
            });
        }
    }
    g.finish();
}

#[cfg(not(target_arch = "x86_64"))]
fn algorithms(_: &mut Criterion) {}

criterion_group!(benches, kernels, algorithms);
criterion_main!(benches);
