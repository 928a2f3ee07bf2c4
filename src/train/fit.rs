//! The training loop of `flowc train` and the run folder it owns: the lock,
//! a fresh run or a resumed one (whose recorded settings the command line
//! may repeat but not change), a checkpoint at each evaluation and at an
//! interrupt, and a metrics log that agrees with the checkpoint.

use std::path::PathBuf;
use std::time::Instant;

use candle_core::{DType, Device, Var};

use super::checkpoint::{self, TrainState};
use super::interrupt::{self, Interrupt};
use super::metrics::{Metric, MetricsLog};
use super::rng::{self, Rng};
use super::{adam::Adam, lock, png, Loaded, Tensors, TrainError};
use crate::data::{Data, Fetched, PREFETCH_DEPTH};

use super::order::BatchPlan;

/// Everything `flowc train` is told.
#[derive(Clone, Debug)]
pub struct TrainConfig {
    pub steps: Option<u64>,
    pub epochs: Option<u64>,
    pub batch: usize,
    pub lr: f64,
    pub l2: f64,
    pub clip: f64,
    pub seed: u64,
    pub out: PathBuf,
    pub eval_every: u64,
    /// Test examples per evaluation during training (the whole set: `flowc eval`).
    pub eval_examples: usize,
    pub resume: bool,
    pub flip: bool,
    /// The data set as given to `--data`, and `--test` if given.
    pub data: String,
    pub test_data: Option<String>,
    /// Cosine learning-rate decay from `lr` to 0 over the run's steps.
    pub cosine: bool,
    /// Allow a batch larger than the training set (examples then repeat).
    pub allow_repeats: bool,
    /// The options the user gave (long names): a resumed run compares them
    /// with its recorded settings; the others it takes from the run.
    pub given: Vec<&'static str>,
    /// Raised by Ctrl-C / SIGTERM: stop after the step, with a checkpoint.
    pub interrupt: Interrupt,
}

/// How a training command ended.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// All steps done; the last test bits/dim.
    Finished { test_bits_per_dim: f64 },
    /// Stopped by a signal after `step`, with a checkpoint there.
    Interrupted { signal: i32, step: u64 },
}

impl TrainConfig {
    /// The run's settings as recorded in its checkpoint at step 0.
    fn fresh_state(&self, source: &str) -> TrainState {
        TrainState {
            step: 0,
            seed: self.seed,
            batch: self.batch,
            lr: self.lr,
            l2: self.l2,
            clip: self.clip,
            flip: self.flip,
            data: self.data.clone(),
            examples_seen: 0,
            flow_hash: checkpoint::flow_hash(source),
            adam_t: 0,
            test_bits_per_dim: None,
            cosine: self.cosine,
            steps: None,
            test_data: self.test_data.clone(),
        }
    }
}

/// Refuses a resume whose command line changes a setting the run recorded,
/// naming both values; repeating a value is fine. The data set (`--data`,
/// `--test`) is always given, so it is always compared.
fn check_recorded(cfg: &TrainConfig, s: &TrainState) -> Result<(), TrainError> {
    let recorded: [(&str, String, String); 9] = [
        ("batch", cfg.batch.to_string(), s.batch.to_string()),
        ("seed", cfg.seed.to_string(), s.seed.to_string()),
        ("lr", cfg.lr.to_string(), s.lr.to_string()),
        ("l2", cfg.l2.to_string(), s.l2.to_string()),
        ("clip", cfg.clip.to_string(), s.clip.to_string()),
        ("no-flip", (!cfg.flip).to_string(), (!s.flip).to_string()),
        ("cosine", cfg.cosine.to_string(), s.cosine.to_string()),
        ("data", same_data(&cfg.data), same_data(&s.data)),
        ("test", opt_data(&cfg.test_data), opt_data(&s.test_data)),
    ];
    let changed: Vec<String> = recorded
        .iter()
        .filter(|(name, given, was)| {
            (matches!(*name, "data" | "test") || cfg.given.contains(name)) && given != was
        })
        .map(|(name, given, was)| format!("--{name} {given} (this run was started with {was})"))
        .collect();
    if changed.is_empty() {
        return Ok(());
    }
    Err(TrainError::Usage(format!(
        "--resume keeps the settings {} was started with; leave these out or give the recorded values: {}",
        cfg.out.display(),
        changed.join("; ")
    )))
}

/// A data spec in a form where two ways of naming one data set agree.
fn same_data(spec: &str) -> String {
    match crate::data::Spec::parse(spec) {
        Ok(crate::data::Spec::Npy(p)) => std::fs::canonicalize(&p)
            .map(|c| format!("npy:{}", c.display()))
            .unwrap_or_else(|_| spec.to_string()),
        Ok(crate::data::Spec::Folder(p)) => std::fs::canonicalize(&p)
            .map(|c| format!("folder:{}", c.display()))
            .unwrap_or_else(|_| spec.to_string()),
        Ok(s) => s.name(),
        Err(_) => spec.to_string(),
    }
}

fn opt_data(path: &Option<String>) -> String {
    match path {
        Some(p) => std::fs::canonicalize(p)
            .map(|c| c.display().to_string())
            .unwrap_or_else(|_| p.clone()),
        None => "(none)".to_string(),
    }
}

/// The run's total steps: `--steps`, else `--epochs` epochs, else one epoch.
fn total_steps(cfg: &TrainConfig, per_epoch: u64) -> u64 {
    match (cfg.steps, cfg.epochs) {
        (Some(s), _) => s,
        (None, Some(e)) => e.saturating_mul(per_epoch),
        (None, None) => per_epoch,
    }
}

/// Refuses batches the run cannot use well.
fn check_batch(
    loaded: &Loaded,
    batch: usize,
    n: usize,
    cfg: &TrainConfig,
) -> Result<(), TrainError> {
    let has_batchnorm = loaded
        .plan
        .forward
        .iter()
        .any(|s| matches!(s.op, crate::plan::Op::BatchNorm { .. }));
    if batch == 1 && has_batchnorm {
        return Err(TrainError::Usage(
            "--batch 1: this flow has a batchnorm layer, whose statistics of one example make its log-det meaningless; use --batch 2 or more".into(),
        ));
    }
    if batch > n && !cfg.allow_repeats {
        return Err(TrainError::Usage(format!(
            "--batch {batch} is larger than the {n} training examples, so each batch would repeat examples; use --batch {n} or less, or pass --allow-repeats"
        )));
    }
    Ok(())
}

/// Opens the run folder for this command: a resumed run (its flow, state,
/// checkpoint tensors and metrics cut back), or a fresh one.
fn open_folder(
    source: &str,
    data: &Data,
    cfg: &TrainConfig,
    device: &Device,
) -> Result<(Loaded, TrainState, Option<Tensors>), TrainError> {
    let out = &cfg.out;
    let has_checkpoint = out.join(checkpoint::CHECKPOINT).exists();
    if has_checkpoint && !cfg.resume {
        return Err(TrainError::Usage(format!(
            "{} already holds a run; pass --resume to continue it, or choose another --out",
            out.display()
        )));
    }
    if cfg.resume && !has_checkpoint {
        return Err(TrainError::Usage(format!(
            "--resume: {} holds no checkpoint to resume from",
            out.join(checkpoint::CHECKPOINT).display()
        )));
    }
    let (loaded, state, tensors) = if cfg.resume {
        let (l, s, tensors) = super::open_run(out, device)?;
        if l.source != source {
            return Err(TrainError::Usage(format!(
                "--resume: {} holds a different flow than the one given",
                out.join("model.flow").display()
            )));
        }
        check_recorded(cfg, &s)?;
        (l, s, Some(tensors))
    } else {
        let l = super::build(source, device)?;
        super::init_params(&l.varmap, &l.plan, cfg.seed)?;
        (l, cfg.fresh_state(source), None)
    };
    super::check_data_shape(data, loaded.plan.input)?;
    check_batch(&loaded, state.batch, data.train.len(), cfg)?;
    Ok((loaded, state, tensors))
}

/// Trains `source` on `data` as `cfg` says.
pub fn train(
    source: &str,
    data: &Data,
    cfg: &TrainConfig,
    device: &Device,
) -> Result<Outcome, TrainError> {
    let out = &cfg.out;
    std::fs::create_dir_all(out)
        .map_err(|e| TrainError::Io(format!("cannot create {}: {e}", out.display())))?;
    let _lock = lock::acquire(out)?;
    let (loaded, mut state, resumed) = open_folder(source, data, cfg, device)?;
    super::check_labels(data, &loaded.plan)?;
    let n = data.train.len();
    if n == 0 {
        return Err(TrainError::Data(format!(
            "data set {} has no training examples",
            data.name
        )));
    }
    let total = total_steps(cfg, n.div_ceil(state.batch) as u64);
    if state.cosine && state.steps.is_some_and(|s| s != total) {
        return Err(TrainError::Usage(format!(
            "--resume: this run's cosine schedule spans {} steps; --steps {total} would change the learning rate of the steps already taken; give --steps {}",
            state.steps.unwrap_or(0),
            state.steps.unwrap_or(0)
        )));
    }
    state.steps = Some(total);
    let io = |what: &std::path::Path| {
        let what = what.display().to_string();
        move |e: std::io::Error| TrainError::Io(format!("cannot write {what}: {e}"))
    };
    let mut log = if resumed.is_some() {
        // state.json may lag its checkpoint after a crash between the two writes.
        let state_json = out.join(checkpoint::STATE);
        checkpoint::write_atomic(
            &state_json,
            serde_json::to_string_pretty(&state)
                .expect("plain data")
                .as_bytes(),
        )
        .map_err(io(&state_json))?;
        MetricsLog::resume(out, state.step)?
    } else {
        // The folder may hold what a run that never saved a checkpoint left.
        for stale in [checkpoint::STATE, "samples.png"] {
            let _ = std::fs::remove_file(out.join(stale));
        }
        let flow_path = out.join("model.flow");
        checkpoint::write_atomic(&flow_path, source.as_bytes()).map_err(io(&flow_path))?;
        MetricsLog::fresh(out)?
    };
    let mut adam = adam_for(&loaded, &state, resumed)?;
    run_steps(
        &loaded, data, cfg, device, &mut state, &mut adam, &mut log, total,
    )
}

/// Adam over the flow's parameters, with a resumed run's moments.
fn adam_for(
    loaded: &Loaded,
    state: &TrainState,
    resumed: Option<Tensors>,
) -> Result<Adam, TrainError> {
    let vars: Vec<(String, Var)> = loaded
        .varmap
        .data()
        .lock()
        .expect("lock")
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let mut adam = Adam::new(vars, state.lr, state.l2, state.clip)?;
    if let Some(tensors) = resumed {
        adam.load_state(state.adam_t, |k| tensors.get(k).cloned())?;
    }
    Ok(adam)
}

/// Where the last good checkpoint is, for a message about a failed step.
fn last_good(out: &std::path::Path) -> String {
    match checkpoint::read_state(out) {
        Ok(s) => format!(
            "the last good checkpoint is {} (step {})",
            out.join(checkpoint::CHECKPOINT).display(),
            s.step
        ),
        Err(_) => "no checkpoint was saved yet".to_string(),
    }
}

/// One optimizer step; the batch's mean NLL (nats per example).
fn one_step(
    loaded: &Loaded,
    batch: Fetched,
    labels: Option<&[u32]>,
    state: &TrainState,
    adam: &mut Adam,
    device: &Device,
    out: &std::path::Path,
) -> Result<f64, TrainError> {
    let (seed, step) = (state.seed, state.step);
    let flip = state.flip && loaded.plan.input.is_image();
    let mut noise = Rng::keyed(seed, rng::NOISE, step);
    let mut flips = Rng::keyed(seed, rng::FLIP, step);
    let given = super::batch_labels(&loaded.flow, labels, &batch.indices)?;
    let x = super::examples_tensor(
        batch.examples,
        &mut noise,
        flip.then_some(&mut flips),
        device,
    )?;
    let loss = loaded
        .flow
        .log_prob_given(&x, given.as_ref(), true)?
        .mean_all()?
        .neg()?;
    let nll = loss.to_dtype(DType::F64)?.to_scalar::<f64>()?;
    if !nll.is_finite() {
        return Err(TrainError::Failed(format!("non-finite loss ({nll}) at step {}; the weights were not updated; {}; try a lower --lr or --clip", step + 1, last_good(out))));
    }
    let grads = loss.backward()?;
    if let Err(norm) = adam.step(&grads)? {
        return Err(TrainError::Failed(format!(
            "non-finite gradient (norm {norm}) at step {}; the weights were not updated; {}",
            step + 1,
            last_good(out)
        )));
    }
    Ok(nll)
}

/// The steps from `state.step` to `total`.
#[allow(clippy::too_many_arguments)]
fn run_steps(
    loaded: &Loaded,
    data: &Data,
    cfg: &TrainConfig,
    device: &Device,
    state: &mut TrainState,
    adam: &mut Adam,
    log: &mut MetricsLog,
    total: u64,
) -> Result<Outcome, TrainError> {
    let out = &cfg.out;
    let shape = loaded.plan.input;
    let bar = progress(total, state.step);
    let (started, start_step) = (Instant::now(), state.step);
    let mut last_bpd = f64::NAN;
    // The test examples evaluations during training use: a copy taken once,
    // or for a streamed test set the first of its stream, read each time.
    let eval_set = data.test.head(cfg.eval_examples);
    let plan = BatchPlan::new(
        data.order.clone(),
        state.seed,
        state.batch,
        data.train.len(),
        state.step,
        total,
    );
    // Streamed data is decoded ahead of the step on a loader thread.
    let mut batches = data.train.batches(Box::new(plan), PREFETCH_DEPTH);
    let mut wait = DataWait::default();
    while state.step < total {
        let t0 = Instant::now();
        let batch = next_batch(&mut batches, data, &bar, state.step)?;
        wait.add(t0.elapsed());
        if state.cosine {
            let at = state.step as f64 / total as f64;
            adam.lr = state.lr * 0.5 * (1.0 + (std::f64::consts::PI * at).cos());
        }
        let labels = data.labels.as_ref().map(|l| l.train.as_slice());
        let nll = one_step(loaded, batch, labels, state, adam, device, out)?;
        state.step += 1;
        state.examples_seen += state.batch as u64;
        state.adam_t = adam.t;
        last_bpd = super::bits_per_dim(nll, shape);
        let ips = state.batch as f64 / t0.elapsed().as_secs_f64();
        let eval_now = state.step.is_multiple_of(cfg.eval_every) || state.step == total;
        let test = if eval_now {
            let labels = data.labels.as_ref().map(|l| l.test.as_slice());
            Some(evaluate_step(
                loaded, &eval_set, labels, state, device, out,
            )?)
        } else {
            None
        };
        // The log is written before the checkpoint: it may run ahead of it
        // (a resume cuts it back), never behind.
        log.append(&Metric {
            step: state.step,
            train_bits_per_dim: last_bpd,
            test_bits_per_dim: test,
            images_per_s: ips,
        })?;
        let signal = cfg.interrupt.raised();
        if eval_now || signal.is_some() {
            checkpoint::save(out, &super::checkpoint_tensors(loaded, adam), state)
                .map_err(TrainError::Io)?;
        }
        report(
            &bar, state, total, last_bpd, test, started, start_step, &wait,
        );
        if let Some(signal) = signal {
            if let Some(b) = &bar {
                b.abandon();
            }
            eprintln!(
                "{}: stopped after step {}/{total}; checkpoint saved to {}; continue with the same command and --resume",
                interrupt::name(signal),
                state.step,
                out.join(checkpoint::CHECKPOINT).display()
            );
            return Ok(Outcome::Interrupted {
                signal,
                step: state.step,
            });
        }
    }
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    let test_bits_per_dim = state.test_bits_per_dim.unwrap_or(f64::NAN);
    if state.step == start_step {
        // A resume at or past its target: no step ran, so no train figure.
        eprintln!(
            "{} is already at step {} (the target is {total}); nothing to train; give a larger --steps to continue",
            out.display(),
            state.step
        );
        return Ok(Outcome::Finished { test_bits_per_dim });
    }
    eprintln!(
        "trained {} steps to {}: train {last_bpd:.4} bits/dim, test {test_bits_per_dim:.4} bits/dim (first {} test examples; `flowc eval` for all)",
        state.step,
        out.display(),
        eval_set.len()
    );
    if data.train.is_streamed() {
        eprintln!(
            "data: streamed; the steps waited {:.1} s for it ({:.1}% of {:.1} s)",
            wait.total.as_secs_f64(),
            wait.share(started.elapsed()) * 100.0,
            started.elapsed().as_secs_f64()
        );
    }
    let skipped = data.train.skipped_count();
    if skipped > 0 {
        eprintln!(
            "warning: {skipped} of {} training image files do not decode and were left out of their batches (--strict-images stops at the first)",
            data.train.len()
        );
    }
    Ok(Outcome::Finished { test_bits_per_dim })
}

/// The evaluation of an `--eval-every` step: test bits/dim and a sample
/// grid for images. A non-finite test value stops the run before the step
/// is saved.
fn evaluate_step(
    loaded: &Loaded,
    eval_set: &crate::data::Split,
    labels: Option<&[u32]>,
    state: &mut TrainState,
    device: &Device,
    out: &std::path::Path,
) -> Result<f64, TrainError> {
    let (_, bpd, _) = super::evaluate(&loaded.flow, eval_set, labels, 256, 1, state.seed, device)?;
    if !bpd.is_finite() {
        return Err(TrainError::Failed(format!(
            "non-finite test bits/dim ({bpd}) at step {}; this step was not saved; {}",
            state.step,
            last_good(out)
        )));
    }
    state.test_bits_per_dim = Some(bpd);
    if loaded.plan.input.is_image() {
        // A conditioned flow's grid has a row of 8 per class.
        let (n, classes) = match loaded.plan.condition {
            Some(c) => (8 * c.classes as usize, super::Classes::Rows { per_row: 8 }),
            None => (64, super::Classes::None),
        };
        let seed = state.seed ^ state.step;
        let s = super::sample_range(&loaded.flow, 0..n, classes, 0.7, seed, device)?;
        png::save_grid(&s, 8, &out.join("samples.png")).map_err(TrainError::Io)?;
    }
    Ok(bpd)
}

fn progress(total: u64, at: u64) -> Option<indicatif::ProgressBar> {
    use std::io::IsTerminal;
    if !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = indicatif::ProgressBar::new(total);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{bar:30} {pos}/{len} {msg} [{elapsed_precise} < {eta_precise}]",
        )
        .expect("valid template"),
    );
    bar.set_position(at);
    Some(bar)
}

/// How long the steps waited for their batches.
#[derive(Debug, Default)]
struct DataWait {
    total: std::time::Duration,
}

impl DataWait {
    fn add(&mut self, d: std::time::Duration) {
        self.total += d;
    }
    /// The share of `elapsed` spent waiting.
    fn share(&self, elapsed: std::time::Duration) -> f64 {
        self.total.as_secs_f64() / elapsed.as_secs_f64().max(1e-9)
    }
}

/// The next batch of the plan: its files that do not decode named (through
/// the bar, which would draw over a plain line), a loader error as a data
/// error that stops the run.
fn next_batch(
    batches: &mut crate::data::Batches<'_>,
    data: &Data,
    bar: &Option<indicatif::ProgressBar>,
    step: u64,
) -> Result<Fetched, TrainError> {
    let fetched = batches
        .next()
        .ok_or_else(|| TrainError::Data(format!("the data loader ended before step {}", step + 1)))?
        .map_err(|e| TrainError::Data(format!("{e} (step {})", step + 1)))?;
    for line in data.train.note_skips(&fetched.skipped) {
        match bar {
            Some(b) => b.println(line),
            None => eprintln!("{line}"),
        }
    }
    Ok(fetched)
}

/// Progress: a bar on a terminal, else a plain line every 10 steps; the
/// share of the time the steps waited for data.
#[allow(clippy::too_many_arguments)]
fn report(
    bar: &Option<indicatif::ProgressBar>,
    s: &TrainState,
    total: u64,
    bpd: f64,
    test: Option<f64>,
    started: Instant,
    start_step: u64,
    wait: &DataWait,
) {
    let done = (s.step - start_step) as f64;
    let rate = done * s.batch as f64 / started.elapsed().as_secs_f64();
    let left = started.elapsed().as_secs_f64() / done * (total - s.step) as f64;
    let test = test.map(|t| format!(", test {t:.3}")).unwrap_or_default();
    let waited = wait.share(started.elapsed()) * 100.0;
    let msg = format!("train {bpd:.3} bits/dim{test}, {rate:.0} img/s, data wait {waited:.1}%");
    match bar {
        Some(b) => {
            b.set_position(s.step);
            b.set_message(msg);
        }
        None if s.step.is_multiple_of(10) || s.step == total || !test.is_empty() => {
            eprintln!("step {}/{total}  {msg}, {left:.0}s left", s.step);
        }
        None => {}
    }
}
