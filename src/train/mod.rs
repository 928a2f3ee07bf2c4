//! Stage 8, train: fit a compiled flow to a data set, evaluate it in bits per
//! dimension, draw samples. Everything a run needs to continue lives in its
//! folder (`model.flow`, `checkpoint.safetensors`, `state.json`,
//! `metrics.jsonl`, `samples.png`).
//!
//! Bits per dimension follow Real NVP: 8-bit data is dequantized with uniform
//! noise, `x = (v + u) / 256`, so that with `D` values per example and the
//! flow's density on [0,1)^D, `bpd = (NLL + D ln 256) / (D ln 2)`. Vector data
//! is modelled as is: `bpd = NLL / (D ln 2)`.

pub mod adam;
pub mod checkpoint;
pub mod png;
pub mod rng;

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};
use serde::Serialize;

use crate::data::{Dataset, Examples};
use crate::exec::Flow;
use crate::plan::{Init, Plan};
use crate::shape::Shape;
use adam::Adam;
use checkpoint::TrainState;
use rng::Rng;

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
    pub data: String,
    /// Cosine learning-rate decay from `lr` to 0 over the run's steps.
    pub cosine: bool,
}

/// A message for the user; training stops with it.
pub type TrainError = String;

/// One line of `metrics.jsonl`.
#[derive(Serialize)]
struct Metric {
    step: u64,
    train_bits_per_dim: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    test_bits_per_dim: Option<f64>,
    images_per_s: f64,
}

/// Values per example and whether they are 8-bit (dequantized) data.
fn dims_of(shape: Shape) -> (f64, bool) {
    (shape.size() as f64, shape.is_image())
}

/// Bits per dimension of a mean negative log-likelihood (nats per example).
pub fn bits_per_dim(nll: f64, shape: Shape) -> f64 {
    let (d, image) = dims_of(shape);
    let offset = if image { d * 256f64.ln() } else { 0.0 };
    (nll + offset) / (d * std::f64::consts::LN_2)
}

/// Refuses data whose examples do not have the flow's input shape.
pub fn check_data_shape(data: &Dataset, input: Shape) -> Result<(), TrainError> {
    let want: Vec<usize> = input.dims().iter().map(|&d| d as usize).collect();
    let kind_ok = matches!(
        (&data.train, input),
        (Examples::Images { .. }, Shape::Image { .. })
            | (Examples::Vectors { .. }, Shape::Vector { .. })
    );
    if !kind_ok || data.train.example_shape() != want {
        let expected = match input {
            Shape::Image { c, h, w } => format!("image({c}, {h}, {w})"),
            Shape::Vector { d } => format!("vector({d})"),
        };
        return Err(format!(
            "data set {} has examples of {} but the flow's input is {expected}; choose a data set of that shape or change `input`",
            data.name,
            data.train.describe_example()
        ));
    }
    Ok(())
}

/// A batch as the flow sees it: images dequantized to [0,1) with noise from
/// `rng` (and flipped left-right where `flips` says), vectors as they are.
pub fn batch_tensor(
    ex: &Examples,
    idx: &[usize],
    rng: &mut Rng,
    flips: Option<&mut Rng>,
    device: &Device,
) -> candle_core::Result<Tensor> {
    let sel = ex.select(idx);
    match sel {
        Examples::Images { data, n, c, h, w } => {
            let mut out: Vec<f32> = data
                .iter()
                .map(|&v| ((v as f64 + rng.uniform()) / 256.0) as f32)
                .collect();
            if let Some(f) = flips {
                for i in 0..n {
                    if f.uniform() < 0.5 {
                        for row in out[i * c * h * w..(i + 1) * c * h * w].chunks_mut(w) {
                            row.reverse();
                        }
                    }
                }
            }
            Tensor::from_vec(out, (n, c, h, w), device)
        }
        Examples::Vectors { data, n, d } => Tensor::from_vec(data, (n, d), device),
    }
}

/// Sets every parameter from the plan's initializers with a seeded stream,
/// so that the same seed gives the same run.
pub fn init_params(vm: &VarMap, plan: &Plan, seed: u64) -> candle_core::Result<()> {
    let data = vm.data().lock().expect("var map lock");
    for (k, p) in plan.params.iter().enumerate() {
        let Some(var) = data.get(&p.name) else {
            continue;
        };
        let n: usize = p.shape.iter().map(|&d| d as usize).product();
        let fan_in: f64 = p
            .shape
            .iter()
            .skip(1)
            .map(|&d| d as f64)
            .product::<f64>()
            .max(1.0);
        let mut rng = Rng::keyed(seed, rng::INIT, k as u64);
        let values: Vec<f32> = match p.init {
            Init::Zeros | Init::Data => vec![0.0; n],
            Init::Ones => vec![1.0; n],
            Init::Normal => (0..n)
                .map(|_| (rng.normal() * (2.0 / fan_in).sqrt()) as f32)
                .collect(),
            Init::Uniform => {
                let bound = 1.0 / fan_in.sqrt();
                (0..n)
                    .map(|_| ((rng.uniform() * 2.0 - 1.0) * bound) as f32)
                    .collect()
            }
        };
        let t = Tensor::from_vec(values, var.shape(), var.device())?.to_dtype(var.dtype())?;
        var.set(&t)?;
    }
    Ok(())
}

/// Mean NLL (nats per example) and bits/dim of `flow` on `ex` (eval mode),
/// with the dequantization noise averaged over `samples` draws.
pub fn evaluate(
    flow: &Flow,
    ex: &Examples,
    batch: usize,
    samples: usize,
    seed: u64,
    device: &Device,
) -> candle_core::Result<(f64, f64, usize)> {
    let n = ex.len();
    let mut total = 0f64;
    for s in 0..samples.max(1) {
        let mut rng = Rng::keyed(seed, rng::NOISE ^ 0xE7A1, s as u64);
        for start in (0..n).step_by(batch.max(1)) {
            let idx: Vec<usize> = (start..(start + batch).min(n)).collect();
            let x = batch_tensor(ex, &idx, &mut rng, None, device)?;
            let lp = flow
                .log_prob(&x, false)?
                .to_dtype(DType::F64)?
                .sum_all()?
                .to_scalar::<f64>()?;
            total -= lp;
        }
    }
    let nll = total / (n * samples.max(1)) as f64;
    Ok((nll, bits_per_dim(nll, flow.plan().input), n))
}

/// Draws `n` samples at `temperature` with a seeded stream.
pub fn sample(
    flow: &Flow,
    n: usize,
    temperature: f64,
    seed: u64,
    device: &Device,
) -> candle_core::Result<Tensor> {
    let mut rng = Rng::keyed(seed, rng::SAMPLE, 0);
    let latents = flow
        .plan()
        .latent_shapes()
        .into_iter()
        .map(|s| {
            let k = s.size() as usize;
            let mut dims = vec![n];
            dims.extend(s.dims().iter().map(|&d| d as usize));
            let v: Vec<f32> = (0..n * k)
                .map(|_| {
                    let z = match flow.plan().prior {
                        crate::resolve::Prior::Normal => rng.normal(),
                        crate::resolve::Prior::Logistic => {
                            let u = rng.uniform().clamp(1e-9, 1.0 - 1e-9);
                            (u / (1.0 - u)).ln()
                        }
                    };
                    (z * temperature) as f32
                })
                .collect();
            Tensor::from_vec(v, dims, device)
        })
        .collect::<candle_core::Result<Vec<_>>>()?;
    flow.inverse(&latents)
}

/// A flow with its parameters, fresh or from a run folder.
pub struct Loaded {
    pub flow: Flow,
    pub varmap: VarMap,
    pub plan: Plan,
    pub source: String,
}

/// Compiles `source` and builds its flow on `device`.
pub fn build(source: &str, device: &Device) -> Result<Loaded, TrainError> {
    let plan = crate::compile(source).map_err(|d| {
        let n = d.errors().count();
        format!(
            "the flow has {n} error{}; run `flowc check` on it",
            if n == 1 { "" } else { "s" }
        )
    })?;
    let varmap = VarMap::new();
    let flow = Flow::new(
        &plan,
        VarBuilder::from_varmap(&varmap, DType::F32, device),
        device,
    )
    .map_err(|e| e.to_string())?;
    Ok(Loaded {
        flow,
        varmap,
        plan,
        source: source.to_string(),
    })
}

/// Loads a run folder: its `model.flow` and its checkpoint.
pub fn load_run(run: &Path, device: &Device) -> Result<(Loaded, TrainState), TrainError> {
    open_run(run, device).map(|(loaded, state, _)| (loaded, state))
}

/// As [`load_run`], also handing back the checkpoint's tensors (Adam's moments are among them).
fn open_run(run: &Path, device: &Device) -> Result<(Loaded, TrainState, Tensors), TrainError> {
    let flow_path = run.join("model.flow");
    let source = std::fs::read_to_string(&flow_path).map_err(|e| {
        format!(
            "{} is not a run folder: cannot read {}: {e}",
            run.display(),
            flow_path.display()
        )
    })?;
    let loaded = build(&source, device)?;
    let (tensors, state) = checkpoint::load(run, device)?;
    if state.flow_hash != checkpoint::flow_hash(&source) {
        return Err(format!(
            "{} was saved for a different flow than {}",
            run.join(checkpoint::CHECKPOINT).display(),
            flow_path.display()
        ));
    }
    restore(&loaded, &tensors)?;
    Ok((loaded, state, tensors))
}

type Tensors = std::collections::HashMap<String, Tensor>;

/// Sets parameters and buffers from checkpoint tensors; every one must be there.
fn restore(
    l: &Loaded,
    tensors: &std::collections::HashMap<String, Tensor>,
) -> Result<(), TrainError> {
    let data = l.varmap.data().lock().expect("var map lock");
    let buffers = l.flow.buffers();
    let all = data
        .iter()
        .map(|(n, v)| (n.clone(), v.clone()))
        .chain(buffers);
    for (name, var) in all {
        let t = tensors
            .get(&name)
            .ok_or_else(|| format!("the checkpoint has no tensor `{name}`"))?;
        if t.dims() != var.dims() {
            return Err(format!(
                "checkpoint tensor `{name}` has shape {:?}, the flow needs {:?}",
                t.dims(),
                var.dims()
            ));
        }
        var.set(t).map_err(|e| e.to_string())?;
    }
    l.flow.mark_initialized();
    Ok(())
}

fn checkpoint_tensors(l: &Loaded, adam: &Adam) -> Vec<(String, Tensor)> {
    let data = l.varmap.data().lock().expect("var map lock");
    let mut out: Vec<(String, Tensor)> = data
        .iter()
        .map(|(n, v)| (n.clone(), v.as_tensor().clone()))
        .collect();
    out.extend(
        l.flow
            .buffers()
            .into_iter()
            .map(|(n, v)| (n, v.as_tensor().clone())),
    );
    out.extend(adam.state());
    out
}

/// Trains `source` on `data` as `cfg` says; returns the final test bits/dim.
pub fn train(
    source: &str,
    data: &Dataset,
    cfg: &TrainConfig,
    device: &Device,
) -> Result<f64, TrainError> {
    let out = &cfg.out;
    let has_checkpoint = out.join(checkpoint::CHECKPOINT).exists();
    if has_checkpoint && !cfg.resume {
        return Err(format!(
            "{} already holds a run; pass --resume to continue it, or choose another --out",
            out.display()
        ));
    }
    if cfg.resume && !has_checkpoint {
        return Err(format!(
            "--resume: {} holds no checkpoint to resume from",
            out.join(checkpoint::CHECKPOINT).display()
        ));
    }
    std::fs::create_dir_all(out).map_err(|e| format!("cannot create {}: {e}", out.display()))?;
    // Checkpoint tensors of a resumed run, kept until Adam has its moments back.
    let mut resumed: Option<Tensors> = None;
    let (loaded, mut state) = if cfg.resume {
        let (l, s, tensors) = open_run(out, device)?;
        resumed = Some(tensors);
        if l.source != source {
            return Err(format!(
                "--resume: {} holds a different flow than the one given",
                out.join("model.flow").display()
            ));
        }
        (l, s)
    } else {
        let l = build(source, device)?;
        init_params(&l.varmap, &l.plan, cfg.seed).map_err(|e| e.to_string())?;
        checkpoint::write_atomic(&out.join("model.flow"), source.as_bytes())
            .map_err(|e| e.to_string())?;
        let state = TrainState {
            step: 0,
            seed: cfg.seed,
            batch: cfg.batch,
            lr: cfg.lr,
            l2: cfg.l2,
            clip: cfg.clip,
            flip: cfg.flip,
            data: cfg.data.clone(),
            examples_seen: 0,
            flow_hash: checkpoint::flow_hash(source),
            adam_t: 0,
            test_bits_per_dim: None,
        };
        (l, state)
    };
    check_data_shape(data, loaded.plan.input)?;
    // A resumed run keeps the settings it started with: that is what makes it
    // reach the result of an unbroken one.
    let (seed, batch, flip) = (
        state.seed,
        state.batch,
        state.flip && loaded.plan.input.is_image(),
    );
    let n = data.train.len();
    if n == 0 {
        return Err(format!("data set {} has no training examples", data.name));
    }
    let per_epoch = n.div_ceil(batch) as u64;
    let total = match (cfg.steps, cfg.epochs) {
        (Some(s), _) => s,
        (None, Some(e)) => e * per_epoch,
        (None, None) => per_epoch,
    };
    let vars: Vec<(String, Var)> = loaded
        .varmap
        .data()
        .lock()
        .expect("lock")
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let mut adam = Adam::new(vars, state.lr, state.l2, state.clip).map_err(|e| e.to_string())?;
    if let Some(tensors) = resumed.take() {
        adam.load_state(state.adam_t, |k| tensors.get(k).cloned())
            .map_err(|e| e.to_string())?;
    }
    let shape = loaded.plan.input;
    let bar = progress(total, state.step);
    let started = Instant::now();
    let start_step = state.step;
    let mut metrics = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(out.join("metrics.jsonl"))
        .map_err(|e| e.to_string())?;
    let mut epoch_perm: Option<(u64, Vec<usize>)> = None;
    let mut last_bpd = f64::NAN;
    // The test examples evaluations during training use, taken once.
    let eval_set = data
        .test
        .select(&(0..cfg.eval_examples.min(data.test.len())).collect::<Vec<_>>());
    while state.step < total {
        let step = state.step;
        let t0 = Instant::now();
        // Example j of this step is position p = step * batch + j of an endless
        // sequence of epochs, each a seeded permutation of the training set.
        let mut idx = Vec::with_capacity(batch);
        for j in 0..batch as u64 {
            let p = step * batch as u64 + j;
            let epoch = p / n as u64;
            if epoch_perm.as_ref().is_none_or(|(e, _)| *e != epoch) {
                epoch_perm = Some((epoch, Rng::keyed(seed, rng::SHUFFLE, epoch).permutation(n)));
            }
            idx.push(epoch_perm.as_ref().unwrap().1[(p % n as u64) as usize]);
        }
        if cfg.cosine {
            adam.lr =
                state.lr * 0.5 * (1.0 + (std::f64::consts::PI * step as f64 / total as f64).cos());
        }
        let mut noise = Rng::keyed(seed, rng::NOISE, step);
        let mut flips = Rng::keyed(seed, rng::FLIP, step);
        let x = batch_tensor(
            &data.train,
            &idx,
            &mut noise,
            flip.then_some(&mut flips),
            device,
        )
        .map_err(|e| e.to_string())?;
        let loss = loaded
            .flow
            .log_prob(&x, true)
            .and_then(|lp| lp.mean_all()?.neg())
            .map_err(|e| e.to_string())?;
        let nll = loss
            .to_dtype(DType::F64)
            .and_then(|l| l.to_scalar::<f64>())
            .map_err(|e| e.to_string())?;
        let last_good = || match checkpoint::read_state(out) {
            Ok(s) => format!(
                "the last good checkpoint is {} (step {})",
                out.join(checkpoint::CHECKPOINT).display(),
                s.step
            ),
            Err(_) => "no checkpoint was saved yet".to_string(),
        };
        if !nll.is_finite() {
            return Err(format!("non-finite loss ({nll}) at step {}; the weights were not updated; {}; try a lower --lr or --clip", step + 1, last_good()));
        }
        let grads = loss.backward().map_err(|e| e.to_string())?;
        match adam.step(&grads).map_err(|e| e.to_string())? {
            Ok(_) => {}
            Err(norm) => {
                return Err(format!("non-finite gradient (norm {norm}) at step {}; the weights were not updated; {}", step + 1, last_good()));
            }
        }
        state.step += 1;
        state.examples_seen += batch as u64;
        state.adam_t = adam.t;
        last_bpd = bits_per_dim(nll, shape);
        let ips = batch as f64 / t0.elapsed().as_secs_f64();
        let eval_now = state.step % cfg.eval_every.max(1) == 0 || state.step == total;
        let mut test = None;
        if eval_now {
            let (_, bpd, _) = evaluate(&loaded.flow, &eval_set, 256, 1, seed, device)
                .map_err(|e| e.to_string())?;
            test = Some(bpd);
            state.test_bits_per_dim = Some(bpd);
            if shape.is_image() {
                let s = sample(&loaded.flow, 64, 0.7, seed ^ state.step, device)
                    .map_err(|e| e.to_string())?;
                png::save_grid(&s, 8, &out.join("samples.png")).map_err(|e| e.to_string())?;
            }
            checkpoint::save(out, &checkpoint_tensors(&loaded, &adam), &state)?;
        }
        let m = Metric {
            step: state.step,
            train_bits_per_dim: last_bpd,
            test_bits_per_dim: test,
            images_per_s: ips,
        };
        writeln!(
            metrics,
            "{}",
            serde_json::to_string(&m).expect("plain data")
        )
        .map_err(|e| e.to_string())?;
        report(&bar, &state, total, last_bpd, test, started, start_step);
    }
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    eprintln!(
        "trained {} steps to {}: train {:.4} bits/dim, test {:.4} bits/dim (first {} test examples; `flowc eval` for all)",
        state.step,
        out.display(),
        last_bpd,
        state.test_bits_per_dim.unwrap_or(f64::NAN),
        eval_set.len()
    );
    Ok(state.test_bits_per_dim.unwrap_or(f64::NAN))
}

fn progress(total: u64, at: u64) -> Option<indicatif::ProgressBar> {
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

/// Progress: a bar on a terminal, else a plain line every 10 steps.
fn report(
    bar: &Option<indicatif::ProgressBar>,
    s: &TrainState,
    total: u64,
    bpd: f64,
    test: Option<f64>,
    started: Instant,
    start_step: u64,
) {
    let done = (s.step - start_step) as f64;
    let rate = done * s.batch as f64 / started.elapsed().as_secs_f64();
    let left = started.elapsed().as_secs_f64() / done * (total - s.step) as f64;
    let test = test.map(|t| format!(", test {t:.3}")).unwrap_or_default();
    let msg = format!("train {bpd:.3} bits/dim{test}, {rate:.0} img/s");
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
