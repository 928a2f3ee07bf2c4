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

/// The one error of a program too large to run: a `bad-argument` whose
/// message says each of `says`, and that `compile` gives too (before lowering
/// anything). Returns the text it points at.
fn refused(src: &str, says: &[&str]) -> String {
    let out = flowc::check(src);
    let errors: Vec<_> = out.diagnostics.errors().collect();
    assert_eq!(errors.len(), 1, "{errors:?}");
    let d = errors[0];
    let message = d.kind.message();
    assert_eq!(d.code(), Code::BadArgument, "{message}");
    assert!(matches!(d.kind, Kind::Verify(VerifyError::TooLarge { .. })));
    for part in says {
        assert!(message.contains(part), "{message:?} should say {part:?}");
    }
    assert!(flowc::compile(src).is_err());
    src[d.span.start..d.span.end].to_string()
}

#[test]
fn an_mlp_too_large_to_run_is_refused_at_its_declaration() {
    let src = "flow m { input vector(2) net m = mlp(hidden = 2147483647, layers = 2147483647) \
               coupling affine(mask = alternate(even), net = m) \
               coupling affine(mask = alternate(odd), net = m) }";
    // (2^31 - 2) (2^31 - 1)^2 plus the first and last layers: 9.9e27.
    let limit = flowc::report::thousands(verify::limits::MAX_PARAMETERS);
    let at = refused(src, &["9.9e27 parameters (4.0e28 bytes in f32)", &limit]);
    assert_eq!(at, "net m = mlp(hidden = 2147483647, layers = 2147483647)");
}

#[test]
fn a_resnet_too_large_to_run_is_refused_at_its_declaration() {
    let src = std::fs::read_to_string("flows/realnvp_cifar10.flow").unwrap();
    assert!(flowc::check(&src).diagnostics.is_empty());
    let huge = src.replace("features = 64", "features = 2147483647");
    // 8 blocks of two 3x3 convolutions of F x F: 2 x 8 x 9 x (2^31 - 1)^2 = 6.6e20, and the rest.
    let at = refused(&huge, &["6.6e20 parameters"]);
    assert!(at.starts_with("net res64  = resnet("), "{at}");
}

#[test]
fn activations_too_large_for_one_tensor_are_refused() {
    // 32 features on 8192 x 8192 positions: 2^31 values per example in one tensor.
    let src = "flow big { input image(3, 8192, 8192) net r = resnet(blocks = 1, features = 32) \
               logit(alpha = 0.05) coupling affine(mask = checkerboard(even), net = r) }";
    let says = ["2.1e9 values per example in one tensor", "1,073,741,824"];
    assert!(refused(src, &says).starts_with("net r = resnet("));
    // The input itself: 3 x 2^40 values.
    let src = "flow big { input image(3, 1048576, 1048576) logit(alpha = 0.05) squeeze }";
    let at = refused(src, &["3.3e12 values per example"]);
    assert_eq!(at, "input image(3, 1048576, 1048576)");
}

#[test]
fn a_flow_whose_layers_add_up_past_the_limit_is_refused_where_it_crosses() {
    // Each coupling: Linear(2, 10^4), Linear(10^4, 10^4), Linear(10^4, 4), scale: 100,080,006.
    let src = "flow many { input vector(2) net m = mlp(hidden = 10000, layers = 2) \
               repeat 25 { coupling affine(mask = alternate(even), net = m) \
               coupling affine(mask = alternate(odd), net = m) } }";
    // The 40th coupling crosses 4e9: the second of the repeated pair.
    let at = refused(src, &["this flow has 5.0e9 parameters"]);
    assert_eq!(at, "coupling affine(mask = alternate(odd), net = m)");
}

#[test]
fn too_many_parameter_tensors_are_refused() {
    // Few parameters (2 a layer), but 2 x 10^8 tensors for the plan and the executor to hold.
    let src = "flow deep_net { input vector(2) net m = mlp(hidden = 1, layers = 100000000) \
               coupling additive(mask = alternate(even), net = m) \
               coupling additive(mask = alternate(odd), net = m) }";
    let at = refused(src, &["2.0e8 parameter tensors"]);
    assert!(at.starts_with("net m = mlp("), "{at}");
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
