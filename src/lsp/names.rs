//! Where the program defines and uses its nets, blocks and block parameters,
//! from the syntax tree: go to definition, find references and the hover of
//! a name all start here.

use std::collections::HashMap;

use crate::parse::ast::{Arg, Form, Layer, Program, Value};
use crate::span::Span;

/// What a name refers to. Nets and blocks have separate namespaces, and a
/// block parameter shadows a net inside its block (ARCHITECTURE.md).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    Net(String),
    Block(String),
    /// Parameter `name` of block number `block` (in `Program::blocks`).
    Param {
        block: usize,
        name: String,
    },
}

/// One place a name is written.
#[derive(Clone, Debug)]
pub struct Occurrence {
    pub target: Target,
    pub span: Span,
    /// Whether this is the name's declaration.
    pub declares: bool,
}

pub struct Names {
    pub occurrences: Vec<Occurrence>,
}

impl Names {
    pub fn new(program: &Program) -> Names {
        let mut names = Names {
            occurrences: vec![],
        };
        for net in &program.nets {
            names.push(Target::Net(net.name.name.clone()), net.name.span, true);
        }
        for (k, block) in program.blocks.iter().enumerate() {
            names.push(
                Target::Block(block.name.name.clone()),
                block.name.span,
                true,
            );
            for p in &block.params {
                let target = Target::Param {
                    block: k,
                    name: p.name.clone(),
                };
                names.push(target, p.span, true);
            }
            let params: Vec<&str> = block.params.iter().map(|p| p.name.as_str()).collect();
            names.layers(&block.body, Some((k, &params)));
        }
        names.layers(&program.layers, None);
        names.occurrences.sort_by_key(|o| o.span.start);
        names
    }

    fn push(&mut self, target: Target, span: Span, declares: bool) {
        self.occurrences.push(Occurrence {
            target,
            span,
            declares,
        });
    }

    /// Net uses in layers; `scope` is the enclosing block and its parameters.
    fn layers(&mut self, layers: &[Layer], scope: Option<(usize, &[&str])>) {
        for layer in layers {
            match layer.kind.form() {
                Form::Primitive { args } => self.net_args(args, scope),
                Form::Repeat { body, .. } => self.layers(body, scope),
                Form::Call { name, args } => {
                    self.push(Target::Block(name.name.clone()), name.span, false);
                    for a in args {
                        self.push(net_or_param(&a.name, scope), a.span, false);
                    }
                }
            }
        }
    }

    fn net_args(&mut self, args: &[Arg], scope: Option<(usize, &[&str])>) {
        for arg in args.iter().filter(|a| a.key.name == "net") {
            if let Value::Name(id) = &arg.value {
                self.push(net_or_param(&id.name, scope), id.span, false);
            }
        }
    }

    /// The name written at a byte offset (a cursor just after a name is on it).
    pub fn at(&self, offset: usize) -> Option<&Occurrence> {
        self.occurrences
            .iter()
            .find(|o| o.span.start <= offset && offset <= o.span.end)
    }

    /// Where a name is declared: the first declaration, the one the
    /// resolver keeps when a name is declared twice.
    pub fn declaration(&self, target: &Target) -> Option<&Occurrence> {
        self.occurrences
            .iter()
            .find(|o| o.declares && &o.target == target)
    }

    pub fn references<'a>(&'a self, target: &'a Target) -> impl Iterator<Item = &'a Occurrence> {
        self.occurrences.iter().filter(move |o| &o.target == target)
    }
}

fn net_or_param(name: &str, scope: Option<(usize, &[&str])>) -> Target {
    match scope {
        Some((block, params)) if params.contains(&name) => Target::Param {
            block,
            name: name.to_string(),
        },
        _ => Target::Net(name.to_string()),
    }
}

/// How many times each block is expanded in the flow (calls, times the
/// repeats around them, times the expansions of the block they are in);
/// `None` for blocks in a cycle or nested past the resolver's limit.
pub fn expansions(program: &Program) -> HashMap<String, Option<u128>> {
    let mut memo = HashMap::new();
    for block in &program.blocks {
        let n = count(program, &block.name.name, 0, &mut memo);
        memo.insert(block.name.name.clone(), n);
    }
    memo
}

fn count(
    program: &Program,
    block: &str,
    depth: usize,
    memo: &mut HashMap<String, Option<u128>>,
) -> Option<u128> {
    if let Some(&n) = memo.get(block) {
        return n;
    }
    if depth > crate::resolve::MAX_EXPANSION_DEPTH {
        return None;
    }
    // In progress: a call back to it is a cycle (and each block is walked once).
    memo.insert(block.to_string(), None);
    let mut total = calls(&program.layers, block, 1);
    for caller in &program.blocks {
        let here = calls(&caller.body, block, 1);
        if here > 0 {
            let outer = count(program, &caller.name.name, depth + 1, memo)?;
            total = total.saturating_add(here.saturating_mul(outer));
        }
    }
    memo.insert(block.to_string(), Some(total));
    Some(total)
}

/// Calls of `block` in `layers`, each counted `times` times the repeats around it.
fn calls(layers: &[Layer], block: &str, times: u128) -> u128 {
    let mut n = 0u128;
    for layer in layers {
        match layer.kind.form() {
            Form::Call { name, .. } if name.name == block => n = n.saturating_add(times),
            Form::Repeat { count, body } => {
                let k = count.as_u64().unwrap_or(0) as u128;
                n = n.saturating_add(calls(body, block, times.saturating_mul(k)));
            }
            Form::Call { .. } | Form::Primitive { .. } => {}
        }
    }
    n
}
