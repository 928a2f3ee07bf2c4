//! Stage 1, parse: source text to a spanned [`ast::Program`].
//!
//! pest does the tokenizing and the grammar (`grammar/flow.pest`); this module
//! turns its pairs into the AST and its errors into [`ParseError`]s that name
//! what was expected and what was found. Rules the grammar keeps loose on
//! purpose (declaration order, reserved words, one flow per file) are checked
//! here, so that every syntax problem in a file is reported, not only the first.

pub mod ast;
pub mod print;

use pest::iterators::Pair;
use pest::Parser as _;
use thiserror::Error;

use crate::span::{Found, Located, Span};

use ast::*;

/// This stage's problems at their places (gathered by `crate::diag`).
type Diagnostic = Located<ParseError>;
type Diagnostics = Found<ParseError>;

#[derive(pest_derive::Parser)]
#[grammar = "../grammar/flow.pest"]
struct FlowParser;

/// Nesting deeper than this (braces or parentheses) is refused before pest
/// runs, so that no input can exhaust the stack.
pub const MAX_NESTING: usize = 64;

/// Words that no net or block may take as its name.
pub const RESERVED: &[&str] = &[
    "flow",
    "input",
    "prior",
    "net",
    "block",
    "repeat",
    "coupling",
    "squeeze",
    "factor_out",
    "logit",
    "batchnorm",
    "actnorm",
    "invconv",
    "reverse",
];

/// Syntax problems (code `syntax`).
#[derive(Clone, Debug, Error, PartialEq)]
pub enum ParseError {
    #[error("the file is not valid UTF-8 text (invalid byte 0x{byte:02x})")]
    InvalidUtf8 { byte: u8 },
    #[error("expected {expected}, found {found}")]
    Unexpected { expected: String, found: String },
    #[error("nesting deeper than {limit} levels of braces or parentheses")]
    TooDeep { limit: usize },
    #[error("`{name}` is a reserved word and cannot name a {what}")]
    ReservedName { name: String, what: &'static str },
    #[error("`{keyword}` declaration after the first layer; declarations (`input`, `prior`, `net`, `block`) come before the layers")]
    DeclarationAfterLayer { keyword: &'static str },
    #[error("a second `{keyword}` declaration; a flow has one")]
    SecondDeclaration { keyword: &'static str },
    #[error("a second `flow` in the file; a file holds exactly one flow")]
    SecondFlow,
    #[error("flow `{name}` has no `input` declaration; expected `input image(C, H, W)` or `input vector(D)`")]
    MissingInput { name: String },
    #[error("`{keyword}` cannot appear inside a {context}; expected a layer")]
    MisplacedDeclaration {
        keyword: String,
        context: &'static str,
    },
    #[error("malformed `{keyword}`; expected `{usage}`")]
    Malformed {
        keyword: String,
        usage: &'static str,
    },
}

/// Parses one `.flow` file. The program comes back whenever the text has the
/// shape of a flow, even with errors, so later stages can report more.
pub fn parse(source: &str) -> (Option<Program>, Diagnostics) {
    let mut diags = Diagnostics::default();
    if let Some(span) = too_deep(source) {
        diags.push(Diagnostic::error(
            ParseError::TooDeep { limit: MAX_NESTING },
            span,
        ));
        return (None, diags);
    }
    pest::set_error_detail(true);
    let file = match FlowParser::parse(Rule::file, source) {
        Ok(mut pairs) => pairs.next().expect("file rule always yields one pair"),
        Err(e) => {
            diags.push(pest_error(source, &e));
            return (None, diags);
        }
    };
    let mut builder = Builder { diags };
    let mut program = None;
    for pair in file.into_inner().filter(not_keyword) {
        match pair.as_rule() {
            Rule::flow if program.is_none() => program = Some(builder.flow(pair)),
            Rule::flow => builder.error(ParseError::SecondFlow, head_span(&pair, 4)),
            _ => {} // EOI
        }
    }
    (program, builder.diags)
}

/// The comments of a text, each from its `#` to the end of its line (without
/// the newline), in order. The grammar skips them; the formatter keeps them.
/// No token of the language can hold a `#`, so every `#` starts a comment.
pub fn comments(source: &str) -> Vec<Span> {
    let mut found = vec![];
    let mut rest = 0;
    while let Some(at) = source[rest..].find('#') {
        let start = rest + at;
        let end = source[start..]
            .find('\n')
            .map_or(source.len(), |n| start + n);
        found.push(Span::new(start, end));
        rest = end;
    }
    found
}

/// Parses bytes from a file: not-UTF-8 text is a `syntax` error at the first bad byte.
pub fn parse_bytes(bytes: &[u8]) -> (Option<Program>, Diagnostics) {
    match std::str::from_utf8(bytes) {
        Ok(text) => parse(text),
        Err(e) => {
            let at = e.valid_up_to();
            let mut diags = Diagnostics::default();
            let span = Span::new(at, at + 1);
            diags.push(Diagnostic::error(
                ParseError::InvalidUtf8 { byte: bytes[at] },
                span,
            ));
            (None, diags)
        }
    }
}

/// The first place where braces or parentheses nest deeper than [`MAX_NESTING`].
fn too_deep(source: &str) -> Option<Span> {
    let mut depth = 0usize;
    let mut in_comment = false;
    for (i, b) in source.bytes().enumerate() {
        match b {
            b'\n' => in_comment = false,
            _ if in_comment => {}
            b'#' => in_comment = true,
            b'{' | b'(' => {
                depth += 1;
                if depth > MAX_NESTING {
                    return Some(Span::new(i, i + 1));
                }
            }
            b'}' | b')' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    None
}

fn pest_error(source: &str, e: &pest::error::Error<Rule>) -> Diagnostic {
    let rule_pos = match e.location {
        pest::error::InputLocation::Pos(p) => p,
        pest::error::InputLocation::Span((s, _)) => s,
    };
    // pest places the error at the start of the last rule that failed (`flow`
    // in `flow café {`), while a literal token may have failed further on (the
    // `{` before `é`): the text at fault is where parsing got furthest, and
    // there the rules attempted earlier say nothing.
    let attempts = e.parse_attempts();
    let furthest = attempts.as_ref().map_or(rule_pos, |a| a.max_position);
    let (pos, rules_apply) = if furthest > rule_pos {
        (furthest, false)
    } else {
        (rule_pos, true)
    };
    // Rules say what kind of thing was expected ("a layer"); of the literal
    // tokens only punctuation adds to that (keywords are layers or declarations).
    let mut expected: Vec<String> = Vec::new();
    if let pest::error::ErrorVariant::ParsingError { positives, .. } = &e.variant {
        for rule in positives.iter().filter(|_| rules_apply) {
            let d = describe_rule(*rule).to_string();
            if !expected.contains(&d) {
                expected.push(d);
            }
        }
    }
    if expected.iter().any(|e| e == "a layer") {
        expected.retain(|e| e != "a name"); // a block call is a layer
    }
    let no_rules = expected.is_empty();
    if let Some(attempts) = attempts {
        for token in attempts.expected_tokens() {
            let text = token.to_string();
            let punctuation = matches!(text.as_str(), "{" | "}" | "(" | ")" | "," | "=");
            let quoted = format!("`{text}`");
            // Whitespace, a comment's `#` and a name's next character could
            // come almost anywhere: they say nothing.
            if (punctuation || no_rules)
                && !expected.contains(&quoted)
                && !text.chars().any(|c| c.is_control() || c.is_whitespace())
                && !matches!(text.as_str(), "#" | "_" | "BUILTIN_RULE")
                && !text.contains("..")
            {
                expected.push(quoted);
            }
        }
    }
    if expected.is_empty() {
        expected.push("a valid flow".into());
    }
    let expected = match expected.len() {
        1 => expected.remove(0),
        _ => {
            let last = expected.pop().unwrap();
            format!("{} or {}", expected.join(", "), last)
        }
    };
    let (found, len) = found_at(source, pos);
    Diagnostic::error(
        ParseError::Unexpected { expected, found },
        Span::new(pos, pos + len),
    )
}

/// Keyword pairs carry nothing the syntax tree needs.
fn not_keyword(pair: &Pair<'_, Rule>) -> bool {
    !format!("{:?}", pair.as_rule()).starts_with("kw_")
}

fn describe_rule(rule: Rule) -> &'static str {
    match rule {
        Rule::kw_flow => "`flow`",
        Rule::kw_input => "a declaration",
        Rule::kw_repeat
        | Rule::kw_coupling
        | Rule::kw_squeeze
        | Rule::kw_factor_out
        | Rule::kw_logit => "a layer",
        Rule::kw_batchnorm | Rule::kw_actnorm | Rule::kw_invconv | Rule::kw_reverse => "a layer",
        Rule::kw_prior | Rule::kw_net | Rule::kw_block => "a declaration",
        Rule::flow | Rule::file => "`flow NAME { ... }`",
        Rule::ident => "a name",
        Rule::number => "a number",
        Rule::input_decl | Rule::prior_decl | Rule::net_decl | Rule::block_decl => "a declaration",
        Rule::coupling
        | Rule::squeeze
        | Rule::factor_out
        | Rule::logit
        | Rule::batchnorm
        | Rule::actnorm
        | Rule::invconv
        | Rule::reverse
        | Rule::repeat
        | Rule::misplaced_decl
        | Rule::block_call => "a layer",
        Rule::image_shape | Rule::vector_shape => "a shape (`image(C, H, W)` or `vector(D)`)",
        Rule::arg_list | Rule::param_list | Rule::prior_args => "`(`",
        Rule::arg => "an argument `name = value`",
        Rule::value_call => "a value",
        Rule::EOI => "end of file",
        _ => "more text",
    }
}

/// The token a person would say was found at `pos`, and its length in bytes.
fn found_at(source: &str, pos: usize) -> (String, usize) {
    let rest = &source[pos.min(source.len())..];
    let Some(first) = rest.chars().next() else {
        return ("end of file".into(), 0);
    };
    if first.is_ascii_alphanumeric() || first == '_' {
        let word: String = rest
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '.')
            .collect();
        let len = word.len();
        let shown: String = word.chars().take(40).collect();
        (format!("`{shown}`"), len)
    } else if first.is_control() || !first.is_ascii() && !first.is_alphanumeric() {
        (format!("character {:?}", first), first.len_utf8())
    } else {
        (format!("`{first}`"), first.len_utf8())
    }
}

/// The length of a block call `NAME`, `NAME()` or `NAME(a, b)` at the start of
/// `text` (whose name is `name_len` bytes), without what follows it.
fn call_len(text: &str, name_len: usize) -> usize {
    let bytes = text.as_bytes();
    let mut i = name_len;
    let mut in_comment = false;
    let mut open = false;
    while i < bytes.len() {
        match bytes[i] {
            b'\n' => in_comment = false,
            _ if in_comment => {}
            b'#' => in_comment = true,
            b'(' => open = true,
            b')' if open => return i + 1,
            b if !open && !b.is_ascii_whitespace() => return name_len,
            _ => {}
        }
        i += 1;
    }
    name_len
}

/// The first `len` bytes of a pair, for pointing at a keyword.
fn head_span(pair: &Pair<'_, Rule>, len: usize) -> Span {
    let s = pair.as_span();
    Span::new(s.start(), (s.start() + len).min(s.end()))
}

struct Builder {
    diags: Diagnostics,
}

impl Builder {
    fn error(&mut self, e: ParseError, span: Span) {
        self.diags.push(Diagnostic::error(e, span));
    }

    fn ident(&mut self, pair: Pair<'_, Rule>) -> Ident {
        Ident {
            name: pair.as_str().to_string(),
            span: pair.as_span().into(),
        }
    }

    /// A name the program defines: reserved words are refused.
    fn defining_ident(&mut self, pair: Pair<'_, Rule>, what: &'static str) -> Ident {
        let ident = self.ident(pair);
        if RESERVED.contains(&ident.name.as_str()) {
            self.error(
                ParseError::ReservedName {
                    name: ident.name.clone(),
                    what,
                },
                ident.span,
            );
        }
        ident
    }

    fn number(&mut self, pair: Pair<'_, Rule>) -> Number {
        Number {
            text: pair.as_str().to_string(),
            span: pair.as_span().into(),
        }
    }

    fn flow(&mut self, pair: Pair<'_, Rule>) -> Program {
        let span: Span = pair.as_span().into();
        let mut inner = pair.into_inner().filter(not_keyword);
        let name = self.defining_ident(inner.next().unwrap(), "flow");
        let mut program = Program {
            name,
            input: None,
            condition: None,
            prior: None,
            nets: vec![],
            blocks: vec![],
            layers: vec![],
            span,
        };
        for item in inner {
            let item_span: Span = item.as_span().into();
            let keyword = match item.as_rule() {
                Rule::input_decl => Some("input"),
                Rule::prior_decl => Some("prior"),
                Rule::net_decl => Some("net"),
                Rule::block_decl => Some("block"),
                _ => None,
            };
            if let Some(keyword) = keyword {
                if !program.layers.is_empty() {
                    self.error(
                        ParseError::DeclarationAfterLayer { keyword },
                        head_span(&item, keyword.len()),
                    );
                }
            }
            match item.as_rule() {
                Rule::input_decl => {
                    let mut parts = item.into_inner().filter(not_keyword);
                    let shape = self.shape(parts.next().unwrap());
                    let condition = parts.next().map(|c| self.condition(c));
                    if program.input.is_some() {
                        self.error(
                            ParseError::SecondDeclaration { keyword: "input" },
                            item_span,
                        );
                    } else {
                        program.input = Some((shape, item_span));
                        program.condition = condition;
                    }
                }
                Rule::prior_decl => {
                    let prior = self.prior(item);
                    if program.prior.is_some() {
                        self.error(
                            ParseError::SecondDeclaration { keyword: "prior" },
                            item_span,
                        );
                    } else {
                        program.prior = Some(prior);
                    }
                }
                Rule::net_decl => {
                    let mut parts = item.into_inner().filter(not_keyword);
                    let name = self.defining_ident(parts.next().unwrap(), "net");
                    let kind = self.ident(parts.next().unwrap());
                    let args = self.args(parts.next().unwrap());
                    program.nets.push(NetDecl {
                        name,
                        kind,
                        args,
                        span: item_span,
                    });
                }
                Rule::block_decl => {
                    let mut parts = item.into_inner().filter(not_keyword);
                    let name = self.defining_ident(parts.next().unwrap(), "block");
                    let mut params = vec![];
                    let mut body = vec![];
                    for part in parts {
                        if part.as_rule() == Rule::param_list {
                            for p in part.into_inner().filter(not_keyword) {
                                params.push(self.defining_ident(p, "block parameter"));
                            }
                        } else if let Some(layer) = self.layer(part, "block") {
                            body.push(layer);
                        }
                    }
                    program.blocks.push(BlockDecl {
                        name,
                        params,
                        body,
                        span: item_span,
                    });
                }
                Rule::misplaced_decl => {
                    // A declaration keyword that did not parse as a declaration.
                    let keyword = item.as_str().to_string();
                    let usage = match keyword.as_str() {
                        "input" => "input image(C, H, W)` or `input vector(D)",
                        "prior" => "prior normal`, `prior logistic` or `prior normal(learned)",
                        "net" => "net NAME = resnet(blocks = B, features = F)` or `net NAME = mlp(hidden = H, layers = L)",
                        "block" => "block NAME(p1, ...) { LAYER* }",
                        _ => "one `flow NAME { ... }` per file",
                    };
                    self.error(ParseError::Malformed { keyword, usage }, item_span);
                }
                _ => {
                    if let Some(layer) = self.layer(item, "flow") {
                        program.layers.push(layer);
                    }
                }
            }
        }
        if program.input.is_none() {
            let name = program.name.name.clone();
            self.error(ParseError::MissingInput { name }, program.name.span);
        }
        program
    }

    fn shape(&mut self, pair: Pair<'_, Rule>) -> ShapeDecl {
        let rule = pair.as_rule();
        let nums: Vec<Number> = pair
            .into_inner()
            .filter(not_keyword)
            .map(|p| self.number(p))
            .collect();
        let mut nums = nums.into_iter();
        match rule {
            Rule::image_shape => ShapeDecl::Image {
                c: nums.next().unwrap(),
                h: nums.next().unwrap(),
                w: nums.next().unwrap(),
            },
            _ => ShapeDecl::Vector {
                d: nums.next().unwrap(),
            },
        }
    }

    fn condition(&mut self, pair: Pair<'_, Rule>) -> ConditionDecl {
        let span = pair.as_span().into();
        let k = pair.into_inner().find(not_keyword).unwrap();
        ConditionDecl {
            classes: self.number(k),
            span,
        }
    }

    /// `prior NAME` or `prior NAME(word, ...)`.
    fn prior(&mut self, pair: Pair<'_, Rule>) -> PriorDecl {
        let mut parts = pair.into_inner().filter(not_keyword);
        let dist = self.ident(parts.next().unwrap());
        let args = parts.next().map(|list| {
            let span: Span = list.as_span().into();
            let values = list.into_inner().map(|v| self.value(v)).collect();
            (values, span)
        });
        PriorDecl { dist, args }
    }

    fn args(&mut self, pair: Pair<'_, Rule>) -> Vec<Arg> {
        pair.into_inner()
            .filter(not_keyword)
            .map(|arg| self.arg(arg))
            .collect()
    }

    fn arg(&mut self, pair: Pair<'_, Rule>) -> Arg {
        let span: Span = pair.as_span().into();
        let mut parts = pair.into_inner().filter(not_keyword);
        let key = self.ident(parts.next().unwrap());
        let value = self.value(parts.next().unwrap());
        Arg { key, value, span }
    }

    /// A number, a name, or `name(word, ...)`.
    fn value(&mut self, v: Pair<'_, Rule>) -> Value {
        match v.as_rule() {
            Rule::number => Value::Number(self.number(v)),
            Rule::ident => Value::Name(self.ident(v)),
            _ => {
                let vspan: Span = v.as_span().into();
                let mut words = v.into_inner().filter(not_keyword);
                let name = self.ident(words.next().unwrap());
                let args = words.map(|w| self.ident(w)).collect();
                Value::Call {
                    name,
                    args,
                    span: vspan,
                }
            }
        }
    }

    /// One layer; `context` names what it is inside, for misplaced declarations.
    fn layer(&mut self, pair: Pair<'_, Rule>, context: &'static str) -> Option<Layer> {
        // Without the whitespace and comments pest may have skipped after an
        // optional part (`logit` without arguments, then a comment).
        let start = pair.as_span().start();
        let mut span = Span::new(start, start + pair.as_str().trim_end().len());
        if matches!(pair.as_rule(), Rule::logit | Rule::factor_out) {
            let last = pair.clone().into_inner().last().map(|p| p.as_span().end());
            span.end = last.unwrap_or(span.end);
        }
        let rule = pair.as_rule();
        let mut inner = pair.clone().into_inner().filter(not_keyword);
        let kind = match rule {
            Rule::coupling => {
                let kind = self.ident(inner.next().unwrap());
                let args = self.args(inner.next().unwrap());
                LayerKind::Coupling { kind, args }
            }
            Rule::squeeze => LayerKind::Squeeze,
            Rule::factor_out => LayerKind::FactorOut {
                args: inner.next().map(|a| self.args(a)).unwrap_or_default(),
            },
            Rule::logit => LayerKind::Logit {
                args: inner.next().map(|a| self.args(a)).unwrap_or_default(),
            },
            Rule::batchnorm => LayerKind::BatchNorm,
            Rule::actnorm => LayerKind::ActNorm,
            Rule::invconv => LayerKind::InvConv,
            Rule::reverse => LayerKind::Reverse,
            Rule::repeat => {
                let count = self.number(inner.next().unwrap());
                let body = inner.filter_map(|l| self.layer(l, "repeat")).collect();
                LayerKind::Repeat { count, body }
            }
            Rule::misplaced_decl => {
                let keyword = pair.as_str().to_string();
                self.error(ParseError::MisplacedDeclaration { keyword, context }, span);
                return None;
            }
            _ => {
                let name = self.ident(inner.next().unwrap());
                let usage = match name.name.as_str() {
                    "coupling" => Some("coupling affine(mask = M, net = N)`, `coupling additive(mask = M, net = N)` or `coupling spline(mask = M, net = N, bins = n, bound = B)"),
                    "repeat" => Some("repeat K { LAYER* }"),
                    "logit" => Some("logit(alpha = A)"),
                    _ => None,
                };
                if let Some(usage) = usage {
                    self.error(
                        ParseError::Malformed {
                            keyword: name.name.clone(),
                            usage,
                        },
                        span,
                    );
                    return None;
                }
                if RESERVED.contains(&name.name.as_str()) {
                    // `squeeze(...)` and the like: keywords that take no arguments.
                    let keyword = name.name.clone();
                    self.error(
                        ParseError::Malformed {
                            keyword,
                            usage: "a layer keyword without arguments",
                        },
                        span,
                    );
                    return None;
                }
                let args = inner.map(|a| self.ident(a)).collect();
                // The pair may end in whitespace or a comment that pest skipped.
                let end = span.start + call_len(pair.as_str(), name.span.len());
                let kind = LayerKind::BlockCall { name, args };
                return Some(Layer {
                    kind,
                    span: Span::new(span.start, end),
                });
            }
        };
        Some(Layer { kind, span })
    }
}
