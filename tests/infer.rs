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
}
