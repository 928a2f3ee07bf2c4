//! Inlay hints: after each written layer, the shape it passes on (every
//! distinct one, where a block is expanded at several shapes). Clients turn
//! them off with the setting `flowc.inlayHints = false`.

use lsp_types::{InlayHint, InlayHintKind, InlayHintLabel};

use crate::parse::ast::{Layer, LayerKind};

use super::analysis::Analysis;
use super::hover::shape;

/// At most this many distinct shapes in one hint.
const MAX_SHAPES: usize = 3;

/// Hints for the layers that end inside `[from, to]` (byte offsets).
pub fn hints(a: &Analysis, from: usize, to: usize) -> Vec<InlayHint> {
    let Some(p) = a.program() else {
        return vec![];
    };
    let mut out = vec![];
    for b in &p.blocks {
        walk(a, &b.body, from, to, &mut out);
    }
    walk(a, &p.layers, from, to, &mut out);
    out.sort_by_key(|h| (h.position.line, h.position.character));
    out
}

fn walk(a: &Analysis, layers: &[Layer], from: usize, to: usize, out: &mut Vec<InlayHint>) {
    for l in layers {
        if let LayerKind::Repeat { body, .. } = &l.kind {
            walk(a, body, from, to, out);
        }
        if l.span.end < from || l.span.end > to {
            continue;
        }
        if let Some(label) = label(a, l) {
            out.push(InlayHint {
                position: a.lines.position(&a.text, l.span.end),
                label: InlayHintLabel::String(label),
                kind: Some(InlayHintKind::TYPE),
                text_edits: None,
                tooltip: None,
                padding_left: Some(true),
                padding_right: None,
                data: None,
            });
        }
    }
}

/// `→ 12x16x16`, or `→ 12x16x16 | 48x8x8` for a layer of a block expanded at two shapes.
fn label(a: &Analysis, l: &Layer) -> Option<String> {
    let g = a.graph()?;
    let mut shapes: Vec<String> = vec![];
    for run in a.expansions_of(l) {
        let s = g.output_shape(*run.last()?).map_or("?".into(), shape);
        if !shapes.contains(&s) {
            shapes.push(s);
        }
    }
    if shapes.is_empty() {
        return None;
    }
    let more = shapes.len() > MAX_SHAPES;
    shapes.truncate(MAX_SHAPES);
    let tail = if more { " | …" } else { "" };
    Some(format!("→ {}{tail}", shapes.join(" | ")))
}
