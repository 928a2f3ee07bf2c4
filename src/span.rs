//! The leaf under the stages' diagnostics: source spans, the codes of
//! LANGUAGE.md, severities, and [`Located`], a stage's typed error at its
//! place. Each stage reports `Found<ItsError>`; [`crate::diag`] gathers them
//! into one `Diagnostics` where the stages meet (`crate::check`), so the
//! stages import this module and never `diag`.

use std::fmt;

use serde::Serialize;

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

/// One problem at one place, typed by the stage that found it (`E`).
#[derive(Clone, Debug, PartialEq)]
pub struct Located<E> {
    pub kind: E,
    pub severity: Severity,
    /// The layer or argument at fault.
    pub span: Span,
    /// Where the faulty layer was expanded from (block calls, outermost first).
    pub expanded_from: Vec<Span>,
    pub help: Option<String>,
}

impl<E> Located<E> {
    pub fn error(kind: E, span: Span) -> Located<E> {
        Located {
            kind,
            severity: Severity::Error,
            span,
            expanded_from: vec![],
            help: None,
        }
    }
    pub fn warning(kind: E, span: Span) -> Located<E> {
        Located {
            severity: Severity::Warning,
            ..Located::error(kind, span)
        }
    }
    pub fn with_help(mut self, help: impl Into<String>) -> Located<E> {
        self.help = Some(help.into());
        self
    }
    pub fn expanded_from(mut self, sites: &[Span]) -> Located<E> {
        self.expanded_from = sites.to_vec();
        self
    }
    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
    /// The same problem with its kind wrapped (a stage's error into `diag::Kind`).
    pub fn map<F>(self, f: impl FnOnce(E) -> F) -> Located<F> {
        Located {
            kind: f(self.kind),
            severity: self.severity,
            span: self.span,
            expanded_from: self.expanded_from,
            help: self.help,
        }
    }
}

/// What a stage's error says of its LANGUAGE.md code.
pub trait Coded {
    fn code(&self) -> Code;
}

impl<E: Coded> Located<E> {
    pub fn code(&self) -> Code {
        self.kind.code()
    }
}

/// One stage's problems, in the order it found them (or, once gathered,
/// all of a run's: `diag::Diagnostics`).
#[derive(Clone, Debug, PartialEq)]
pub struct Found<E>(pub Vec<Located<E>>);

impl<E> Default for Found<E> {
    fn default() -> Found<E> {
        Found(vec![])
    }
}

impl<E> Found<E> {
    pub fn push(&mut self, d: Located<E>) {
        self.0.push(d);
    }
    pub fn has_errors(&self) -> bool {
        self.0.iter().any(Located::is_error)
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    pub fn iter(&self) -> impl Iterator<Item = &Located<E>> {
        self.0.iter()
    }
    pub fn extend(&mut self, other: Found<E>) {
        self.0.extend(other.0);
    }
    pub fn errors(&self) -> impl Iterator<Item = &Located<E>> {
        self.0.iter().filter(|d| d.is_error())
    }
    pub fn len(&self) -> usize {
        self.0.len()
    }
}

impl<E: Coded> Found<E> {
    /// Source order; the same problem found twice at one place (a layer inside a
    /// `repeat`, say) is reported once.
    pub fn sort_and_dedup(&mut self) {
        self.0.sort_by_key(|a| (a.span.start, a.span.end));
        let mut seen = std::collections::HashSet::new();
        self.0
            .retain(|d| seen.insert((d.span, d.code(), d.expanded_from.clone())));
    }
}
