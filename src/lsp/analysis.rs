//! One open document as the front end sees it: `flowc check`'s output for
//! its text, plus what the editor features look up in it (line starts,
//! names, the written layer at a position and the expanded layers it became).

use crate::parse::ast::{Form, Layer, Program};
use crate::span::Span;
use crate::{CheckOutput, FlowGraph};

use super::names::Names;
use super::position::Lines;

pub struct Analysis {
    pub text: String,
    pub lines: Lines,
    pub check: CheckOutput,
    /// Empty where the text has no syntax tree.
    pub names: Names,
}

impl Analysis {
    pub fn new(text: String) -> Analysis {
        let check = crate::check(&text);
        let names = check.program.as_ref().map_or(
            Names {
                occurrences: vec![],
            },
            Names::new,
        );
        Analysis {
            lines: Lines::new(&text),
            text,
            check,
            names,
        }
    }

    pub fn program(&self) -> Option<&Program> {
        self.check.program.as_ref()
    }

    pub fn graph(&self) -> Option<&FlowGraph> {
        self.check.graph.as_ref()
    }

    /// The innermost written layer at a byte offset (in a block or in the flow).
    pub fn layer_at(&self, offset: usize) -> Option<&Layer> {
        let p = self.program()?;
        let bodies = p.blocks.iter().map(|b| &b.body).chain([&p.layers]);
        bodies.flat_map(|b| innermost(b, offset)).next()
    }

    /// The expanded layers (indices into the resolved flow) that a written
    /// layer became, in runs: one run per expansion of what it is in.
    pub fn expansions_of(&self, layer: &Layer) -> Vec<Vec<usize>> {
        let Some(g) = self.graph() else {
            return vec![];
        };
        let inside = |s: &Span| layer.span.start <= s.start && s.end <= layer.span.end;
        let mut runs: Vec<Vec<usize>> = vec![];
        let mut last: Option<(usize, &Vec<Span>)> = None;
        for (i, l) in g.resolved.layers.iter().enumerate() {
            let (covered, composite) = match layer.kind.form() {
                // Its own layers, and those of the calls written inside it.
                Form::Repeat { .. } | Form::Call { .. } => {
                    (inside(&l.span) || l.expanded_from.iter().any(inside), true)
                }
                Form::Primitive { .. } => (l.span == layer.span, false),
            };
            if !covered {
                continue;
            }
            // Only the calls outside the written layer tell expansions apart.
            let context = &l.expanded_from;
            let continues = composite
                && matches!(last, Some((j, c)) if j + 1 == i && same_outer(c, context, &inside));
            match runs.last_mut() {
                Some(run) if continues => run.push(i),
                _ => runs.push(vec![i]),
            }
            last = Some((i, context));
        }
        runs
    }
}

/// Whether two layers came through the same calls outside the written layer.
fn same_outer(a: &[Span], b: &[Span], inside: &impl Fn(&Span) -> bool) -> bool {
    let outer = |v: &[Span]| v.iter().filter(|s| !inside(s)).copied().collect::<Vec<_>>();
    outer(a) == outer(b)
}

fn innermost(layers: &[Layer], offset: usize) -> Option<&Layer> {
    let layer = layers
        .iter()
        .find(|l| l.span.start <= offset && offset <= l.span.end)?;
    match layer.kind.form() {
        Form::Repeat { body, .. } => innermost(body, offset).or(Some(layer)),
        Form::Primitive { .. } | Form::Call { .. } => Some(layer),
    }
}
