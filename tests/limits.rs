//! What no input may do: panic the report on very long names, or pass the
//! check with a flow too large to run (LANGUAGE.md: `bad-argument` for "any
//! number too large to represent"; the limits are in ARCHITECTURE.md).

use flowc::diag::{render, Kind};
use flowc::report::check_table;
use flowc::verify::{self, VerifyError};
use flowc::Code;

#[test]
fn a_very_long_net_name_fits_the_check_table() {
    let name = "n".repeat(65_530);
    let src = format!(
        "flow f {{ input vector(2) net {name} = mlp(hidden = 2, layers = 1) \
         coupling affine(mask = alternate(even), net = {name}) \
         coupling affine(mask = alternate(odd), net = {name}) }}"
    );
    let out = flowc::check(&src);
    let table = check_table(out.verified.as_ref().expect("verifies"));
    let row = table.lines().find(|l| l.starts_with("0 ")).unwrap();
    assert!(
        row.contains(&format!("alternate(even) {name} ")),
        "{row:.80}"
    );
    // The rows line up: the header's `in` column starts where row 0's input does.
    let header = table.lines().find(|l| l.starts_with("# ")).unwrap();
    assert_eq!(
        header.find("  in").map(|i| i + 2),
        row.find("  2  ").map(|i| i + 2)
    );
    // A diagnostic that far along a line renders too, without the line.
    let bad = src.replace("alternate(odd)", "alternate(oddd)");
    let out = flowc::check(&bad);
    let text = render(&out.diagnostics, "f.flow", &bad, false);
    let column = bad.find("alternate(oddd)").unwrap() + 1;
    assert!(
        text.starts_with(&format!("error[bad-argument]: f.flow:1:{column}\n")),
        "{text:.200}"
    );
    assert!(
        text.contains("found `oddd`") && text.len() < 1000,
        "{text:.200}"
    );
}

/// The errors of a program, all `bad-argument`: the text each points at, its message.
fn size_errors(src: &str) -> Vec<(String, String)> {
    let out = flowc::check(src);
    assert!(!out.ok(), "a flow too large to run must not check clean");
    out.diagnostics
        .errors()
        .map(|d| {
            assert_eq!(d.code(), Code::BadArgument, "{}", d.kind.message());
            assert!(matches!(d.kind, Kind::Verify(VerifyError::TooLarge { .. })));
            (src[d.span.start..d.span.end].to_string(), d.kind.message())
        })
        .collect()
}

#[test]
fn an_mlp_too_large_to_run_is_refused_at_its_declaration() {
    let src = "flow m { input vector(2) net m = mlp(hidden = 2147483647, layers = 2147483647) \
               coupling affine(mask = alternate(even), net = m) \
               coupling affine(mask = alternate(odd), net = m) }";
    let errors = size_errors(src);
    assert_eq!(errors.len(), 1, "{errors:?}");
    let (at, message) = &errors[0];
    assert_eq!(at, "net m = mlp(hidden = 2147483647, layers = 2147483647)");
    // (2^31 - 2) (2^31 - 1)^2 plus the first and last layers: 9.9e27.
    assert!(
        message.contains("9.9e27 parameters (4.0e28 bytes in f32)")
            && message.contains(&thousands(verify::limits::MAX_PARAMETERS)),
        "{message}"
    );
    assert!(
        flowc::compile(src).is_err(),
        "compile refuses it before lowering"
    );
}

#[test]
fn a_resnet_too_large_to_run_is_refused_at_its_declaration() {
    let src = std::fs::read_to_string("flows/realnvp_cifar10.flow").unwrap();
    assert!(flowc::check(&src).diagnostics.is_empty());
    let huge = src.replace("features = 64", "features = 2147483647");
    let errors = size_errors(&huge);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0].0.starts_with("net res64  = resnet("),
        "{errors:?}"
    );
    // 8 blocks of two 3x3 convolutions of F x F: 2 x 8 x 9 x (2^31 - 1)^2 = 6.6e20, and the rest.
    assert!(errors[0].1.contains("6.6e20 parameters"), "{}", errors[0].1);
    assert!(flowc::compile(&huge).is_err());
}

#[test]
fn activations_too_large_for_one_tensor_are_refused() {
    // 32 features on 8192 x 8192 positions: 2^31 values per example in one tensor.
    let src = "flow big { input image(3, 8192, 8192) net r = resnet(blocks = 1, features = 32) \
               logit(alpha = 0.05) coupling affine(mask = checkerboard(even), net = r) }";
    let errors = size_errors(src);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].0.starts_with("net r = resnet("));
    assert!(
        errors[0]
            .1
            .contains("2.1e9 values per example in one tensor")
            && errors[0].1.contains("1,073,741,824"),
        "{}",
        errors[0].1
    );
    // The input itself: 3 x 2^40 values.
    let src = "flow big { input image(3, 1048576, 1048576) logit(alpha = 0.05) squeeze }";
    let errors = size_errors(src);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0].0, "input image(3, 1048576, 1048576)");
    assert!(
        errors[0].1.contains("3.3e12 values per example"),
        "{}",
        errors[0].1
    );
}

#[test]
fn a_flow_whose_layers_add_up_past_the_limit_is_refused_where_it_crosses() {
    // Each coupling: Linear(2, 10^4), Linear(10^4, 10^4), Linear(10^4, 4), scale: 100,080,006.
    let src = "flow many { input vector(2) net m = mlp(hidden = 10000, layers = 2) \
               repeat 25 { coupling affine(mask = alternate(even), net = m) \
               coupling affine(mask = alternate(odd), net = m) } }";
    let errors = size_errors(src);
    assert_eq!(errors.len(), 1, "{errors:?}");
    // The 40th coupling crosses 4e9: the second of the repeated pair.
    assert_eq!(
        errors[0].0,
        "coupling affine(mask = alternate(odd), net = m)"
    );
    assert!(
        errors[0].1.contains("this flow has 5.0e9 parameters"),
        "{}",
        errors[0].1
    );
}

#[test]
fn too_many_parameter_tensors_are_refused() {
    // Few parameters (2 a layer), but 2 x 10^8 tensors for the plan and the executor to hold.
    let src = "flow deep_net { input vector(2) net m = mlp(hidden = 1, layers = 100000000) \
               coupling additive(mask = alternate(even), net = m) }";
    let errors = size_errors(src);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].0.starts_with("net m = mlp("));
    assert!(
        errors[0].1.contains("2.0e8 parameter tensors"),
        "{}",
        errors[0].1
    );
    assert!(flowc::compile(src).is_err());
}

#[test]
fn lowering_a_wide_vector_allocates_nothing_per_feature() {
    // Two reverses cancel: composing them must not build index vectors of 10^9 entries.
    let src = "flow wide { input vector(1000000000) reverse reverse }";
    let t = std::time::Instant::now();
    let plan = flowc::compile(src).expect("compiles");
    assert!(t.elapsed().as_secs_f64() < 1.0, "{:?}", t.elapsed());
    assert!(plan.forward.is_empty(), "the reverses cancel");
}

fn thousands(n: u128) -> String {
    flowc::report::thousands(n)
}
