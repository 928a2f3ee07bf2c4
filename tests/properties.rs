//! Properties of the front end over generated programs:
//! (a) no input makes it panic; (b) random valid programs check clean and
//! their latents add up to the input; (c) a program printed back to text and
//! parsed again gives the same graph.

use flowc::graph::describe;
use flowc::parse::{parse, print::print};
use proptest::prelude::*;

/// Layers valid for the shape they see, built alongside that shape.
#[derive(Clone, Debug)]
struct Gen {
    image: bool,
    c: u64,
    h: u64,
    w: u64,
    nets: Vec<String>,
}

/// Appends one valid layer for the current shape (chosen by `pick`), updating the shape.
fn layer(g: &mut Gen, pick: u8, extra: u8) -> Option<String> {
    let net = g.nets[extra as usize % g.nets.len()].clone();
    let parity = if extra.is_multiple_of(2) {
        "even"
    } else {
        "odd"
    };
    let kind = if extra.is_multiple_of(3) {
        "additive"
    } else {
        "affine"
    };
    Some(match (pick % 9, g.image) {
        (0, true) if g.h * g.w >= 2 => {
            format!("coupling {kind}(mask = checkerboard({parity}), net = {net})")
        }
        (1, true) if g.c.is_multiple_of(2) => {
            format!("coupling {kind}(mask = channel({parity}), net = {net})")
        }
        (0, false) if g.c >= 2 => {
            format!("coupling {kind}(mask = alternate({parity}), net = {net})")
        }
        (1, false) if g.c >= 2 => format!("coupling {kind}(mask = half({parity}), net = {net})"),
        (2, true) if g.h.is_multiple_of(2) && g.w.is_multiple_of(2) && g.c <= 64 => {
            g.c *= 4;
            g.h /= 2;
            g.w /= 2;
            "squeeze".into()
        }
        (3, _) if g.c >= 2 => {
            g.c -= g.c / 2;
            "factor_out".into()
        }
        (4, _) => "reverse".into(),
        (5, _) => "actnorm".into(),
        (6, _) => "batchnorm".into(),
        (7, true) => "invconv".into(),
        _ => return None,
    })
}

/// A random valid program: nets, an optional block, repeats, then layers.
fn program(image: bool, dims: (u64, u64, u64), picks: Vec<(u8, u8, u8)>) -> String {
    let (c, h, w) = dims;
    let nets: Vec<String> = vec!["n0".into(), "n1".into()];
    let mut g = Gen {
        image,
        c,
        h,
        w,
        nets: nets.clone(),
    };
    let mut body = String::new();
    let mut block = String::new();
    if image {
        body.push_str("    logit(alpha = 0.05)\n");
    }
    for (i, (pick, extra, wrap)) in picks.into_iter().enumerate() {
        let before = g.clone();
        let Some(l) = layer(&mut g, pick, extra) else {
            continue;
        };
        let shape_kept = before.c == g.c && before.h == g.h;
        match wrap % 4 {
            // A shape-preserving layer repeated.
            0 if shape_kept => body.push_str(&format!("    repeat {} {{ {l} }}\n", 1 + extra % 3)),
            // Through a block with a net parameter (the first block only).
            1 if block.is_empty() && l.starts_with("coupling") => {
                let net = l
                    .split("net = ")
                    .nth(1)
                    .unwrap()
                    .trim_end_matches(')')
                    .to_string();
                let generic = l.replace(&format!("net = {net})"), "net = p)");
                block = format!("    block b{i}(p) {{\n        {generic}\n    }}\n");
                body.push_str(&format!("    b{i}({net})\n"));
            }
            _ => body.push_str(&format!("    {l}\n")),
        }
    }
    let input = if image {
        format!("image({c}, {h}, {w})")
    } else {
        format!("vector({c})")
    };
    let net_decls: String = nets
        .iter()
        .map(|n| {
            if image {
                format!("    net {n} = resnet(blocks = 1, features = 4)\n")
            } else {
                format!("    net {n} = mlp(hidden = 4, layers = 2)\n")
            }
        })
        .collect();
    format!("flow generated {{\n    input {input}\n{net_decls}{block}{body}}}\n")
}

fn valid_program() -> impl Strategy<Value = String> {
    let image = (1u64..=4, 0u32..=3, 1u64..=3, 1u64..=3)
        .prop_map(|(c, k, a, b)| (true, (c, a << k, b << k)));
    let vector = (1u64..=12).prop_map(|d| (false, (d, 1, 1)));
    (
        prop_oneof![image, vector],
        prop::collection::vec((any::<u8>(), any::<u8>(), any::<u8>()), 0..24),
    )
        .prop_map(|((image, dims), picks)| program(image, dims, picks))
}

/// The graph as comparable data: each layer in words with its shapes, and the latents.
fn graph_summary(source: &str) -> Vec<String> {
    let out = flowc::check(source);
    let g = out.graph.expect("graph");
    let mut rows: Vec<String> = (0..g.resolved.layers.len())
        .map(|i| {
            format!(
                "{} {:?} {:?}",
                describe(&g.resolved, i),
                g.input_shape(i),
                g.output_shape(i)
            )
        })
        .collect();
    rows.push(format!("{:?}", g.latent_shapes()));
    rows
}

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
