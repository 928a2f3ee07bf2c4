//! `flowc check`'s diagnostics in the protocol's terms: the same codes,
//! messages and help, the span at fault as the range, and the block calls a
//! layer was expanded through (or a name's first definition) as related spans.

use lsp_types::{
    Diagnostic, DiagnosticRelatedInformation, DiagnosticSeverity, Location, NumberOrString, Url,
};

use crate::diag::{self, Kind};
use crate::resolve::ResolveError;
use crate::span::Severity;

use super::analysis::Analysis;

pub fn diagnostics(a: &Analysis, uri: &Url) -> Vec<Diagnostic> {
    a.check.diagnostics.iter().map(|d| one(a, uri, d)).collect()
}

fn one(a: &Analysis, uri: &Url, d: &diag::Diagnostic) -> Diagnostic {
    let mut message = d.kind.message();
    if let Some(help) = &d.help {
        message.push_str("\nhelp: ");
        message.push_str(help);
    }
    let at = |span| Location::new(uri.clone(), a.lines.range(&a.text, span));
    let mut related: Vec<DiagnosticRelatedInformation> = d
        .expanded_from
        .iter()
        .map(|&span| DiagnosticRelatedInformation {
            location: at(span),
            message: "expanded from this block call".into(),
        })
        .collect();
    if let Kind::Resolve(ResolveError::Duplicate { first, what, .. }) = &d.kind {
        related.push(DiagnosticRelatedInformation {
            location: at(*first),
            message: format!("the {what} is first defined here"),
        });
    }
    Diagnostic {
        range: a.lines.range(&a.text, d.span),
        severity: Some(match d.severity {
            Severity::Error => DiagnosticSeverity::ERROR,
            Severity::Warning => DiagnosticSeverity::WARNING,
        }),
        code: Some(NumberOrString::String(d.code().to_string())),
        source: Some("flowc".into()),
        message,
        related_information: (!related.is_empty()).then_some(related),
        ..Diagnostic::default()
    }
}
