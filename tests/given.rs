//! Conditioned flows (`input SHAPE given class(K)`): labels reach every
//! net and the learned prior, per example; a fresh conditioned flow is the
//! standard normal whatever the label; round trips and log-dets hold given
//! a label; and a class-conditional flow learns eight Gaussians' components
//! to their entropy and classifies them as well as the Bayes classifier.

use candle_core::{DType, Device, Tensor};
use candle_nn::VarMap;
use flowc::train::adam::Adam;

mod common;
use common::tensors::{build, input};

const VECTOR: &str = "flow v {
    input vector(3) given class(4)
    prior normal(learned)
    net m = mlp(hidden = 16, layers = 2)
    coupling affine(mask = alternate(even), net = m)
    factor_out(net = m)
    coupling affine(mask = alternate(odd), net = m)
}";

const IMAGE: &str = "flow i {
    input image(2, 4, 4) given class(3)
    prior normal(learned)
    net r = resnet(blocks = 1, features = 8)
    logit(alpha = 0.05)
    coupling affine(mask = checkerboard(even), net = r)
    squeeze
    coupling affine(mask = channel(odd), net = r)
    factor_out(net = r)
    coupling affine(mask = checkerboard(odd), net = r)
}";

/// Every parameter (output layers and priors included) moved by noise of
/// 0.3, so that no layer is the identity.
fn randomize(vm: &VarMap) {
    flowc::exec::numeric::randomize(vm, 0.3).unwrap();
}

fn values(t: &Tensor) -> Vec<f64> {
    t.flatten_all()
        .unwrap()
        .to_dtype(DType::F64)
        .unwrap()
        .to_vec1()
        .unwrap()
}

#[test]
fn a_fresh_conditioned_flow_is_the_standard_normal_whatever_the_label() {
    let (flow, _) = build(VECTOR, DType::F64);
    let x = input(&flow, 6, DType::F64);
    let want: Vec<f64> = values(&x)
        .chunks(3)
        .map(|r| {
            r.iter()
                .map(|v| -0.5 * v * v - 0.5 * (2.0 * std::f64::consts::PI).ln())
                .sum()
        })
        .collect();
    for k in 0..4 {
        let y = flow.one_hot(&[k; 6]).unwrap();
        let lp = values(&flow.log_prob_given(&x, Some(&y), false).unwrap());
        for (a, b) in lp.iter().zip(&want) {
            assert!((a - b).abs() < 1e-12, "class {k}: {a} against {b}");
        }
    }
}

#[test]
fn labels_are_required_checked_and_applied_per_example() {
    let (flow, vm) = build(VECTOR, DType::F32);
    randomize(&vm);
    let x = input(&flow, 5, DType::F32);
    let e = flow.log_prob(&x, false).unwrap_err().to_string();
    assert!(
        e.contains("is conditioned (given class(4)): each example needs its label"),
        "{e}"
    );
    let e = flow.one_hot(&[0, 4]).unwrap_err().to_string();
    assert!(e.contains("label 4 of example 1 is not below K = 4"), "{e}");
    let e = flow.log_prob_given(&x, Some(&flow.one_hot(&[0, 1]).unwrap()), false);
    assert!(e.unwrap_err().to_string().contains("expected [5, 4]"));
    // A batch of mixed labels is each example alone with its own label.
    let labels = [3, 0, 2, 2, 1];
    let lp = values(
        &flow
            .log_prob_given(&x, Some(&flow.one_hot(&labels).unwrap()), false)
            .unwrap(),
    );
    let per_class = values(&flow.log_prob_per_class(&x).unwrap());
    for (i, &k) in labels.iter().enumerate() {
        let alone = flow
            .log_prob_given(
                &x.narrow(0, i, 1).unwrap(),
                Some(&flow.one_hot(&[k]).unwrap()),
                false,
            )
            .unwrap();
        assert!((lp[i] - values(&alone)[0]).abs() < 1e-4, "example {i}");
        assert!(
            (lp[i] - per_class[i * 4 + k as usize]).abs() < 1e-4,
            "example {i}"
        );
    }
    // The label matters: the classes' densities differ.
    let spread = per_class[..4]
        .iter()
        .fold(0f64, |m, v| m.max((v - per_class[0]).abs()));
    assert!(spread > 1e-2, "{per_class:?}");
    // A flow without a condition takes no labels.
    let (plain, _) = build(&VECTOR.replace(" given class(4)", ""), DType::F32);
    assert!(plain.one_hot(&[0]).is_err());
}

#[test]
fn conditioned_flows_round_trip_given_their_labels() {
    for source in [VECTOR, IMAGE] {
        let (flow, vm) = build(source, DType::F32);
        randomize(&vm);
        let x = input(&flow, 7, DType::F32);
        let k = flow.plan().condition.unwrap().classes;
        let labels: Vec<u32> = (0..7).map(|i| i % k).collect();
        let y = flow.one_hot(&labels).unwrap();
        let (z, _) = flow.forward_given(&x, Some(&y), false).unwrap();
        let back = flow.inverse_given(&z, Some(&y)).unwrap();
        let err = values(&(back - &x).unwrap())
            .iter()
            .fold(0f64, |m, v| m.max(v.abs()));
        assert!(err < 1e-4, "{source}: round trip {err}");
        // Samples of a class are that class's: encoding them with another
        // label does not give the same latents back.
        let s = flow.sample_given(7, 1.0, Some(&y)).unwrap();
        assert_eq!(s.dims(), x.dims());
    }
}

/// `log|det df/dx|` of `x -> z` given a label, against central differences
/// of the latents in f64.
#[test]
fn conditioned_log_det_matches_a_finite_difference_jacobian() {
    let (flow, vm) = build(VECTOR, DType::F64);
    randomize(&vm);
    let x0 = input(&flow, 1, DType::F64);
    let y = flow.one_hot(&[2]).unwrap();
    let f = |x: &Tensor| -> (Vec<f64>, f64) {
        let (z, ld) = flow.forward_given(x, Some(&y), false).unwrap();
        let flat: Vec<f64> = z.iter().flat_map(values).collect();
        (flat, values(&ld)[0])
    };
    let (_, logdet) = f(&x0);
    let x = values(&x0);
    let h = 1e-6;
    let mut jac = vec![vec![0f64; 3]; 3];
    for j in 0..3 {
        let shifted = |d: f64| {
            let mut v = x.clone();
            v[j] += d;
            f(&Tensor::from_vec(v, (1, 3), &Device::Cpu).unwrap()).0
        };
        let (up, down) = (shifted(h), shifted(-h));
        for i in 0..3 {
            jac[i][j] = (up[i] - down[i]) / (2.0 * h);
        }
    }
    let det = jac[0][0] * (jac[1][1] * jac[2][2] - jac[1][2] * jac[2][1])
        - jac[0][1] * (jac[1][0] * jac[2][2] - jac[1][2] * jac[2][0])
        + jac[0][2] * (jac[1][0] * jac[2][1] - jac[1][1] * jac[2][0]);
    let rel = (det.abs().ln() - logdet).abs() / logdet.abs().max(1.0);
    assert!(rel < 1e-3, "log|det| {} against {logdet}", det.abs().ln());
}

/// A class-conditional flow on eight Gaussians, given each point's
/// component: its conditional NLL on the test set reaches a component's
/// entropy (an isotropic Gaussian's, ln(2 pi e sigma^2)) within 0.05 nats,
/// and argmax_y log p(x | y) classifies the test points within 0.02 of the
/// Bayes classifier (the nearest centre).
#[test]
fn eight_gaussians_given_the_component_reach_its_entropy_and_bayes_accuracy() {
    use flowc::data::toy::{EIGHT_GAUSSIANS_RADIUS, EIGHT_GAUSSIANS_SIGMA};
    use flowc::data::Examples;
    let source = "flow g {
        input vector(2) given class(8)
        prior normal(learned)
        net m = mlp(hidden = 32, layers = 2)
        coupling affine(mask = alternate(even), net = m)
        coupling affine(mask = alternate(odd), net = m)
    }";
    let (flow, vm) = build(source, DType::F32);
    let ds = flowc::data::load("toy:eight-gaussians", std::path::Path::new("."), None, 1).unwrap();
    let labels = ds.labels.expect("eight-gaussians has labels");
    let points = |e: &Examples| match e {
        Examples::Vectors { data, .. } => data.clone(),
        Examples::Images { .. } => unreachable!("toy sets are vectors"),
    };
    let (train, test) = (points(&ds.train), points(&ds.test));
    let params: Vec<_> = vm
        .data()
        .lock()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let mut adam = Adam::new(params, 1e-2, 0.0, 100.0).unwrap();
    let batch = 256;
    for step in 0..1500 {
        let at = (step * batch) % (labels.train.len() - batch);
        let x =
            Tensor::from_slice(&train[2 * at..2 * (at + batch)], (batch, 2), &Device::Cpu).unwrap();
        let y = flow.one_hot(&labels.train[at..at + batch]).unwrap();
        let loss = flow
            .log_prob_given(&x, Some(&y), true)
            .unwrap()
            .mean_all()
            .unwrap()
            .neg()
            .unwrap();
        adam.step(&loss.backward().unwrap())
            .unwrap()
            .expect("finite gradients");
    }
    let n = 4000;
    let x = Tensor::from_slice(&test[..2 * n], (n, 2), &Device::Cpu).unwrap();
    let y = flow.one_hot(&labels.test[..n]).unwrap();
    let nll = -values(&flow.log_prob_given(&x, Some(&y), false).unwrap())
        .iter()
        .sum::<f64>()
        / n as f64;
    let s2 = EIGHT_GAUSSIANS_SIGMA * EIGHT_GAUSSIANS_SIGMA;
    let entropy = 1.0 + (2.0 * std::f64::consts::PI * s2).ln();
    assert!(
        (nll - entropy).abs() < 0.05,
        "conditional NLL {nll:.4} against the entropy {entropy:.4}"
    );
    let per_class = values(&flow.log_prob_per_class(&x).unwrap());
    let argmax = |row: &[f64]| {
        (0..row.len())
            .max_by(|&a, &b| row[a].total_cmp(&row[b]))
            .unwrap()
    };
    let nearest = |p: &[f32]| {
        let d = |k: usize| {
            let a = k as f64 * std::f64::consts::PI / 4.0;
            let r = EIGHT_GAUSSIANS_RADIUS;
            (p[0] as f64 - r * a.cos()).hypot(p[1] as f64 - r * a.sin())
        };
        (0..8).min_by(|&a, &b| d(a).total_cmp(&d(b))).unwrap()
    };
    let (mut ours, mut bayes) = (0, 0);
    for i in 0..n {
        let label = labels.test[i] as usize;
        ours += usize::from(argmax(&per_class[i * 8..(i + 1) * 8]) == label);
        bayes += usize::from(nearest(&test[2 * i..2 * i + 2]) == label);
    }
    let (ours, bayes) = (ours as f64 / n as f64, bayes as f64 / n as f64);
    assert!(
        (ours - bayes).abs() < 0.02,
        "accuracy {ours:.4} against Bayes {bayes:.4}"
    );
    println!("eight-gaussians given the component: NLL {nll:.4} (entropy {entropy:.4}), accuracy {ours:.4} (Bayes {bayes:.4})");
}

/// `bench` runs a conditioned flow on labels 0..K-1.
#[test]
fn bench_runs_a_conditioned_flow() {
    let dir = tempfile::tempdir().unwrap();
    let flow = dir.path().join("g.flow");
    std::fs::write(&flow, VECTOR).unwrap();
    let flow = flow.to_str().unwrap();
    let (code, json, err) = common::cli::flowc(&[
        "bench", flow, "--iters", "1", "--batch", "8", "--format", "json",
    ]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert!(v["density_per_s"].as_f64().unwrap() > 0.0, "{json}");
}

const EIGHT: &str = "flow g8 {
    input vector(2) given class(8)
    prior normal(learned)
    net m = mlp(hidden = 32, layers = 2)
    coupling affine(mask = alternate(even), net = m)
    coupling affine(mask = alternate(odd), net = m)
}";

/// Through the binary: `train` on eight Gaussians with their labels,
/// `eval --classify` (NLL within 0.05 nats of a component's entropy,
/// accuracy within 0.02 of the Bayes classifier's on the same test set),
/// `sample --class` (samples of that component) and the refusals.
#[test]
fn train_eval_classify_and_sample_a_class_through_the_binary() {
    use common::cli::flowc_in;
    use flowc::data::toy::{EIGHT_GAUSSIANS_RADIUS, EIGHT_GAUSSIANS_SIGMA};
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("g8.flow"), EIGHT).unwrap();
    let data = ["--data", "toy:eight-gaussians"];
    let train = [
        &["train", "g8.flow"][..],
        &data,
        &["--steps", "1500", "--batch", "256"],
    ];
    let args: Vec<&str> = train
        .concat()
        .into_iter()
        .chain(["--lr", "1e-2", "--out", "run"])
        .collect();
    let (code, _, err) = flowc_in(dir.path(), &args);
    assert_eq!(code, 0, "{err}");
    let (code, json, err) = flowc_in(
        dir.path(),
        &[
            &["eval", "run", "--classify", "--format", "json"][..],
            &data,
        ]
        .concat(),
    );
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    let s2 = EIGHT_GAUSSIANS_SIGMA * EIGHT_GAUSSIANS_SIGMA;
    let entropy = 1.0 + (2.0 * std::f64::consts::PI * s2).ln();
    let nll = v["nll_nats"].as_f64().unwrap();
    assert!((nll - entropy).abs() < 0.05, "NLL {nll} against {entropy}");
    // The Bayes classifier on the same test set: the nearest centre.
    let ds = flowc::data::load("toy:eight-gaussians", std::path::Path::new("."), None, 0).unwrap();
    let flowc::data::Examples::Vectors { data: pts, .. } = &ds.test else {
        unreachable!()
    };
    let labels = ds.labels.unwrap().test;
    let centre = |k: u32| {
        let a = k as f64 * std::f64::consts::PI / 4.0;
        [
            EIGHT_GAUSSIANS_RADIUS * a.cos(),
            EIGHT_GAUSSIANS_RADIUS * a.sin(),
        ]
    };
    let dist = |p: &[f32], k: u32| (p[0] as f64 - centre(k)[0]).hypot(p[1] as f64 - centre(k)[1]);
    let right = pts
        .chunks(2)
        .zip(&labels)
        .filter(|(p, &l)| (0..8).min_by(|&a, &b| dist(p, a).total_cmp(&dist(p, b))) == Some(l))
        .count();
    let bayes = right as f64 / labels.len() as f64;
    let accuracy = v["accuracy"].as_f64().unwrap();
    assert!(
        (accuracy - bayes).abs() < 0.02,
        "accuracy {accuracy} against Bayes {bayes}"
    );
    // Samples of class 3 lie around its centre.
    let (code, csv, err) = flowc_in(
        dir.path(),
        &["sample", "run", "-n", "200", "--class", "3", "-o", "-"],
    );
    assert_eq!(code, 0, "{err}");
    let near = csv
        .lines()
        .filter(|l| {
            let p: Vec<f32> = l.split(',').map(|v| v.parse().unwrap()).collect();
            dist(&p, 3) < 4.0 * EIGHT_GAUSSIANS_SIGMA
        })
        .count();
    assert!(
        near >= 190,
        "{near} of 200 samples of class 3 near its centre"
    );
    // Refused, exit 2: a class past K, a data set without labels, and the
    // commands that do not take labels yet.
    let (code, _, err) = flowc_in(dir.path(), &["sample", "run", "--class", "8"]);
    assert!(
        code == 2 && err.contains("--class 8: the flow is given class(8), so 0..=7"),
        "{err}"
    );
    let args = [
        "train",
        "g8.flow",
        "--data",
        "toy:checkerboard",
        "--steps",
        "1",
        "--out",
        "r2",
    ];
    let (code, _, err) = flowc_in(dir.path(), &args);
    assert!(code == 2 && err.contains("has no labels"), "{err}");
    let (code, _, err) = flowc_in(dir.path(), &["encode", "run", "--input", "none.csv"]);
    assert!(
        code == 2 && err.contains("this command does not take labels yet"),
        "{err}"
    );
}

/// `npy:PATH --labels FILE`: a label at or above K is refused before the
/// first step, naming the file, the example and the label.
#[test]
fn a_label_past_k_is_refused_naming_its_file_and_example() {
    use common::cli::{flowc_in, write_npy};
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("g.flow"), VECTOR).unwrap();
    let x: Vec<u8> = (0..30 * 3)
        .flat_map(|i| (i as f32 * 0.01).to_le_bytes())
        .collect();
    write_npy(&dir.path().join("x.npy"), "<f4", "30, 3", &x);
    let mut y: Vec<u8> = (0..30u8).map(|i| i % 4).collect();
    y[17] = 4;
    write_npy(&dir.path().join("y.npy"), "|u1", "30,", &y);
    let args = [
        "train",
        "g.flow",
        "--data",
        "npy:x.npy",
        "--labels",
        "y.npy",
        "--batch",
        "8",
        "--steps",
        "1",
        "--out",
        "r",
    ];
    let (code, _, err) = flowc_in(dir.path(), &args);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("y.npy: example")
            && err.contains("has label 4")
            && err.contains("given class(4)"),
        "{err}"
    );
    assert!(!dir.path().join("r").join("model.flow").exists());
}
