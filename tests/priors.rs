//! Version 2's priors through the compiled flow: `prior normal(learned)` and
//! `factor_out(net = N)` (Glow's split prior). A fresh flow is the one with
//! `prior normal` and plain `factor_out`; `log p(x)` is the direct formula;
//! sampling inverts density evaluation; training reaches the new parameters
//! and learns known truths.

use candle_core::{DType, Device, Tensor, D};
use candle_nn::{VarBuilder, VarMap};
use flowc::exec::Flow;
use flowc::train::adam::Adam;

mod common;
use common::tensors::{build, input, max_abs_diff};

const LN_2PI: f64 = 1.8378770664093453;

/// A vector flow with both constructs, and couplings around them.
const VECTOR: &str = "flow v {
    input vector(6)
    prior normal(learned)
    net m = mlp(hidden = 16, layers = 2)
    net p = mlp(hidden = 8, layers = 1)
    coupling affine(mask = half(even), net = m)
    coupling affine(mask = half(odd), net = m)
    factor_out(net = p)
    coupling affine(mask = alternate(even), net = m)
    factor_out
    coupling affine(mask = alternate(odd), net = m)
}";

/// An image flow with both constructs.
const IMAGE: &str = "flow i {
    input image(2, 4, 4)
    prior normal(learned)
    net r = resnet(blocks = 1, features = 8)
    logit(alpha = 0.05)
    coupling affine(mask = checkerboard(even), net = r)
    coupling affine(mask = checkerboard(odd), net = r)
    squeeze
    actnorm
    invconv
    coupling affine(mask = channel(even), net = r)
    factor_out(net = r)
    coupling affine(mask = checkerboard(even), net = r)
    factor_out
    coupling affine(mask = checkerboard(odd), net = r)
}";

/// Every variable of `to` that `from` also has takes its value.
fn copy_shared(from: &VarMap, to: &VarMap) {
    let from = from.data().lock().unwrap();
    for (name, var) in to.data().lock().unwrap().iter() {
        if let Some(v) = from.get(name) {
            var.set(v.as_tensor()).unwrap();
        }
    }
}

fn set(vm: &VarMap, name: &str, values: &[f64]) {
    let data = vm.data().lock().unwrap();
    let var = &data[name];
    let t = Tensor::new(values, &Device::Cpu).unwrap();
    let t = t
        .reshape(var.shape())
        .unwrap()
        .to_dtype(var.dtype())
        .unwrap();
    var.set(&t).unwrap();
}

fn var(vm: &VarMap, name: &str) -> Vec<f64> {
    let data = vm.data().lock().unwrap();
    let t = data[name].as_tensor().flatten_all().unwrap();
    t.to_dtype(DType::F64).unwrap().to_vec1().unwrap()
}

#[test]
fn fresh_flows_are_the_flows_with_the_standard_normal() {
    for source in [VECTOR, IMAGE] {
        let v1 = source
            .replace("prior normal(learned)", "prior normal")
            .replace("factor_out(net = p)", "factor_out")
            .replace("factor_out(net = r)", "factor_out");
        let (new, new_vm) = build(source, DType::F32);
        let (old, old_vm) = build(&v1, DType::F32);
        assert!(new_vm.all_vars().len() > old_vm.all_vars().len());
        copy_shared(&old_vm, &new_vm);
        // Actnorm initializes on the first training batch: evaluate only.
        let x = input(&new, 16, DType::F32);
        let a = new.log_prob(&x, false).unwrap();
        let b = old.log_prob(&x, false).unwrap();
        assert_eq!(max_abs_diff(&a, &b), 0.0, "{source}");
    }
}

/// With no layer, `log p(x)` is `sum log N(x; m, exp(s)^2)` per feature.
#[test]
fn learned_prior_density_is_the_formula() {
    let (flow, vm) = build(
        "flow g { input vector(3) prior normal(learned) }",
        DType::F64,
    );
    let (m, s) = ([1.5, -2.0, 0.25], [-0.7, 0.6, 0.1]);
    set(&vm, "prior.z0.mean", &m);
    set(&vm, "prior.z0.log_std", &s);
    let x = input(&flow, 5, DType::F64);
    let got: Vec<f64> = flow.log_prob(&x, false).unwrap().to_vec1().unwrap();
    let xs: Vec<Vec<f64>> = x.to_vec2().unwrap();
    for (row, got) in xs.iter().zip(got) {
        let want: f64 = (0..3)
            .map(|i| {
                let u = (row[i] - m[i]) / s[i].exp();
                -0.5 * u * u - s[i] - 0.5 * LN_2PI
            })
            .sum();
        assert!((got - want).abs() < 1e-12, "{got} vs {want}");
    }
}

/// `x = (z, r)`: `log p(x) = log N(z; m(r), exp(s(r))^2) + log N(r; m2, exp(s2)^2)`,
/// with `(m(r), s(r))` the split net's own output and `(m2, s2)` the learned prior's.
#[test]
fn split_prior_density_is_the_formula() {
    let src = "flow s { input vector(5) prior normal(learned) net p = mlp(hidden = 8, layers = 2) \
               factor_out(net = p) }";
    let (flow, vm) = build(src, DType::F64);
    flowc::exec::numeric::randomize(&vm, 0.3).unwrap();
    let x = input(&flow, 4, DType::F64);
    let got: Vec<f64> = flow.log_prob(&x, false).unwrap().to_vec1().unwrap();
    // The same net, read from the same variables.
    let net = flowc::exec::split::SplitPrior::new(
        &[5],
        flowc::ir::NetKind::Mlp {
            hidden: 8,
            layers: 2,
        },
        0,
        VarBuilder::from_varmap(&vm, DType::F64, &Device::Cpu).pp("layer0"),
    )
    .unwrap();
    let (z, r) = (x.narrow(1, 0, 2).unwrap(), x.narrow(1, 2, 3).unwrap());
    let (m, s) = net.mean_log_std(&r, None, false).unwrap();
    let rows = |t: &Tensor| -> Vec<Vec<f64>> { t.to_vec2().unwrap() };
    let (z, r, m, s) = (rows(&z), rows(&r), rows(&m), rows(&s));
    let (m2, s2) = (var(&vm, "prior.z1.mean"), var(&vm, "prior.z1.log_std"));
    let normal = |v: f64, m: f64, s: f64| {
        let u = (v - m) / s.exp();
        -0.5 * u * u - s - 0.5 * LN_2PI
    };
    for n in 0..4 {
        let split: f64 = (0..2).map(|i| normal(z[n][i], m[n][i], s[n][i])).sum();
        let top: f64 = (0..3).map(|i| normal(r[n][i], m2[i], s2[i])).sum();
        assert!(
            (got[n] - split - top).abs() < 1e-12,
            "{} vs {}",
            got[n],
            split + top
        );
    }
    assert!(
        s.iter().flatten().any(|v| v.abs() > 1e-3),
        "s is not trivial"
    );
}

/// Latents drawn from the prior go to `x` and back, and `x` to latents and
/// back, in f32 with every parameter random.
#[test]
fn both_constructs_round_trip() {
    for source in [VECTOR, IMAGE] {
        let (flow, vm) = build(source, DType::F32);
        flowc::exec::numeric::randomize(&vm, flowc::exec::numeric::NOISE).unwrap();
        flow.mark_initialized();
        let x = input(&flow, 8, DType::F32);
        let (latents, _) = flow.forward(&x, false).unwrap();
        let back = flow.inverse(&latents).unwrap();
        assert!(max_abs_diff(&back, &x) < 1e-4, "{source}: x -> z -> x");
        let sampled = flowc::train::sample(&flow, 8, 1.0, 3, &Device::Cpu).unwrap();
        let shapes = flow.plan().latent_shapes();
        let drawn: Vec<Tensor> = shapes
            .iter()
            .map(|s| {
                let mut d = vec![8];
                d.extend(s.dims().iter().map(|&v| v as usize));
                Tensor::randn(0f32, 1., d, &Device::Cpu).unwrap()
            })
            .collect();
        let x = flow.inverse(&drawn).unwrap();
        let (again, _) = flow.forward(&x, false).unwrap();
        for (a, b) in again.iter().zip(&drawn) {
            assert!(max_abs_diff(a, b) < 1e-4, "{source}: z -> x -> z");
        }
        assert!(sampled
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()
            .iter()
            .all(|v| v.is_finite()));
    }
}

/// Sampling at temperature T draws `m + T exp(s) e`: at T = 0 the mean,
/// and the spread scales with T around it (Glow's choice).
#[test]
fn temperature_scales_the_standard_deviation_around_the_mean() {
    let (flow, vm) = build(
        "flow g { input vector(2) prior normal(learned) }",
        DType::F32,
    );
    set(&vm, "prior.z0.mean", &[3.0, -1.0]);
    set(&vm, "prior.z0.log_std", &[0.5f64.ln(), 2f64.ln()]);
    let at_zero: Vec<Vec<f32>> = flowc::train::sample(&flow, 4, 0.0, 1, &Device::Cpu)
        .unwrap()
        .to_vec2()
        .unwrap();
    assert!(at_zero.iter().all(|r| r == &[3.0, -1.0]), "{at_zero:?}");
    let x = flowc::train::sample(&flow, 4000, 0.5, 1, &Device::Cpu).unwrap();
    let mean: Vec<f32> = x.mean(0).unwrap().to_vec1().unwrap();
    let std: Vec<f32> = x
        .broadcast_sub(&x.mean_keepdim(0).unwrap())
        .unwrap()
        .sqr()
        .unwrap()
        .mean(0)
        .unwrap()
        .sqrt()
        .unwrap()
        .to_vec1()
        .unwrap();
    assert!(
        (mean[0] - 3.0).abs() < 0.05 && (mean[1] + 1.0).abs() < 0.1,
        "{mean:?}"
    );
    assert!(
        (std[0] - 0.25).abs() < 0.02 && (std[1] - 1.0).abs() < 0.06,
        "{std:?}"
    );
}

/// Adam on `-mean log p` of batches from `draw`; the mean loss of the first
/// and last ten steps.
fn fit(
    flow: &Flow,
    vm: &VarMap,
    steps: usize,
    lr: f64,
    draw: impl Fn(u64) -> Tensor,
) -> (f64, f64) {
    let params: Vec<_> = vm
        .data()
        .lock()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let mut adam = Adam::new(params, lr, 0.0, 100.0).unwrap();
    let mut losses = vec![];
    for step in 0..steps {
        let x = draw(step as u64);
        let loss = flow
            .log_prob(&x, true)
            .unwrap()
            .mean_all()
            .unwrap()
            .neg()
            .unwrap();
        losses.push(loss.to_scalar::<f32>().unwrap() as f64);
        let grads = loss.backward().unwrap();
        adam.step(&grads).unwrap().expect("finite gradients");
    }
    let mean = |s: &[f64]| s.iter().sum::<f64>() / s.len() as f64;
    (mean(&losses[..10]), mean(&losses[steps - 10..]))
}

/// Deterministic standard normals, `n x d`, for step `step`.
fn normals(n: usize, d: usize, step: u64) -> Vec<f32> {
    let mut s = step.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03;
    let mut uniform = || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        ((s >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    };
    (0..n * d)
        .map(|_| {
            let (u, v) = (uniform(), uniform());
            ((-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()) as f32
        })
        .collect()
}

/// A short run moves every learned-prior and split-prior parameter (their
/// gradients reach them) and lowers the loss, on data the fresh flow does
/// not fit (means away from 0, scales away from 1).
#[test]
fn training_reaches_the_new_parameters() {
    let (flow, vm) = build(VECTOR, DType::F32);
    let before: Vec<(String, Vec<f64>)> =
        ["prior.z1.mean", "prior.z2.log_std", "layer2.net.out.weight"]
            .iter()
            .map(|n| (n.to_string(), var(&vm, n)))
            .collect();
    let draw = |step| {
        let t = Tensor::from_vec(normals(64, 6, step), (64, 6), &Device::Cpu).unwrap();
        let scale = Tensor::new(&[0.5f32, 2.0, 1.0, 0.3, 3.0, 1.5], &Device::Cpu).unwrap();
        t.broadcast_mul(&scale).unwrap().affine(1.0, 2.0).unwrap()
    };
    let (first, last) = fit(&flow, &vm, 60, 1e-2, draw);
    assert!(last < first - 1.0, "loss {first} -> {last}");
    for (name, old) in before {
        let new = var(&vm, &name);
        assert!(old.iter().all(|&v| v == 0.0), "{name} starts at 0");
        assert!(
            new.iter().any(|&v| v.abs() > 1e-3),
            "{name} did not move: {new:?}"
        );
    }
}

/// Data `N(mu, sigma^2)` per feature: the learned prior's `m` and `s` go to
/// `mu` and `ln sigma` (300 steps, a fraction of a second).
#[test]
fn learned_prior_learns_a_gaussian() {
    let (flow, vm) = build(
        "flow g { input vector(3) prior normal(learned) }",
        DType::F32,
    );
    let (mu, sigma) = ([1.5f32, -2.0, 0.3], [0.5f32, 2.0, 1.0]);
    let draw = |step| {
        let t = Tensor::from_vec(normals(256, 3, step), (256, 3), &Device::Cpu).unwrap();
        let (mu, sigma) = (
            Tensor::new(&mu, &Device::Cpu).unwrap(),
            Tensor::new(&sigma, &Device::Cpu).unwrap(),
        );
        t.broadcast_mul(&sigma).unwrap().broadcast_add(&mu).unwrap()
    };
    fit(&flow, &vm, 300, 0.05, draw);
    let (m, s) = (var(&vm, "prior.z0.mean"), var(&vm, "prior.z0.log_std"));
    for i in 0..3 {
        assert!((m[i] - mu[i] as f64).abs() < 0.1, "m {m:?}");
        assert!((s[i] - (sigma[i] as f64).ln()).abs() < 0.1, "s {s:?}");
    }
}

/// `r ~ N(0.5, 0.8^2)`, `z | r ~ N(1.5 r - 0.5, 0.3^2)`, `x = (z, r)`: a split
/// prior on `z` and a learned prior on `r` reach the true entropy (1500
/// steps, about a second).
#[test]
fn split_prior_learns_a_conditional_gaussian() {
    let src =
        "flow s { input vector(2) prior normal(learned) net p = mlp(hidden = 32, layers = 2) \
               factor_out(net = p) }";
    let (flow, vm) = build(src, DType::F32);
    let draw = |n: usize, step: u64| {
        let e = normals(n, 2, step);
        let mut x = Vec::with_capacity(2 * n);
        for pair in e.chunks(2) {
            let r = 0.5 + 0.8 * pair[1];
            x.extend([1.5 * r - 0.5 + 0.3 * pair[0], r]);
        }
        Tensor::from_vec(x, (n, 2), &Device::Cpu).unwrap()
    };
    fit(&flow, &vm, 1500, 1e-2, |step| draw(256, step));
    let entropy = |sigma: f64| 0.5 * (LN_2PI + 1.0) + sigma.ln();
    let truth = entropy(0.8) + entropy(0.3);
    // 16,384 examples: the estimate's standard error is about 0.008 nats.
    let test = draw(16_384, 1_000_000);
    let nll = -flow
        .log_prob(&test, false)
        .unwrap()
        .mean(D::Minus1)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap() as f64;
    assert!(
        (nll - truth).abs() < 0.05,
        "test NLL {nll}, entropy {truth}"
    );
    let s = var(&vm, "prior.z1.log_std");
    assert!((s[0] - 0.8f64.ln()).abs() < 0.1, "s {s:?}");
}

/// Through the binary: the new parameters are in the checkpoint with their
/// Adam moments, a resumed run equals an unbroken one, and `eval` on the
/// run folder (parameters read back) gives the run's last test figure.
#[test]
fn checkpoints_save_and_restore_the_new_parameters() {
    use common::cli::{flowc, tensors, write_npy};
    let dir = tempfile::tempdir().unwrap();
    let p = |name: &str| dir.path().join(name).display().to_string();
    std::fs::write(p("v.flow"), VECTOR).unwrap();
    let scale = [0.5f32, 2.0, 1.0, 0.3, 3.0, 1.5];
    let body: Vec<u8> = normals(300, 6, 1)
        .iter()
        .enumerate()
        .flat_map(|(i, v)| (v * scale[i % 6] + 2.0).to_le_bytes())
        .collect();
    write_npy(&dir.path().join("x.npy"), "<f4", "300, 6", &body);
    let data = format!("npy:{}", p("x.npy"));
    let flow = p("v.flow");
    let train = |out: &str, steps: &str, resume: bool| {
        let mut args = vec![
            "train",
            &flow,
            "--data",
            &data,
            "--batch",
            "32",
            "--lr",
            "1e-2",
            "--steps",
            steps,
            "--eval-every",
            "6",
        ];
        let out = p(out);
        args.extend(["--out", &out]);
        if resume {
            args.push("--resume");
        }
        let (code, _, err) = flowc(&args);
        assert_eq!(code, 0, "{err}");
    };
    train("whole", "12", false);
    train("parts", "6", false);
    train("parts", "12", true);
    let (a, b) = (
        tensors(&dir.path().join("whole")),
        tensors(&dir.path().join("parts")),
    );
    assert_eq!(a.len(), b.len());
    for ((na, va), (nb, vb)) in a.iter().zip(&b) {
        assert_eq!(na, nb);
        let diff = va
            .iter()
            .zip(vb)
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, f32::max);
        assert!(diff <= 1e-6, "{na} differs by {diff}");
    }
    for name in ["prior.z1.mean", "prior.z2.log_std", "layer2.net.out.weight"] {
        let saved: Vec<_> = a.iter().filter(|(n, _)| n.contains(name)).collect();
        assert!(saved.len() >= 3, "{name} and its moments: {saved:?}");
        let (_, values) = a.iter().find(|(n, _)| n == name).expect(name);
        assert!(values.iter().any(|v| v.abs() > 1e-3), "{name} was trained");
    }
    let (code, out, err) = flowc(&["eval", &p("whole"), "--data", &data, "--format", "json"]);
    assert_eq!(code, 0, "{err}");
    let eval: serde_json::Value = serde_json::from_str(&out).unwrap();
    let log = std::fs::read_to_string(dir.path().join("whole/metrics.jsonl")).unwrap();
    let last: serde_json::Value = serde_json::from_str(log.lines().last().unwrap()).unwrap();
    let (e, t) = (
        eval["bits_per_dim"].as_f64().unwrap(),
        last["test_bits_per_dim"].as_f64().unwrap(),
    );
    assert!((e - t).abs() < 1e-6, "eval {e} vs the run's {t}");
    let csv = p("s.csv");
    let args = [
        "sample",
        &p("whole"),
        "-n",
        "8",
        "--temperature",
        "0.5",
        "-o",
        &csv,
    ];
    let (code, _, err) = flowc(&args);
    assert_eq!(code, 0, "{err}");
    assert_eq!(std::fs::read_to_string(&csv).unwrap().lines().count(), 8);
}
