//! The spanned syntax tree of a `.flow` file, as written: names unresolved,
//! blocks and `repeat` not expanded, arguments not yet checked.

use crate::span::Span;

/// A name as written, with where it was written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ident {
    pub name: String,
    pub span: Span,
}

/// A number literal as written; the resolver decides whether it fits.
#[derive(Clone, Debug, PartialEq)]
pub struct Number {
    pub text: String,
    pub span: Span,
}

impl Number {
    /// The value when the literal is a non-negative integer that fits a u64.
    pub fn as_u64(&self) -> Option<u64> {
        self.text.parse().ok()
    }
    /// Whether the literal is written as an integer (digits, maybe a sign).
    pub fn is_integer_literal(&self) -> bool {
        let t = self.text.strip_prefix('-').unwrap_or(&self.text);
        !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit())
    }
    pub fn as_f64(&self) -> Option<f64> {
        self.text.parse::<f64>().ok().filter(|v| v.is_finite())
    }
}

/// The value of a `key = value` argument.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Number(Number),
    Name(Ident),
    /// `name(word, ...)`, the form of masks.
    Call {
        name: Ident,
        args: Vec<Ident>,
        span: Span,
    },
}

impl Value {
    pub fn span(&self) -> Span {
        match self {
            Value::Number(n) => n.span,
            Value::Name(i) => i.span,
            Value::Call { span, .. } => *span,
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Arg {
    pub key: Ident,
    pub value: Value,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub enum ShapeDecl {
    Image { c: Number, h: Number, w: Number },
    Vector { d: Number },
}

#[derive(Clone, Debug, PartialEq)]
pub struct NetDecl {
    pub name: Ident,
    pub kind: Ident,
    pub args: Vec<Arg>,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub struct BlockDecl {
    pub name: Ident,
    pub params: Vec<Ident>,
    pub body: Vec<Layer>,
    pub span: Span,
}

/// One layer as written.
#[derive(Clone, Debug, PartialEq)]
pub struct Layer {
    pub kind: LayerKind,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub enum LayerKind {
    /// `coupling KIND(args)`.
    Coupling {
        kind: Ident,
        args: Vec<Arg>,
    },
    Squeeze,
    /// `factor_out`, `factor_out()` or `factor_out(net = N)`.
    FactorOut {
        args: Vec<Arg>,
    },
    /// `logit(args)`; the argument list may be missing (then `alpha` is reported missing).
    Logit {
        args: Vec<Arg>,
    },
    BatchNorm,
    ActNorm,
    InvConv,
    Reverse,
    Repeat {
        count: Number,
        body: Vec<Layer>,
    },
    /// `NAME`, `NAME()` or `NAME(n1, ...)`.
    BlockCall {
        name: Ident,
        args: Vec<Ident>,
    },
}

/// How a layer as written nests: what code that walks layers (the
/// editor's outline, hover, name counts) needs to tell apart, so that a new
/// layer kind is classified here once, not in every walk.
#[derive(Clone, Copy, Debug)]
pub enum Form<'a> {
    /// One layer of the flow (a coupling, `squeeze`, ...), with its
    /// arguments as written (none for a bare keyword).
    Primitive { args: &'a [Arg] },
    /// `repeat N { body }`.
    Repeat {
        count: &'a Number,
        body: &'a [Layer],
    },
    /// A block call, with the names it passes.
    Call { name: &'a Ident, args: &'a [Ident] },
}

impl LayerKind {
    pub fn form(&self) -> Form<'_> {
        match self {
            LayerKind::Repeat { count, body } => Form::Repeat { count, body },
            LayerKind::BlockCall { name, args } => Form::Call { name, args },
            LayerKind::Coupling { args, .. }
            | LayerKind::Logit { args }
            | LayerKind::FactorOut { args } => Form::Primitive { args },
            LayerKind::Squeeze
            | LayerKind::BatchNorm
            | LayerKind::ActNorm
            | LayerKind::InvConv
            | LayerKind::Reverse => Form::Primitive { args: &[] },
        }
    }
}

/// `given class(K)` after the input's shape.
#[derive(Clone, Debug, PartialEq)]
pub struct ConditionDecl {
    /// K, as written.
    pub classes: Number,
    /// The whole `given class(K)`.
    pub span: Span,
}

/// `prior NAME` or `prior NAME(word, ...)`.
#[derive(Clone, Debug, PartialEq)]
pub struct PriorDecl {
    pub dist: Ident,
    /// The argument list as written, if any: its values and the span of
    /// the parentheses.
    pub args: Option<(Vec<Value>, Span)>,
}

impl PriorDecl {
    /// From the distribution's name to the end of the arguments.
    pub fn span(&self) -> Span {
        match &self.args {
            Some((_, parens)) => Span::new(self.dist.span.start, parens.end),
            None => self.dist.span,
        }
    }
}

/// A whole program: one flow.
#[derive(Clone, Debug, PartialEq)]
pub struct Program {
    pub name: Ident,
    pub input: Option<(ShapeDecl, Span)>,
    /// `given class(K)` on the input declaration (version 2).
    pub condition: Option<ConditionDecl>,
    pub prior: Option<PriorDecl>,
    pub nets: Vec<NetDecl>,
    pub blocks: Vec<BlockDecl>,
    pub layers: Vec<Layer>,
    /// The whole `flow NAME { ... }`, for problems of the flow as a whole.
    pub span: Span,
}
