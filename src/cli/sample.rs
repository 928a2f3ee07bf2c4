//! `flowc sample`: draws in batches of `--batch`, streamed to the output in
//! the format of its extension (see [`super::write`]).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use super::output;
use super::run::{fail, open_run};
use super::write::{self, Layout};
use super::{DeviceArg, EXIT_IO};
use crate::train;

#[derive(Clone, Debug)]
pub struct SampleArgs {
    pub n: usize,
    pub temperature: f64,
    pub out: Option<PathBuf>,
    pub seed: u64,
    pub plot: bool,
    /// `--class`: every sample of this class (a conditioned flow).
    pub class: Option<u32>,
    pub batch: usize,
    pub device: DeviceArg,
}

pub fn sample(run: &Path, a: &SampleArgs) -> ExitCode {
    let (device, loaded, state) = match open_run(run, a.device) {
        Ok(r) => r,
        Err(c) => return c,
    };
    let input = loaded.plan.input;
    let classes = match (loaded.plan.condition, a.class) {
        (None, None) => train::Classes::None,
        (None, Some(_)) => {
            return fail(
                "--class: this flow has no condition (`given class(K)`)",
                EXIT_IO,
            )
        }
        (Some(c), Some(k)) if k >= c.classes => {
            let msg = format!(
                "--class {k}: the flow is given class({}), so 0..={}",
                c.classes,
                c.classes - 1
            );
            return fail(msg, EXIT_IO);
        }
        (Some(_), Some(k)) => train::Classes::All(k),
        (Some(c), None) => train::Classes::Rows {
            per_row: a.n.div_ceil(c.classes as usize),
        },
    };
    if a.plot && loaded.plan.condition.is_some() {
        return fail(
            "--plot draws an unconditioned 2-D flow's density; this flow is conditioned",
            EXIT_IO,
        );
    }
    let layout = Layout {
        input,
        leading: vec![a.n],
        // A conditioned flow's grid: a row per class.
        cols: match classes {
            train::Classes::Rows { per_row } => Some(per_row),
            train::Classes::None | train::Classes::All(_) => None,
        },
    };
    let default = if input.is_image() {
        "samples.png"
    } else {
        "samples.csv"
    };
    let (path, format) = match write::destination(a.out.clone(), default, &layout, run) {
        Ok(d) => d,
        Err(e) => return fail(e, EXIT_IO),
    };
    let plot_path = path.as_ref().map(|p| p.with_extension("density.png"));
    if a.plot {
        if input.is_image() || input.size() != 2 {
            return fail(
                format!("--plot draws 2-D flows; this flow's input is {input}"),
                EXIT_IO,
            );
        }
        let Some(p) = &plot_path else {
            return fail(
                "--plot writes NAME.density.png beside the samples; give -o a file, not -",
                EXIT_IO,
            );
        };
        if let Err(e) = output::refuse_run_file(p, run) {
            return fail(e, EXIT_IO);
        }
    }
    let produce = |range: std::ops::Range<usize>| {
        let first = range.start;
        let values: Vec<f32> =
            train::sample_range(&loaded.flow, range, classes, a.temperature, a.seed, &device)
                .and_then(|x| x.flatten_all()?.to_vec1())
                .map_err(|e| e.to_string())?;
        match values.iter().position(|v| !v.is_finite()) {
            Some(bad) => Err(format!(
                "sample {} is not finite (the inverse overflowed at temperature {}); the output was not completed; try a lower --temperature",
                first + bad / input.size() as usize,
                a.temperature
            )),
            None => Ok(values),
        }
    };
    match write::write_rows(path.as_deref(), format, &layout, a.batch, produce) {
        Ok(Some(where_)) => eprintln!(
            "wrote {} samples at temperature {} to {where_}",
            a.n, a.temperature
        ),
        Ok(None) => return ExitCode::SUCCESS,
        Err(code) => return code,
    }
    match plot_path.filter(|_| a.plot) {
        Some(p) => super::run::plot(&loaded, &state, &p, &device),
        None => ExitCode::SUCCESS,
    }
}
