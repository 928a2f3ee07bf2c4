//! flowc: a compiler for normalizing flows.
//!
//! A `.flow` program goes through these stages, each a module with its own
//! types (see ARCHITECTURE.md):
//! [`parse`] -> [`resolve`] -> [`graph`] -> [`verify`] -> [`report`] (each
//! layer kind defined once, in [`layers`]),
//! then [`lower`] (to a [`plan::Plan`]) -> [`exec`] (candle).

pub mod bench;
pub mod cli;
pub mod data;
pub mod diag;
pub mod downsize;
pub mod exec;
pub mod fmt;
pub mod graph;
pub mod infer;
pub mod ir;
pub mod layers;
pub mod lower;
pub mod lsp;
pub mod parse;
pub mod plan;
pub mod report;
pub mod resolve;
pub mod shape;
pub mod span;
pub mod train;
pub mod verify;

pub use diag::{Code, Diagnostic, Diagnostics};
pub use graph::FlowGraph;
pub use shape::Shape;
pub use verify::VerifiedFlow;

/// Everything `flowc check` learns about a program.
#[derive(Debug)]
pub struct CheckOutput {
    /// The syntax tree, whenever the text has the shape of a flow (editors
    /// map positions to names and layers through it).
    pub program: Option<parse::ast::Program>,
    /// The graph, whenever the text parsed far enough to build one.
    pub graph: Option<FlowGraph>,
    /// The verified flow, when there is no error.
    pub verified: Option<VerifiedFlow>,
    pub diagnostics: Diagnostics,
}

impl CheckOutput {
    pub fn ok(&self) -> bool {
        self.verified.is_some() && !self.diagnostics.has_errors()
    }
}

/// Checks and compiles a source text through every pass: the library entry
/// point that the CLI and examples share. Errors come back as diagnostics.
pub fn compile(source: &str) -> Result<plan::Plan, Diagnostics> {
    let out = check(source);
    match out.verified {
        Some(v) if !out.diagnostics.has_errors() => Ok(lower::compile(&v, lower::Pass::Schedule)),
        _ => Err(out.diagnostics),
    }
}

/// Runs every checking stage on a source text, collecting all diagnostics.
pub fn check(source: &str) -> CheckOutput {
    let (program, found) = parse::parse(source);
    finish(
        program,
        Diagnostics::from_stage(found, diag::Kind::Parse),
        source,
    )
}

/// As [`check`], for the raw bytes of a file (which may not be UTF-8).
pub fn check_bytes(bytes: &[u8]) -> CheckOutput {
    let (program, found) = parse::parse_bytes(bytes);
    let diags = Diagnostics::from_stage(found, diag::Kind::Parse);
    finish(program, diags, &String::from_utf8_lossy(bytes))
}

fn finish(
    program: Option<parse::ast::Program>,
    mut diags: Diagnostics,
    source: &str,
) -> CheckOutput {
    let Some(program) = program else {
        return CheckOutput {
            program: None,
            graph: None,
            verified: None,
            diagnostics: diags,
        };
    };
    let (mut resolved, resolve_diags) = resolve::resolve(&program);
    // Flow-wide checks wait until the program as written is whole.
    resolved.incomplete |= diags.has_errors();
    diags.extend(Diagnostics::from_stage(resolve_diags, diag::Kind::Resolve));
    let graph = graph::build(resolved);
    let (mut verified, verify_diags) = verify::verify(graph.clone(), source);
    diags.extend(Diagnostics::from_stage(verify_diags, diag::Kind::Verify));
    diags.sort_and_dedup();
    if diags.has_errors() {
        verified = None;
    }
    CheckOutput {
        program: Some(program),
        graph: Some(graph),
        verified,
        diagnostics: diags,
    }
}
