//! The `flowc` command line: one subcommand per job, each stopping after the
//! stage it needs.

use std::fmt::Write as _;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

mod fmt;
mod infer;
mod options;
mod output;
mod run;
mod sample;
mod write;

use crate::lower::Pass;
use crate::{diag, report};

#[derive(Parser, Debug)]
#[command(
    name = "flowc",
    version,
    about = "A compiler for normalizing flows (Real NVP, Glow)"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Parse, resolve and verify a .flow file; print its layers, latents and parameters.
    Check {
        /// The .flow file.
        file: PathBuf,
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
        /// Also run the flow with random parameters: round-trip error and
        /// log-det against a finite-difference Jacobian (on a downsized input
        /// where the full one is too large).
        #[arg(long)]
        numeric: bool,
    },
    /// Lay out .flow files in the one canonical way (comments kept); rewrites
    /// each FILE in place, or formats stdin to stdout when none is given.
    Fmt {
        /// The .flow files.
        files: Vec<PathBuf>,
        /// Change nothing; list the files whose layout differs and exit with 1 if any does.
        #[arg(long)]
        check: bool,
    },
    /// A Language Server Protocol server for editors, on stdin and stdout.
    Lsp,
    /// Check a .flow file and compile it to an execution plan for both directions.
    Compile {
        /// The .flow file.
        file: PathBuf,
        /// What to print.
        #[arg(long, value_enum, default_value_t = Emit::Plan)]
        emit: Emit,
        /// Stop after this pass (default: all of them).
        #[arg(long, value_enum, default_value_t = Pass::Schedule)]
        stop_after: Pass,
    },
    /// Train a flow on a data set (Adam), writing a run folder.
    #[command(allow_negative_numbers = true)]
    Train {
        /// The .flow file.
        file: PathBuf,
        #[command(flatten)]
        data: DataArgs,
        /// Optimizer steps (default: one epoch, or --epochs).
        #[arg(long, conflicts_with = "epochs")]
        steps: Option<u64>,
        #[arg(long)]
        epochs: Option<u64>,
        #[arg(long, default_value_t = 64)]
        batch: usize,
        #[arg(long, default_value_t = 1e-3)]
        lr: f64,
        /// L2 penalty on the weight-norm gains (Real NVP: 5e-5).
        #[arg(long, default_value_t = 5e-5)]
        l2: f64,
        /// Clip the global gradient norm (0: off).
        #[arg(long, default_value_t = 100.0)]
        clip: f64,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        #[arg(long, value_enum, default_value_t = DeviceArg::Cpu)]
        device: DeviceArg,
        /// The run folder (default: runs/<flow name>).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Evaluate, draw samples and save a checkpoint every this many steps.
        #[arg(long, default_value_t = 500)]
        eval_every: u64,
        /// Test examples used by those evaluations (`flowc eval` uses all).
        #[arg(long, default_value_t = 1000)]
        eval_examples: usize,
        /// Continue the run in --out from its checkpoint.
        #[arg(long)]
        resume: bool,
        /// No horizontal flips of training images.
        #[arg(long)]
        no_flip: bool,
        /// Decay the learning rate to 0 along a cosine over the steps.
        #[arg(long)]
        cosine: bool,
        /// Allow a --batch larger than the training set (examples repeat).
        #[arg(long)]
        allow_repeats: bool,
    },
    /// Test-set bits per dimension of a trained run.
    #[command(allow_negative_numbers = true)]
    Eval {
        /// The run folder.
        run: PathBuf,
        #[command(flatten)]
        data: DataArgs,
        /// Average the dequantization noise over this many draws.
        #[arg(long, default_value_t = 1)]
        samples: usize,
        /// Also the importance-weighted bound over K noise draws (8-bit data):
        /// per example -log((1/K) sum_k p(x + u_k)), tighter than the paper's figure.
        #[arg(long)]
        importance: Option<usize>,
        /// For a flow given class(K): also the accuracy of the Bayes
        /// classifier argmax_y log p(x | y) (uniform class prior) on the test set.
        #[arg(long)]
        classify: bool,
        #[arg(long, default_value_t = 256)]
        batch: usize,
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
        #[arg(long, value_enum, default_value_t = DeviceArg::Cpu)]
        device: DeviceArg,
    },
    /// Throughput of a flow on random inputs: density, sampling and a
    /// training step (Adam), in examples per second (medians, and the
    /// fastest run of each).
    #[command(allow_negative_numbers = true)]
    Bench {
        /// The .flow file.
        file: PathBuf,
        #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..))]
        batch: u64,
        /// Timed runs of each measurement, after one untimed warm-up.
        #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..))]
        iters: u64,
        /// Threads of every pool flowc uses (default: the physical cores).
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
        threads: Option<u64>,
        #[arg(long, value_enum, default_value_t = DeviceArg::Cpu)]
        device: DeviceArg,
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
    },
    /// Fill in the missing part of each input (inpainting): the most likely
    /// completion, or draws from p(missing | observed).
    #[command(allow_negative_numbers = true)]
    Complete {
        /// The run folder.
        run: PathBuf,
        /// .npy (float N,D for vectors; uint8 N,C,H,W for images) or one PNG image.
        #[arg(long)]
        input: PathBuf,
        /// The missing part: left, right, top, bottom, center (images), random:P,
        /// or a .npy/PNG of the input's shape or of one example, nonzero = observed.
        #[arg(long)]
        mask: String,
        /// Output: .npy, .csv, or .png (images: rows of input, masked input, completions).
        #[arg(short = 'o', long)]
        out: Option<PathBuf>,
        /// Also write the PNG grid of inputs, masked inputs and completions here.
        #[arg(long)]
        grid: Option<PathBuf>,
        #[arg(long, value_enum, default_value_t = MethodArg::Map)]
        method: MethodArg,
        /// Draws per input (--method sample).
        #[arg(short = 'n', long, default_value_t = 16)]
        n: usize,
        /// Gradient steps (map, default 300) or Langevin steps (sample, default 400, the first half adapting the step size).
        #[arg(long)]
        steps: Option<usize>,
        /// Adam's learning rate (map, default 0.05) or the initial Langevin step size (sample, default 0.1).
        #[arg(long)]
        lr: Option<f64>,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Inputs completed at a time.
        #[arg(long, default_value_t = 64)]
        batch: usize,
        #[arg(long, value_enum, default_value_t = DeviceArg::Cpu)]
        device: DeviceArg,
    },
    /// Map inputs to their latents (concatenated per example in the plan's
    /// latent order), with log|det df/dx| per example in NAME.logdet.npy.
    #[command(allow_negative_numbers = true)]
    Encode {
        run: PathBuf,
        #[arg(long)]
        input: PathBuf,
        /// Output: .npy (float32 N,D) or .csv; - for stdout.
        #[arg(short = 'o', long)]
        out: Option<PathBuf>,
        #[arg(long, default_value_t = 256)]
        batch: usize,
        #[arg(long, value_enum, default_value_t = DeviceArg::Cpu)]
        device: DeviceArg,
    },
    /// Map latents (float32 N,D, as `encode` writes them) back to examples.
    #[command(allow_negative_numbers = true)]
    Decode {
        run: PathBuf,
        #[arg(long)]
        input: PathBuf,
        /// Output: .npy, .csv or .png; - for stdout.
        #[arg(short = 'o', long)]
        out: Option<PathBuf>,
        #[arg(long, default_value_t = 256)]
        batch: usize,
        #[arg(long, value_enum, default_value_t = DeviceArg::Cpu)]
        device: DeviceArg,
    },
    /// Examples along the path between two inputs' latents.
    #[command(allow_negative_numbers = true)]
    Interpolate {
        run: PathBuf,
        #[arg(long)]
        input: PathBuf,
        /// Index of the first example in --input.
        #[arg(long)]
        from: usize,
        /// Index of the last example in --input.
        #[arg(long)]
        to: usize,
        /// Points on the path, both ends included.
        #[arg(long, default_value_t = 8)]
        steps: usize,
        /// The great circle through the two latents instead of the straight line.
        #[arg(long)]
        slerp: bool,
        /// Output: .png (one row), .npy or .csv.
        #[arg(short = 'o', long)]
        out: Option<PathBuf>,
        #[arg(long, value_enum, default_value_t = DeviceArg::Cpu)]
        device: DeviceArg,
    },
    /// Per-example negative log-likelihood and bits per dimension (CSV).
    #[command(allow_negative_numbers = true)]
    Score {
        run: PathBuf,
        /// Examples to score (.npy or PNG)...
        #[arg(long, conflicts_with = "data")]
        input: Option<PathBuf>,
        /// ... or a data set, read as `train` reads it (its test split).
        #[arg(long)]
        data: Option<String>,
        #[arg(long)]
        data_dir: Option<PathBuf>,
        #[arg(long)]
        test: Option<PathBuf>,
        /// For folder:PATH and celeba: crop, pad or stretch to the flow's input.
        #[arg(long, value_enum, default_value_t = ResizeArg::Crop)]
        resize: ResizeArg,
        /// Score the data set's training split instead.
        #[arg(long)]
        train_split: bool,
        /// Also the importance-weighted bound over K noise draws (8-bit data).
        #[arg(long)]
        importance: Option<usize>,
        /// Output CSV (default: stdout).
        #[arg(short = 'o', long)]
        out: Option<PathBuf>,
        #[arg(long, default_value_t = 256)]
        batch: usize,
        #[arg(long, value_enum, default_value_t = DeviceArg::Cpu)]
        device: DeviceArg,
    },
    /// Draw samples from a trained run: a PNG grid for images, CSV for
    /// vectors; the format follows -o's extension (.png, .npy, .csv; - for stdout).
    #[command(allow_negative_numbers = true)]
    Sample {
        /// The run folder.
        run: PathBuf,
        #[arg(short = 'n', long, default_value_t = 64)]
        n: usize,
        /// The prior's standard deviation (0.7 is the common choice).
        #[arg(long, default_value_t = 0.7)]
        temperature: f64,
        /// Output file (default: samples.png, or samples.csv for vectors; - for stdout).
        #[arg(short = 'o', long)]
        out: Option<PathBuf>,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// For 2-D flows: also draw the learned density beside the data, in NAME.density.png.
        #[arg(long)]
        plot: bool,
        /// For a flow given class(K): draw every sample from class 0..K-1
        /// (without it, a row of the PNG grid per class, in turn).
        #[arg(long)]
        class: Option<u32>,
        /// Samples drawn at a time (memory is bounded by it, not by -n).
        #[arg(long, default_value_t = 256)]
        batch: usize,
        #[arg(long, value_enum, default_value_t = DeviceArg::Cpu)]
        device: DeviceArg,
    },
}

/// Where data sets are read from.
#[derive(clap::Args, Debug, Clone)]
pub struct DataArgs {
    /// cifar10, mnist, fashion-mnist, imagenet32, imagenet64, celeba,
    /// folder:PATH (PNG/JPEG files), npy:PATH or toy:NAME (two-moons, circles,
    /// eight-gaussians, checkerboard, pinwheel, two-spirals).
    #[arg(long)]
    pub data: String,
    /// Folder holding the data sets (default: $FLOWC_DATA, else ./data).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// For npy:PATH, a second .npy used as the test split; for folder:PATH, a
    /// second folder.
    #[arg(long)]
    pub test: Option<PathBuf>,
    /// For npy:PATH: a .npy of integer class labels, one per example of PATH
    /// (split with it when there is no --test).
    #[arg(long)]
    pub labels: Option<PathBuf>,
    /// For npy:PATH with --test: a .npy of integer class labels, one per
    /// example of the test file.
    #[arg(long)]
    pub test_labels: Option<PathBuf>,
    /// For folder:PATH and celeba: how images are fitted to the flow's input
    /// (crop: the centered box of its aspect ratio; pad: fit inside, black
    /// borders; stretch: the whole image).
    #[arg(long, value_enum, default_value_t = ResizeArg::Crop)]
    pub resize: ResizeArg,
    /// For folder:PATH and celeba: stop at an image that does not decode
    /// (else it is skipped, named, and counted).
    #[arg(long)]
    pub strict_images: bool,
    /// For folder:PATH, celeba, imagenet32/64: decode batches from disk as
    /// they are needed, whatever the set's size (sets over 1 GiB decoded
    /// always stream).
    #[arg(long)]
    pub stream: bool,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum ResizeArg {
    Crop,
    Pad,
    Stretch,
}

impl From<ResizeArg> for crate::data::Resize {
    fn from(r: ResizeArg) -> Self {
        match r {
            ResizeArg::Crop => crate::data::Resize::Crop,
            ResizeArg::Pad => crate::data::Resize::Pad,
            ResizeArg::Stretch => crate::data::Resize::Stretch,
        }
    }
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum DeviceArg {
    Cpu,
    Cuda,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum MethodArg {
    /// The most likely completion (gradient ascent on log p(x)).
    Map,
    /// Draws from p(missing | observed) (Metropolis-adjusted Langevin).
    Sample,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum Emit {
    /// The plan's text form.
    Plan,
    /// The plan as JSON.
    PlanJson,
    /// Graphviz of the flow graph.
    GraphDot,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Text,
    Json,
}

/// Exit status of README.md: 0 fine, 1 errors in the program or a failed
/// computation, 2 usage, I/O, missing or unfit data; 130 / 143 interrupted.
pub const EXIT_ERRORS: u8 = 1;
pub const EXIT_IO: u8 = 2;

/// Prints a command's output; a closed pipe is a quiet success.
fn emit(text: &str) -> ExitCode {
    match output::stdout(text) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(EXIT_IO)
        }
    }
}

/// The long names of the recorded settings given on the command line (a
/// resume compares them with the run's; see `train::TrainConfig::given`).
fn given(matches: &clap::ArgMatches) -> Vec<&'static str> {
    const RECORDED: [(&str, &str); 7] = [
        ("batch", "batch"),
        ("seed", "seed"),
        ("lr", "lr"),
        ("l2", "l2"),
        ("clip", "clip"),
        ("no_flip", "no-flip"),
        ("cosine", "cosine"),
    ];
    RECORDED
        .iter()
        .filter(|(id, _)| matches.value_source(id) == Some(clap::parser::ValueSource::CommandLine))
        .map(|(_, long)| *long)
        .collect()
}

/// The stack of the thread the commands run on. candle walks and drops
/// the autograd graph recursively, about 250 bytes a node, and a flow at
/// the language's limit of 100,000 layers makes a graph some 600,000 nodes
/// deep: 1 GiB holds that with room to spare. Only the pages a run touches
/// are ever committed.
pub const STACK_BYTES: usize = 1 << 30;

/// Keeps freed memory in the process for reuse, where glibc's malloc would
/// give it back to the kernel. Why: candle allocates every op's output
/// fresh, and glibc serves one of more than 128 KiB (its threshold moves up
/// to the largest freed so far) by `mmap`, or trims the heap's top after a
/// free; either way the next step faults the pages in again, one at a
/// time, cleared by the kernel, with both threads queueing on the page
/// table's lock: 4.3% of a 2-thread training step of realnvp_fashion
/// (`perf record`). With every block up to 32 MiB (glibc's largest
/// threshold) on the heap and no trimming below 1 GiB, a 2-thread train
/// step ran 3-8% faster (realnvp_small, realnvp_fashion; 5 alternating
/// rounds), density and sampling 1-3%, and the peak RSS stayed the same.
fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets allocator parameters; it runs before any
    // other thread of the process exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30);
    }
}

pub fn main() -> ExitCode {
    keep_freed_memory();
    // candle works out its thread count on every matmul, from /proc/cpuinfo
    // unless this is set: set it once (the same count) before any pool starts.
    if std::env::var_os("RAYON_NUM_THREADS").is_none() {
        let n = candle_core::utils::get_num_threads();
        std::env::set_var("RAYON_NUM_THREADS", n.to_string());
    }
    // The CPU kernels run on candle's pool (`exec::parallel`). Its workers
    // spin 25,000 pauses (0.3 ms here) after a call, then sleep; a train
    // step's gaps between calls are often longer, and a sleeping worker's
    // wake-up could stall the caller, which spins, for a scheduler tick or
    // more (moons' train step ran 1.5-5x slower in one bench in six). Spin
    // about 6 ms instead, so a worker sleeps only when a run pauses.
    if std::env::var_os("CANDLE_BARRIER_POOL_SPIN_LIMIT").is_none() {
        std::env::set_var("CANDLE_BARRIER_POOL_SPIN_LIMIT", "500000");
    }
    let matches = <Cli as clap::CommandFactory>::command().get_matches();
    let on_worker = matches.clone();
    let worker = std::thread::Builder::new()
        .name("flowc".into())
        .stack_size(STACK_BYTES)
        .spawn(move || run_command(&on_worker));
    match worker.map(|w| w.join()) {
        Ok(Ok(code)) => code,
        // A panic has already printed its message.
        Ok(Err(_)) => ExitCode::from(101),
        // No room for the big stack (a tight `ulimit -v`): the main thread's
        // 8 MiB still runs flows of up to about 20,000 layers.
        Err(_) => run_command(&matches),
    }
}

fn run_command(matches: &clap::ArgMatches) -> ExitCode {
    let cli = match <Cli as clap::FromArgMatches>::from_arg_matches(matches) {
        Ok(c) => c,
        Err(e) => e.exit(),
    };
    match cli.command {
        Command::Check {
            file,
            format,
            numeric,
        } => check(&file, format, numeric),
        Command::Fmt { files, check } => fmt::fmt(&files, check),
        Command::Lsp => match crate::lsp::stdio() {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: flowc lsp: {e}");
                ExitCode::from(EXIT_IO)
            }
        },
        Command::Compile {
            file,
            emit,
            stop_after,
        } => compile(&file, emit, stop_after),
        Command::Train {
            file,
            data,
            steps,
            epochs,
            batch,
            lr,
            l2,
            clip,
            seed,
            device,
            out,
            eval_every,
            eval_examples,
            resume,
            no_flip,
            cosine,
            allow_repeats,
        } => {
            let mut problems = options::Problems::default();
            problems
                .at_least_one_if_given("steps", steps)
                .at_least_one_if_given("epochs", epochs)
                .at_least_one("batch", batch as u64)
                .positive("lr", lr)
                .non_negative("l2", l2)
                .non_negative("clip", clip)
                .at_least_one("eval-every", eval_every)
                .at_least_one("eval-examples", eval_examples as u64);
            if !problems.is_empty() {
                return problems.report();
            }
            let given = given(
                matches
                    .subcommand_matches("train")
                    .expect("the train command"),
            );
            let cfg = |out: PathBuf| crate::train::TrainConfig {
                steps,
                epochs,
                batch,
                lr,
                l2,
                clip,
                seed,
                out,
                eval_every,
                eval_examples,
                resume,
                flip: !no_flip,
                data: data.data.clone(),
                test_data: data.test.as_ref().map(|t| t.display().to_string()),
                cosine,
                allow_repeats,
                given: given.clone(),
                interrupt: crate::train::Interrupt::never(),
            };
            run::train(&file, &data, device, out, cfg)
        }
        Command::Eval {
            run,
            data,
            samples,
            importance,
            classify,
            batch,
            format,
            device,
        } => {
            let mut problems = options::Problems::default();
            problems
                .at_least_one("samples", samples as u64)
                .at_least_one_if_given("importance", importance.map(|k| k as u64))
                .at_least_one("batch", batch as u64);
            if !problems.is_empty() {
                return problems.report();
            }
            let draws = run::Draws {
                samples,
                importance,
                classify,
            };
            run::eval(&run, &data, draws, batch, format, device)
        }
        Command::Bench {
            file,
            batch,
            iters,
            threads,
            device,
            format,
        } => {
            let opts = crate::bench::Options {
                batch: batch as usize,
                iters: iters as usize,
                ..Default::default()
            };
            run::bench(&file, &opts, threads, device, format)
        }
        Command::Complete {
            run,
            input,
            mask,
            out,
            grid,
            method,
            n,
            steps,
            lr,
            seed,
            batch,
            device,
        } => {
            let sampling = method == MethodArg::Sample;
            let steps = steps.unwrap_or(if sampling { 400 } else { 300 });
            let lr = lr.unwrap_or(if sampling { 0.1 } else { 0.05 });
            let mut problems = options::Problems::default();
            problems
                .at_least_one("n", n as u64)
                .at_least_one("steps", steps as u64)
                .positive("lr", lr)
                .at_least_one("batch", batch as u64);
            if !problems.is_empty() {
                return problems.report();
            }
            let method = match method {
                MethodArg::Map => crate::infer::complete::Method::Map,
                MethodArg::Sample => crate::infer::complete::Method::Sample { chains: n },
            };
            let args = infer::CompleteArgs {
                input,
                mask,
                out,
                grid,
                method,
                steps,
                lr,
                seed,
                batch,
                device,
            };
            infer::complete(&run, &args)
        }
        Command::Encode {
            run,
            input,
            out,
            batch,
            device,
        } => match options::Problems::default().at_least_one("batch", batch as u64) {
            p if !p.is_empty() => p.report(),
            _ => infer::encode(&run, &input, out, batch, device),
        },
        Command::Decode {
            run,
            input,
            out,
            batch,
            device,
        } => match options::Problems::default().at_least_one("batch", batch as u64) {
            p if !p.is_empty() => p.report(),
            _ => infer::decode(&run, &input, out, batch, device),
        },
        Command::Interpolate {
            run,
            input,
            from,
            to,
            steps,
            slerp,
            out,
            device,
        } => {
            let mut problems = options::Problems::default();
            if steps < 2 {
                problems.at_least("steps", steps as u64, 2);
            }
            if !problems.is_empty() {
                return problems.report();
            }
            let args = infer::InterpolateArgs {
                input,
                from,
                to,
                steps,
                slerp,
                out,
                device,
            };
            infer::interpolate(&run, &args)
        }
        Command::Score {
            run,
            input,
            data,
            data_dir,
            test,
            resize,
            train_split,
            importance,
            out,
            batch,
            device,
        } => {
            let mut problems = options::Problems::default();
            problems
                .at_least_one("batch", batch as u64)
                .at_least_one_if_given("importance", importance.map(|k| k as u64));
            if !problems.is_empty() {
                return problems.report();
            }
            let data = data.map(|data| DataArgs {
                data,
                data_dir,
                test,
                labels: None,
                test_labels: None,
                resize,
                strict_images: false,
                stream: false,
            });
            let args = infer::ScoreArgs {
                input,
                data,
                train_split,
                importance,
                out,
                batch,
                device,
            };
            infer::score(&run, &args)
        }
        Command::Sample {
            run,
            n,
            temperature,
            out,
            seed,
            plot,
            class,
            batch,
            device,
        } => {
            let mut problems = options::Problems::default();
            problems
                .at_least_one("n", n as u64)
                .positive("temperature", temperature)
                .at_least_one("batch", batch as u64);
            if !problems.is_empty() {
                return problems.report();
            }
            let args = sample::SampleArgs {
                n,
                temperature,
                out,
                seed,
                plot,
                class,
                batch,
                device,
            };
            sample::sample(&run, &args)
        }
    }
}

/// Reads a file, or says why not (exit status 2).
pub fn read_source(path: &Path) -> Result<Vec<u8>, ExitCode> {
    std::fs::read(path).map_err(|e| {
        eprintln!("error: cannot read {}: {e}", path.display());
        ExitCode::from(EXIT_IO)
    })
}

fn check(path: &Path, format: Format, numeric: bool) -> ExitCode {
    let bytes = match read_source(path) {
        Ok(b) => b,
        Err(code) => return code,
    };
    let source = String::from_utf8_lossy(&bytes).into_owned();
    let out = crate::check_bytes(&bytes);
    let name = path.display().to_string();
    // The numeric check runs only on a flow that verified.
    let measured = match (&out.verified, numeric && out.ok()) {
        (Some(v), true) => Some(
            crate::downsize::numeric_plan(&source, v.input)
                .and_then(|plan| crate::exec::numeric::measure(&plan).map_err(|e| e.to_string())),
        ),
        _ => None,
    };
    let mut numeric_ok = true;
    let mut text = String::new();
    match format {
        Format::Json => {
            let mut json = report::check_json(&out, &source);
            match &measured {
                Some(Ok(r)) => {
                    numeric_ok = r.within_bounds();
                    json.numeric = Some(serde_json::to_value(r).expect("plain data serializes"));
                }
                Some(Err(e)) => {
                    numeric_ok = false;
                    json.numeric = Some(serde_json::json!({ "error": e.to_string() }));
                }
                None => {}
            }
            let _ = writeln!(
                text,
                "{}",
                serde_json::to_string_pretty(&json).expect("plain data serializes")
            );
        }
        Format::Text => {
            if !out.diagnostics.is_empty() {
                let color = std::io::stderr().is_terminal();
                eprint!("{}", diag::render(&out.diagnostics, &name, &source, color));
            }
            match &out.verified {
                Some(v) if out.ok() => text.push_str(&report::check_table(v)),
                _ => eprintln!("{name}: {}", report::summary(&out.diagnostics)),
            }
            match &measured {
                Some(Ok(r)) => {
                    numeric_ok = r.within_bounds();
                    let verdict = |ok: bool| if ok { "ok" } else { "TOO LARGE" };
                    let _ = writeln!(
                        text,
                        "\nnumeric check on input {} with random parameters:",
                        r.shape
                    );
                    let _ = writeln!(
                        text,
                        "  round trip  max |x - f^-1(f(x))|             = {:.2e}  (bound {:.0e}, f32)  {}",
                        r.roundtrip_max_abs,
                        crate::exec::numeric::ROUNDTRIP_BOUND,
                        verdict(r.roundtrip_max_abs < crate::exec::numeric::ROUNDTRIP_BOUND)
                    );
                    let _ = writeln!(
                        text,
                        "  log-det     max rel error vs log|det J|      = {:.2e}  (bound {:.0e}, f64)  {}",
                        r.logdet_max_rel,
                        crate::exec::numeric::LOGDET_BOUND,
                        verdict(r.logdet_max_rel < crate::exec::numeric::LOGDET_BOUND)
                    );
                }
                Some(Err(e)) => {
                    numeric_ok = false;
                    eprintln!("error: the numeric check could not run: {e}");
                }
                None => {}
            }
        }
    }
    let printed = emit(&text);
    if !(out.ok() && numeric_ok) {
        ExitCode::from(EXIT_ERRORS)
    } else {
        printed
    }
}

fn compile(path: &Path, emit_as: Emit, stop_after: Pass) -> ExitCode {
    let bytes = match read_source(path) {
        Ok(b) => b,
        Err(code) => return code,
    };
    let source = String::from_utf8_lossy(&bytes).into_owned();
    let out = crate::check_bytes(&bytes);
    if !out.diagnostics.is_empty() {
        let color = std::io::stderr().is_terminal();
        eprint!(
            "{}",
            diag::render(
                &out.diagnostics,
                &path.display().to_string(),
                &source,
                color
            )
        );
    }
    let Some(verified) = out.verified.as_ref().filter(|_| out.ok()) else {
        eprintln!("{}: {}", path.display(), report::summary(&out.diagnostics));
        return ExitCode::from(EXIT_ERRORS);
    };
    let text = match emit_as {
        Emit::GraphDot => verified.graph.to_dot(),
        Emit::Plan => crate::lower::compile(verified, stop_after).to_string(),
        Emit::PlanJson => {
            let plan = crate::lower::compile(verified, stop_after);
            serde_json::to_string_pretty(&plan).expect("plain data serializes") + "\n"
        }
    };
    emit(&text)
}
