//! Stage 2, resolve: the syntax tree to a flat list of layers.
//!
//! Names are looked up, arguments checked, blocks and `repeat` expanded, and
//! every coupling gets its own instance of its net template. Every layer keeps
//! the span of the text it came from, and the block calls it was expanded
//! through, so later stages can point at the source.

use std::collections::HashMap;

use petgraph::graph::DiGraph;
use thiserror::Error;

use crate::span::{Code, Coded, Found, Located, Span};

use crate::parse::ast::{self, Arg, Value};
use crate::shape::Shape;

/// This stage's problems at their places (gathered by `crate::diag`).
type Diagnostic = Located<ResolveError>;
type Diagnostics = Found<ResolveError>;

/// A program may expand to at most this many layers.
pub const MAX_LAYERS: u128 = 100_000;
/// Repeats and block calls may nest this deep as expanded (a block calling a
/// block ..., each in repeats): expansion recurses once per level, so no
/// program can exhaust the stack.
pub const MAX_EXPANSION_DEPTH: usize = 64;
/// Largest integer argument of a net (`blocks`, `features`, `hidden`, `layers`):
/// tensor libraries index one dimension with an i32.
pub const MAX_NET_ARG: u64 = i32::MAX as u64;

use crate::ir::{
    Condition, CouplingKind, Mask, NetKind, Parity, Prior, SPLINE_BINS, SPLINE_DEFAULT_BINS,
    SPLINE_DEFAULT_BOUND, SPLINE_MAX_BOUND,
};
use crate::layers::{self, Coupling, FactorOut, NetUse, Op, SplitNet};

#[derive(Clone, Debug, PartialEq)]
pub struct NetTemplate {
    pub name: String,
    pub kind: NetKind,
    pub span: Span,
}

/// Index into [`ResolvedFlow::nets`].
pub type NetId = usize;

#[derive(Clone, Debug, PartialEq)]
pub struct Layer {
    /// The kind and its arguments; what each kind means to the later stages
    /// is its definition in [`crate::layers`].
    pub op: Op,
    pub span: Span,
    /// Block calls this layer was expanded through, outermost first.
    pub expanded_from: Vec<Span>,
}

/// The flow after resolution.
#[derive(Clone, Debug, PartialEq)]
pub struct ResolvedFlow {
    pub name: String,
    pub span: Span,
    /// `None` where the declaration was bad (already reported).
    pub input: Option<Shape>,
    pub input_span: Span,
    /// `given class(K)`; `None` without one or where K was bad (reported).
    pub condition: Option<Condition>,
    pub prior: Prior,
    pub nets: Vec<NetTemplate>,
    pub layers: Vec<Layer>,
    /// Some layer is missing (a bad argument, an unknown block, expansion
    /// stopped at the layer limit): flow-wide checks are skipped.
    pub incomplete: bool,
}

/// Problems with names and arguments.
#[derive(Clone, Debug, Error, PartialEq)]
pub enum ResolveError {
    #[error("unknown net `{name}`{}", hint(.known))]
    UnknownNet { name: String, known: Vec<String> },
    #[error("unknown block `{name}`{}", hint(.known))]
    UnknownBlock { name: String, known: Vec<String> },
    #[error("unknown coupling kind `{name}`; expected `affine`, `additive` or `spline`")]
    UnknownCoupling { name: String },
    #[error("unknown net kind `{name}`; expected `resnet` or `mlp`")]
    UnknownNetKind { name: String },
    #[error("{what} `{name}` is defined twice")]
    Duplicate {
        what: &'static str,
        name: String,
        first: Span,
    },
    #[error("{of} is missing the argument `{arg}`")]
    MissingArgument { of: String, arg: &'static str },
    #[error("{of} has no argument `{arg}`; expected {expected}")]
    UnknownArgument {
        of: String,
        arg: String,
        expected: &'static str,
    },
    #[error("argument `{arg}` is given twice")]
    DuplicateArgument { arg: String },
    #[error("argument `{arg}` must be {expected}, found {found}")]
    WrongKind {
        arg: String,
        expected: &'static str,
        found: String,
    },
    #[error("{what} must be {range}, found {found}")]
    OutOfRange {
        what: String,
        range: String,
        found: String,
    },
    #[error("unknown prior `{name}`; expected `normal` or `logistic`")]
    UnknownPrior { name: String },
    #[error("a prior takes one argument, `learned` (`prior normal(learned)`), or none (`prior {dist}`); found {found}")]
    PriorArguments { dist: String, found: String },
    #[error("prior `{name}` cannot be learned; `learned` applies to `normal` only")]
    NotLearnable { name: String },
    #[error("unknown mask `{name}`; expected checkerboard, channel, alternate or half, each with (even) or (odd)")]
    UnknownMask { name: String },
    #[error("mask `{name}` takes one argument, `even` or `odd`, found {found}")]
    MaskParity { name: String, found: String },
    #[error("block `{name}` takes {expected} net{}, found {found}", if *.expected == 1 { "" } else { "s" })]
    WrongArity {
        name: String,
        expected: usize,
        found: usize,
    },
    #[error(
        "net `{name}` is a {kind}, which conditions {fits} flows, but this flow's input is {input}"
    )]
    NetKindMismatch {
        name: String,
        kind: &'static str,
        fits: &'static str,
        input: String,
    },
    #[error("the flow would expand to {count} layers here, more than the limit of {limit}")]
    TooManyLayers { count: String, limit: u128 },
    #[error("repeats and block calls nest deeper than {limit} levels here")]
    NestingTooDeep { limit: usize },
    #[error("block `{name}` uses itself: {chain}")]
    RecursiveBlock { name: String, chain: String },
    #[error("the input has {values} values per example, more than flowc can represent (at most 2^64 - 1)")]
    InputTooLarge { values: u128 },
}

fn hint(known: &[String]) -> String {
    if known.is_empty() {
        String::new()
    } else {
        format!(
            "; defined here: {}",
            known
                .iter()
                .map(|k| format!("`{k}`"))
                .collect::<Vec<_>>()
                .join(", ")
        )
    }
}

impl ResolveError {
    pub fn code(&self) -> Code {
        use ResolveError::*;
        match self {
            UnknownNet { .. }
            | UnknownBlock { .. }
            | UnknownCoupling { .. }
            | UnknownNetKind { .. } => Code::UnknownName,
            Duplicate { .. } => Code::DuplicateName,
            RecursiveBlock { .. } => Code::RecursiveBlock,
            MissingArgument { .. }
            | UnknownArgument { .. }
            | DuplicateArgument { .. }
            | WrongKind { .. }
            | OutOfRange { .. }
            | UnknownPrior { .. }
            | PriorArguments { .. }
            | NotLearnable { .. }
            | UnknownMask { .. }
            | MaskParity { .. }
            | WrongArity { .. }
            | NetKindMismatch { .. }
            | TooManyLayers { .. }
            | NestingTooDeep { .. }
            | InputTooLarge { .. } => Code::BadArgument,
        }
    }
}

/// Resolves a parsed program. The flow comes back with the layers that could be
/// resolved; the diagnostics say what could not.
pub fn resolve(program: &ast::Program) -> (ResolvedFlow, Diagnostics) {
    let mut r = Resolver {
        diags: Diagnostics::default(),
        program,
        blocks: HashMap::new(),
        block_layers: HashMap::new(),
        nets: HashMap::new(),
        net_kinds: vec![],
        condition: None,
        depth: 0,
    };
    let flow = r.run();
    (flow, r.diags)
}

struct Resolver<'a> {
    diags: Diagnostics,
    program: &'a ast::Program,
    blocks: HashMap<&'a str, &'a ast::BlockDecl>,
    /// Layers each non-recursive block expands to, counted once per block (a
    /// count per call is exponential in blocks that call a block twice).
    block_layers: HashMap<&'a str, u128>,
    nets: HashMap<&'a str, NetId>,
    /// What each net template is, by id: a coupling carries its net's kind.
    net_kinds: Vec<NetKind>,
    /// `given class(K)`, once resolved: every net's input gains K channels.
    condition: Option<Condition>,
    /// Repeats and block calls being expanded around the current layer.
    depth: usize,
}

/// Net names visible inside a block body: parameter -> net.
type Env = HashMap<String, Option<NetId>>;

impl<'a> Resolver<'a> {
    fn error(&mut self, e: ResolveError, span: Span) {
        self.diags.push(Diagnostic::error(e, span));
    }

    fn run(&mut self) -> ResolvedFlow {
        let p = self.program;
        let (input, input_span) = match &p.input {
            Some((decl, span)) => (self.input(decl), *span),
            None => (None, p.name.span),
        };
        self.condition = p.condition.as_ref().and_then(|c| {
            let range = format!("an integer from 1 to {}", Condition::MAX_CLASSES);
            let k = self.integer(&c.classes, "classes", 1, Condition::MAX_CLASSES, &range)?;
            Some(Condition { classes: k as u32 })
        });
        let prior = p.prior.as_ref().map_or(Prior::Normal, |d| self.prior(d));
        let mut nets = vec![];
        for decl in &p.nets {
            if self.nets.contains_key(decl.name.name.as_str()) {
                let first = p
                    .nets
                    .iter()
                    .find(|n| n.name.name == decl.name.name)
                    .map_or(decl.name.span, |n| n.name.span);
                self.error(
                    ResolveError::Duplicate {
                        what: "net",
                        name: decl.name.name.clone(),
                        first,
                    },
                    decl.name.span,
                );
                continue;
            }
            if let Some(kind) = self.net_kind(decl, input) {
                self.nets.insert(&decl.name.name, nets.len());
                self.net_kinds.push(kind);
                nets.push(NetTemplate {
                    name: decl.name.name.clone(),
                    kind,
                    span: decl.span,
                });
            } else {
                // Bad template: later uses resolve to "no net" without a second report.
                self.nets.insert(&decl.name.name, usize::MAX);
            }
        }
        for block in &p.blocks {
            if let Some(first) = self.blocks.get(block.name.name.as_str()) {
                let first = first.name.span;
                self.error(
                    ResolveError::Duplicate {
                        what: "block",
                        name: block.name.name.clone(),
                        first,
                    },
                    block.name.span,
                );
                continue;
            }
            self.blocks.insert(&block.name.name, block);
            let mut seen: HashMap<&str, Span> = HashMap::new();
            for param in &block.params {
                if let Some(first) = seen.insert(&param.name, param.span) {
                    self.error(
                        ResolveError::Duplicate {
                            what: "block parameter",
                            name: param.name.clone(),
                            first,
                        },
                        param.span,
                    );
                }
            }
        }
        let recursive = self.check_recursion();
        let mut layers = vec![];
        let mut truncated = false;
        let env = Env::new();
        self.expand(
            &p.layers,
            &env,
            &[],
            &recursive,
            &mut layers,
            &mut truncated,
        );
        ResolvedFlow {
            name: p.name.name.clone(),
            span: p.span,
            input,
            input_span,
            condition: self.condition,
            prior,
            nets,
            layers,
            incomplete: truncated || self.diags.has_errors(),
        }
    }

    /// `prior normal`, `prior logistic`, `prior normal(learned)`; anything
    /// else is reported and read as `normal` (the flow does not verify).
    fn prior(&mut self, decl: &ast::PriorDecl) -> Prior {
        let name = decl.dist.name.as_str();
        let fixed = match name {
            "normal" => Prior::Normal,
            "logistic" => Prior::Logistic,
            _ => {
                let e = ResolveError::UnknownPrior { name: name.into() };
                self.error(e, decl.dist.span);
                return Prior::Normal;
            }
        };
        let Some((values, parens)) = &decl.args else {
            return fixed;
        };
        match values.as_slice() {
            [Value::Name(w)] if w.name == "learned" => {
                if fixed == Prior::Normal {
                    return Prior::LearnedNormal;
                }
                let e = ResolveError::NotLearnable { name: name.into() };
                self.error(e, *parens);
            }
            _ => {
                let (found, span) = match values.as_slice() {
                    [] => ("no argument".to_string(), *parens),
                    [v] => (describe_value(v), v.span()),
                    more => (format!("{} arguments", more.len()), *parens),
                };
                let dist = name.into();
                self.error(ResolveError::PriorArguments { dist, found }, span);
            }
        }
        fixed
    }

    fn input(&mut self, decl: &ast::ShapeDecl) -> Option<Shape> {
        let shape = match decl {
            ast::ShapeDecl::Image { c, h, w } => {
                let (c, h, w) = (
                    self.size(c, "channels"),
                    self.size(h, "height"),
                    self.size(w, "width"),
                );
                Shape::Image {
                    c: c?,
                    h: h?,
                    w: w?,
                }
            }
            ast::ShapeDecl::Vector { d } => Shape::Vector {
                d: self.size(d, "features")?,
            },
        };
        if shape.size() > u64::MAX as u128 {
            let span = self.program.input.as_ref().unwrap().1;
            self.error(
                ResolveError::InputTooLarge {
                    values: shape.size(),
                },
                span,
            );
            return None;
        }
        Some(shape)
    }

    /// A shape size: an integer >= 1 that fits 64 bits.
    fn size(&mut self, n: &ast::Number, what: &str) -> Option<u64> {
        self.integer(n, what, 1, u64::MAX, "an integer from 1 to 2^64 - 1")
    }

    fn integer(
        &mut self,
        n: &ast::Number,
        what: &str,
        min: u64,
        max: u64,
        range: &str,
    ) -> Option<u64> {
        match n.as_u64() {
            Some(v) if (min..=max).contains(&v) => Some(v),
            _ => {
                let found = if n.is_integer_literal() {
                    n.text.clone()
                } else {
                    format!("`{}`, not an integer", n.text)
                };
                let what = what.to_string();
                self.error(
                    ResolveError::OutOfRange {
                        what,
                        range: range.into(),
                        found,
                    },
                    n.span,
                );
                None
            }
        }
    }

    fn net_kind(&mut self, decl: &ast::NetDecl, input: Option<Shape>) -> Option<NetKind> {
        let (keys, fits, is_image): (&[&'static str], _, _) = match decl.kind.name.as_str() {
            "resnet" => (&["blocks", "features"], "image", true),
            "mlp" => (&["hidden", "layers"], "vector", false),
            other => {
                self.error(
                    ResolveError::UnknownNetKind { name: other.into() },
                    decl.kind.span,
                );
                return None;
            }
        };
        let of = format!("`{}`", decl.kind.name);
        let expected = if is_image {
            "`blocks` and `features`"
        } else {
            "`hidden` and `layers`"
        };
        let args = self.args(&decl.args, keys, keys.len(), &of, expected, decl.kind.span);
        let mut values = [None, None];
        for (i, key) in keys.iter().enumerate() {
            if let Some(arg) = args[i] {
                values[i] = self.integer_arg(arg, key);
            }
        }
        if let Some(shape) = input {
            if shape.is_image() != is_image {
                let kind = if is_image { "resnet" } else { "mlp" };
                let input = if shape.is_image() {
                    "an image"
                } else {
                    "a vector"
                };
                let e = ResolveError::NetKindMismatch {
                    name: decl.name.name.clone(),
                    kind,
                    fits,
                    input: input.into(),
                };
                self.error(e, decl.kind.span);
                return None;
            }
        }
        let [Some(a), Some(b)] = values else {
            return None;
        };
        Some(if is_image {
            NetKind::Resnet {
                blocks: a,
                features: b,
            }
        } else {
            NetKind::Mlp {
                hidden: a,
                layers: b,
            }
        })
    }

    fn integer_arg(&mut self, arg: &Arg, key: &str) -> Option<u64> {
        match &arg.value {
            Value::Number(n) => self.integer(
                n,
                &format!("`{key}`"),
                1,
                MAX_NET_ARG,
                "an integer from 1 to 2^31 - 1",
            ),
            other => {
                let found = describe_value(other);
                self.error(
                    ResolveError::WrongKind {
                        arg: key.into(),
                        expected: "an integer",
                        found,
                    },
                    other.span(),
                );
                None
            }
        }
    }

    /// Matches `key = value` arguments against the expected keys, reporting
    /// unknown, repeated and missing ones (the first `required` keys must be
    /// given, the rest may be left out). Returns them in the order of `keys`.
    fn args<'b>(
        &mut self,
        args: &'b [Arg],
        keys: &[&'static str],
        required: usize,
        of: &str,
        expected: &'static str,
        at: Span,
    ) -> Vec<Option<&'b Arg>> {
        let mut found: Vec<Option<&Arg>> = vec![None; keys.len()];
        for arg in args {
            match keys.iter().position(|k| *k == arg.key.name) {
                None => self.error(
                    ResolveError::UnknownArgument {
                        of: of.into(),
                        arg: arg.key.name.clone(),
                        expected,
                    },
                    arg.key.span,
                ),
                Some(i) if found[i].is_some() => self.error(
                    ResolveError::DuplicateArgument {
                        arg: arg.key.name.clone(),
                    },
                    arg.key.span,
                ),
                Some(i) => found[i] = Some(arg),
            }
        }
        for (i, key) in keys.iter().enumerate().take(required) {
            if found[i].is_none() {
                self.error(
                    ResolveError::MissingArgument {
                        of: of.into(),
                        arg: key,
                    },
                    at,
                );
            }
        }
        found
    }

    /// The blocks that calls resolve to (the first of duplicates), and their
    /// call graph: an edge per call, from caller to callee, at the call.
    fn call_graph(&self) -> (Vec<&'a ast::BlockDecl>, DiGraph<usize, Span>) {
        let blocks: Vec<&'a ast::BlockDecl> = self
            .program
            .blocks
            .iter()
            .filter(|b| {
                self.blocks
                    .get(b.name.name.as_str())
                    .is_some_and(|d| std::ptr::eq(*d, *b))
            })
            .collect();
        let mut graph = DiGraph::<usize, Span>::new();
        let nodes: Vec<_> = (0..blocks.len()).map(|i| graph.add_node(i)).collect();
        let index: HashMap<&str, usize> = blocks
            .iter()
            .enumerate()
            .map(|(i, b)| (b.name.name.as_str(), i))
            .collect();
        for (i, b) in blocks.iter().enumerate() {
            let mut calls = vec![];
            collect_calls(&b.body, &mut calls);
            for (name, span) in calls {
                if let Some(&j) = index.get(name.as_str()) {
                    graph.add_edge(nodes[i], nodes[j], span);
                }
            }
        }
        (blocks, graph)
    }

    /// Finds block cycles (petgraph SCCs); reports each once, at the call that
    /// closes it in the first block of the cycle; counts the layers of every
    /// other block. Returns the recursive blocks.
    fn check_recursion(&mut self) -> Vec<String> {
        let (blocks, graph) = self.call_graph();
        // Kosaraju's SCCs, not Tarjan's: petgraph's Tarjan recurses once per
        // block of a call chain, and a chain may be 100,000 blocks long.
        let sccs = petgraph::algo::kosaraju_scc(&graph);
        let mut recursive = vec![];
        for scc in &sccs {
            let cyclic = scc.len() > 1 || graph.find_edge(scc[0], scc[0]).is_some();
            if cyclic {
                self.report_cycle(&blocks, &graph, scc);
                recursive.extend(scc.iter().map(|n| blocks[graph[*n]].name.name.clone()));
            }
        }
        // The SCCs come callees first, so every block's count is its body's,
        // with the counts of the blocks it calls already known.
        for scc in &sccs {
            let block = blocks[graph[scc[0]]];
            if scc.len() == 1 && !recursive.contains(&block.name.name) {
                let n = self.count(&block.body);
                self.block_layers.insert(&block.name.name, n);
            }
        }
        recursive
    }

    fn report_cycle(
        &mut self,
        blocks: &[&ast::BlockDecl],
        graph: &DiGraph<usize, Span>,
        scc: &[petgraph::graph::NodeIndex],
    ) {
        use petgraph::visit::EdgeRef;
        let members: std::collections::HashSet<_> = scc.iter().copied().collect();
        let first = *scc.iter().min_by_key(|n| graph[**n]).unwrap();
        // Walk the cycle from `first`, always to the earliest member called.
        let mut chain = vec![blocks[graph[first]].name.name.clone()];
        let mut at = first;
        let mut closing = None;
        for _ in 0..=scc.len() {
            let e = graph
                .edges(at)
                .filter(|e| members.contains(&e.target()))
                .min_by_key(|e| e.weight().start)
                .expect("a member of a cycle calls another");
            let next = e.target();
            if closing.is_none() {
                closing = Some(*e.weight());
            }
            chain.push(blocks[graph[next]].name.name.clone());
            if next == first {
                break;
            }
            at = next;
        }
        let name = blocks[graph[first]].name.name.clone();
        self.error(
            ResolveError::RecursiveBlock {
                name,
                chain: chain.join(" -> "),
            },
            closing.unwrap(),
        );
    }

    /// How many layers these would expand to (saturating; recursive and
    /// unknown blocks count 0).
    fn count(&self, layers: &[ast::Layer]) -> u128 {
        layers
            .iter()
            .map(|l| self.count_one(l))
            .fold(0u128, u128::saturating_add)
    }

    fn count_one(&self, layer: &ast::Layer) -> u128 {
        match layer.kind.form() {
            ast::Form::Repeat { count, body } => {
                let k = count.as_u64().unwrap_or(0) as u128;
                k.saturating_mul(self.count(body))
            }
            ast::Form::Call { name, .. } => self
                .block_layers
                .get(name.name.as_str())
                .copied()
                .unwrap_or(0),
            ast::Form::Primitive { .. } => 1,
        }
    }

    /// The innermost repeat or block call, at or inside `layer`, whose expansion
    /// alone would pass `room` layers: the one to blame for crossing the limit.
    /// A loop, not a recursion: the calls may nest deep.
    fn culprit<'b>(&'b self, mut layer: &'b ast::Layer, room: u128) -> Span {
        loop {
            let body = match layer.kind.form() {
                ast::Form::Repeat { body, .. } => Some(body),
                ast::Form::Call { name, .. } => {
                    self.blocks.get(name.name.as_str()).map(|b| &b.body[..])
                }
                ast::Form::Primitive { .. } => None,
            };
            match body.and_then(|b| b.iter().find(|inner| self.count_one(inner) > room)) {
                Some(inner) => layer = inner,
                None => break,
            }
        }
        match layer.kind.form() {
            ast::Form::Repeat { count, .. } => Span::new(layer.span.start, count.span.end),
            ast::Form::Call { .. } | ast::Form::Primitive { .. } => layer.span,
        }
    }

    fn expand(
        &mut self,
        layers: &[ast::Layer],
        env: &Env,
        sites: &[Span],
        recursive: &[String],
        out: &mut Vec<Layer>,
        truncated: &mut bool,
    ) {
        for layer in layers {
            if *truncated {
                return;
            }
            let room = MAX_LAYERS - out.len() as u128;
            let n = self.count_one(layer);
            if n > room {
                let span = self.culprit(layer, room);
                let count = if n == u128::MAX {
                    "more than 2^128".to_string()
                } else {
                    (out.len() as u128 + n).to_string()
                };
                self.diags.push(
                    Diagnostic::error(
                        ResolveError::TooManyLayers {
                            count,
                            limit: MAX_LAYERS,
                        },
                        span,
                    )
                    .expanded_from(sites),
                );
                *truncated = true;
                return;
            }
            let op = match &layer.kind {
                ast::LayerKind::Repeat { count, body } => {
                    let head = Span::new(layer.span.start, count.span.end);
                    if self.too_deep(head, sites, truncated) {
                        return;
                    }
                    if let Some(k) =
                        self.integer(count, "`repeat` count", 1, u64::MAX, "an integer >= 1")
                    {
                        // A body of no layers (empty, or recursive blocks) has
                        // its errors found once; 10^12 empty rounds would hang.
                        let rounds = if self.count(body) == 0 { k.min(1) } else { k };
                        self.depth += 1;
                        for _ in 0..rounds {
                            self.expand(body, env, sites, recursive, out, truncated);
                        }
                        self.depth -= 1;
                    }
                    continue;
                }
                ast::LayerKind::BlockCall { name, args } => {
                    self.call(
                        name, args, layer.span, env, sites, recursive, out, truncated,
                    );
                    continue;
                }
                ast::LayerKind::Coupling { kind, args } => match self.coupling(kind, args, env) {
                    Some(coupling) => Op::Coupling(coupling),
                    None => continue,
                },
                ast::LayerKind::Logit { args } => {
                    let found = self.args(args, &["alpha"], 1, "`logit`", "`alpha`", layer.span);
                    let alpha = found[0].and_then(|a| self.alpha(a));
                    Op::Logit(layers::Logit { alpha })
                }
                ast::LayerKind::Squeeze => Op::Squeeze(layers::Squeeze),
                ast::LayerKind::FactorOut { args } => Op::FactorOut(self.factor_out(args, env)),
                ast::LayerKind::BatchNorm => Op::BatchNorm(layers::BatchNorm),
                ast::LayerKind::ActNorm => Op::ActNorm(layers::ActNorm),
                ast::LayerKind::InvConv => Op::InvConv(layers::InvConv),
                ast::LayerKind::Reverse => Op::Reverse(layers::Reverse),
            };
            out.push(Layer {
                op,
                span: layer.span,
                expanded_from: sites.to_vec(),
            });
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn call(
        &mut self,
        name: &ast::Ident,
        args: &[ast::Ident],
        span: Span,
        env: &Env,
        sites: &[Span],
        recursive: &[String],
        out: &mut Vec<Layer>,
        truncated: &mut bool,
    ) {
        let Some(block) = self.blocks.get(name.name.as_str()).copied() else {
            let known = self
                .program
                .blocks
                .iter()
                .map(|b| b.name.name.clone())
                .collect();
            self.error(
                ResolveError::UnknownBlock {
                    name: name.name.clone(),
                    known,
                },
                name.span,
            );
            return;
        };
        if recursive.contains(&name.name) {
            return; // reported once, at the cycle
        }
        if self.too_deep(span, sites, truncated) {
            return;
        }
        if args.len() != block.params.len() {
            let e = ResolveError::WrongArity {
                name: name.name.clone(),
                expected: block.params.len(),
                found: args.len(),
            };
            self.error(e, span);
            return;
        }
        let mut inner = Env::new();
        for (param, arg) in block.params.iter().zip(args) {
            inner.insert(param.name.clone(), self.net_ref(arg, env));
        }
        let mut sites = sites.to_vec();
        sites.push(span);
        self.depth += 1;
        self.expand(&block.body, &inner, &sites, recursive, out, truncated);
        self.depth -= 1;
    }

    /// Whether a repeat or call at `span` would nest past [`MAX_EXPANSION_DEPTH`]
    /// (reported, and expansion stops, as at the layer limit).
    fn too_deep(&mut self, span: Span, sites: &[Span], truncated: &mut bool) -> bool {
        if self.depth < MAX_EXPANSION_DEPTH {
            return false;
        }
        let e = ResolveError::NestingTooDeep {
            limit: MAX_EXPANSION_DEPTH,
        };
        self.diags
            .push(Diagnostic::error(e, span).expanded_from(sites));
        *truncated = true;
        true
    }

    /// A net name in scope: a block parameter, else a declared net.
    /// `None` when unknown (reported) or when its template was bad.
    fn net_ref(&mut self, name: &ast::Ident, env: &Env) -> Option<NetId> {
        if let Some(id) = env.get(&name.name) {
            return *id;
        }
        match self.nets.get(name.name.as_str()) {
            Some(&id) if id != usize::MAX => Some(id),
            Some(_) => None,
            None => {
                let mut known: Vec<String> = self
                    .program
                    .nets
                    .iter()
                    .map(|n| n.name.name.clone())
                    .collect();
                known.extend(env.keys().cloned());
                self.error(
                    ResolveError::UnknownNet {
                        name: name.name.clone(),
                        known,
                    },
                    name.span,
                );
                None
            }
        }
    }

    /// `factor_out`, or `factor_out(net = N)` (`net` is its only argument,
    /// and optional: `factor_out()` is `factor_out`).
    fn factor_out(&mut self, args: &[Arg], env: &Env) -> FactorOut {
        let mut net = None;
        for arg in args {
            if arg.key.name != "net" {
                let e = ResolveError::UnknownArgument {
                    of: "`factor_out`".into(),
                    arg: arg.key.name.clone(),
                    expected: "`net` or no argument",
                };
                self.error(e, arg.key.span);
            } else if net.is_some() {
                let e = ResolveError::DuplicateArgument {
                    arg: arg.key.name.clone(),
                };
                self.error(e, arg.key.span);
            } else {
                net = Some(arg);
            }
        }
        if args.is_empty() {
            return FactorOut { split: None };
        }
        let net_use = net.and_then(|a| self.net_arg(a, env)).map(|id| NetUse {
            id,
            kind: self.net_kinds[id],
            labels: Condition::label_channels(self.condition),
        });
        let span = net.map_or(args[0].span, |a| a.value.span());
        FactorOut {
            split: Some(SplitNet { net: net_use, span }),
        }
    }

    /// The value of a `net = N` argument: a net in scope.
    fn net_arg(&mut self, a: &Arg, env: &Env) -> Option<NetId> {
        match &a.value {
            Value::Name(id) => self.net_ref(id, env),
            other => {
                let found = describe_value(other);
                self.error(
                    ResolveError::WrongKind {
                        arg: "net".into(),
                        expected: "the name of a net",
                        found,
                    },
                    other.span(),
                );
                None
            }
        }
    }

    fn coupling(&mut self, kind: &ast::Ident, args: &[Arg], env: &Env) -> Option<Coupling> {
        let (keys, expected): (&[&'static str], _) = match kind.name.as_str() {
            "affine" | "additive" => (&["mask", "net"], "`mask` and `net`"),
            "spline" => (
                &["mask", "net", "bins", "bound"],
                "`mask`, `net`, `bins` and `bound`",
            ),
            other => {
                self.error(
                    ResolveError::UnknownCoupling { name: other.into() },
                    kind.span,
                );
                (&["mask", "net"], "`mask` and `net`")
            }
        };
        let of = format!("`coupling {}`", kind.name);
        let found = self.args(args, keys, 2, &of, expected, kind.span);
        let mask = found[0].and_then(|a| self.mask(a));
        let net = found[1].and_then(|a| self.net_arg(a, env));
        let ckind = match kind.name.as_str() {
            "affine" => Some(CouplingKind::Affine),
            "additive" => Some(CouplingKind::Additive),
            "spline" => {
                let bins = found[2].map_or(Some(SPLINE_DEFAULT_BINS), |a| self.bins(a));
                let bound = found[3].map_or(Some(SPLINE_DEFAULT_BOUND), |a| self.bound(a));
                Some(CouplingKind::Spline {
                    bins: bins?,
                    bound: bound?,
                })
            }
            _ => None, // an unknown kind, reported above
        };
        Some(Coupling {
            kind: ckind?,
            mask,
            mask_span: found[0].map_or(kind.span, |a| a.value.span()),
            net: net.map(|id| NetUse {
                id,
                kind: self.net_kinds[id],
                labels: Condition::label_channels(self.condition),
            }),
            net_span: found[1].map_or(kind.span, |a| a.value.span()),
        })
    }

    /// `bins` of a spline coupling: an integer literal in [`SPLINE_BINS`].
    fn bins(&mut self, arg: &Arg) -> Option<u64> {
        let range = format!(
            "an integer from {} to {}",
            SPLINE_BINS.start(),
            SPLINE_BINS.end()
        );
        match &arg.value {
            Value::Number(n) => self.integer(
                n,
                "`bins`",
                *SPLINE_BINS.start(),
                *SPLINE_BINS.end(),
                &range,
            ),
            other => {
                let found = describe_value(other);
                let e = ResolveError::WrongKind {
                    arg: "bins".into(),
                    expected: "an integer",
                    found,
                };
                self.error(e, other.span());
                None
            }
        }
    }

    /// `bound` of a spline coupling: a number above 0 and at most
    /// [`SPLINE_MAX_BOUND`] (larger is "too large to represent": the knots
    /// span `2 bound` in f32).
    fn bound(&mut self, arg: &Arg) -> Option<f64> {
        match &arg.value {
            Value::Number(n) => match n.as_f64() {
                Some(b) if b > 0.0 && b <= SPLINE_MAX_BOUND => Some(b),
                _ => {
                    let e = ResolveError::OutOfRange {
                        what: "`bound`".into(),
                        range: "a number above 0, at most 1e30".into(),
                        found: n.text.clone(),
                    };
                    self.error(e, n.span);
                    None
                }
            },
            other => {
                let found = describe_value(other);
                let e = ResolveError::WrongKind {
                    arg: "bound".into(),
                    expected: "a number",
                    found,
                };
                self.error(e, other.span());
                None
            }
        }
    }

    fn mask(&mut self, arg: &Arg) -> Option<Mask> {
        let Value::Call { name, args, span } = &arg.value else {
            let found = describe_value(&arg.value);
            let e = ResolveError::WrongKind {
                arg: "mask".into(),
                expected: "a mask such as `checkerboard(even)`",
                found,
            };
            self.error(e, arg.value.span());
            return None;
        };
        let make: fn(Parity) -> Mask = match name.name.as_str() {
            "checkerboard" => Mask::Checkerboard,
            "channel" => Mask::Channel,
            "alternate" => Mask::Alternate,
            "half" => Mask::Half,
            other => {
                self.error(ResolveError::UnknownMask { name: other.into() }, name.span);
                return None;
            }
        };
        match args.as_slice() {
            [p] if p.name == "even" => Some(make(Parity::Even)),
            [p] if p.name == "odd" => Some(make(Parity::Odd)),
            _ => {
                let found = match args.as_slice() {
                    [] => "nothing".to_string(),
                    [p] => format!("`{}`", p.name),
                    more => format!("{} arguments", more.len()),
                };
                self.error(
                    ResolveError::MaskParity {
                        name: name.name.clone(),
                        found,
                    },
                    *span,
                );
                None
            }
        }
    }

    fn alpha(&mut self, arg: &Arg) -> Option<f64> {
        match &arg.value {
            Value::Number(n) => match n.as_f64() {
                Some(a) if a > 0.0 && a < 0.5 => Some(a),
                _ => {
                    let e = ResolveError::OutOfRange {
                        what: "`alpha`".into(),
                        range: "between 0 and 0.5 (exclusive)".into(),
                        found: n.text.clone(),
                    };
                    self.error(e, n.span);
                    None
                }
            },
            other => {
                let found = describe_value(other);
                self.error(
                    ResolveError::WrongKind {
                        arg: "alpha".into(),
                        expected: "a number",
                        found,
                    },
                    other.span(),
                );
                None
            }
        }
    }
}

fn describe_value(v: &Value) -> String {
    match v {
        Value::Number(n) => format!("the number {}", n.text),
        Value::Name(i) => format!("the name `{}`", i.name),
        Value::Call { name, .. } => format!("`{}(...)`", name.name),
    }
}

fn collect_calls(layers: &[ast::Layer], out: &mut Vec<(String, Span)>) {
    for l in layers {
        match &l.kind {
            ast::LayerKind::BlockCall { name, .. } => out.push((name.name.clone(), l.span)),
            ast::LayerKind::Repeat { body, .. } => collect_calls(body, out),
            _ => {}
        }
    }
}

impl Coded for ResolveError {
    fn code(&self) -> Code {
        ResolveError::code(self)
    }
}
