//! A deep flow, well inside the language's 100,000-layer limit: 20,000
//! couplings check, compile, run both ways, train (one backward) and pass the
//! numeric check. candle's graph walks recurse per op, so the runs go through
//! `exec::with_stack_for` (the test threads have 2 MiB of stack; this flow
//! needs about 7).

use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use flowc::exec::{numeric, with_stack_for, Flow};

mod common;
use common::tensors::{max_abs, max_abs_diff};

const COUPLINGS: usize = 20_000;

fn deep_source() -> String {
    let mut src =
        String::from("flow deep {\n    input vector(2)\n    net m = mlp(hidden = 4, layers = 1)\n");
    for i in 0..COUPLINGS {
        let parity = if i % 2 == 0 { "even" } else { "odd" };
        src.push_str(&format!(
            "    coupling affine(mask = alternate({parity}), net = m)\n"
        ));
    }
    src.push_str("}\n");
    src
}

#[test]
fn a_deep_flow_compiles_runs_both_ways_and_trains() {
    let src = deep_source();
    let t = Instant::now();
    let plan = flowc::compile(&src).expect("compiles");
    eprintln!("compile: {:?}", t.elapsed());
    assert_eq!(plan.forward.len(), COUPLINGS);
    // Every coupling: fc0 weight and bias, out weight and bias, scale.
    assert_eq!(plan.params.len(), 5 * COUPLINGS);
    with_stack_for(&plan, || {
        let vm = VarMap::new();
        let dev = Device::Cpu;
        let flow = Flow::new(&plan, VarBuilder::from_varmap(&vm, DType::F32, &dev), &dev).unwrap();
        numeric::randomize(&vm, numeric::noise_std(&plan)).unwrap();
        let x = Tensor::randn(0f32, 1., (16, 2), &dev).unwrap();
        let t = Instant::now();
        let (z, logdet) = flow.forward(&x, false).unwrap();
        let back = flow.inverse(&z).unwrap();
        eprintln!("forward + inverse: {:?}", t.elapsed());
        let moved = max_abs_diff(&z[0], &x);
        let error = max_abs_diff(&back, &x);
        assert!(moved > 1e-2, "random parameters move x: {moved}");
        assert!(max_abs(&logdet).is_finite());
        assert!(error < 1e-4, "round trip {error}");

        let t = Instant::now();
        let loss = flow
            .log_prob(&x, true)
            .unwrap()
            .mean_all()
            .unwrap()
            .neg()
            .unwrap();
        let grads = loss.backward().unwrap();
        eprintln!("log_prob + backward: {:?}", t.elapsed());
        let vars = vm.all_vars();
        let mut largest = 0f32;
        for var in &vars {
            let g = grads.get(var).expect("every parameter has a gradient");
            let m = max_abs(g);
            assert!(m.is_finite(), "gradient {m}");
            largest = largest.max(m);
        }
        assert!(largest > 0.0);
        assert_eq!(vars.len(), 5 * COUPLINGS);
    });
}

#[test]
fn a_deep_flow_passes_the_numeric_check() {
    let src = deep_source();
    let input = flowc::check(&src).verified.expect("verifies").input;
    let t = Instant::now();
    let plan = flowc::downsize::numeric_plan(&src, input).unwrap();
    let report = numeric::measure(&plan).unwrap();
    eprintln!("numeric check: {:?}, {report:?}", t.elapsed());
    assert!(report.within_bounds(), "{report:?}");
    assert!(report.roundtrip_max_abs.is_finite() && report.logdet_max_rel.is_finite());
}
