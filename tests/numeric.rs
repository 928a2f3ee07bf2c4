//! Numeric correctness of compiled flows: for every flow in `flows/` (at a
//! downsized input where the full one is too large to form the Jacobian),
//! with every parameter randomized so nothing is trivially the identity:
//! inverse(forward(x)) returns x, and the forward log-det equals log|det J|
//! of the Jacobian computed independently by central finite differences in f64.

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use common::tensors::{input, max_abs_diff};
use flowc::exec::Flow;
use flowc::parse::{ast::ShapeDecl, parse, print::print};

/// The flow with a smaller input: images 4x4 (8x8 for three squeezes),
/// vectors at most 12 features.
fn downsized(source: &str) -> String {
    let small = downsized_to(source, 4);
    if flowc::compile(&small).is_ok() {
        return small;
    }
    downsized_to(source, 8)
}

fn downsized_to(source: &str, side: u64) -> String {
    let (program, _) = parse(source);
    let mut p = program.unwrap();
    if let Some((shape, _)) = p.input.as_mut() {
        match shape {
            ShapeDecl::Image { h, w, .. } => {
                h.text = side.to_string();
                w.text = side.to_string();
            }
            ShapeDecl::Vector { d } => {
                let n: u64 = d.text.parse().unwrap();
                d.text = n.min(12).to_string();
            }
        }
    }
    print(&p)
}

fn randomize(vm: &VarMap) {
    flowc::exec::numeric::randomize(vm, flowc::exec::numeric::NOISE).unwrap();
}

fn build(source: &str, dtype: DType) -> (Flow, VarMap) {
    let plan = flowc::compile(source).expect("compiles");
    let vm = VarMap::new();
    let flow = Flow::new(
        &plan,
        VarBuilder::from_varmap(&vm, dtype, &Device::Cpu),
        &Device::Cpu,
    )
    .unwrap();
    randomize(&vm);
    (flow, vm)
}

fn flat(latents: &[Tensor]) -> Tensor {
    let parts: Vec<Tensor> = latents.iter().map(|z| z.flatten_from(1).unwrap()).collect();
    Tensor::cat(&parts, 1).unwrap()
}

/// log|det A| by LU with partial pivoting, independent of the crate's own.
fn log_abs_det(mut a: Vec<f64>, n: usize) -> f64 {
    let mut total = 0.0;
    for k in 0..n {
        let p = (k..n)
            .max_by(|&i, &j| a[i * n + k].abs().total_cmp(&a[j * n + k].abs()))
            .unwrap();
        if p != k {
            for j in 0..n {
                a.swap(k * n + j, p * n + j);
            }
        }
        let pivot = a[k * n + k];
        total += pivot.abs().ln();
        for i in k + 1..n {
            let f = a[i * n + k] / pivot;
            for j in k..n {
                a[i * n + j] -= f * a[k * n + j];
            }
        }
    }
    total
}

/// The forward log-det of one example, and log|det J| of its central
/// finite-difference Jacobian (all 2D perturbations in one batch).
fn logdet_and_jacobian(flow: &Flow, x: &Tensor) -> (f64, f64) {
    let d = x.elem_count();
    // A conditioned flow: class 1 for the example and its shifted copies.
    let one = flow.labels_if_given(1, |_| 1).unwrap();
    let all = flow.labels_if_given(d, |_| 1).unwrap();
    let (_, logdet) = flow.forward_given(x, one.as_ref(), false).unwrap();
    let logdet: f64 = logdet.get(0).unwrap().to_scalar().unwrap();
    let h = 1e-6;
    let eye = Tensor::eye(d, DType::F64, &Device::Cpu).unwrap();
    let base = x
        .flatten_all()
        .unwrap()
        .unsqueeze(0)
        .unwrap()
        .broadcast_as((d, d))
        .unwrap();
    let shape: Vec<usize> = std::iter::once(d)
        .chain(x.dims()[1..].iter().copied())
        .collect();
    let plus = (&base + (&eye * h).unwrap())
        .unwrap()
        .reshape(shape.clone())
        .unwrap();
    let minus = (&base - (&eye * h).unwrap())
        .unwrap()
        .reshape(shape)
        .unwrap();
    let fp = flat(&flow.forward_given(&plus, all.as_ref(), false).unwrap().0);
    let fm = flat(&flow.forward_given(&minus, all.as_ref(), false).unwrap().0);
    // Row i holds d f / d x_i: the transpose of J, with the same determinant.
    let jt = ((fp - fm).unwrap() / (2.0 * h)).unwrap();
    let j: Vec<f64> = jt.flatten_all().unwrap().to_vec1().unwrap();
    (logdet, log_abs_det(j, d))
}

#[test]
fn every_library_flow_inverts_and_its_logdet_matches_the_jacobian() {
    insta::glob!("../flows", "*.flow", |path| {
        let source = downsized(&std::fs::read_to_string(path).unwrap());
        let name = path.file_name().unwrap().to_string_lossy().into_owned();

        // Round trip in f32.
        let (flow, _vm) = build(&source, DType::F32);
        let x = input(&flow, 4, DType::F32);
        let given = flow.labels_if_given(4, |i| i as u32).unwrap();
        let (z, _) = flow.forward_given(&x, given.as_ref(), false).unwrap();
        let back = flow.inverse_given(&z, given.as_ref()).unwrap();
        let err: f32 = max_abs_diff(&back, &x);
        assert!(err < 1e-4, "{name}: round-trip error {err}");
        let moved = max_abs_diff(&flat(&z), &x.flatten_from(1).unwrap());
        assert!(
            moved > 1e-3,
            "{name}: randomized flow should not be the identity"
        );

        // Log-det against a finite-difference Jacobian in f64.
        let (flow, _vm) = build(&source, DType::F64);
        let x = input(&flow, 1, DType::F64);
        let (logdet, reference) = logdet_and_jacobian(&flow, &x);
        let rel = (logdet - reference).abs() / reference.abs().max(1.0);
        assert!(
            rel < 1e-3,
            "{name}: log-det {logdet} vs Jacobian {reference} (rel {rel})"
        );
    });
}

#[test]
fn fresh_flow_is_the_identity_with_zero_logdet() {
    let src = std::fs::read_to_string("flows/realnvp_mnist.flow").unwrap();
    let src = downsized(&src).replace("logit(alpha = 0.05)", "");
    let plan = flowc::compile(&src).unwrap();
    let vm = VarMap::new();
    let flow = Flow::new(
        &plan,
        VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu),
        &Device::Cpu,
    )
    .unwrap();
    let x = input(&flow, 3, DType::F32);
    let (z, logdet) = flow.forward(&x, true).unwrap();
    let back = flow.inverse(&z).unwrap();
    let ld: Vec<f32> = logdet.to_vec1().unwrap();
    assert!(ld.iter().all(|&v| v == 0.0), "{ld:?}");
    let err: f32 = max_abs_diff(&back, &x);
    assert_eq!(err, 0.0);
}

/// The flow with every spline coupling made additive (a fresh additive
/// coupling adds exactly 0): what a fresh spline flow must equal.
fn splines_as_additive(src: &str) -> String {
    let mut out = src.replace("coupling spline(", "coupling additive(");
    for key in [", bins = ", ", bound = "] {
        while let Some(at) = out.find(key) {
            let len = out[at + key.len()..].find([',', ')']).unwrap();
            out.replace_range(at..at + key.len() + len, "");
        }
    }
    out
}

/// A fresh spline flow (every net's output zero) is exactly the identity
/// with log-det exactly 0, on images and vectors, in f32 and f64: its
/// latents equal those of the same flow with additive couplings bit for bit;
/// its inverse gives the input back to rounding.
#[test]
fn fresh_spline_flows_are_exactly_the_identity() {
    for (file, strip) in [
        ("flows/spline_mnist.flow", "logit(alpha = 0.05)"),
        ("flows/spline_eight_gaussians.flow", ""),
        ("flows/spline_tabular.flow", "batchnorm"),
    ] {
        let src = std::fs::read_to_string(file).unwrap();
        let src = downsized(&src).replace(strip, "");
        let plan = flowc::compile(&src).unwrap();
        let reference = flowc::compile(&splines_as_additive(&src)).unwrap();
        assert!(!format!("{reference}").contains(" spline("));
        for dtype in [DType::F32, DType::F64] {
            let vm = VarMap::new();
            let vb = VarBuilder::from_varmap(&vm, dtype, &Device::Cpu);
            let flow = Flow::new(&plan, vb, &Device::Cpu).unwrap();
            let vm = VarMap::new();
            let vb = VarBuilder::from_varmap(&vm, dtype, &Device::Cpu);
            let reference = Flow::new(&reference, vb, &Device::Cpu).unwrap();
            let x = (input(&flow, 3, dtype) * 2.0).unwrap();
            let values = |t: &Tensor| -> Vec<f64> {
                let t = t.flatten_all().unwrap().to_dtype(DType::F64).unwrap();
                t.to_vec1().unwrap()
            };
            for train in [false, true] {
                let (z, logdet) = flow.forward(&x, train).unwrap();
                let ld = values(&logdet);
                assert!(ld.iter().all(|&v| v == 0.0), "{file}: {ld:?}");
                let (want, _) = reference.forward(&x, train).unwrap();
                let (z, want) = (flat(&z), flat(&want));
                assert_eq!(values(&z), values(&want), "{file} {dtype:?}");
                let (z, _) = flow.forward(&x, train).unwrap();
                let f32s = |t: &Tensor| t.to_dtype(DType::F32).unwrap();
                let back = max_abs_diff(&f32s(&flow.inverse(&z).unwrap()), &f32s(&x));
                assert!(back < 1e-6, "{file} {dtype:?}: {back}");
            }
        }
    }
}

mod common;

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig { cases: 24, ..Default::default() })]

    /// Random valid programs (shapes, masks, nets, blocks, repeats, squeezes,
    /// factor-outs): the same round-trip and Jacobian checks.
    #[test]
    fn random_flows_invert_and_match_their_jacobian(src in common::valid_program_sized(3, 2, 2, 10)) {
        let (flow, _vm) = build(&src, DType::F32);
        let x = input(&flow, 4, DType::F32);
        let given = flow.labels_if_given(4, |i| i as u32).unwrap();
        let (z, _) = flow.forward_given(&x, given.as_ref(), false).unwrap();
        let back = flow.inverse_given(&z, given.as_ref()).unwrap();
        let err = max_abs_diff(&back, &x);
        proptest::prop_assert!(err < 1e-4, "round trip {err}\n{src}");

        let (flow, _vm) = build(&src, DType::F64);
        let x = input(&flow, 1, DType::F64);
        let (logdet, reference) = logdet_and_jacobian(&flow, &x);
        let rel = (logdet - reference).abs() / reference.abs().max(1.0);
        proptest::prop_assert!(rel < 1e-3, "log-det {logdet} vs {reference}\n{src}");
    }
}
