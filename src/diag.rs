//! Diagnostics: every problem flowc finds in a program, from any stage, in one
//! type, rendered in one place.
//!
//! Each stage has its own typed error enum (`ParseError`, `ResolveError`,
//! `VerifyError`); a [`Diagnostic`] wraps one of them with its severity and
//! source span. Tests match on the kind; users see [`render`]'s output.

use std::fmt;

use miette::{GraphicalReportHandler, GraphicalTheme, LabeledSpan, NamedSource};

use crate::parse::ParseError;
use crate::resolve::ResolveError;
pub use crate::span::{Code, Found, Located, Severity, Span};
use crate::verify::VerifyError;

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

/// One problem at one place, of any stage.
pub type Diagnostic = Located<Kind>;

/// All diagnostics of one run, in source order.
pub type Diagnostics = Found<Kind>;

impl Diagnostics {
    /// A stage's problems, each kind wrapped as `wrap` says (`Kind::Resolve`, ...).
    pub fn from_stage<E>(found: Found<E>, wrap: fn(E) -> Kind) -> Diagnostics {
        Found(found.0.into_iter().map(|d| d.map(wrap)).collect())
    }
}

impl crate::span::Coded for Kind {
    fn code(&self) -> Code {
        Kind::code(self)
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
