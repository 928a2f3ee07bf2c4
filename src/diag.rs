//! Diagnostics: every problem flowc finds in a program, from any stage, in one
//! type, rendered in one place.
//!
//! Each stage has its own typed error enum (`ParseError`, `ResolveError`,
//! `VerifyError`); a [`Diagnostic`] wraps one of them with its severity and
//! source span. Tests match on the kind; users see [`render`]'s output.

use std::fmt;

use miette::{GraphicalReportHandler, GraphicalTheme, LabeledSpan, NamedSource};
use serde::Serialize;

use crate::parse::ParseError;
use crate::resolve::ResolveError;
use crate::verify::VerifyError;

/// A byte range in the source text.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize)]
pub struct Span {
    pub start: usize,
    pub end: usize,
}

impl Span {
    pub fn new(start: usize, end: usize) -> Span {
        Span { start, end }
    }
    pub fn len(&self) -> usize {
        self.end - self.start
    }
    pub fn is_empty(&self) -> bool {
        self.end == self.start
    }
}

impl From<pest::Span<'_>> for Span {
    fn from(s: pest::Span<'_>) -> Span {
        Span::new(s.start(), s.end())
    }
}

/// The codes of LANGUAGE.md, errors and warnings alike.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Code {
    Syntax,
    UnknownName,
    DuplicateName,
    BadArgument,
    RecursiveBlock,
    Shape,
    Mask,
    FactorOut,
    Domain,
    Untransformed,
    Unbounded,
}

impl Code {
    pub fn as_str(self) -> &'static str {
        match self {
            Code::Syntax => "syntax",
            Code::UnknownName => "unknown-name",
            Code::DuplicateName => "duplicate-name",
            Code::BadArgument => "bad-argument",
            Code::RecursiveBlock => "recursive-block",
            Code::Shape => "shape",
            Code::Mask => "mask",
            Code::FactorOut => "factor-out",
            Code::Domain => "domain",
            Code::Untransformed => "untransformed",
            Code::Unbounded => "unbounded",
        }
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    Warning,
}

/// What went wrong, typed by the stage that found it.
#[derive(Clone, Debug, PartialEq)]
pub enum Kind {
    Parse(ParseError),
    Resolve(ResolveError),
    Verify(VerifyError),
}

impl Kind {
    pub fn code(&self) -> Code {
        match self {
            Kind::Parse(_) => Code::Syntax,
            Kind::Resolve(e) => e.code(),
            Kind::Verify(e) => e.code(),
        }
    }
    pub fn message(&self) -> String {
        match self {
            Kind::Parse(e) => e.to_string(),
            Kind::Resolve(e) => e.to_string(),
            Kind::Verify(e) => e.to_string(),
        }
    }
}

/// One problem at one place.
#[derive(Clone, Debug, PartialEq)]
pub struct Diagnostic {
    pub kind: Kind,
    pub severity: Severity,
    /// The layer or argument at fault.
    pub span: Span,
    /// Where the faulty layer was expanded from (block calls, outermost first).
    pub expanded_from: Vec<Span>,
    pub help: Option<String>,
}

impl Diagnostic {
    pub fn error(kind: Kind, span: Span) -> Diagnostic {
        Diagnostic {
            kind,
            severity: Severity::Error,
            span,
            expanded_from: vec![],
            help: None,
        }
    }
    pub fn warning(kind: Kind, span: Span) -> Diagnostic {
        Diagnostic {
            kind,
            severity: Severity::Warning,
            span,
            expanded_from: vec![],
            help: None,
        }
    }
    pub fn with_help(mut self, help: impl Into<String>) -> Diagnostic {
        self.help = Some(help.into());
        self
    }
    pub fn expanded_from(mut self, sites: &[Span]) -> Diagnostic {
        self.expanded_from = sites.to_vec();
        self
    }
    pub fn code(&self) -> Code {
        self.kind.code()
    }
    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

/// All diagnostics of one run, in source order.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Diagnostics(pub Vec<Diagnostic>);

impl Diagnostics {
    pub fn push(&mut self, d: Diagnostic) {
        self.0.push(d);
    }
    pub fn extend(&mut self, other: Diagnostics) {
        self.0.extend(other.0);
    }
    pub fn has_errors(&self) -> bool {
        self.0.iter().any(Diagnostic::is_error)
    }
    pub fn errors(&self) -> impl Iterator<Item = &Diagnostic> {
        self.0.iter().filter(|d| d.is_error())
    }
    pub fn iter(&self) -> impl Iterator<Item = &Diagnostic> {
        self.0.iter()
    }
    pub fn len(&self) -> usize {
        self.0.len()
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    /// Source order; the same problem found twice at one place (a layer inside a
    /// `repeat`, say) is reported once.
    pub fn sort_and_dedup(&mut self) {
        self.0.sort_by_key(|a| (a.span.start, a.span.end));
        let mut seen = std::collections::HashSet::new();
        self.0
            .retain(|d| seen.insert((d.span, d.code(), d.expanded_from.clone())));
    }
}

/// 1-based line and column (in characters) of a byte offset.
pub fn line_col(source: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(source.len());
    let before = &source[..floor_char_boundary(source, offset)];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

fn floor_char_boundary(s: &str, mut i: usize) -> usize {
    while i > 0 && !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// Columns past which a diagnostic is rendered without its source lines:
/// miette pads up to a label with a format width, which panics past 65,535
/// (a net name may be longer). The header still gives file:line:column.
const MAX_QUOTED_COLUMN: usize = 10_000;

/// The miette view of one diagnostic: the only place diagnostics become text.
struct Report<'a> {
    diagnostic: &'a Diagnostic,
    source: NamedSource<String>,
    message: String,
    /// Whether to show the source lines with the labels under them.
    quote: bool,
}

impl fmt::Debug for Report<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}
impl fmt::Display for Report<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}
impl std::error::Error for Report<'_> {}

impl miette::Diagnostic for Report<'_> {
    fn severity(&self) -> Option<miette::Severity> {
        Some(match self.diagnostic.severity {
            Severity::Error => miette::Severity::Error,
            Severity::Warning => miette::Severity::Warning,
        })
    }
    fn help<'b>(&'b self) -> Option<Box<dyn fmt::Display + 'b>> {
        self.diagnostic
            .help
            .as_ref()
            .map(|h| Box::new(h) as Box<dyn fmt::Display>)
    }
    fn source_code(&self) -> Option<&dyn miette::SourceCode> {
        self.quote
            .then_some(&self.source as &dyn miette::SourceCode)
    }
    fn labels(&self) -> Option<Box<dyn Iterator<Item = LabeledSpan> + '_>> {
        if !self.quote {
            return None;
        }
        let d = self.diagnostic;
        let mut labels = vec![LabeledSpan::new_primary_with_span(
            Some("here".into()),
            (d.span.start, d.span.len()),
        )];
        for site in &d.expanded_from {
            labels.push(LabeledSpan::new_with_span(
                Some("expanded from this block call".into()),
                (site.start, site.len()),
            ));
        }
        Some(Box::new(labels.into_iter()))
    }
}

/// Renders diagnostics for a person: file, line and column, the source line
/// with a caret under the text at fault, the code, the message and any help.
/// `color` is for terminals; tests and pipes get plain text.
pub fn render(diagnostics: &Diagnostics, file_name: &str, source: &str, color: bool) -> String {
    let theme = if color {
        GraphicalTheme::unicode()
    } else {
        GraphicalTheme::unicode_nocolor()
    };
    let handler = GraphicalReportHandler::new_themed(theme)
        .with_width(100)
        .with_links(false);
    let shown = printable(source);
    let mut out = String::new();
    for d in diagnostics.iter() {
        let (line, column) = line_col(source, d.span.start);
        let quote = std::iter::once(&d.span).chain(&d.expanded_from).all(|s| {
            [s.start, s.end]
                .iter()
                .all(|&o| line_col(source, o).1 <= MAX_QUOTED_COLUMN)
        });
        let report = Report {
            diagnostic: d,
            source: NamedSource::new(file_name, shown.clone()),
            message: d.kind.message(),
            quote,
        };
        let severity = match d.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        out.push_str(&format!(
            "{severity}[{}]: {file_name}:{line}:{column}\n",
            d.code()
        ));
        let _ = handler.render_report(&mut out, &report);
        out.push('\n');
    }
    out
}

/// The source with control characters (binary garbage, stray carriage returns)
/// blanked byte for byte, so spans still line up and terminals stay sane.
fn printable(source: &str) -> String {
    let bytes = source.as_bytes();
    source
        .char_indices()
        .map(|(i, c)| match c {
            '\n' | '\t' => c,
            '\r' if bytes.get(i + 1) == Some(&b'\n') => c,
            c if c.is_control() => ' ',
            c => c,
        })
        .collect()
}
