//! The training-side commands: `train`, `eval`, `sample`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use candle_core::Device;

use super::{read_source, DataArgs, DeviceArg, Format, EXIT_ERRORS, EXIT_IO};
use crate::train::{self, TrainConfig};

fn fail(msg: impl std::fmt::Display, code: u8) -> ExitCode {
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

fn data_dir(args: &DataArgs) -> PathBuf {
    args.data_dir
        .clone()
        .or_else(|| std::env::var_os("FLOWC_DATA").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("data"))
}

fn load_data(args: &DataArgs, seed: u64) -> Result<crate::data::Dataset, ExitCode> {
    crate::data::load(&args.data, &data_dir(args), args.test.as_deref(), seed)
        .map_err(|e| fail(e, EXIT_IO))
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
    let checked = crate::check(&source);
    if !checked.ok() {
        eprint!(
            "{}",
            crate::diag::render(
                &checked.diagnostics,
                &file.display().to_string(),
                &source,
                false
            )
        );
        return fail(
            format!("{} does not check; nothing was trained", file.display()),
            EXIT_ERRORS,
        );
    }
    let name = checked
        .verified
        .as_ref()
        .map(|v| v.name.clone())
        .unwrap_or_default();
    let cfg = cfg(out.unwrap_or_else(|| PathBuf::from("runs").join(name)));
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
    let dataset = match load_data(data, seed) {
        Ok(d) => d,
        Err(c) => return c,
    };
    match train::train(&source, &dataset, &cfg, &device) {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => fail(e, EXIT_ERRORS),
    }
}

/// The device and a run folder's flow and state, or the exit status that says why not.
fn open_run(
    run: &Path,
    dev: DeviceArg,
) -> Result<(Device, train::Loaded, train::checkpoint::TrainState), ExitCode> {
    let device = device(dev)?;
    let (loaded, state) = train::load_run(run, &device).map_err(|e| fail(e, EXIT_IO))?;
    Ok((device, loaded, state))
}

pub fn eval(
    run: &Path,
    data: &DataArgs,
    samples: usize,
    batch: usize,
    format: Format,
    dev: DeviceArg,
) -> ExitCode {
    let (device, loaded, state) = match open_run(run, dev) {
        Ok(r) => r,
        Err(c) => return c,
    };
    let dataset = match load_data(data, state.seed) {
        Ok(d) => d,
        Err(c) => return c,
    };
    if let Err(e) = train::check_data_shape(&dataset, loaded.plan.input) {
        return fail(e, EXIT_ERRORS);
    }
    match train::evaluate(
        &loaded.flow,
        &dataset.test,
        batch,
        samples,
        state.seed,
        &device,
    ) {
        Ok((nll, bpd, n)) => {
            match format {
                Format::Json => println!(
                    "{}",
                    serde_json::json!({ "nll_nats": nll, "bits_per_dim": bpd, "examples": n })
                ),
                Format::Text => println!(
                    "{}: {bpd:.4} bits/dim ({nll:.2} nats per example) on {n} test examples of {}",
                    run.display(),
                    dataset.name
                ),
            }
            ExitCode::SUCCESS
        }
        Err(e) => fail(e, EXIT_ERRORS),
    }
}

pub fn sample(
    run: &Path,
    n: usize,
    temperature: f64,
    out: Option<PathBuf>,
    seed: u64,
    plot: bool,
    dev: DeviceArg,
) -> ExitCode {
    let (device, loaded, state) = match open_run(run, dev) {
        Ok(r) => r,
        Err(c) => return c,
    };
    let x = match train::sample(&loaded.flow, n, temperature, seed, &device) {
        Ok(x) => x,
        Err(e) => return fail(e, EXIT_ERRORS),
    };
    let input = loaded.plan.input;
    if input.is_image() {
        let path = out.unwrap_or_else(|| PathBuf::from("samples.png"));
        let cols = (n as f64).sqrt().ceil() as usize;
        return match train::png::save_grid(&x, cols.max(1), &path) {
            Ok(()) => {
                eprintln!(
                    "wrote {n} samples at temperature {temperature} to {}",
                    path.display()
                );
                ExitCode::SUCCESS
            }
            Err(e) => fail(e, EXIT_IO),
        };
    }
    let path = out.unwrap_or_else(|| PathBuf::from("samples.csv"));
    let rows: Vec<Vec<f32>> = match x.to_vec2() {
        Ok(r) => r,
        Err(e) => return fail(e, EXIT_ERRORS),
    };
    let mut csv = String::new();
    for r in &rows {
        csv.push_str(
            &r.iter()
                .map(|v| v.to_string())
                .collect::<Vec<_>>()
                .join(","),
        );
        csv.push('\n');
    }
    if let Err(e) = std::fs::write(&path, csv) {
        return fail(format!("cannot write {}: {e}", path.display()), EXIT_IO);
    }
    eprintln!(
        "wrote {n} samples at temperature {temperature} to {}",
        path.display()
    );
    if plot {
        if input.size() != 2 {
            return fail(
                format!(
                    "--plot draws 2-D flows; this flow's input is vector({})",
                    input.size()
                ),
                EXIT_ERRORS,
            );
        }
        let points: Vec<[f64; 2]> =
            match crate::data::load(&state.data, Path::new("data"), None, state.seed) {
                Ok(d) => match d.train {
                    crate::data::Examples::Vectors { data, .. } => data
                        .chunks(2)
                        .take(20_000)
                        .map(|p| [p[0] as f64, p[1] as f64])
                        .collect(),
                    _ => vec![],
                },
                Err(_) => rows.iter().map(|r| [r[0] as f64, r[1] as f64]).collect(),
            };
        let plot_path = path.with_extension("png");
        match density_plot(&loaded.flow, &points, &plot_path, &device) {
            Ok(()) => eprintln!(
                "wrote the learned density beside the data to {}",
                plot_path.display()
            ),
            Err(e) => return fail(e, EXIT_ERRORS),
        }
    }
    ExitCode::SUCCESS
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
    let plan = match crate::compile(&source) {
        Ok(p) => p,
        Err(d) => {
            let n = d.errors().count();
            return fail(
                format!("{}: {n} error(s); run `flowc check` on it", file.display()),
                EXIT_ERRORS,
            );
        }
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
    match format {
        Format::Json => println!(
            "{}",
            serde_json::to_string(&report).expect("plain data serializes")
        ),
        Format::Text => {
            println!(
                "flow {}: {} parameters, batch {}, {} thread(s), {}",
                report.flow, report.parameters, report.batch, report.threads, report.device
            );
            println!("  density  {:>12.1} examples/s", report.density_per_s);
            println!("  sample   {:>12.1} examples/s", report.sample_per_s);
            println!("  train    {:>12.1} examples/s", report.train_per_s);
            println!("  peak RSS {:>12.1} MiB", report.peak_rss_mib);
        }
    }
    ExitCode::SUCCESS
}
