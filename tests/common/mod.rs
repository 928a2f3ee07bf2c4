//! Shared by the test binaries: a generator of random valid `.flow` programs
//! (here), running the binary (`cli`), measuring tensors (`tensors`).
#![allow(dead_code)]

use flowc::graph::describe;
use proptest::prelude::*;

pub mod cli;
pub mod tensors;

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
    // The kind and any arguments before `mask` (a block swaps the net,
    // which must come last).
    let open = match extra % 6 {
        0 | 3 => "additive(".to_string(),
        1 => "spline(".into(),
        5 => format!(
            "spline(bins = {}, bound = {}, ",
            2 + pick % 7,
            [0.5, 2.5, 4.0][extra as usize % 3]
        ),
        _ => "affine(".into(),
    };
    Some(match (pick % 9, g.image) {
        (0, true) if g.h * g.w >= 2 => {
            format!("coupling {open}mask = checkerboard({parity}), net = {net})")
        }
        (1, true) if g.c.is_multiple_of(2) => {
            format!("coupling {open}mask = channel({parity}), net = {net})")
        }
        (0, false) if g.c >= 2 => {
            format!("coupling {open}mask = alternate({parity}), net = {net})")
        }
        (1, false) if g.c >= 2 => format!("coupling {open}mask = half({parity}), net = {net})"),
        (2, true) if g.h.is_multiple_of(2) && g.w.is_multiple_of(2) && g.c <= 64 => {
            g.c *= 4;
            g.h /= 2;
            g.w /= 2;
            "squeeze".into()
        }
        (3, _) if g.c >= 2 => {
            g.c -= g.c / 2;
            match extra % 3 {
                0 => "factor_out".into(),
                // Glow's split prior: the latent modelled given the rest.
                1 => format!("factor_out(net = {net})"),
                _ => "factor_out()".into(),
            }
        }
        (4, _) => "reverse".into(),
        (5, _) => "actnorm".into(),
        (6, _) => "batchnorm".into(),
        (7, true) => "invconv".into(),
        _ => return None,
    })
}

/// The prior declarations a program may have (`None`: the default).
const PRIORS: [Option<&str>; 4] = [
    None,
    Some("prior normal"),
    Some("prior logistic"),
    Some("prior normal(learned)"),
];

/// A random valid program: a prior, nets, an optional block, repeats, then layers.
pub fn program(
    image: bool,
    dims: (u64, u64, u64),
    prior: usize,
    picks: Vec<(u8, u8, u8)>,
) -> String {
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
            1 if block.is_empty() && l.contains("net = ") => {
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
    // A third of the programs are conditioned (version 2).
    let given = if (c + h + w) % 3 == 0 {
        format!(" given class({})", 1 + (c + w) % 4)
    } else {
        String::new()
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
    let prior = PRIORS[prior % PRIORS.len()].map_or(String::new(), |p| format!("    {p}\n"));
    format!("flow generated {{\n    input {input}{given}\n{prior}{net_decls}{block}{body}}}\n")
}

pub fn valid_program_sized(
    max_c: u64,
    max_k: u32,
    max_ab: u64,
    max_d: u64,
) -> impl Strategy<Value = String> {
    let image = (1u64..=max_c, 0u32..=max_k, 1u64..=max_ab, 1u64..=max_ab)
        .prop_map(|(c, k, a, b)| (true, (c, a << k, b << k)));
    let vector = (1u64..=max_d).prop_map(|d| (false, (d, 1, 1)));
    (
        prop_oneof![image, vector],
        0..PRIORS.len(),
        prop::collection::vec((any::<u8>(), any::<u8>(), any::<u8>()), 0..24),
    )
        .prop_map(|((image, dims), prior, picks)| program(image, dims, prior, picks))
}

/// Random valid programs at the sizes the front-end properties use.
pub fn valid_program() -> impl Strategy<Value = String> {
    valid_program_sized(4, 3, 3, 12)
}

/// The graph as comparable data: each layer in words with its shapes, and the latents.
pub fn graph_summary(source: &str) -> Vec<String> {
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
    rows.push(format!("{:?}", g.resolved.condition));
    rows.push(format!("prior {:?}", g.resolved.prior));
    rows
}
