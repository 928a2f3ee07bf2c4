//! Completion from the text before the cursor on its line: after `mask =`
//! the masks, after `net =` the nets in scope, inside `resnet(`, `mlp(`,
//! `logit(`, `factor_out(` or a coupling's parentheses their argument names with the ranges
//! `check` enforces, after `coupling` its kinds, and at the start of a line
//! the layer keywords, declarations and the blocks of the program.

use lsp_types::{CompletionItem, CompletionItemKind};

use crate::parse::ast::Program;
use crate::resolve::MAX_NET_ARG;

use super::analysis::Analysis;
use super::position::floor_char_boundary;

const LAYERS: &[(&str, &str)] = &[
    (
        "coupling",
        "coupling affine(mask = M, net = N), additive(...) or spline(..., bins = n, bound = B)",
    ),
    ("squeeze", "image C x H x W -> 4C x H/2 x W/2"),
    (
        "factor_out",
        "the first half of the channels (features) leave as a latent; factor_out(net = N): modelled given the rest (Glow's split prior)",
    ),
    ("logit", "logit(alpha = A): [0,1) to the real line"),
    ("batchnorm", "per-channel normalization as a bijection"),
    ("actnorm", "per-channel affine, data-initialized (Glow)"),
    ("invconv", "invertible 1x1 convolution (Glow), images"),
    ("reverse", "reverse the order of channels (features)"),
    ("repeat", "repeat K { LAYER* }: the layers, K times"),
];

const DECLARATIONS: &[(&str, &str)] = &[
    ("input", "input image(C, H, W) or input vector(D)"),
    (
        "prior",
        "prior normal, prior logistic or prior normal(learned)",
    ),
    (
        "net",
        "net NAME = resnet(...) or mlp(...): a conditioner template",
    ),
    (
        "block",
        "block NAME(p1, ...) { LAYER* }: a reusable layer sequence",
    ),
];

const MASKS: &[(&str, &str)] = &[
    ("checkerboard(even)", "image: keeps pixels with h + w even"),
    ("checkerboard(odd)", "image: keeps pixels with h + w odd"),
    (
        "channel(even)",
        "image, even C: keeps the first half of the channels",
    ),
    (
        "channel(odd)",
        "image, even C: keeps the second half of the channels",
    ),
    (
        "alternate(even)",
        "vector: keeps the features with even index",
    ),
    (
        "alternate(odd)",
        "vector: keeps the features with odd index",
    ),
    ("half(even)", "vector: keeps the first floor(D/2) features"),
    ("half(odd)", "vector: keeps the other features"),
];

const NET_KINDS: &[(&str, &str)] = &[
    (
        "resnet(blocks = 8, features = 64)",
        "image flows: residual conv net",
    ),
    (
        "mlp(hidden = 64, layers = 2)",
        "vector flows: multilayer perceptron",
    ),
];

/// Completions at `offset`; `program` is the document's syntax tree, or the
/// last one it had while its text does not parse.
pub fn complete(a: &Analysis, program: Option<&Program>, offset: usize) -> Vec<CompletionItem> {
    let offset = floor_char_boundary(&a.text, offset.min(a.text.len()));
    let line_start = a.text[..offset].rfind(['\n', '\r']).map_or(0, |i| i + 1);
    let line = &a.text[line_start..offset];
    if line.contains('#') {
        return vec![]; // in a comment
    }
    // What is typed of the current word does not change the context.
    let before = line.trim_end_matches(|c: char| c.is_ascii_alphanumeric() || c == '_');
    let words: Vec<&str> = before
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '=' || c == '('))
        .filter(|w| !w.is_empty())
        .collect();
    let trimmed = before.trim_end();
    if let Some(key) = trimmed.strip_suffix('=').map(last_word) {
        return value_of(program, key, words.first() == Some(&"net"), line_start);
    }
    match words.last().copied() {
        Some("coupling") if trimmed.ends_with("coupling") => {
            let kinds = [
                ("affine", "y = b*x + (1-b)*(x*exp(s) + t)"),
                ("additive", "as affine with s = 0 (NICE)"),
                (
                    "spline",
                    "monotone rational-quadratic spline on [-B, B] (Neural Spline Flows)",
                ),
            ];
            return items(&kinds, CompletionItemKind::ENUM_MEMBER);
        }
        Some("prior") if trimmed.ends_with("prior") => {
            let priors = [
                ("normal", "standard normal"),
                ("logistic", "standard logistic (NICE)"),
                (
                    "normal(learned)",
                    "N(m, exp(s)^2), learned m and s per channel (feature)",
                ),
            ];
            return items(&priors, CompletionItemKind::ENUM_MEMBER);
        }
        Some("input") if trimmed.ends_with("input") => {
            let shapes = [
                (
                    "image(3, 32, 32)",
                    "image(C, H, W): 8-bit pixels, channels first",
                ),
                ("vector(2)", "vector(D): real vectors"),
            ];
            return items(&shapes, CompletionItemKind::STRUCT);
        }
        _ => {}
    }
    if let Some(call) = open_call(before) {
        if trimmed.ends_with('(') || trimmed.ends_with(',') {
            return arguments(call, trimmed);
        }
        return vec![];
    }
    if trimmed.is_empty() || trimmed.ends_with('{') || trimmed.ends_with('}') {
        let mut all = items(LAYERS, CompletionItemKind::KEYWORD);
        all.extend(items(DECLARATIONS, CompletionItemKind::KEYWORD));
        all.extend(program.map(blocks).unwrap_or_default());
        return all;
    }
    vec![]
}

/// Values after `key =`; `declaring` when the line is `net NAME =`.
fn value_of(
    program: Option<&Program>,
    key: &str,
    declaring: bool,
    line_start: usize,
) -> Vec<CompletionItem> {
    match key {
        "mask" => items(MASKS, CompletionItemKind::ENUM_MEMBER),
        "net" => program.map(|p| nets(p, line_start)).unwrap_or_default(),
        _ if declaring => items(NET_KINDS, CompletionItemKind::CLASS),
        _ => vec![],
    }
}

/// The nets a `net = ` at `at` may name: the program's, and the parameters
/// of the block it is written in.
fn nets(p: &Program, at: usize) -> Vec<CompletionItem> {
    let mut out: Vec<CompletionItem> = p
        .nets
        .iter()
        .map(|n| {
            item(
                &n.name.name,
                &crate::fmt::net_text(n),
                CompletionItemKind::VARIABLE,
            )
        })
        .collect();
    for b in p
        .blocks
        .iter()
        .filter(|b| b.span.start <= at && at <= b.span.end)
    {
        for param in &b.params {
            let detail = format!("net parameter of block {}", b.name.name);
            out.push(item(&param.name, &detail, CompletionItemKind::VARIABLE));
        }
    }
    out
}

fn blocks(p: &Program) -> Vec<CompletionItem> {
    p.blocks
        .iter()
        .map(|b| {
            item(
                &b.name.name,
                &crate::fmt::block_head(b),
                CompletionItemKind::FUNCTION,
            )
        })
        .collect()
}

/// The argument names of the call whose parentheses are open.
fn arguments(call: &str, trimmed: &str) -> Vec<CompletionItem> {
    let ints = format!("integer, 1 ..= {MAX_NET_ARG}");
    let args: Vec<(&str, &str)> = match call {
        "resnet" => vec![("blocks", &ints), ("features", &ints)],
        "mlp" => vec![("hidden", &ints), ("layers", &ints)],
        "logit" => vec![("alpha", "number, 0 < alpha < 0.5")],
        "factor_out" => vec![(
            "net",
            "a net declared with `net`, or a block parameter: (m, s) = N(rest)",
        )],
        "affine" | "additive" if trimmed.contains("coupling") => vec![
            (
                "mask",
                "checkerboard/channel (images), alternate/half (vectors), (even) or (odd)",
            ),
            ("net", "a net declared with `net`, or a block parameter"),
        ],
        "spline" if trimmed.contains("coupling") => vec![
            (
                "mask",
                "checkerboard/channel (images), alternate/half (vectors), (even) or (odd)",
            ),
            ("net", "a net declared with `net`, or a block parameter"),
            ("bins", "integer, 2 ..= 999 (default 8)"),
            (
                "bound",
                "number > 0, the spline's interval [-B, B] (default 3)",
            ),
        ],
        "checkerboard" | "channel" | "alternate" | "half" => {
            return items(
                &[("even", "parity"), ("odd", "parity")],
                CompletionItemKind::ENUM_MEMBER,
            )
        }
        _ => vec![],
    };
    args.into_iter()
        .map(|(name, range)| {
            let mut it = item(name, range, CompletionItemKind::FIELD);
            it.insert_text = Some(format!("{name} = "));
            it
        })
        .collect()
}

/// The word before the innermost `(` still open in `text`.
fn open_call(text: &str) -> Option<&str> {
    let mut depth = 0i32;
    for (i, c) in text.char_indices().rev() {
        match c {
            ')' => depth += 1,
            '(' if depth == 0 => return Some(last_word(&text[..i])),
            '(' => depth -= 1,
            _ => {}
        }
    }
    None
}

fn last_word(text: &str) -> &str {
    let t = text.trim_end();
    let start = t
        .char_indices()
        .rev()
        .find(|(_, c)| !(c.is_ascii_alphanumeric() || *c == '_'))
        .map_or(0, |(i, c)| i + c.len_utf8());
    &t[start..]
}

fn items(list: &[(&str, &str)], kind: CompletionItemKind) -> Vec<CompletionItem> {
    list.iter()
        .map(|(label, detail)| item(label, detail, kind))
        .collect()
}

fn item(label: &str, detail: &str, kind: CompletionItemKind) -> CompletionItem {
    CompletionItem {
        label: label.to_string(),
        kind: Some(kind),
        detail: Some(detail.to_string()),
        ..CompletionItem::default()
    }
}
