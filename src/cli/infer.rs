//! The commands that use a trained run: `complete`, `encode`, `decode`,
//! `interpolate`, `score` (see [`crate::infer`]; this file only reads the
//! arguments and writes the results).

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use candle_core::Tensor;

use super::run::{fail, open_unconditioned_run};
use super::write::{self, Layout};
use super::{DeviceArg, EXIT_ERRORS, EXIT_IO};
use crate::data::Examples;
use crate::infer::{self, complete::Method};
use crate::shape::Shape;
use crate::train::{self, TrainError};

fn failed(e: TrainError) -> ExitCode {
    fail(&e, e.exit_status())
}

/// A progress bar on a terminal (hidden elsewhere).
pub(super) fn bar(len: usize, what: &str) -> indicatif::ProgressBar {
    if !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let b = indicatif::ProgressBar::new(len as u64);
    let style = indicatif::ProgressStyle::with_template(
        "{bar:30} {pos}/{len} {msg} [{elapsed_precise} < {eta_precise}]",
    )
    .expect("valid template");
    b.set_style(style);
    b.set_message(what.to_string());
    b
}

/// Rows `range` of `values` (`size` values a row).
fn rows(values: &[f32], range: std::ops::Range<usize>, size: usize) -> Result<Vec<f32>, String> {
    Ok(values[range.start * size..range.end * size].to_vec())
}

/// Writes `layout.rows()` rows held in `values`; prints `what` and where.
fn write_all(
    out: Option<PathBuf>,
    default: &str,
    layout: &Layout,
    run: &Path,
    values: &[f32],
    what: &str,
) -> ExitCode {
    let (path, format) = match write::destination(out, default, layout, run) {
        Ok(d) => d,
        Err(e) => return fail(e, EXIT_IO),
    };
    let size = layout.input.size() as usize;
    match write::write_rows(path.as_deref(), format, layout, 256, |r| {
        rows(values, r, size)
    }) {
        Ok(Some(where_)) => {
            eprintln!("wrote {what} to {where_}");
            ExitCode::SUCCESS
        }
        Ok(None) => ExitCode::SUCCESS,
        Err(code) => code,
    }
}

#[derive(Clone, Debug)]
pub struct CompleteArgs {
    pub input: PathBuf,
    pub mask: String,
    pub out: Option<PathBuf>,
    pub grid: Option<PathBuf>,
    pub method: Method,
    pub steps: usize,
    pub lr: f64,
    pub seed: u64,
    pub batch: usize,
    pub device: DeviceArg,
}

/// Inputs, their mask and their completions, in the flow's space.
struct Completed {
    shape: Shape,
    n: usize,
    chains: usize,
    x: Vec<f32>,
    observed: Vec<bool>,
    values: Vec<f32>,
}

pub fn complete(run: &Path, a: &CompleteArgs) -> ExitCode {
    let (device, loaded, _) = match open_unconditioned_run(run, a.device) {
        Ok(r) => r,
        Err(c) => return c,
    };
    let shape = loaded.plan.input;
    let read = infer::input::read_examples(&a.input, shape).and_then(|ex| {
        let mask = infer::input::read_mask(&a.mask, ex.len(), shape, a.seed)?;
        Ok((ex, mask))
    });
    let (ex, observed) = match read {
        Ok(r) => r,
        Err(e) => return failed(e),
    };
    let x: Vec<f32> =
        match infer::input::to_tensor(&ex, &device).and_then(|t| t.flatten_all()?.to_vec1()) {
            Ok(v) => v,
            Err(e) => return fail(e, EXIT_ERRORS),
        };
    let missing = observed.iter().filter(|o| !**o).count();
    if missing == 0 {
        eprintln!("warning: the mask observes every value: nothing to complete; the input comes back as it is");
    } else if missing == observed.len() {
        eprintln!("warning: the mask observes nothing: the completions are samples of the flow");
    }
    let (values, loglik, accept) = match in_batches(&loaded.flow, &x, &observed, a, &device) {
        Ok(r) => r,
        Err(e) => return fail(e, EXIT_ERRORS),
    };
    let chains = match a.method {
        Method::Map => 1,
        Method::Sample { chains } => chains,
    };
    report_completion(&loglik, &accept, chains);
    let mut c = Completed {
        shape,
        n: ex.len(),
        chains,
        x,
        observed,
        values,
    };
    c.restore_observed();
    if let Some(Err(code)) = a.grid.as_ref().map(|g| c.grid(g, run)) {
        return code;
    }
    let png = a
        .out
        .as_ref()
        .and_then(|p| p.extension())
        .is_some_and(|e| e == "png");
    if let (true, Some(out)) = (png && shape.is_image(), &a.out) {
        return c.grid(out, run).err().unwrap_or(ExitCode::SUCCESS);
    }
    let leading = match a.method {
        Method::Map => vec![c.n],
        Method::Sample { .. } => vec![c.n, chains],
    };
    let what = format!("{} completion(s) of {} input(s)", c.n * chains, c.n);
    write_all(
        a.out.clone(),
        "completions.npy",
        &Layout {
            input: shape,
            leading,
            cols: None,
        },
        run,
        &c.values,
        &what,
    )
}

/// The completions of `--batch` inputs at a time: values, log-likelihoods, acceptance rates.
fn in_batches(
    flow: &crate::exec::Flow,
    x: &[f32],
    observed: &[bool],
    a: &CompleteArgs,
    device: &candle_core::Device,
) -> candle_core::Result<(Vec<f32>, Vec<f64>, Vec<f64>)> {
    let shape = flow.plan().input;
    let size = shape.size() as usize;
    let n = x.len() / size;
    let progress = bar(n.div_ceil(a.batch), "batches of inputs completed");
    let (mut values, mut loglik, mut accept) = (vec![], vec![], vec![]);
    for first in (0..n).step_by(a.batch) {
        let rows = first..(first + a.batch).min(n);
        let opts = infer::complete::Options {
            method: a.method,
            steps: a.steps,
            lr: a.lr,
            seed: a.seed ^ first as u64,
        };
        let span = rows.start * size..rows.end * size;
        let xs = Tensor::from_vec(
            x[span.clone()].to_vec(),
            batch_dims(rows.len(), shape),
            device,
        )?;
        let c = infer::complete::complete(flow, &xs, &observed[span], &opts, device)?;
        values.extend(c.values);
        loglik.extend(c.log_likelihood);
        accept.extend(c.acceptance);
        progress.inc(1);
    }
    progress.finish_and_clear();
    Ok((values, loglik, accept))
}

fn batch_dims(n: usize, shape: Shape) -> Vec<usize> {
    std::iter::once(n)
        .chain(shape.dims().iter().map(|&d| d as usize))
        .collect()
}

impl Completed {
    /// Observed values come back exactly as given (not through the flow's f32 arithmetic).
    fn restore_observed(&mut self) {
        let size = self.shape.size() as usize;
        for (r, row) in self.values.chunks_mut(size).enumerate() {
            let e = r / self.chains;
            for (i, v) in row.iter_mut().enumerate() {
                if self.observed[e * size + i] {
                    *v = self.x[e * size + i];
                }
            }
        }
    }

    /// Original, masked (missing values mid-grey) and the completions, one row per input.
    fn grid(&self, path: &Path, run: &Path) -> Result<(), ExitCode> {
        let size = self.shape.size() as usize;
        let cols = 2 + self.chains;
        let mut grid = Vec::with_capacity(self.n * cols * size);
        for e in 0..self.n {
            let original = &self.x[e * size..(e + 1) * size];
            let observed = &self.observed[e * size..(e + 1) * size];
            grid.extend_from_slice(original);
            grid.extend(
                original
                    .iter()
                    .zip(observed)
                    .map(|(&v, &o)| if o { v } else { 0.5 }),
            );
            grid.extend_from_slice(
                &self.values[e * self.chains * size..(e + 1) * self.chains * size],
            );
        }
        let layout = Layout {
            input: self.shape,
            leading: vec![self.n * cols],
            cols: Some(cols),
        };
        let what = "the grid of inputs, masked inputs and completions";
        match write_all(Some(path.to_path_buf()), "", &layout, run, &grid, what) {
            c if c == ExitCode::SUCCESS => Ok(()),
            c => Err(c),
        }
    }
}

fn report_completion(loglik: &[f64], accept: &[f64], chains: usize) {
    for (i, lp) in loglik.iter().enumerate().take(20) {
        eprintln!(
            "completion {i} (input {}): log p(x) = {lp:.3} nats",
            i / chains
        );
    }
    if loglik.len() > 20 {
        let mean = loglik.iter().sum::<f64>() / loglik.len() as f64;
        eprintln!(
            "... {} completions in all, mean log p(x) = {mean:.3} nats",
            loglik.len()
        );
    }
    if !accept.is_empty() {
        let mean = accept.iter().sum::<f64>() / accept.len() as f64;
        eprintln!("Langevin acceptance rate after adaptation: {mean:.3} (the step size adapts towards 0.574)");
    }
}

pub fn encode(
    run: &Path,
    input: &Path,
    out: Option<PathBuf>,
    batch: usize,
    dev: DeviceArg,
) -> ExitCode {
    let (device, loaded, _) = match open_unconditioned_run(run, dev) {
        Ok(r) => r,
        Err(c) => return c,
    };
    let shape = loaded.plan.input;
    let ex = match infer::input::read_examples(input, shape) {
        Ok(ex) => ex,
        Err(e) => return failed(e),
    };
    let d = shape.size();
    let layout = Layout {
        input: Shape::Vector { d: d as u64 },
        leading: vec![ex.len()],
        cols: None,
    };
    let (path, format) = match write::destination(out, "latents.npy", &layout, run) {
        Ok(p) => p,
        Err(e) => return fail(e, EXIT_IO),
    };
    let mut logdets: Vec<f32> = Vec::with_capacity(ex.len());
    let produce = |r: std::ops::Range<usize>| {
        let idx: Vec<usize> = r.collect();
        let (z, ld) = infer::input::to_tensor(&ex.select(&idx), &device)
            .and_then(|x| infer::latent::encode(&loaded.flow, &x))
            .map_err(|e| e.to_string())?;
        logdets.extend(ld.to_vec1::<f32>().map_err(|e| e.to_string())?);
        z.flatten_all()
            .and_then(|z| z.to_vec1())
            .map_err(|e| e.to_string())
    };
    let where_ = match write::write_rows(path.as_deref(), format, &layout, batch, produce) {
        Ok(Some(w)) => w,
        Ok(None) => return ExitCode::SUCCESS,
        Err(c) => return c,
    };
    eprintln!("wrote the latents of {} examples ({d} values each, in the plan's latent order) to {where_}", ex.len());
    let Some(path) = path else {
        return ExitCode::SUCCESS;
    };
    let ld_path = path.with_extension("logdet.npy");
    let ld_layout = Layout {
        input: Shape::Vector { d: 1 },
        leading: vec![logdets.len()],
        cols: None,
    };
    write_all(
        Some(ld_path),
        "",
        &ld_layout,
        run,
        &logdets,
        "log|det df/dx| per example",
    )
}

pub fn decode(
    run: &Path,
    input: &Path,
    out: Option<PathBuf>,
    batch: usize,
    dev: DeviceArg,
) -> ExitCode {
    let (device, loaded, _) = match open_unconditioned_run(run, dev) {
        Ok(r) => r,
        Err(c) => return c,
    };
    let shape = loaded.plan.input;
    let d = shape.size();
    let z = match infer::input::read_examples(input, Shape::Vector { d: d as u64 }) {
        Ok(Examples::Vectors { data, n, .. }) => (data, n),
        Ok(Examples::Images { .. }) => return fail("latents are float vectors", EXIT_IO),
        Err(e) => return failed(e),
    };
    let (z, n) = z;
    let layout = Layout {
        input: shape,
        leading: vec![n],
        cols: None,
    };
    let default = if shape.is_image() {
        "decoded.png"
    } else {
        "decoded.npy"
    };
    let (path, format) = match write::destination(out, default, &layout, run) {
        Ok(p) => p,
        Err(e) => return fail(e, EXIT_IO),
    };
    let produce = |r: std::ops::Range<usize>| {
        Tensor::from_vec(
            z[r.start * d as usize..r.end * d as usize].to_vec(),
            (r.len(), d as usize),
            &device,
        )
        .and_then(|z| infer::latent::decode(&loaded.flow, &z))
        .and_then(|x| x.flatten_all()?.to_vec1())
        .map_err(|e| e.to_string())
    };
    match write::write_rows(path.as_deref(), format, &layout, batch, produce) {
        Ok(Some(w)) => {
            eprintln!("wrote {n} decoded examples to {w}");
            ExitCode::SUCCESS
        }
        Ok(None) => ExitCode::SUCCESS,
        Err(c) => c,
    }
}

#[derive(Clone, Debug)]
pub struct InterpolateArgs {
    pub input: PathBuf,
    pub from: usize,
    pub to: usize,
    pub steps: usize,
    pub slerp: bool,
    pub out: Option<PathBuf>,
    pub device: DeviceArg,
}

pub fn interpolate(run: &Path, a: &InterpolateArgs) -> ExitCode {
    let (device, loaded, _) = match open_unconditioned_run(run, a.device) {
        Ok(r) => r,
        Err(c) => return c,
    };
    let shape = loaded.plan.input;
    let ex = match infer::input::read_examples(&a.input, shape) {
        Ok(ex) => ex,
        Err(e) => return failed(e),
    };
    for (flag, i) in [("--from", a.from), ("--to", a.to)] {
        if i >= ex.len() {
            return fail(
                format!(
                    "{flag} {i}: {} holds examples 0..{}",
                    a.input.display(),
                    ex.len() - 1
                ),
                EXIT_IO,
            );
        }
    }
    let one = |i: usize| infer::input::to_tensor(&ex.select(&[i]), &device);
    let path = one(a.from)
        .and_then(|xa| infer::latent::interpolate(&loaded.flow, &xa, &one(a.to)?, a.steps, a.slerp))
        .and_then(|x| x.flatten_all()?.to_vec1::<f32>());
    let values = match path {
        Ok(v) => v,
        Err(e) => return fail(e, EXIT_ERRORS),
    };
    let layout = Layout {
        input: shape,
        leading: vec![a.steps],
        cols: Some(a.steps),
    };
    let kind = if a.slerp { "spherical" } else { "linear" };
    let what = format!(
        "{} points of the {kind} path from example {} to {}",
        a.steps, a.from, a.to
    );
    write_all(
        a.out.clone(),
        "interpolation.png",
        &layout,
        run,
        &values,
        &what,
    )
}

#[derive(Clone, Debug)]
pub struct ScoreArgs {
    pub input: Option<PathBuf>,
    pub data: Option<super::DataArgs>,
    pub train_split: bool,
    pub importance: Option<usize>,
    pub out: Option<PathBuf>,
    pub batch: usize,
    pub device: DeviceArg,
}

pub fn score(run: &Path, a: &ScoreArgs) -> ExitCode {
    let (device, loaded, state) = match open_unconditioned_run(run, a.device) {
        Ok(r) => r,
        Err(c) => return c,
    };
    let shape = loaded.plan.input;
    let ex = match (&a.input, &a.data) {
        (Some(path), None) => match infer::input::read_examples(path, shape) {
            Ok(ex) => crate::data::Split::Memory(ex),
            Err(e) => return failed(e),
        },
        (None, Some(data)) => match super::run::load_data_for(data, state.seed, Some(shape)) {
            Ok(ds) => match train::check_data_shape(&ds, shape) {
                Ok(()) if a.train_split => ds.train,
                Ok(()) => ds.test,
                Err(e) => return failed(e),
            },
            Err(c) => return c,
        },
        _ => return fail("give --input FILE or --data SPEC (one of them)", EXIT_IO),
    };
    let progress = bar(a.importance.unwrap_or(1), "noise draws over the examples");
    let scores = match infer::score::scores(
        &loaded.flow,
        &ex,
        a.batch,
        a.importance,
        state.seed,
        &device,
        &progress,
    ) {
        Ok(s) => s,
        Err(e) => return fail(e, EXIT_IO),
    };
    if let Some(bad) = scores.iter().position(|s| !s.nll.is_finite()) {
        return fail(
            format!("example {bad}: the flow's log-density is not finite"),
            EXIT_ERRORS,
        );
    }
    let mut csv = String::from(match a.importance {
        Some(_) => "index,nll_nats,bits_per_dim,nll_iw_nats,bits_per_dim_iw\n",
        None => "index,nll_nats,bits_per_dim\n",
    });
    for (i, s) in scores.iter().enumerate() {
        csv.push_str(&format!("{i},{},{}", s.nll, s.bits_per_dim));
        if let (Some(n), Some(b)) = (s.nll_iw, s.bits_per_dim_iw) {
            csv.push_str(&format!(",{n},{b}"));
        }
        csv.push('\n');
    }
    let mean = |f: fn(&infer::score::Score) -> Option<f64>| {
        scores.iter().filter_map(f).sum::<f64>() / scores.len() as f64
    };
    eprintln!(
        "{} examples: mean {:.4} bits/dim",
        scores.len(),
        mean(|s| Some(s.bits_per_dim))
    );
    if let Some(k) = a.importance {
        eprintln!(
            "importance-weighted over {k} draws: mean {:.4} bits/dim",
            mean(|s| s.bits_per_dim_iw)
        );
    }
    match &a.out {
        None => super::emit(&csv),
        Some(p) if p.as_os_str() == "-" => super::emit(&csv),
        Some(p) => {
            if let Err(e) = super::output::refuse_run_file(p, run) {
                return fail(e, EXIT_IO);
            }
            let written = super::output::OutFile::create(p).and_then(|mut f| {
                std::io::Write::write_all(f.writer(), csv.as_bytes()).map_err(|e| e.to_string())?;
                f.commit()
            });
            match written {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => fail(e, EXIT_IO),
            }
        }
    }
}
