//! Errors matched by kind, not by text: the typed enums are the API that
//! tools build on, and the wording may improve without breaking these.

use flowc::diag::Kind;
use flowc::graph::ShapeError;
use flowc::ir::{Mask, Parity};
use flowc::parse::ParseError;
use flowc::resolve::ResolveError;
use flowc::verify::VerifyError;
use flowc::{check, Shape};

fn kinds(source: &str) -> Vec<Kind> {
    check(source)
        .diagnostics
        .iter()
        .map(|d| d.kind.clone())
        .collect()
}

#[test]
fn squeeze_on_odd_image_is_a_shape_error_with_its_input() {
    let k = kinds("flow f { input image(3, 15, 15) logit(alpha = 0.05) squeeze }");
    assert_eq!(
        k,
        vec![Kind::Verify(VerifyError::Shape(ShapeError::SqueezeOdd {
            input: Shape::Image { c: 3, h: 15, w: 15 }
        }))]
    );
}

#[test]
fn unknown_net_lists_known_names() {
    let k = kinds(
        "flow f { input vector(4) net m = mlp(hidden = 4, layers = 1) coupling affine(mask = half(even), net = n) }",
    );
    assert!(
        matches!(&k[..], [Kind::Resolve(ResolveError::UnknownNet { name, known })] if name == "n" && known == &["m"])
    );
}

#[test]
fn channel_mask_needs_even_channels() {
    let k = kinds(
        "flow f { input image(3, 4, 4) net r = resnet(blocks = 1, features = 4) logit(alpha = 0.1) \
         coupling affine(mask = channel(odd), net = r) }",
    );
    assert!(matches!(
        &k[..],
        [Kind::Verify(VerifyError::OddChannels {
            mask: Mask::Channel(Parity::Odd),
            ..
        })]
    ));
}

#[test]
fn all_errors_are_reported_in_one_run() {
    let k = kinds(
        "flow f { input vector(3) net m = mlp(hidden = 0, layers = 1) net m = mlp(hidden = 2, layers = 1) \
         logit(alpha = 0.1) squeeze }",
    );
    assert_eq!(k.len(), 4, "{k:?}");
    assert!(matches!(
        k[0],
        Kind::Resolve(ResolveError::OutOfRange { .. })
    ));
    assert!(matches!(
        k[1],
        Kind::Resolve(ResolveError::Duplicate { what: "net", .. })
    ));
    assert!(matches!(k[2], Kind::Verify(VerifyError::LogitOnVector)));
    assert!(matches!(
        k[3],
        Kind::Verify(VerifyError::Shape(ShapeError::SqueezeVector { .. }))
    ));
}

#[test]
fn recursion_names_the_cycle() {
    let k = kinds("flow f { input vector(2) block a { b } block b { a } a }");
    assert!(
        matches!(&k[..], [Kind::Resolve(ResolveError::RecursiveBlock { chain, .. })] if chain == "a -> b -> a")
    );
}

#[test]
fn layer_limit_is_blamed_on_the_inner_repeat() {
    let src = "flow f { input vector(2) repeat 2 { repeat 99999999999 { reverse } } }";
    let out = check(src);
    let d: Vec<_> = out.diagnostics.iter().collect();
    assert!(matches!(
        d[0].kind,
        Kind::Resolve(ResolveError::TooManyLayers { .. })
    ));
    assert_eq!(&src[d[0].span.start..d[0].span.end], "repeat 99999999999");
}

#[test]
fn error_inside_a_block_points_at_the_layer_and_the_call() {
    let src = "flow f { input image(1, 3, 3) block b { squeeze } logit(alpha = 0.1) b }";
    let out = check(src);
    let d = &out.diagnostics.0[0];
    assert_eq!(&src[d.span.start..d.span.end], "squeeze");
    assert_eq!(d.expanded_from.len(), 1);
    assert_eq!(&src[d.expanded_from[0].start..d.expanded_from[0].end], "b");
}

#[test]
fn declaration_after_layer_and_reserved_words_are_syntax_errors() {
    let k = kinds("flow f { input vector(2) reverse net repeat = mlp(hidden = 2, layers = 1) }");
    assert!(k.contains(&Kind::Parse(ParseError::DeclarationAfterLayer {
        keyword: "net"
    })));
    assert!(k.iter().any(
        |k| matches!(k, Kind::Parse(ParseError::ReservedName { name, .. }) if name == "repeat")
    ));
}

#[test]
fn untransformed_counts_dimensions() {
    let out = check("flow f { input vector(5) net m = mlp(hidden = 2, layers = 1) coupling additive(mask = alternate(even), net = m) }");
    let k: Vec<_> = out.diagnostics.iter().map(|d| d.kind.clone()).collect();
    // alternate(even) keeps indices 0, 2, 4: three of five stay untransformed.
    assert_eq!(
        k,
        vec![Kind::Verify(VerifyError::Untransformed {
            count: 3,
            total: 5
        })]
    );
    assert!(out.ok(), "warnings do not fail a check");
}

/// 2,000 checkerboard couplings on `input`, then a squeeze and a factor-out.
fn couplings_on(input: &str) -> String {
    format!(
        "flow f {{ input {input} net r = resnet(blocks = 1, features = 4) logit(alpha = 0.1) \
         repeat 1000 {{ coupling affine(mask = checkerboard(even), net = r) \
         coupling affine(mask = checkerboard(odd), net = r) }} squeeze factor_out }}"
    )
}

#[test]
fn large_valid_shapes_check_quickly() {
    // The largest tensors here (the nets' outputs) are 2 x 3 x 8192^2 values, under
    // the limit on one tensor (ARCHITECTURE.md); the flags analysis has its own
    // tests at 2^20 x 2^20.
    let out = check(&couplings_on("image(3, 8192, 8192)"));
    assert!(out.ok(), "{:?}", out.diagnostics);
    let half = Shape::Image {
        c: 6,
        h: 4096,
        w: 4096,
    };
    assert_eq!(out.verified.unwrap().latents, vec![half, half]);
}

#[test]
fn an_input_too_large_for_one_tensor_is_one_error_at_the_input() {
    let k = kinds(&couplings_on("image(3, 1048576, 1048576)"));
    assert!(
        matches!(&k[..], [Kind::Verify(VerifyError::TooLarge { found, .. })] if *found == 3 << 40),
        "{k:?}"
    );
}

#[test]
fn not_utf8_is_a_syntax_error_at_the_bad_byte() {
    let out = flowc::check_bytes(b"flow f { input vector(2) \xff }");
    let d = &out.diagnostics.0[0];
    assert_eq!(d.kind, Kind::Parse(ParseError::InvalidUtf8 { byte: 0xff }));
    assert_eq!(d.span.start, 25);
}

#[test]
fn a_character_outside_names_is_reported_where_it_stands() {
    // pest blames the `flow` rule at its start; the character at fault is `é`.
    let src = "flow café {\n    input vector(2)\n}\n";
    let out = check(src);
    let d = &out.diagnostics.0[0];
    assert_eq!(out.diagnostics.len(), 1);
    assert_eq!(d.code(), flowc::Code::Syntax);
    assert_eq!(&src[d.span.start..d.span.end], "é");
    assert_eq!(flowc::diag::line_col(src, d.span.start), (1, 9));
    let json = flowc::report::check_json(&out, src);
    assert_eq!(
        (json.diagnostics[0].line, json.diagnostics[0].column),
        (1, 9)
    );
    assert_eq!(
        d.kind,
        Kind::Parse(ParseError::Unexpected {
            expected: "`{`".into(),
            found: "`é`".into()
        })
    );
    // Further in, on a later line, after a multi-byte character on the same line.
    let src = "flow f {\n    input vector(2)\n    net ñ = mlp(hidden = 2, layers = 1)\n}\n";
    let d = &check(src).diagnostics.0[0];
    assert_eq!(&src[d.span.start..d.span.end], "ñ");
    assert_eq!(flowc::diag::line_col(src, d.span.start), (3, 9));
}

/// `block b0 { coupling ... }`, then `block bK { b(K-1) ... }` calling the one before `calls` times.
fn block_chain(depth: usize, calls: usize) -> String {
    let mut src = String::from(
        "flow chain { input vector(2) net m = mlp(hidden = 2, layers = 1)\n\
         block b0 { coupling affine(mask = alternate(even), net = m) coupling affine(mask = alternate(odd), net = m) }\n",
    );
    for k in 1..depth {
        let body = vec![format!("b{}", k - 1); calls].join(" ");
        src.push_str(&format!("block b{k} {{ {body} }}\n"));
    }
    src.push_str(&format!("b{} }}\n", depth - 1));
    src
}

#[test]
fn block_calls_nested_past_the_limit_are_one_error_not_a_stack_overflow() {
    // Runs on the test thread's 2 MiB stack: the resolver must not recurse per block.
    let src = block_chain(100_000, 1);
    let out = check(&src);
    let errors: Vec<_> = out.diagnostics.errors().collect();
    assert_eq!(errors.len(), 1, "{:?}", out.diagnostics.0.first());
    assert!(matches!(
        errors[0].kind,
        Kind::Resolve(ResolveError::NestingTooDeep { limit: 64 })
    ));
    assert_eq!(errors[0].expanded_from.len(), 64);
    // 64 nested calls are fine, 65 are not.
    assert!(check(&block_chain(64, 1)).ok());
    assert!(!check(&block_chain(65, 1)).ok());
    // Repeats count too: 40 calls deep, 30 repeats in each block, is refused
    // (and this would need far more than the 2 MiB stack otherwise).
    let repeats = |body: &str| format!("{}{body}{}", "repeat 1 { ".repeat(30), " }".repeat(30));
    let mut src = block_chain(1, 1).replace("b0 }\n", "");
    for k in 1..40 {
        src.push_str(&format!(
            "block b{k} {{ {} }}\n",
            repeats(&format!("b{}", k - 1))
        ));
    }
    src.push_str("b39 }\n");
    let k = kinds(&src);
    assert!(
        matches!(&k[..], [Kind::Resolve(ResolveError::NestingTooDeep { .. })]),
        "{k:?}"
    );
}

#[test]
fn a_repeat_of_nothing_is_quick() {
    let out = check("flow f { input vector(2) repeat 1000000000000 { } reverse }");
    assert_eq!(out.verified.unwrap().layers.len(), 1);
    let k = kinds("flow f { input vector(2) repeat 1000000000000 { b } }");
    assert!(
        matches!(&k[..], [Kind::Resolve(ResolveError::UnknownBlock { .. })]),
        "{k:?}"
    );
}

#[test]
fn block_calls_that_fan_out_count_their_layers_once_per_block() {
    // b39 would expand to 2^40 layers: counted per block, not per call, so this is quick.
    let t = std::time::Instant::now();
    let k = kinds(&block_chain(40, 2));
    assert!(
        matches!(&k[..], [Kind::Resolve(ResolveError::TooManyLayers { .. })]),
        "{k:?}"
    );
    assert!(t.elapsed().as_secs_f64() < 1.0, "{:?}", t.elapsed());
    // 2^16 layers: expanded in full.
    let out = check(&block_chain(16, 2));
    assert_eq!(out.verified.unwrap().layers.len(), 1 << 16);
}

/// `given` and `class` are not reserved: a version 1 program that names a
/// block `given` (and calls it first) keeps its meaning, and a bad `K` is
/// an out-of-range argument at K.
#[test]
fn given_names_a_block_unless_class_k_follows() {
    let v1 = "flow f { input vector(2) net m = mlp(hidden = 4, layers = 1) \
              block given { coupling affine(mask = alternate(even), net = m) \
              coupling affine(mask = alternate(odd), net = m) } given }";
    let out = check(v1);
    assert!(out.diagnostics.is_empty());
    let v = out.verified.expect("verified");
    assert_eq!((v.layers.len(), v.graph.resolved.condition), (2, None));
    assert_eq!(v.parameters, 2 * ((2 + 1) * 4 + (4 + 1) * 4 + 2));
    let v2 = v1.replace("vector(2) net", "vector(2) given class(3) net");
    let v = check(&v2).verified.expect("verified");
    let condition = v.graph.resolved.condition.expect("a condition");
    assert_eq!(condition.classes, 3);
    // Each net's first layer takes 2 + 3 inputs; the output layer and the
    // scale are as before.
    assert_eq!(v.parameters, 2 * ((5 + 1) * 4 + (4 + 1) * 4 + 2));
    for bad in ["class(0)", "class(2.5)", "class(70000)"] {
        let src = v1.replace("vector(2) net", &format!("vector(2) given {bad} net"));
        let k = kinds(&src);
        assert!(
            matches!(&k[..], [Kind::Resolve(ResolveError::OutOfRange { what, .. })] if what == "classes"),
            "{bad}: {k:?}"
        );
    }
}

const COUPLINGS: &str = "net m = mlp(hidden = 4, layers = 1) \
    coupling affine(mask = half(even), net = m) coupling affine(mask = half(odd), net = m)";

#[test]
fn a_prior_takes_learned_on_normal_only() {
    let prior = |p: &str| {
        kinds(&format!(
            "flow f {{ input vector(4) prior {p} {COUPLINGS} }}"
        ))
    };
    assert_eq!(prior("normal"), vec![]);
    assert_eq!(prior("normal(learned)"), vec![]);
    assert_eq!(prior("logistic"), vec![]);
    for (p, found) in [
        ("normal()", "no argument"),
        ("normal(fixed)", "the name `fixed`"),
        ("normal(0.5)", "the number 0.5"),
        ("normal(learned, learned)", "2 arguments"),
    ] {
        assert!(
            matches!(&prior(p)[..], [Kind::Resolve(ResolveError::PriorArguments { dist, found: f })]
                if dist == "normal" && f == found),
            "{p}: {:?}",
            prior(p)
        );
    }
    assert!(matches!(
        &prior("logistic(learned)")[..],
        [Kind::Resolve(ResolveError::NotLearnable { name })] if name == "logistic"
    ));
    assert!(matches!(
        &prior("cauchy(learned)")[..],
        [Kind::Resolve(ResolveError::UnknownPrior { name })] if name == "cauchy"
    ));
    // `prior normal(learned)` counts 2 x C per latent the prior models.
    let v = check(&format!(
        "flow f {{ input vector(4) prior normal(learned) {COUPLINGS} }}"
    ))
    .verified
    .unwrap();
    let fixed = check(&format!("flow f {{ input vector(4) {COUPLINGS} }}"))
        .verified
        .unwrap();
    assert_eq!(v.parameters, fixed.parameters + 8);
}

#[test]
fn factor_out_takes_a_net_of_the_flow_s_kind() {
    let split = |args: &str| {
        kinds(&format!(
            "flow f {{ input vector(4) net r = resnet(blocks = 1, features = 4) {COUPLINGS} \
             factor_out{args} coupling affine(mask = half(even), net = m) }}"
        ))
    };
    let mismatch = Kind::Resolve(ResolveError::NetKindMismatch {
        name: "r".into(),
        kind: "resnet",
        fits: "image",
        input: "a vector".into(),
    });
    assert_eq!(split(""), vec![mismatch.clone()]);
    assert_eq!(split("()"), vec![mismatch.clone()]);
    assert_eq!(split("(net = m)"), vec![mismatch.clone()]);
    // The mismatched net is reported once, at its declaration.
    assert_eq!(split("(net = r)"), vec![mismatch.clone()]);
    assert!(matches!(
        &split("(net = q)")[1..],
        [Kind::Resolve(ResolveError::UnknownNet { name, .. })] if name == "q"
    ));
    assert!(matches!(
        &split("(width = 2)")[1..],
        [Kind::Resolve(ResolveError::UnknownArgument { arg, .. })] if arg == "width"
    ));
    assert!(matches!(
        &split("(net = m, net = m)")[1..],
        [Kind::Resolve(ResolveError::DuplicateArgument { arg })] if arg == "net"
    ));
    assert!(matches!(
        &split("(net = 3)")[1..],
        [Kind::Resolve(ResolveError::WrongKind { arg, .. })] if arg == "net"
    ));
}

#[test]
fn factor_out_with_a_net_counts_it_and_warns_like_a_learned_layer() {
    // N maps the C - floor(C/2) = 4 that stay to 2 floor(C/2) = 6: Linear(4 -> 4), Linear(4 -> 6).
    let v = check(&format!(
        "flow f {{ input vector(7) prior normal(learned) net p = mlp(hidden = 4, layers = 1) \
         {COUPLINGS} factor_out(net = p) }}"
    ))
    .verified
    .unwrap();
    let split = &v.layers[2];
    assert_eq!(split.parameters, (4 * 4 + 4) + (4 * 6 + 6));
    // The learned prior models only the last latent: 2 x 4.
    assert_eq!(v.prior_parameters(0), 0);
    assert_eq!(v.prior_parameters(1), 8);
    // `unbounded` at the first learned layer; a logit may follow (a rearrangement).
    let k = kinds(
        "flow f { input image(4, 4, 4) net r = resnet(blocks = 1, features = 4) \
         factor_out(net = r) logit(alpha = 0.1) coupling affine(mask = checkerboard(even), net = r) \
         coupling affine(mask = checkerboard(odd), net = r) }",
    );
    assert!(
        matches!(
            &k[..],
            [
                Kind::Verify(VerifyError::Untransformed { .. }),
                Kind::Verify(VerifyError::Unbounded {
                    layer: "factor_out"
                })
            ]
        ),
        "{k:?}"
    );
}

/// A spline coupling over `vector(4)` with the given extra arguments.
fn spline(args: &str) -> String {
    format!(
        "flow f {{ input vector(4) net m = mlp(hidden = 4, layers = 1) \
         coupling spline(mask = half(even), net = m{args}) }}"
    )
}

#[test]
fn spline_arguments_resolve_to_the_spline_kind_with_defaults() {
    use flowc::ir::CouplingKind;
    use flowc::layers::Op;
    let kind = |args: &str| {
        let out = check(&spline(args));
        assert!(out.ok(), "{args}: {:?}", out.diagnostics);
        match &out.graph.unwrap().resolved.layers[0].op {
            Op::Coupling(c) => c.kind,
            other => panic!("{other:?}"),
        }
    };
    let spline_kind = |bins, bound| CouplingKind::Spline { bins, bound };
    assert_eq!(kind(""), spline_kind(8, 3.0));
    assert_eq!(kind(", bins = 2"), spline_kind(2, 3.0));
    assert_eq!(kind(", bins = 999, bound = 0.25"), spline_kind(999, 0.25));
    assert_eq!(kind(", bound = 5e-1"), spline_kind(8, 0.5));
}

#[test]
fn spline_arguments_out_of_range_are_bad_arguments_at_the_value() {
    for (args, what, found) in [
        (", bins = 1", "`bins`", "1"),
        (", bins = 1000", "`bins`", "1000"),
        (", bins = 2.0", "`bins`", "`2.0`, not an integer"),
        (", bins = 8e0", "`bins`", "`8e0`, not an integer"),
        (", bound = 0", "`bound`", "0"),
        (", bound = -1", "`bound`", "-1"),
        (", bound = 1e31", "`bound`", "1e31"),
    ] {
        let source = spline(args);
        let out = check(&source);
        let d: Vec<_> = out.diagnostics.iter().collect();
        assert_eq!(d.len(), 1, "{args}");
        assert_eq!(d[0].code(), flowc::Code::BadArgument);
        let value = args.rsplit("= ").next().unwrap();
        assert_eq!(&source[d[0].span.start..d[0].span.end], value, "{args}");
        assert!(
            matches!(&d[0].kind, Kind::Resolve(ResolveError::OutOfRange { what: w, found: f, .. })
                if w == what && f == found),
            "{args}: {:?}",
            d[0].kind
        );
    }
}

#[test]
fn spline_arguments_of_the_wrong_kind_or_name() {
    let k = kinds(&spline(", bins = m, bound = half(even)"));
    assert!(
        matches!(&k[..], [
            Kind::Resolve(ResolveError::WrongKind { arg: a, .. }),
            Kind::Resolve(ResolveError::WrongKind { arg: b, .. }),
        ] if a == "bins" && b == "bound"),
        "{k:?}"
    );
    let k = kinds(&spline(", knots = 4"));
    assert!(
        matches!(&k[..], [Kind::Resolve(ResolveError::UnknownArgument { arg, .. })] if arg == "knots"),
        "{k:?}"
    );
    let k = kinds(
        "flow f { input vector(4) net m = mlp(hidden = 4, layers = 1) \
         coupling affine(mask = half(even), net = m, bins = 8) }",
    );
    assert!(
        matches!(&k[..], [Kind::Resolve(ResolveError::UnknownArgument { arg, .. })] if arg == "bins"),
        "{k:?}"
    );
    let k = kinds(
        "flow f { input vector(4) net m = mlp(hidden = 4, layers = 1) \
         coupling cubic(mask = half(even), net = m) }",
    );
    assert!(
        matches!(&k[..], [Kind::Resolve(ResolveError::UnknownCoupling { name })] if name == "cubic"),
        "{k:?}"
    );
}
