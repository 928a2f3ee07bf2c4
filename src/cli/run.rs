//! The training-side commands: `train`, `eval`, `bench` (`sample` has its own file).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use candle_core::Device;

use std::io::IsTerminal;

use super::{read_source, DataArgs, DeviceArg, Format, EXIT_ERRORS, EXIT_IO};
use crate::train::{self, interrupt, Interrupt, Outcome, TrainConfig};

pub(super) fn fail(msg: impl std::fmt::Display, code: u8) -> ExitCode {
    eprintln!("error: {msg}");
    ExitCode::from(code)
}

fn device(d: DeviceArg) -> Result<Device, ExitCode> {
    match d {
        DeviceArg::Cpu => Ok(Device::Cpu),
        DeviceArg::Cuda => Device::new_cuda(0).map_err(|e| {
            fail(format!("--device cuda: {e} (build with `--features cuda` on a machine with an NVIDIA GPU)"), EXIT_IO)
        }),
    }
}

/// Where data sets are looked for, and whether the system copies may be
/// used too (not when the user named a folder).
fn data_dir(args: &DataArgs) -> Result<(PathBuf, bool), ExitCode> {
    if let Some(dir) = &args.data_dir {
        if !dir.is_dir() {
            return Err(fail(
                format!("--data-dir {}: no such folder", dir.display()),
                EXIT_IO,
            ));
        }
        return Ok((dir.clone(), false));
    }
    let dir = std::env::var_os("FLOWC_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("data"));
    Ok((dir, true))
}

/// The data set of `args`, for a flow of input `input`: image folders
/// (`folder:PATH`, `celeba`) are converted and resized to it.
pub(super) fn load_data_for(
    args: &DataArgs,
    seed: u64,
    input: Option<crate::shape::Shape>,
) -> Result<crate::data::Data, ExitCode> {
    let (dir, system) = data_dir(args)?;
    let target = match input {
        Some(crate::shape::Shape::Image { c, h, w }) => Some([c as usize, h as usize, w as usize]),
        Some(crate::shape::Shape::Vector { d }) => {
            use crate::data::Spec;
            if let Ok(Spec::Folder(_) | Spec::CelebA) = Spec::parse(&args.data) {
                let msg = format!(
                    "--data {}: gives images, but the flow's input is vector({d}); choose a data set of vectors or an image flow",
                    args.data
                );
                return Err(fail(msg, EXIT_IO));
            }
            None
        }
        None => None,
    };
    let opts = crate::data::LoadOptions {
        target,
        resize: args.resize.into(),
        strict_images: args.strict_images,
        stream: args.stream,
    };
    let test = args.test.as_deref();
    let mut data = crate::data::open_with(&args.data, &dir, system, test, seed, &opts)
        .map_err(|e| fail(e, EXIT_IO))?;
    let files = [args.labels.as_deref(), args.test_labels.as_deref()];
    crate::data::labels::attach_files(&mut data, files, test, seed)
        .map_err(|e| fail(e, EXIT_IO))?;
    Ok(data)
}

/// The input shape of a flow's source (it has checked clean).
fn flow_input(source: &str) -> Option<crate::shape::Shape> {
    crate::check(source).verified.map(|v| v.input)
}

/// The flow's diagnostics on stderr; the verified flow's name if it has no errors.
fn check_flow(file: &Path, source: &str) -> Result<String, ExitCode> {
    let checked = crate::check(source);
    if !checked.diagnostics.is_empty() {
        let color = std::io::stderr().is_terminal();
        eprint!(
            "{}",
            crate::diag::render(
                &checked.diagnostics,
                &file.display().to_string(),
                source,
                color
            )
        );
    }
    match checked.verified.as_ref().filter(|_| checked.ok()) {
        Some(v) => Ok(v.name.clone()),
        None => Err(fail(
            format!("{} does not check; nothing was run", file.display()),
            EXIT_ERRORS,
        )),
    }
}

pub fn train(
    file: &Path,
    data: &DataArgs,
    dev: DeviceArg,
    out: Option<PathBuf>,
    cfg: impl Fn(PathBuf) -> TrainConfig,
) -> ExitCode {
    let bytes = match read_source(file) {
        Ok(b) => b,
        Err(c) => return c,
    };
    let source = String::from_utf8_lossy(&bytes).into_owned();
    let name = match check_flow(file, &source) {
        Ok(n) => n,
        Err(c) => return c,
    };
    let mut cfg = cfg(out.unwrap_or_else(|| PathBuf::from("runs").join(name)));
    let device = match device(dev) {
        Ok(d) => d,
        Err(c) => return c,
    };
    let seed = if cfg.resume {
        // The data split depends on the run's own seed: read it from the header.
        match train::checkpoint::read_state(&cfg.out) {
            Ok(s) => s.seed,
            Err(e) => return fail(e, EXIT_IO),
        }
    } else {
        cfg.seed
    };
    let dataset = match load_data_for(data, seed, flow_input(&source)) {
        Ok(d) => d,
        Err(c) => return c,
    };
    cfg.interrupt = match Interrupt::install() {
        Ok(i) => i,
        Err(e) => return fail(format!("cannot handle Ctrl-C: {e}"), EXIT_ERRORS),
    };
    match train::train(&source, &dataset, &cfg, &device) {
        Ok(Outcome::Finished { .. }) => ExitCode::SUCCESS,
        Ok(Outcome::Interrupted { signal, .. }) => ExitCode::from(interrupt::exit_status(signal)),
        Err(e) => fail(&e, e.exit_status()),
    }
}

/// As [`open_run`], for the commands that do not feed labels yet (the
/// inference commands): a conditioned flow is refused (exit 2).
pub(super) fn open_unconditioned_run(
    run: &Path,
    dev: DeviceArg,
) -> Result<(Device, train::Loaded, train::checkpoint::TrainState), ExitCode> {
    let opened = open_run(run, dev)?;
    if let Some(c) = opened.1.plan.condition {
        let msg = format!(
            "{}: the flow is conditioned (given class({})); this command does not take labels yet \
             (train, eval, eval --classify and sample --class do)",
            run.display(),
            c.classes
        );
        return Err(fail(msg, EXIT_IO));
    }
    Ok(opened)
}

/// The device and a run folder's flow and state, or the exit status that says why not.
pub(super) fn open_run(
    run: &Path,
    dev: DeviceArg,
) -> Result<(Device, train::Loaded, train::checkpoint::TrainState), ExitCode> {
    let device = device(dev)?;
    let (loaded, state) = train::load_run(run, &device).map_err(|e| fail(&e, e.exit_status()))?;
    Ok((device, loaded, state))
}

/// The noise draws of `eval`: averaged over (`--samples`), and those of the
/// importance-weighted bound (`--importance`).
#[derive(Clone, Copy, Debug)]
pub struct Draws {
    pub samples: usize,
    pub importance: Option<usize>,
    /// `--classify`: the Bayes classifier's accuracy too (a conditioned flow).
    pub classify: bool,
}

pub fn eval(
    run: &Path,
    data: &DataArgs,
    draws: Draws,
    batch: usize,
    format: Format,
    dev: DeviceArg,
) -> ExitCode {
    let (device, loaded, state) = match open_run(run, dev) {
        Ok(r) => r,
        Err(c) => return c,
    };
    if draws.importance.is_some() && !loaded.plan.input.is_image() {
        return fail("--importance: the importance-weighted bound is for 8-bit (image) data; a vector flow's density is already that of its data", EXIT_IO);
    }
    let dataset = match load_data_for(data, state.seed, Some(loaded.plan.input)) {
        Ok(d) => d,
        Err(c) => return c,
    };
    if let Err(e) = train::check_data_shape(&dataset, loaded.plan.input) {
        return fail(&e, e.exit_status());
    }
    let (flow, test, seed) = (&loaded.flow, &dataset.test, state.seed);
    if let Err(e) = train::check_labels(&dataset, &loaded.plan) {
        return fail(&e, e.exit_status());
    }
    if draws.classify && loaded.plan.condition.is_none() {
        return fail(
            "--classify: the flow has no condition (`given class(K)`), so no classes to tell apart",
            EXIT_IO,
        );
    }
    if draws.importance.is_some() && loaded.plan.condition.is_some() {
        return fail(
            "--importance is not yet computed for a conditioned flow",
            EXIT_IO,
        );
    }
    let labels = dataset.labels.as_ref().map(|l| l.test.as_slice());
    let (nll, bpd, n) =
        match train::evaluate(flow, test, labels, batch, draws.samples, seed, &device) {
            Ok(r) => r,
            Err(e) => return fail(e, EXIT_ERRORS),
        };
    let iw = match draws.importance {
        Some(k) => match crate::infer::score::scores(
            flow,
            test,
            batch,
            Some(k),
            seed,
            &device,
            &super::infer::bar(k, "noise draws over the test set"),
        ) {
            Ok(s) => Some(s.iter().filter_map(|s| s.bits_per_dim_iw).sum::<f64>() / n as f64),
            Err(e) => return fail(e, EXIT_ERRORS),
        },
        None => None,
    };
    let accuracy = match (draws.classify, &dataset.labels) {
        (true, Some(l)) => match train::accuracy(flow, test, &l.test, batch, seed, &device) {
            Ok((a, _)) => Some(a),
            Err(e) => return fail(e, EXIT_ERRORS),
        },
        (true, None) | (false, _) => None,
    };
    if !bpd.is_finite() || iw.is_some_and(|b| !b.is_finite()) {
        return fail(
            format!("the flow's log-density on the test set of {} is not finite ({nll} nats per example)", dataset.name),
            EXIT_ERRORS,
        );
    }
    let text = match format {
        Format::Json => {
            let mut v = serde_json::json!({ "nll_nats": nll, "bits_per_dim": bpd, "examples": n });
            if let Some(a) = accuracy {
                v["accuracy"] = a.into();
            }
            if let (Some(b), Some(k)) = (iw, draws.importance) {
                v["bits_per_dim_iw"] = b.into();
                v["importance_samples"] = k.into();
            }
            format!("{v}\n")
        }
        Format::Text => {
            let iw = match (iw, draws.importance) {
                (Some(b), Some(k)) => {
                    format!("; importance-weighted over {k} draws: {b:.4} bits/dim")
                }
                _ => String::new(),
            };
            let acc = accuracy.map_or(String::new(), |a| {
                format!("; Bayes classifier accuracy {a:.4}")
            });
            format!(
                "{}: {bpd:.4} bits/dim ({nll:.2} nats per example) on {n} test examples of {}{iw}{acc}\n",
                run.display(),
                // With --test, the test examples are that file's, not --data's.
                data.test.as_ref().map_or(dataset.name.clone(), |t| t.display().to_string())
            )
        }
    };
    super::emit(&text)
}

/// `sample --plot`: the learned density beside the training data (or the samples).
pub(super) fn plot(
    loaded: &train::Loaded,
    state: &train::checkpoint::TrainState,
    path: &Path,
    device: &Device,
) -> ExitCode {
    let points: Vec<[f64; 2]> =
        match crate::data::load(&state.data, Path::new("data"), None, state.seed) {
            Ok(crate::data::Dataset {
                train: crate::data::Examples::Vectors { data, .. },
                ..
            }) => data
                .chunks(2)
                .take(20_000)
                .map(|p| [p[0] as f64, p[1] as f64])
                .collect(),
            _ => match train::sample(&loaded.flow, 2000, 1.0, state.seed, device)
                .and_then(|x| x.to_vec2::<f32>())
            {
                Ok(rows) => rows.iter().map(|r| [r[0] as f64, r[1] as f64]).collect(),
                Err(e) => return fail(e, EXIT_ERRORS),
            },
        };
    match density_plot(&loaded.flow, &points, path, device) {
        Ok(()) => {
            eprintln!(
                "wrote the learned density beside the data to {}",
                path.display()
            );
            ExitCode::SUCCESS
        }
        Err(e) => fail(e, EXIT_IO),
    }
}

/// The flow's density on a 200x200 grid over the data's range.
fn density_plot(
    flow: &crate::exec::Flow,
    points: &[[f64; 2]],
    path: &Path,
    device: &Device,
) -> Result<(), String> {
    let size = 200;
    let extent = points
        .iter()
        .flat_map(|p| [p[0].abs(), p[1].abs()])
        .fold(1.0f64, f64::max)
        .min(50.0)
        * 1.1;
    let (lo, hi) = (-extent, extent);
    let mut grid = Vec::with_capacity(size * size * 2);
    for gy in 0..size {
        for gx in 0..size {
            let x = lo + (gx as f64 + 0.5) / size as f64 * (hi - lo);
            let y = hi - (gy as f64 + 0.5) / size as f64 * (hi - lo);
            grid.extend([x as f32, y as f32]);
        }
    }
    let t =
        candle_core::Tensor::from_vec(grid, (size * size, 2), device).map_err(|e| e.to_string())?;
    let lp: Vec<f32> = flow
        .log_prob(&t, false)
        .and_then(|l| l.to_vec1())
        .map_err(|e| e.to_string())?;
    let density: Vec<f64> = lp.iter().map(|&v| (v as f64).exp()).collect();
    train::png::save_density(&density, size, points, lo, hi, path)
}

/// `flowc bench`: see [`crate::bench`].
pub fn bench(
    file: &Path,
    opts: &crate::bench::Options,
    threads: Option<u64>,
    dev: DeviceArg,
    format: Format,
) -> ExitCode {
    if let Some(t) = threads {
        // Every pool reads these when it starts (candle's, rayon's, and the
        // per-call threads of flowc's own kernels); nothing has started yet.
        std::env::set_var("RAYON_NUM_THREADS", t.to_string());
        std::env::set_var("CANDLE_NUM_THREADS", t.to_string());
    }
    let bytes = match read_source(file) {
        Ok(b) => b,
        Err(code) => return code,
    };
    let source = String::from_utf8_lossy(&bytes);
    if let Err(c) = check_flow(file, &source) {
        return c;
    }
    let plan = match crate::compile(&source) {
        Ok(p) => p,
        Err(_) => return fail(format!("{} does not compile", file.display()), EXIT_ERRORS),
    };
    let device = match device(dev) {
        Ok(d) => d,
        Err(code) => return code,
    };
    let name = plan.flow.clone();
    let report = match crate::bench::run(&plan, &name, opts, &device) {
        Ok(r) => r,
        Err(e) => return fail(format!("{}: {e}", file.display()), EXIT_ERRORS),
    };
    let text = match format {
        Format::Json => format!(
            "{}\n",
            serde_json::to_string(&report).expect("plain data serializes")
        ),
        Format::Text => [
            format!(
                "flow {}: {} parameters, batch {}, {} thread(s), {}",
                report.flow, report.parameters, report.batch, report.threads, report.device
            ),
            rate("density", report.density_per_s, report.density_best_per_s),
            rate("sample", report.sample_per_s, report.sample_best_per_s),
            rate("train", report.train_per_s, report.train_best_per_s),
            format!("  peak RSS {:>12.1} MiB\n", report.peak_rss_mib),
        ]
        .join("\n"),
    };
    super::emit(&text)
}

/// One line of `flowc bench`'s text: the median rate, the fastest beside it.
fn rate(what: &str, median: f64, best: f64) -> String {
    format!("  {what:<8} {median:>12.1} examples/s (fastest run {best:.1})")
}
