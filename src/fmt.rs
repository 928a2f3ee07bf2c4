//! `flowc fmt`: one canonical layout for `.flow` text. Four spaces per level,
//! one declaration or layer per line, `key = value` arguments separated by
//! `, `, at most one blank line where the source had any, and every comment
//! kept where it was: a comment on its own line stays on its own line before
//! what followed it, a comment after a layer stays at the end of that line.
//! Items keep their order, so only whitespace ever changes (and a comment
//! written inside an item moves to the line before it). The text is printed
//! from the parser's syntax tree, so formatting never changes the program;
//! a text with syntax errors is not formatted.

use crate::parse::ast::{
    BlockDecl, ConditionDecl, Layer, LayerKind, NetDecl, PriorDecl, Program, ShapeDecl,
};
use crate::parse::print::args;
use crate::parse::{self, ParseError};
use crate::span::{Found, Span};

const INDENT: &str = "    ";

/// The canonical layout of a source text, or its syntax errors.
pub fn format(source: &str) -> Result<String, Found<ParseError>> {
    let (program, diags) = parse::parse(source);
    match program {
        Some(p) if diags.is_empty() => Ok(Printer::new(source).file(&p)),
        _ => Err(diags),
    }
}

/// One line-level element of a flow's body, in source order.
enum Item<'p> {
    Input(&'p ShapeDecl, Option<&'p ConditionDecl>, Span),
    Prior(&'p PriorDecl),
    Net(&'p NetDecl),
    Block(&'p BlockDecl),
    Layer(&'p Layer),
}

impl Item<'_> {
    fn span(&self) -> Span {
        match self {
            Item::Input(_, _, span) => *span,
            Item::Prior(prior) => prior.span(),
            Item::Net(net) => net.span,
            Item::Block(block) => block.span,
            Item::Layer(layer) => layer.span,
        }
    }
}

struct Printer<'a> {
    source: &'a str,
    comments: Vec<Span>,
    /// The first comment not yet printed.
    next: usize,
    out: String,
}

impl<'a> Printer<'a> {
    fn new(source: &'a str) -> Printer<'a> {
        Printer {
            source,
            comments: parse::comments(source),
            next: 0,
            out: String::new(),
        }
    }

    fn file(mut self, p: &Program) -> String {
        let mut prev = self.comments_before(p.span.start, 0, None);
        self.blank_if_gap(prev, p.span.start);
        self.line(0, &format!("flow {} {{", p.name.name));
        let mut items: Vec<Item> = vec![];
        if let Some((shape, span)) = &p.input {
            items.push(Item::Input(shape, p.condition.as_ref(), *span));
        }
        items.extend(p.prior.iter().map(Item::Prior));
        items.extend(p.nets.iter().map(Item::Net));
        items.extend(p.blocks.iter().map(Item::Block));
        items.extend(p.layers.iter().map(Item::Layer));
        items.sort_by_key(|i| i.span().start);
        let close = p.span.end - 1;
        self.items(&items, 1, close);
        self.line(0, "}");
        prev = self
            .trailing(p.span.end, self.source.len())
            .or(Some(p.span.end));
        self.comments_before(self.source.len(), 0, prev);
        self.out
    }

    /// Items of one container (a flow, block or `repeat` body) whose closing
    /// brace is at `close`, with the comments among them.
    fn items(&mut self, items: &[Item], depth: usize, close: usize) {
        let mut prev = None;
        for (k, item) in items.iter().enumerate() {
            let span = item.span();
            // Comments inside an item's head go before it: one item per line.
            let head_end = match item {
                Item::Block(_)
                | Item::Layer(Layer {
                    kind: LayerKind::Repeat { .. },
                    ..
                }) => span.start,
                Item::Input(..) | Item::Prior(_) | Item::Net(_) | Item::Layer(_) => span.end,
            };
            prev = self.comments_before(head_end, depth, prev);
            self.blank_if_gap(prev, span.start);
            self.item(item, depth);
            let next_start = items.get(k + 1).map_or(close, |i| i.span().start);
            prev = self.trailing(span.end, next_start).or(Some(span.end));
        }
        self.comments_before(close, depth, prev);
    }

    fn item(&mut self, item: &Item, depth: usize) {
        match item {
            Item::Input(shape, condition, _) => {
                let given = condition.map_or(String::new(), crate::parse::print::condition);
                self.line(depth, &format!("input {}{given}", shape_text(shape)))
            }
            Item::Prior(prior) => self.line(depth, &prior_text(prior)),
            Item::Net(net) => self.line(depth, &net_text(net)),
            Item::Block(block) => {
                self.line(depth, &format!("{} {{", block_head(block)));
                self.body(&block.body, depth, block.span.end - 1);
            }
            Item::Layer(layer) => self.layer(layer, depth),
        }
    }

    fn layer(&mut self, layer: &Layer, depth: usize) {
        match &layer.kind {
            LayerKind::Repeat { body, .. } => {
                self.line(depth, &format!("{} {{", layer_text(&layer.kind)));
                self.body(body, depth, layer.span.end - 1);
            }
            kind => self.line(depth, &layer_text(kind)),
        }
    }

    /// The layers of a block or `repeat` and the closing brace at `close`.
    fn body(&mut self, body: &[Layer], depth: usize, close: usize) {
        let items: Vec<Item> = body.iter().map(Item::Layer).collect();
        self.items(&items, depth + 1, close);
        self.line(depth, "}");
    }

    /// Prints, each on its own line, the comments that start before `limit`;
    /// returns where the last thing printed ended in the source.
    fn comments_before(
        &mut self,
        limit: usize,
        depth: usize,
        mut prev: Option<usize>,
    ) -> Option<usize> {
        while let Some(&c) = self.comments.get(self.next).filter(|c| c.start < limit) {
            self.blank_if_gap(prev, c.start);
            self.line(depth, self.source[c.start..c.end].trim_end());
            self.next += 1;
            prev = Some(c.end);
        }
        prev
    }

    /// A comment on the same line after `end` (and before `next_start`, where
    /// the next item begins) ends the line just printed.
    fn trailing(&mut self, end: usize, next_start: usize) -> Option<usize> {
        let &c = self.comments.get(self.next)?;
        let same_line = c.start >= end && !self.source[end..c.start].contains('\n');
        if !same_line || c.start >= next_start {
            return None;
        }
        self.out.pop(); // the newline
        self.out.push_str("  ");
        self.out.push_str(self.source[c.start..c.end].trim_end());
        self.out.push('\n');
        self.next += 1;
        Some(c.end)
    }

    /// One blank line where the source had at least one between `prev` and `start`.
    fn blank_if_gap(&mut self, prev: Option<usize>, start: usize) {
        let Some(prev) = prev.filter(|&p| p < start) else {
            return;
        };
        if self.source[prev..start].matches('\n').count() >= 2 {
            self.out.push('\n');
        }
    }

    fn line(&mut self, depth: usize, text: &str) {
        for _ in 0..depth {
            self.out.push_str(INDENT);
        }
        self.out.push_str(text);
        self.out.push('\n');
    }
}

/// A layer in the canonical layout, on one line; for `repeat`, its head
/// without the brace (document symbols use it too).
pub fn layer_text(kind: &LayerKind) -> String {
    match kind {
        LayerKind::Coupling { kind, args: a } => format!("coupling {}({})", kind.name, args(a)),
        LayerKind::Squeeze => "squeeze".into(),
        LayerKind::FactorOut { args: a } if a.is_empty() => "factor_out".into(),
        LayerKind::FactorOut { args: a } => format!("factor_out({})", args(a)),
        LayerKind::Logit { args: a } if a.is_empty() => "logit".into(),
        LayerKind::Logit { args: a } => format!("logit({})", args(a)),
        LayerKind::BatchNorm => "batchnorm".into(),
        LayerKind::ActNorm => "actnorm".into(),
        LayerKind::InvConv => "invconv".into(),
        LayerKind::Reverse => "reverse".into(),
        LayerKind::Repeat { count, .. } => format!("repeat {}", count.text),
        LayerKind::BlockCall { name, args } => {
            let words: Vec<&str> = args.iter().map(|i| i.name.as_str()).collect();
            call(&name.name, &words)
        }
    }
}

/// A prior declaration in the canonical layout: `prior normal`,
/// `prior normal(learned)`; an empty list stays (it is an error, not sugar).
pub fn prior_text(prior: &PriorDecl) -> String {
    match &prior.args {
        None => format!("prior {}", prior.dist.name),
        Some((values, _)) => {
            let words: Vec<String> = values.iter().map(crate::parse::print::value).collect();
            format!("prior {}({})", prior.dist.name, words.join(", "))
        }
    }
}

/// A net declaration in the canonical layout.
pub fn net_text(net: &NetDecl) -> String {
    format!(
        "net {} = {}({})",
        net.name.name,
        net.kind.name,
        args(&net.args)
    )
}

/// A block's head in the canonical layout, without the brace.
pub fn block_head(block: &BlockDecl) -> String {
    let params: Vec<&str> = block.params.iter().map(|i| i.name.as_str()).collect();
    format!("block {}", call(&block.name.name, &params))
}

pub fn shape_text(shape: &ShapeDecl) -> String {
    match shape {
        ShapeDecl::Image { c, h, w } => format!("image({}, {}, {})", c.text, h.text, w.text),
        ShapeDecl::Vector { d } => format!("vector({})", d.text),
    }
}

/// `name` or `name(a, b)`: empty parentheses are left out (LANGUAGE.md allows
/// both for blocks without parameters).
fn call(name: &str, words: &[&str]) -> String {
    if words.is_empty() {
        name.to_string()
    } else {
        format!("{name}({})", words.join(", "))
    }
}
