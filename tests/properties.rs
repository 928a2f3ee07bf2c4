//! Properties of the front end over generated programs:
//! (a) no input makes it panic; (b) random valid programs check clean and
//! their latents add up to the input; (c) a program printed back to text and
//! parsed again gives the same graph.

use flowc::parse::{parse, print::print};
use proptest::prelude::*;

mod common;
use common::{graph_summary, valid_program};

/// Fragments of the language, for garbage that is almost a program.
fn token_soup() -> impl Strategy<Value = String> {
    let tokens = prop::sample::select(vec![
        "flow",
        "f",
        "{",
        "}",
        "(",
        ")",
        "input",
        "image",
        "vector",
        "3",
        "0",
        "-1",
        "99999999999999999999999",
        "0.5",
        "1e-3",
        "net",
        "=",
        "resnet",
        "mlp",
        "blocks",
        "features",
        ",",
        "block",
        "repeat",
        "coupling",
        "affine",
        "additive",
        "mask",
        "checkerboard",
        "even",
        "odd",
        "squeeze",
        "factor_out",
        "logit",
        "alpha",
        "reverse",
        "invconv",
        "actnorm",
        "batchnorm",
        "prior",
        "normal",
        "logistic",
        "learned",
        "#",
        "\n",
        "b",
        "b()",
        "é",
        "\u{0}",
    ]);
    prop::collection::vec(tokens, 0..60).prop_map(|t| t.join(" "))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_text_never_panics(s in ".*") {
        let _ = flowc::check(&s);
    }

    #[test]
    fn arbitrary_bytes_never_panic(b in prop::collection::vec(any::<u8>(), 0..400)) {
        let _ = flowc::check_bytes(&b);
    }

    #[test]
    fn token_soup_never_panics(s in token_soup()) {
        let out = flowc::check(&s);
        // Whatever it says, each diagnostic points inside the text.
        for d in out.diagnostics.iter() {
            prop_assert!(d.span.end <= s.len() + 1);
        }
    }

    #[test]
    fn valid_programs_check_clean(src in valid_program()) {
        let out = flowc::check(&src);
        let errors: Vec<_> = out.diagnostics.errors().collect();
        prop_assert!(errors.is_empty(), "{src}\n{errors:?}");
        let v = out.verified.expect("verified");
        let total: u128 = v.latents.iter().map(|z| z.size()).sum();
        prop_assert_eq!(total, v.input.size());
        // The plan's table holds what the verifier counts (layers, split
        // nets, the learned prior); invconv stores full L and U matrices.
        let plan = flowc::lower::compile(&v, flowc::lower::Pass::Schedule);
        if !src.contains("invconv") {
            prop_assert_eq!(plan.parameter_count(), v.parameters, "{}", src);
        }
        prop_assert_eq!(plan.bases.len(), v.latents.len());
    }

    #[test]
    fn printing_and_reparsing_keeps_the_graph(src in valid_program()) {
        let (program, diags) = parse(&src);
        prop_assert!(!diags.has_errors());
        let printed = print(&program.unwrap());
        prop_assert_eq!(graph_summary(&src), graph_summary(&printed), "{}\n---\n{}", src, printed);
    }
}

#[test]
fn deep_nesting_is_refused_not_overflowed() {
    let n = 100_000;
    let src = format!(
        "flow f {{ input vector(2) {} reverse {} }}",
        "repeat 1 { ".repeat(n),
        "} ".repeat(n)
    );
    let out = flowc::check(&src);
    assert_eq!(out.diagnostics.0[0].code(), flowc::Code::Syntax);
    let parens = format!("flow f {{ input vector(2) {} }}", "(".repeat(n));
    assert!(flowc::check(&parens).diagnostics.has_errors());
}
