//! Using a trained flow, against known truths: completion of a 2-D density
//! whose conditionals are known in closed form, the importance-weighted
//! bound against a numerically integrated probability, encode/decode round
//! trips, interpolation endpoints, scores against `eval`.

use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use flowc::infer::complete::{complete, Method, Options};

mod common;
use common::cli::{flowc, write_npy};

/// `x1 ~ N(0, 1)`, `x2 | x1 ~ N(x1^2 / 2, 0.5^2)`.
fn conditional_data(path: &Path, n: usize) {
    let mut rng = flowc::train::rng::Rng::new(11);
    let mut body = Vec::with_capacity(n * 8);
    for _ in 0..n {
        let x1 = rng.normal();
        let x2 = x1 * x1 / 2.0 + 0.5 * rng.normal();
        body.extend((x1 as f32).to_le_bytes());
        body.extend((x2 as f32).to_le_bytes());
    }
    write_npy(path, "<f4", &format!("{n}, 2"), &body);
}

const COND: &str = "flow cond {
    input vector(2)
    net m = mlp(hidden = 64, layers = 2)
    repeat 4 {
        coupling affine(mask = alternate(even), net = m)
        coupling affine(mask = alternate(odd), net = m)
    }
}
";

/// A run of `COND` trained on the conditional data (a few seconds).
fn trained_conditional(dir: &Path) -> PathBuf {
    std::fs::write(dir.join("cond.flow"), COND).unwrap();
    conditional_data(&dir.join("cond.npy"), 20_000);
    let (run, data) = (
        dir.join("run"),
        format!("npy:{}", dir.join("cond.npy").display()),
    );
    let (code, _, err) = flowc(&[
        "train",
        &dir.join("cond.flow").display().to_string(),
        "--data",
        &data,
        "--steps",
        "3000",
        "--batch",
        "256",
        "--lr",
        "2e-3",
        "--cosine",
        "--out",
        &run.display().to_string(),
    ]);
    assert_eq!(code, 0, "{err}");
    run
}

#[test]
fn completion_recovers_a_known_conditional() {
    let dir = tempfile::tempdir().unwrap();
    let run = trained_conditional(dir.path());
    let (loaded, _) = flowc::train::load_run(&run, &Device::Cpu).unwrap();
    let x1s: Vec<f32> = (0..10).map(|i| -1.5 + i as f32 / 3.0).collect();
    let x: Vec<f32> = x1s.iter().flat_map(|&a| [a, 0.0]).collect();
    let x = Tensor::from_vec(x, (10, 2), &Device::Cpu).unwrap();
    let observed: Vec<bool> = (0..10).flat_map(|_| [true, false]).collect();
    let truth: Vec<f64> = x1s.iter().map(|&a| (a as f64).powi(2) / 2.0).collect();

    let map = Options {
        method: Method::Map,
        steps: 300,
        lr: 0.05,
        seed: 1,
    };
    let c = complete(&loaded.flow, &x, &observed, &map, &Device::Cpu).unwrap();
    let rmse = |est: &[f64]| {
        (est.iter()
            .zip(&truth)
            .map(|(e, t)| (e - t).powi(2))
            .sum::<f64>()
            / 10.0)
            .sqrt()
    };
    let x2: Vec<f64> = c.values.chunks(2).map(|r| r[1] as f64).collect();
    // The observed part comes back exactly as given.
    assert!(c.values.chunks(2).zip(&x1s).all(|(r, a)| r[0] == *a));
    eprintln!("map rmse {}", rmse(&x2));
    assert!(rmse(&x2) < 0.1, "MAP completions {x2:?} vs {truth:?}");

    let k = 64;
    let sample = Options {
        method: Method::Sample { chains: k },
        steps: 400,
        lr: 0.3,
        seed: 2,
    };
    let c = complete(&loaded.flow, &x, &observed, &sample, &Device::Cpu).unwrap();
    let draws: Vec<Vec<f64>> = c
        .values
        .chunks(2 * k)
        .map(|e| e.chunks(2).map(|r| r[1] as f64).collect())
        .collect();
    let means: Vec<f64> = draws
        .iter()
        .map(|d| d.iter().sum::<f64>() / k as f64)
        .collect();
    let var = draws
        .iter()
        .zip(&means)
        .map(|(d, m)| d.iter().map(|v| (v - m).powi(2)).sum::<f64>() / (k - 1) as f64)
        .sum::<f64>()
        / 10.0;
    let acceptance = c.acceptance.unwrap();
    eprintln!(
        "sample mean rmse {} variance {var} acceptance {acceptance}",
        rmse(&means)
    );
    assert!(rmse(&means) < 0.12, "{means:?} vs {truth:?}");
    assert!(
        (var - 0.25).abs() < 0.05,
        "conditional variance {var}, truth 0.25"
    );
    assert!((0.3..0.9).contains(&acceptance), "acceptance {acceptance}");

    // Nothing observed: exact draws of the flow (by its inverse, temperature 1).
    let none = vec![false; 20];
    let c = complete(&loaded.flow, &x, &none, &map, &Device::Cpu).unwrap();
    let draws: Vec<f32> = flowc::train::sample_range(
        &loaded.flow,
        0..10,
        flowc::train::Classes::None,
        1.0,
        1 ^ 0xC0DE,
        &Device::Cpu,
    )
    .unwrap()
    .flatten_all()
    .unwrap()
    .to_vec1()
    .unwrap();
    assert_eq!(c.values, draws);
    assert!(c.acceptance.is_none());
    // Everything observed: the input as it is.
    let all = vec![true; 20];
    let c = complete(&loaded.flow, &x, &all, &sample, &Device::Cpu).unwrap();
    let input: Vec<f32> = x.flatten_all().unwrap().to_vec1().unwrap();
    assert_eq!(
        c.values,
        input
            .chunks(2)
            .flat_map(|r| std::iter::repeat_n(r, k).flatten().copied())
            .collect::<Vec<f32>>()
    );
}

const PAIR: &str = "flow pair {
    input image(1, 1, 2)
    net r = resnet(blocks = 1, features = 16)
    logit(alpha = 0.05)
    repeat 3 {
        coupling affine(mask = checkerboard(even), net = r)
        coupling affine(mask = checkerboard(odd), net = r)
    }
}
";

/// Pairs of 8-bit values, the second close to the first: a density that
/// changes within a few bins, so that within one bin it is not flat.
fn pairs(path: &Path, n: usize) {
    let mut rng = flowc::train::rng::Rng::new(5);
    let mut body = Vec::with_capacity(2 * n);
    for _ in 0..n {
        let a = (128.0 + 30.0 * rng.normal()).round().clamp(0.0, 255.0);
        let b = (a + 1.5 * rng.normal()).round().clamp(0.0, 255.0);
        body.extend([a as u8, b as u8]);
    }
    write_npy(path, "|u1", &format!("{n}, 1, 1, 2"), &body);
}

#[test]
fn the_importance_weighted_bound_lies_between_the_exact_nll_and_the_single_draw() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("pair.flow"), PAIR).unwrap();
    pairs(&dir.path().join("pairs.npy"), 4000);
    let run = dir.path().join("run");
    let data = format!("npy:{}", dir.path().join("pairs.npy").display());
    let (code, _, err) = flowc(&[
        "train",
        &dir.path().join("pair.flow").display().to_string(),
        "--data",
        &data,
        "--steps",
        "1500",
        "--batch",
        "128",
        "--lr",
        "3e-3",
        "--no-flip",
        "--out",
        &run.display().to_string(),
    ]);
    assert_eq!(code, 0, "{err}");
    let (loaded, state) = flowc::train::load_run(&run, &Device::Cpu).unwrap();
    let ds = flowc::data::load(&data, Path::new("."), None, state.seed).unwrap();
    let test = ds.test.select(&(0..100).collect::<Vec<_>>());
    // Exact -log P(v): p integrated over each example's bin, midpoint rule on a 48x48 grid.
    let g = 48;
    let flowc::data::Examples::Images { data: v, .. } = &test else {
        panic!()
    };
    let mut exact = 0.0;
    for pair in v.chunks(2) {
        let pts: Vec<f32> = (0..g * g)
            .flat_map(|k| {
                let (i, j) = (k / g, k % g);
                [
                    (pair[0] as f32 + (i as f32 + 0.5) / g as f32) / 256.0,
                    (pair[1] as f32 + (j as f32 + 0.5) / g as f32) / 256.0,
                ]
            })
            .collect();
        let x = Tensor::from_vec(pts, (g * g, 1, 1, 2), &Device::Cpu).unwrap();
        let lp: Vec<f32> = loaded.flow.log_prob(&x, false).unwrap().to_vec1().unwrap();
        let max = lp.iter().cloned().fold(f32::MIN, f32::max) as f64;
        let mean = lp.iter().map(|&l| (l as f64 - max).exp()).sum::<f64>() / (g * g) as f64;
        exact += -(max + mean.ln()) + 2.0 * 256f64.ln();
    }
    exact /= 100.0;
    let iw = |k: usize| {
        let s = flowc::infer::score::scores(
            &loaded.flow,
            &test,
            50,
            Some(k),
            state.seed,
            &Device::Cpu,
            &indicatif::ProgressBar::hidden(),
        )
        .unwrap();
        let single = s.iter().map(|s| s.nll + 2.0 * 256f64.ln()).sum::<f64>() / 100.0;
        let bound = s
            .iter()
            .map(|s| s.nll_iw.unwrap() + 2.0 * 256f64.ln())
            .sum::<f64>()
            / 100.0;
        (single, bound)
    };
    let (single, k1) = iw(1);
    let (_, k16) = iw(16);
    let (_, k256) = iw(256);
    eprintln!("-log P(v) in nats: exact {exact:.4}, K=1 {k1:.4} (single draw {single:.4}), K=16 {k16:.4}, K=256 {k256:.4}");
    assert!(
        (k1 - single).abs() < 1e-9,
        "K = 1 is the paper's single-draw figure"
    );
    // K = 256's figure is an upper bound in expectation only: over 100
    // examples its Monte Carlo error and the midpoint rule's are each a few
    // 1e-3 nats (one run read 6.7135 against 6.7155), so it may fall that
    // far below; a bound that did not tighten with K would be off by 0.03.
    assert!(
        exact - 5e-3 < k256 && k256 < k16 && k16 < k1,
        "{exact} {k256} {k16} {k1}"
    );
    assert!(
        k1 - exact > 0.01,
        "the single draw should be a visibly loose bound here: {k1} vs {exact}"
    );
    assert!(
        k256 - exact < 0.2 * (k1 - exact),
        "K = 256 closes most of the gap: {k256} vs {exact}"
    );
}
