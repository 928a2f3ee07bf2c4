//! `flowc sample`: draws in batches of `--batch`, streaming each batch to the
//! output, so that memory stays bounded by the batch whatever `-n` is. The
//! format follows `-o`'s extension: `.csv` (one example a row; 8-bit values
//! for images), `.npy` (float32 N,D for vectors, uint8 N,C,H,W for images),
//! `.png` (a grid of images, or for 2-D vector flows a scatter plot), `-`
//! for stdout (PNG for images, CSV for vectors).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use super::output::{self, OutFile};
use super::run::{fail, open_run};
use super::{DeviceArg, EXIT_ERRORS, EXIT_IO};
use crate::shape::Shape;
use crate::train;

/// The largest PNG grid: beyond it a picture shows nothing a file of values would not.
pub const MAX_GRID: usize = 10_000;

#[derive(Clone, Debug)]
pub struct SampleArgs {
    pub n: usize,
    pub temperature: f64,
    pub out: Option<PathBuf>,
    pub seed: u64,
    pub plot: bool,
    pub batch: usize,
    pub device: DeviceArg,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum Format {
    Csv,
    Npy,
    Png,
}

/// The output's path (None: stdout) and format, or why they do not fit the flow.
fn destination(
    a: &SampleArgs,
    input: Shape,
    run: &Path,
) -> Result<(Option<PathBuf>, Format), String> {
    let default = if input.is_image() {
        "samples.png"
    } else {
        "samples.csv"
    };
    let path = a.out.clone().unwrap_or_else(|| PathBuf::from(default));
    let stdout = path.as_os_str() == "-";
    if !stdout {
        output::refuse_run_file(&path, run)?;
    }
    let format = match (stdout, path.extension().and_then(|e| e.to_str())) {
        (true, _) if input.is_image() => Format::Png,
        (true, _) => Format::Csv,
        (false, Some("csv")) => Format::Csv,
        (false, Some("npy")) => Format::Npy,
        (false, Some("png")) => Format::Png,
        (false, _) => {
            return Err(format!(
                "-o {}: the format follows the extension: .png, .npy or .csv (or - for stdout)",
                path.display()
            ))
        }
    };
    if format == Format::Png && !input.is_image() && input.size() != 2 {
        return Err(format!(
            "-o {}: a PNG of samples is a scatter plot of a 2-D flow; this flow's input is vector({}); write .csv or .npy",
            path.display(),
            input.size()
        ));
    }
    if format == Format::Png && a.n > MAX_GRID {
        return Err(format!(
            "-o {}: a PNG holds at most {MAX_GRID} samples, -n is {}; write .npy or .csv for more",
            path.display(),
            a.n
        ));
    }
    Ok(((!stdout).then_some(path), format))
}

/// Accumulates or streams the batches in the chosen format.
enum Encoder {
    Csv,
    Npy,
    Grid(train::png::Grid),
    Points(Vec<[f64; 2]>),
}

impl Encoder {
    fn new(format: Format, n: usize, input: Shape, w: &mut dyn Write) -> std::io::Result<Encoder> {
        let dims: Vec<usize> = input.dims().iter().map(|&d| d as usize).collect();
        Ok(match (format, input) {
            (Format::Csv, _) => Encoder::Csv,
            (Format::Npy, _) => {
                let descr = if input.is_image() { "|u1" } else { "<f4" };
                let shape: Vec<usize> = std::iter::once(n).chain(dims.iter().copied()).collect();
                w.write_all(&crate::data::npy_header(descr, &shape))?;
                Encoder::Npy
            }
            (Format::Png, Shape::Image { c, h, w }) => {
                Encoder::Grid(train::png::Grid::new(n, c as usize, h as usize, w as usize))
            }
            (Format::Png, Shape::Vector { .. }) => Encoder::Points(Vec::with_capacity(n)),
        })
    }

    /// Samples `first..` as rows of `values` (one example per row of `size`).
    fn batch(
        &mut self,
        first: usize,
        values: &[f32],
        size: usize,
        image: bool,
        w: &mut dyn Write,
    ) -> std::io::Result<()> {
        for (k, row) in values.chunks(size).enumerate() {
            match self {
                Encoder::Csv if image => {
                    let text: Vec<String> = row
                        .iter()
                        .map(|&x| train::png::pixel(x).to_string())
                        .collect();
                    writeln!(w, "{}", text.join(","))?;
                }
                Encoder::Csv => {
                    let text: Vec<String> = row.iter().map(|x| x.to_string()).collect();
                    writeln!(w, "{}", text.join(","))?;
                }
                Encoder::Npy if image => w.write_all(
                    &row.iter()
                        .map(|&x| train::png::pixel(x))
                        .collect::<Vec<u8>>(),
                )?,
                Encoder::Npy => w.write_all(
                    &row.iter()
                        .flat_map(|x| x.to_le_bytes())
                        .collect::<Vec<u8>>(),
                )?,
                Encoder::Grid(g) => g.put(
                    first + k,
                    &row.iter()
                        .map(|&x| train::png::pixel(x))
                        .collect::<Vec<u8>>(),
                ),
                Encoder::Points(p) => p.push([row[0] as f64, row[1] as f64]),
            }
        }
        Ok(())
    }

    fn finish(self, w: &mut dyn Write) -> Result<(), String> {
        let bytes = match self {
            Encoder::Csv | Encoder::Npy => return Ok(()),
            Encoder::Grid(g) => g.encode()?,
            Encoder::Points(p) => train::png::scatter(&p)?,
        };
        w.write_all(&bytes).map_err(|e| e.to_string())
    }
}

pub fn sample(run: &Path, a: &SampleArgs) -> ExitCode {
    let (device, loaded, state) = match open_run(run, a.device) {
        Ok(r) => r,
        Err(c) => return c,
    };
    let input = loaded.plan.input;
    let (path, format) = match destination(a, input, run) {
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
        if plot_path.is_none() {
            return fail(
                "--plot writes NAME.density.png beside the samples; give -o a file, not -",
                EXIT_IO,
            );
        }
    }
    if let Some(Err(e)) = plot_path
        .as_ref()
        .filter(|_| a.plot)
        .map(|p| output::refuse_run_file(p, run))
    {
        return fail(e, EXIT_IO);
    }
    let mut file = match path.as_deref().map(OutFile::create).transpose() {
        Ok(f) => f,
        Err(e) => return fail(e, EXIT_IO),
    };
    let stdout = std::io::stdout();
    let mut lock = stdout.lock();
    let w: &mut dyn Write = match file.as_mut() {
        Some(f) => f.writer(),
        None => &mut lock,
    };
    let streamed = stream(&loaded, a, format, &device, w);
    drop(lock);
    let where_ = path
        .as_ref()
        .map_or("stdout".to_string(), |p| p.display().to_string());
    match streamed {
        Ok(()) => {}
        Err(Stop::Pipe) => return ExitCode::SUCCESS,
        Err(Stop::Failed(e)) => return fail(e, EXIT_ERRORS),
        Err(Stop::Io(e)) => return fail(format!("cannot write {where_}: {e}"), EXIT_IO),
    }
    if let Some(f) = file {
        if let Err(e) = f.commit() {
            return fail(e, EXIT_IO);
        }
    }
    eprintln!(
        "wrote {} samples at temperature {} to {where_}",
        a.n, a.temperature
    );
    match plot_path.filter(|_| a.plot) {
        Some(p) => super::run::plot(&loaded, &state, &p, &device),
        None => ExitCode::SUCCESS,
    }
}

/// Why streaming stopped early.
enum Stop {
    /// The reader of stdout went away: not an error.
    Pipe,
    Io(std::io::Error),
    Failed(String),
}

impl From<std::io::Error> for Stop {
    fn from(e: std::io::Error) -> Stop {
        match e.kind() {
            std::io::ErrorKind::BrokenPipe => Stop::Pipe,
            _ => Stop::Io(e),
        }
    }
}

fn stream(
    loaded: &train::Loaded,
    a: &SampleArgs,
    format: Format,
    device: &candle_core::Device,
    w: &mut dyn Write,
) -> Result<(), Stop> {
    let input = loaded.plan.input;
    let size = input.size() as usize;
    let mut enc = Encoder::new(format, a.n, input, w)?;
    for first in (0..a.n).step_by(a.batch) {
        let range = first..(first + a.batch).min(a.n);
        let values: Vec<f32> =
            train::sample_range(&loaded.flow, range, a.temperature, a.seed, device)
                .and_then(|x| x.flatten_all()?.to_vec1())
                .map_err(|e| Stop::Failed(e.to_string()))?;
        if let Some(bad) = values.iter().position(|v| !v.is_finite()) {
            return Err(Stop::Failed(format!(
                "sample {} is not finite (the inverse overflowed at temperature {}); the output was not completed; try a lower --temperature",
                first + bad / size.max(1),
                a.temperature
            )));
        }
        enc.batch(first, &values, size, input.is_image(), w)?;
    }
    enc.finish(w).map_err(Stop::Failed)?;
    w.flush()?;
    Ok(())
}
