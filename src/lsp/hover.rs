//! Hover: over a layer, its input and output shapes and parameter count
//! (each expansion of it, where a block or `repeat` makes several); over a
//! net or block name, its definition and how often it is expanded.

use std::fmt::Write as _;

use crate::fmt::{block_head, layer_text, net_text};
use crate::parse::ast::{Layer, LayerKind, Program};
use crate::shape::Shape;
use crate::span::Span;
use crate::verify::layer_parameters;

use super::analysis::Analysis;
use super::names::{expansions, Target};

/// At most this many expansions of one layer are listed.
const MAX_LISTED: usize = 8;

/// The hover's markdown and the span it is about.
pub fn hover(a: &Analysis, offset: usize) -> Option<(String, Span)> {
    let program = a.program()?;
    if let Some(o) = a.names.at(offset) {
        let mut text = name(a, program, &o.target);
        // At a call, also what the call does to the shapes.
        let call = a.layer_at(offset).filter(
            |l| matches!(&l.kind, LayerKind::BlockCall { name, .. } if name.span == o.span),
        );
        if let Some(call) = call {
            text.push_str("\n\nthis call: ");
            text.push_str(&expansions_text(a, call));
        }
        return Some((text, o.span));
    }
    if program.name.span.start <= offset && offset <= program.name.span.end {
        return Some((flow(a, program), program.name.span));
    }
    let layer = a.layer_at(offset)?;
    Some((layer_hover(a, layer), layer.span))
}

fn name(a: &Analysis, program: &Program, target: &Target) -> String {
    match target {
        Target::Net(n) => net(a, program, n),
        Target::Block(b) => block(program, b),
        Target::Param { block, name } => {
            let owner = program
                .blocks
                .get(*block)
                .map_or("?", |b| b.name.name.as_str());
            format!(
                "net parameter `{name}` of block `{owner}`: each call names the net it stands for"
            )
        }
    }
}

/// A net's declaration and how many couplings use it.
fn net(a: &Analysis, program: &Program, name: &str) -> String {
    let Some(decl) = program.nets.iter().find(|d| d.name.name == name) else {
        return format!("net `{name}` is not defined");
    };
    let mut text = code(&net_text(decl));
    if let Some(uses) = net_uses(a, name) {
        let shown: Vec<String> = uses
            .iter()
            .filter(|(keyword, k)| *k > 0 || *keyword == "coupling")
            .map(|(keyword, k)| format!("{k} {keyword}{}", plural(*k)))
            .collect();
        let each = match uses[1].1 {
            0 => "each coupling gets its own weights",
            _ => "each layer gets its own weights",
        };
        let _ = write!(text, "\n\nused by {} ({each})", shown.join(" and "));
    }
    text
}

/// A block's definition (a `repeat` in it shown by its head) and how often
/// the flow expands it.
fn block(program: &Program, name: &str) -> String {
    let Some(decl) = program.blocks.iter().find(|d| d.name.name == name) else {
        return format!("block `{name}` is not defined");
    };
    let mut body = vec![format!("{} {{", block_head(decl))];
    for l in &decl.body {
        let repeat = matches!(l.kind, LayerKind::Repeat { .. });
        let more = if repeat { " { ... }" } else { "" };
        body.push(format!("    {}{more}", layer_text(&l.kind)));
    }
    body.push("}".into());
    let times = match expansions(program).get(name).copied().flatten() {
        Some(n) => format!("expanded {n} time{}", plural(n)),
        None => "expansion count unknown: the block is recursive or nested too deep".into(),
    };
    format!("{}\n\n{times}", code(&body.join("\n")))
}

/// Layers of the expanded flow that use net `name`: couplings, then
/// `factor_out`s (split priors).
fn net_uses(a: &Analysis, name: &str) -> Option<[(&'static str, u128); 2]> {
    let g = a.graph()?;
    let id = g.resolved.nets.iter().position(|n| n.name == name)?;
    let mut uses = [("coupling", 0), ("factor_out", 0)];
    for l in &g.resolved.layers {
        if l.op.def().net() == Some(id) {
            let keyword = l.op.keyword();
            if let Some(u) = uses.iter_mut().find(|(k, _)| *k == keyword) {
                u.1 += 1;
            }
        }
    }
    Some(uses)
}

fn flow(a: &Analysis, program: &Program) -> String {
    let mut text = format!("flow `{}`", program.name.name);
    match &a.check.verified {
        Some(v) => {
            let latents: Vec<String> = v.latents.iter().map(|s| shape(*s)).collect();
            let _ = write!(
                text,
                "\n\ninput {} · {} layers · latents {} · {} parameters",
                shape(v.input),
                v.layers.len(),
                latents.join(", "),
                v.parameters
            );
        }
        None => text.push_str("\n\nthe flow has errors; see the diagnostics"),
    }
    text
}

fn layer_hover(a: &Analysis, layer: &Layer) -> String {
    format!(
        "{}\n\n{}",
        code(&layer_text(&layer.kind)),
        expansions_text(a, layer)
    )
}

/// Each expansion of a written layer: its shapes and parameters.
fn expansions_text(a: &Analysis, layer: &Layer) -> String {
    let mut text = String::new();
    let runs = a.expansions_of(layer);
    let Some(g) = a.graph() else {
        return "not checked: the text does not parse".into();
    };
    let rows: Vec<String> = runs
        .iter()
        .map(|run| {
            let (first, last) = (run[0], run[run.len() - 1]);
            let io = |s: Option<Shape>| s.map_or("?".into(), shape);
            let params = run
                .iter()
                .map(|&i| {
                    g.input_shape(i)
                        .and_then(|s| layer_parameters(&g.resolved, i, s))
                })
                .try_fold(0u128, |t, p| p.map(|p| t.saturating_add(p)));
            let params = params.map_or("? parameters".into(), |p| {
                format!("{p} parameter{}", plural(p))
            });
            let layers = match run.len() {
                1 => String::new(),
                n => format!("{n} layers, "),
            };
            format!(
                "{} → {} ({layers}{params})",
                io(g.input_shape(first)),
                io(g.output_shape(last))
            )
        })
        .collect();
    match rows.len() {
        0 => text
            .push_str("not part of the flow: its block is never expanded, or an error stopped it"),
        1 => {
            text.push_str(&rows[0]);
        }
        n => {
            let _ = write!(text, "{n} expansions:");
            for (k, row) in rows.iter().take(MAX_LISTED).enumerate() {
                let _ = write!(text, "\n{}. {row}", k + 1);
            }
            if n > MAX_LISTED {
                let _ = write!(text, "\n… and {} more", n - MAX_LISTED);
            }
        }
    }
    text
}

/// A shape as the hover shows it: `3x32x32` for images, `vector(6)` for vectors.
pub fn shape(s: Shape) -> String {
    match s {
        Shape::Image { .. } => s.to_string(),
        Shape::Vector { d } => format!("vector({d})"),
    }
}

fn code(text: &str) -> String {
    format!("```flow\n{text}\n```")
}

fn plural(n: u128) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}
