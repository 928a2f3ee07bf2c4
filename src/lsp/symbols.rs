//! Document symbols: the flow, its input, nets and blocks, and the layers
//! (blocks and `repeat`s holding theirs), as an outline.

use lsp_types::{DocumentSymbol, SymbolKind};

use crate::fmt::{block_head, layer_text, net_text, shape_text};
use crate::parse::ast::{Form, Layer};
use crate::span::Span;

use super::analysis::Analysis;

pub fn symbols(a: &Analysis) -> Vec<DocumentSymbol> {
    let Some(p) = a.program() else {
        return vec![];
    };
    let sym =
        |name: String, detail: Option<String>, kind, span: Span, selection: Span, children| {
            #[allow(deprecated)] // `deprecated` is a required field of the type
            DocumentSymbol {
                name,
                detail,
                kind,
                tags: None,
                deprecated: None,
                range: a.lines.range(&a.text, span),
                selection_range: a.lines.range(&a.text, selection),
                children,
            }
        };
    let mut children = vec![];
    if let Some((shape, span)) = &p.input {
        children.push(sym(
            "input".into(),
            Some(shape_text(shape)),
            SymbolKind::FIELD,
            *span,
            *span,
            None,
        ));
    }
    for net in &p.nets {
        let detail = Some(net_text(net));
        children.push(sym(
            net.name.name.clone(),
            detail,
            SymbolKind::VARIABLE,
            net.span,
            net.name.span,
            None,
        ));
    }
    for b in &p.blocks {
        let body = layers(&b.body, &sym);
        children.push(sym(
            b.name.name.clone(),
            Some(block_head(b)),
            SymbolKind::FUNCTION,
            b.span,
            b.name.span,
            Some(body),
        ));
    }
    children.extend(layers(&p.layers, &sym));
    vec![sym(
        p.name.name.clone(),
        Some("flow".into()),
        SymbolKind::MODULE,
        p.span,
        p.name.span,
        Some(children),
    )]
}

type Sym<'s> = dyn Fn(
        String,
        Option<String>,
        SymbolKind,
        Span,
        Span,
        Option<Vec<DocumentSymbol>>,
    ) -> DocumentSymbol
    + 's;

fn layers(ls: &[Layer], sym: &Sym) -> Vec<DocumentSymbol> {
    ls.iter()
        .map(|l| {
            let name = layer_text(&l.kind);
            match l.kind.form() {
                Form::Repeat { body, .. } => {
                    let children = Some(layers(body, sym));
                    sym(name, None, SymbolKind::ARRAY, l.span, l.span, children)
                }
                Form::Call { .. } => sym(name, None, SymbolKind::EVENT, l.span, l.span, None),
                Form::Primitive { .. } => {
                    sym(name, None, SymbolKind::OPERATOR, l.span, l.span, None)
                }
            }
        })
        .collect()
}
