//! The compiler's output for every flow in `flows/`: the plan after each
//! pass as insta snapshots (the documentation of what each pass does), and
//! the plan's parameter table against the verifier's counts and against what
//! the executor really creates.

use candle_core::{DType, Device};
use candle_nn::{VarBuilder, VarMap};
use flowc::lower::{compile, Pass};

#[test]
fn plans_after_each_pass() {
    insta::glob!("../flows", "*.flow", |path| {
        let source = std::fs::read_to_string(path).unwrap();
        let v = flowc::check(&source).verified.expect("flows/ verify");
        for (name, pass) in [
            ("lower", Pass::Lower),
            ("normalize", Pass::Normalize),
            ("fuse", Pass::Fuse),
            ("schedule", Pass::Schedule),
        ] {
            let plan = compile(&v, pass);
            assert_eq!(plan.forward.len(), plan.inverse.len());
            insta::assert_snapshot!(name, plan.to_string());
        }
    });
}

#[test]
fn normalize_folds_permutations() {
    let src = "flow f { input vector(6) net m = mlp(hidden = 4, layers = 1) reverse reverse \
               coupling affine(mask = half(even), net = m) reverse batchnorm reverse reverse reverse \
               coupling affine(mask = half(odd), net = m) }";
    let v = flowc::check(src).verified.unwrap();
    let lowered = compile(&v, Pass::Lower);
    let normalized = compile(&v, Pass::Normalize);
    assert_eq!(lowered.forward.len(), 9);
    // Two reverses vanish; of three, two cancel and one stays.
    let ops: Vec<String> = normalized
        .forward
        .iter()
        .map(|s| s.op.to_string())
        .collect();
    assert_eq!(ops.len(), 5, "{ops:?}");
    assert!(
        ops[0].starts_with("coupling") && ops[1] == "permute reverse(6)",
        "{ops:?}"
    );
    assert_eq!(ops[3], "permute reverse(6)");
    assert_eq!(normalized.inverse.len(), 5);
}

#[test]
fn parameter_table_matches_verifier_and_executor() {
    insta::glob!("../flows", "*.flow", |path| {
        let source = std::fs::read_to_string(path).unwrap();
        let v = flowc::check(&source).verified.unwrap();
        let plan = compile(&v, Pass::Schedule);
        // invconv stores full L and U matrices of which only the strict
        // triangles are parameters (Glow's LU form), so its table is larger.
        if !source.contains("invconv") {
            assert_eq!(plan.parameter_count(), v.parameters, "{}", path.display());
        }
        let tensors: u128 = v
            .layers
            .iter()
            .map(flowc::verify::limits::param_tensors)
            .sum::<u128>()
            + v.prior_tensors();
        assert_eq!(tensors, plan.params.len() as u128, "{}", path.display());
        let vm = VarMap::new();
        flowc::exec::Flow::new(
            &plan,
            VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu),
            &Device::Cpu,
        )
        .unwrap();
        let data = vm.data().lock().unwrap();
        assert_eq!(data.len(), plan.params.len(), "{}", path.display());
        for p in &plan.params {
            let var = data
                .get(&p.name)
                .unwrap_or_else(|| panic!("{} not created", p.name));
            let dims: Vec<u64> = var.dims().iter().map(|&d| d as u64).collect();
            assert_eq!(dims, p.shape, "{}", p.name);
        }
    });
}
