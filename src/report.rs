//! Stage 5, report: what `flowc check` prints, as a table or as the JSON
//! object of LANGUAGE.md.

use serde::Serialize;

use crate::diag::{line_col, Diagnostics, Severity};
use crate::graph::{describe, FlowGraph};
use crate::ir::Prior;
use crate::layers::LatentModel;
use crate::shape::Shape;
use crate::verify::{LineIndex, VerifiedFlow};
use crate::CheckOutput;

/// The JSON object of `flowc check --format json`.
#[derive(Debug, Serialize)]
pub struct CheckJson {
    pub ok: bool,
    pub flow: Option<String>,
    pub input: Option<Shape>,
    /// `{"class": K}` for a flow with a valid `given class(K)`, else null.
    pub condition: Option<crate::ir::Condition>,
    pub latents: Vec<Option<Shape>>,
    /// Total parameters; `null` unless the flow verified.
    pub parameters: Option<u128>,
    pub layers: Vec<LayerJson>,
    pub diagnostics: Vec<DiagnosticJson>,
    /// Filled in by `--numeric`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub numeric: Option<serde_json::Value>,
}

#[derive(Debug, Serialize)]
pub struct LayerJson {
    pub op: &'static str,
    #[serde(rename = "in")]
    pub input: Option<Shape>,
    pub out: Option<Shape>,
    pub line: usize,
    /// Extensions beyond LANGUAGE.md: the layer in words, its parameters, its latent.
    pub layer: String,
    pub parameters: Option<u128>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latent: Option<usize>,
}

#[derive(Debug, Serialize)]
pub struct DiagnosticJson {
    pub severity: Severity,
    pub code: String,
    pub message: String,
    pub line: usize,
    pub column: usize,
}

pub fn check_json(out: &CheckOutput, source: &str) -> CheckJson {
    let lines = LineIndex::new(source);
    let graph = out.graph.as_ref();
    let verified = out.verified.as_ref();
    let layers = match graph {
        Some(g) => (0..g.resolved.layers.len())
            .map(|i| {
                let l = &g.resolved.layers[i];
                LayerJson {
                    op: l.op.keyword(),
                    input: g.input_shape(i),
                    out: g.output_shape(i),
                    line: lines.line(l.span.start),
                    layer: describe(&g.resolved, i),
                    parameters: verified.map(|v| v.layers[i].parameters),
                    latent: g.latent_of(i),
                }
            })
            .collect(),
        None => vec![],
    };
    let diagnostics = out
        .diagnostics
        .iter()
        .map(|d| {
            let (line, column) = line_col(source, d.span.start);
            DiagnosticJson {
                severity: d.severity,
                code: d.code().to_string(),
                message: d.kind.message(),
                line,
                column,
            }
        })
        .collect();
    CheckJson {
        ok: !out.diagnostics.has_errors() && verified.is_some(),
        flow: graph.map(|g| g.resolved.name.clone()),
        input: graph.and_then(|g| g.resolved.input),
        condition: graph.and_then(|g| g.resolved.condition),
        latents: graph.map(FlowGraph::latent_shapes).unwrap_or_default(),
        parameters: verified.map(|v| v.parameters),
        layers,
        diagnostics,
        numeric: None,
    }
}

/// Groups digits for people: 1234567 -> 1,234,567.
pub fn thousands(n: u128) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, ch) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

/// The table `flowc check` prints for a verified flow.
pub fn check_table(v: &VerifiedFlow) -> String {
    let g = &v.graph;
    let prior = v.prior.as_str();
    let kind = if v.input.is_image() {
        "image"
    } else {
        "vector"
    };
    let mut rows: Vec<[String; 6]> = vec![[
        "#".into(),
        "layer".into(),
        "in".into(),
        "out".into(),
        "params".into(),
        "latent".into(),
    ]];
    for (i, l) in v.layers.iter().enumerate() {
        let latent = l
            .latent
            .map(|k| format!("z{k}: {}", v.latents[k]))
            .unwrap_or_default();
        rows.push([
            i.to_string(),
            describe(&g.resolved, i),
            l.input.to_string(),
            l.output.to_string(),
            thousands(l.parameters),
            latent,
        ]);
    }
    // Padded by hand: a format width (`{:<w$}`) panics past 65,535, and a
    // net's name may be longer.
    let widths: Vec<usize> = (0..6)
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap())
        .collect();
    let given = match g.resolved.condition {
        Some(c) => format!(" given class({})", c.classes),
        None => String::new(),
    };
    let mut out = format!(
        "flow {}: {kind} {}{given} -> {} latent{}, prior {prior}\n\n",
        v.name,
        v.input,
        v.latents.len(),
        if v.latents.len() == 1 { "" } else { "s" }
    );
    for row in &rows {
        let mut line = String::new();
        for (c, cell) in row.iter().enumerate() {
            // Numbers right-aligned, words left-aligned.
            let fill = " ".repeat(widths[c] - cell.chars().count());
            if c == 0 || c == 4 {
                line.push_str(&fill);
                line.push_str(cell);
            } else {
                line.push_str(cell);
                line.push_str(&fill);
            }
            line.push_str("  ");
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out.push_str("\nlatents\n");
    for (k, z) in v.latents.iter().enumerate() {
        let line = format!(
            "  z{k}  {z:<12} {:>10} values  {}",
            thousands(z.size()),
            latent_model(v, k)
        );
        out.push_str(line.trim_end());
        out.push('\n');
    }
    let sizes: Vec<String> = v.latents.iter().map(|z| z.size().to_string()).collect();
    let total: u128 = v.latents.iter().map(Shape::size).sum();
    out.push_str(&format!("\nparameters: {}\n", thousands(v.parameters)));
    out.push_str(&format!(
        "dimensions: latents {} = {} = input {} ({})\n",
        sizes.join(" + "),
        total,
        v.input.size(),
        v.input
    ));
    out
}

/// What models latent `k`, where it is more than a fixed prior: the learned
/// prior (with its parameters) or the `factor_out` layer's net.
fn latent_model(v: &VerifiedFlow, k: usize) -> String {
    match v.latent_models[k] {
        LatentModel::Own => {
            let layer = v.layers.iter().position(|l| l.latent == Some(k));
            format!("split prior, layer {}", layer.expect("a layer emits it"))
        }
        LatentModel::Prior if v.prior == Prior::LearnedNormal => format!(
            "learned prior, {} parameters",
            thousands(v.prior_parameters(k))
        ),
        LatentModel::Prior => String::new(),
    }
}

/// A one-line summary after the diagnostics of a failed check.
pub fn summary(d: &Diagnostics) -> String {
    let errors = d.iter().filter(|d| d.severity == Severity::Error).count();
    let warnings = d.len() - errors;
    let plural = |n: usize, w: &str| format!("{n} {w}{}", if n == 1 { "" } else { "s" });
    format!(
        "{}, {}",
        plural(errors, "error"),
        plural(warnings, "warning")
    )
}
