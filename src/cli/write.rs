//! Writing examples (samples, decodings, completions, interpolations) in
//! batches, streamed to the output so that memory stays bounded by the
//! batch. The format follows `-o`'s extension: `.csv` (one example a row;
//! 8-bit values for images), `.npy` (float32 for vectors, uint8 for images,
//! `floor(256 x)`), `.png` (a grid of images, or for 2-D vector flows a
//! scatter plot), `-` for stdout (PNG for images, CSV for vectors).

use std::io::Write;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use super::output::{self, OutFile};
use super::run::fail;
use super::{EXIT_ERRORS, EXIT_IO};
use crate::shape::Shape;
use crate::train;

/// The largest PNG grid: beyond it a picture shows nothing a file of values would not.
pub const MAX_GRID: usize = 10_000;

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Format {
    Csv,
    Npy,
    Png,
}

/// What is written: `rows` examples of the flow's `input`, as an array of
/// `leading` x input dims in `.npy` (`[n]`, or `[n, k]` for k per example),
/// and as a grid of `cols` columns in PNG.
pub struct Layout {
    pub input: Shape,
    pub leading: Vec<usize>,
    pub cols: Option<usize>,
}

impl Layout {
    pub fn rows(&self) -> usize {
        self.leading.iter().product()
    }
}

/// The output's path (None: stdout) and format, or why they do not fit.
pub fn destination(
    out: Option<PathBuf>,
    default: &str,
    layout: &Layout,
    run: &Path,
) -> Result<(Option<PathBuf>, Format), String> {
    let path = out.unwrap_or_else(|| PathBuf::from(default));
    let stdout = path.as_os_str() == "-";
    if !stdout {
        output::refuse_run_file(&path, run)?;
    }
    let input = layout.input;
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
            "-o {}: a PNG of examples is a scatter plot of a 2-D flow; this flow's input is {input}; write .csv or .npy",
            path.display()
        ));
    }
    if format == Format::Png && layout.rows() > MAX_GRID {
        return Err(format!(
            "-o {}: a PNG holds at most {MAX_GRID} examples, this is {}; write .npy or .csv for more",
            path.display(),
            layout.rows()
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
    fn new(format: Format, layout: &Layout, w: &mut dyn Write) -> std::io::Result<Encoder> {
        let input = layout.input;
        let rows = layout.rows();
        Ok(match (format, input) {
            (Format::Csv, _) => Encoder::Csv,
            (Format::Npy, _) => {
                let descr = if input.is_image() { "|u1" } else { "<f4" };
                let dims = input.dims();
                let inner = dims.iter().map(|&d| d as usize);
                let shape: Vec<usize> = layout.leading.iter().copied().chain(inner).collect();
                w.write_all(&crate::data::npy_header(descr, &shape))?;
                Encoder::Npy
            }
            (Format::Png, Shape::Image { c, h, w }) => {
                let (c, h, w) = (c as usize, h as usize, w as usize);
                Encoder::Grid(match layout.cols {
                    Some(cols) => train::png::Grid::with_cols(rows, cols, c, h, w),
                    None => train::png::Grid::new(rows, c, h, w),
                })
            }
            (Format::Png, Shape::Vector { .. }) => Encoder::Points(Vec::with_capacity(rows)),
        })
    }

    /// Rows `first..` from `values` (one example per `size` values).
    fn batch(
        &mut self,
        first: usize,
        values: &[f32],
        size: usize,
        image: bool,
        w: &mut dyn Write,
    ) -> std::io::Result<()> {
        let pixels = |row: &[f32]| {
            row.iter()
                .map(|&x| train::png::pixel(x))
                .collect::<Vec<u8>>()
        };
        for (k, row) in values.chunks(size).enumerate() {
            match self {
                Encoder::Csv if image => {
                    let text: Vec<String> = pixels(row).iter().map(u8::to_string).collect();
                    writeln!(w, "{}", text.join(","))?;
                }
                Encoder::Csv => {
                    let text: Vec<String> = row.iter().map(f32::to_string).collect();
                    writeln!(w, "{}", text.join(","))?;
                }
                Encoder::Npy if image => w.write_all(&pixels(row))?,
                Encoder::Npy => w.write_all(
                    &row.iter()
                        .flat_map(|x| x.to_le_bytes())
                        .collect::<Vec<u8>>(),
                )?,
                Encoder::Grid(g) => g.put(first + k, &pixels(row)),
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

/// Writes `layout.rows()` rows, `batch` at a time from `produce` (values in
/// the flow's space; a non-finite one stops the output), to `path` (None:
/// stdout). Ok(Some(where)) once written, Ok(None) when stdout's reader
/// went away, Err(status) after printing why.
pub fn write_rows(
    path: Option<&Path>,
    format: Format,
    layout: &Layout,
    batch: usize,
    mut produce: impl FnMut(Range<usize>) -> Result<Vec<f32>, String>,
) -> Result<Option<String>, ExitCode> {
    let mut file = path
        .map(OutFile::create)
        .transpose()
        .map_err(|e| fail(e, EXIT_IO))?;
    let where_ = path.map_or("stdout".to_string(), |p| p.display().to_string());
    let stdout = std::io::stdout();
    let mut lock = stdout.lock();
    let w: &mut dyn Write = match file.as_mut() {
        Some(f) => f.writer(),
        None => &mut lock,
    };
    let size = layout.input.size() as usize;
    let rows = layout.rows();
    let progress = super::infer::bar(rows, "examples written");
    let mut stream = || -> Result<(), Stop> {
        let mut enc = Encoder::new(format, layout, w)?;
        for first in (0..rows).step_by(batch.max(1)) {
            let values = produce(first..(first + batch).min(rows)).map_err(Stop::Failed)?;
            if let Some(bad) = values.iter().position(|v| !v.is_finite()) {
                return Err(Stop::Failed(format!(
                    "example {} is not finite; the output was not completed",
                    first + bad / size.max(1)
                )));
            }
            enc.batch(first, &values, size, layout.input.is_image(), w)?;
            progress.inc((values.len() / size.max(1)) as u64);
        }
        enc.finish(w).map_err(Stop::Failed)?;
        w.flush()?;
        Ok(())
    };
    let streamed = stream();
    progress.finish_and_clear();
    match streamed {
        Ok(()) => {}
        Err(Stop::Pipe) => return Ok(None),
        Err(Stop::Failed(e)) => return Err(fail(e, EXIT_ERRORS)),
        Err(Stop::Io(e)) => return Err(fail(format!("cannot write {where_}: {e}"), EXIT_IO)),
    }
    drop(lock);
    if let Some(f) = file {
        f.commit().map_err(|e| fail(e, EXIT_IO))?;
    }
    Ok(Some(where_))
}
