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
mod error;
mod fit;
pub mod interrupt;
mod lock;
pub mod metrics;
pub mod order;
mod packed;
pub mod png;
pub mod rng;

pub use error::TrainError;
pub use fit::{train, Outcome, TrainConfig};
pub use interrupt::Interrupt;
pub use lock::LOCK;

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};

use crate::data::{Batched, Data, Examples, PREFETCH_DEPTH};
use crate::exec::Flow;
use crate::plan::{Init, Plan};
use crate::shape::Shape;
use adam::Adam;
use checkpoint::TrainState;
use rng::Rng;

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
pub fn check_data_shape(data: &Data, input: Shape) -> Result<(), TrainError> {
    let want: Vec<usize> = input.dims().iter().map(|&d| d as usize).collect();
    let kind_ok = data.train.is_images() == input.is_image();
    if !kind_ok || data.train.example_shape() != want {
        let expected = match input {
            Shape::Image { c, h, w } => format!("image({c}, {h}, {w})"),
            Shape::Vector { d } => format!("vector({d})"),
        };
        return Err(TrainError::Data(format!(
            "data set {} has examples of {} but the flow's input is {expected}; choose a data set of that shape or change `input`",
            data.name,
            data.train.describe_example()
        )));
    }
    Ok(())
}

/// Refuses, before any step, a conditioned flow's data without labels or
/// with a label at or above its K (naming where the labels came from, the
/// example and the label).
pub fn check_labels(data: &Data, plan: &Plan) -> Result<(), TrainError> {
    let Some(c) = plan.condition else {
        return Ok(());
    };
    let k = c.classes as usize;
    let Some(labels) = &data.labels else {
        return Err(TrainError::Data(format!(
            "flow {} is conditioned (given class({k})), but data set {} has no labels; \
             cifar10, mnist, fashion-mnist (with their label files), folder:PATH, imagenet32/64 \
             and the toy sets with parts carry them, npy:PATH takes --labels FILE.npy",
            plan.flow, data.name
        )));
    };
    if let Some((which, i, l)) = labels.first_at_or_above(k) {
        return Err(TrainError::Data(format!(
            "{}: example {i} has label {l}, but flow {} is given class({k}): labels must be 0..={}",
            labels.file(which),
            plan.flow,
            k - 1
        )));
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
    examples_tensor(ex.select(idx), rng, flips, device)
}

/// [`batch_tensor`] of a batch already taken from its split.
pub fn examples_tensor(
    sel: Examples,
    rng: &mut Rng,
    flips: Option<&mut Rng>,
    device: &Device,
) -> candle_core::Result<Tensor> {
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

/// The one-hot labels of a batch's examples (their `indices` in a split
/// whose labels are `labels`) for a conditioned flow; `None` for a flow
/// without a condition.
pub fn batch_labels(
    flow: &Flow,
    labels: Option<&[u32]>,
    indices: &[usize],
) -> candle_core::Result<Option<Tensor>> {
    if flow.plan().condition.is_none() {
        return Ok(None);
    }
    let Some(labels) = labels else {
        candle_core::bail!(
            "flow {} is conditioned, and its data has no labels",
            flow.plan().flow
        )
    };
    let picked: Vec<u32> = indices.iter().map(|&i| labels[i]).collect();
    flow.one_hot(&picked).map(Some)
}

/// Mean NLL (nats per example) and bits/dim of `flow` on `ex` (eval mode),
/// with the dequantization noise averaged over `samples` draws; under a
/// condition, `log p(x | y)` with the split's `labels`.
pub fn evaluate<B: Batched + ?Sized>(
    flow: &Flow,
    ex: &B,
    labels: Option<&[u32]>,
    batch: usize,
    samples: usize,
    seed: u64,
    device: &Device,
) -> candle_core::Result<(f64, f64, usize)> {
    let n = ex.count();
    if n == 0 || samples == 0 {
        // A mean over nothing is no number; the CLI refuses these first.
        candle_core::bail!("evaluation needs examples ({n}) and draws ({samples}) of at least 1");
    }
    let mut total = 0f64;
    let mut scored = 0;
    for draw in 0..samples {
        let lp = log_probs(flow, ex, labels, batch, draw, seed, device)?;
        // A streamed split leaves out files that do not decode.
        scored = lp.len();
        total -= lp.iter().sum::<f64>();
    }
    if scored == 0 {
        candle_core::bail!("none of the {n} examples could be read");
    }
    let n = scored;
    let nll = total / (n * samples) as f64;
    Ok((nll, bits_per_dim(nll, flow.plan().input), n))
}

/// `log p(x)` of every example of `ex` (nats, eval mode), in batches of
/// `batch`; images dequantized with noise draw `draw` of `seed`'s stream
/// (the draws `evaluate` averages over). A streamed split is decoded ahead
/// on its loader thread; its files that do not decode are named on stderr
/// and left out, so the result is then shorter than `ex`.
pub fn log_probs<B: Batched + ?Sized>(
    flow: &Flow,
    ex: &B,
    labels: Option<&[u32]>,
    batch: usize,
    draw: usize,
    seed: u64,
    device: &Device,
) -> candle_core::Result<Vec<f64>> {
    if batch == 0 {
        candle_core::bail!("a batch of 0 examples");
    }
    let n = ex.count();
    let mut rng = Rng::keyed(seed, rng::NOISE ^ 0xE7A1, draw as u64);
    let mut out = Vec::with_capacity(n);
    for fetched in ex.batches_of(order::in_order(n, batch), PREFETCH_DEPTH) {
        let fetched = fetched.map_err(candle_core::Error::wrap)?;
        for line in ex.skips(&fetched.skipped) {
            eprintln!("{line}");
        }
        let given = batch_labels(flow, labels, &fetched.indices)?;
        let x = examples_tensor(fetched.examples, &mut rng, None, device)?;
        out.extend(
            flow.log_prob_given(&x, given.as_ref(), false)?
                .to_dtype(DType::F64)?
                .to_vec1::<f64>()?,
        );
    }
    Ok(out)
}

/// The accuracy of the Bayes classifier `argmax_y log p(x | y)` (uniform
/// class prior) of a conditioned flow on `ex`, whose labels are `labels`;
/// images dequantized with noise draw 0 of `seed`'s stream (as
/// [`log_probs`]). Also the number of examples classified.
pub fn accuracy<B: Batched + ?Sized>(
    flow: &Flow,
    ex: &B,
    labels: &[u32],
    batch: usize,
    seed: u64,
    device: &Device,
) -> candle_core::Result<(f64, usize)> {
    let n = ex.count();
    let mut rng = Rng::keyed(seed, rng::NOISE ^ 0xE7A1, 0);
    let (mut right, mut seen) = (0usize, 0usize);
    for fetched in ex.batches_of(order::in_order(n, batch.max(1)), PREFETCH_DEPTH) {
        let fetched = fetched.map_err(candle_core::Error::wrap)?;
        let x = examples_tensor(fetched.examples, &mut rng, None, device)?;
        let best = flow.log_prob_per_class(&x)?.argmax(1)?.to_vec1::<u32>()?;
        for (&i, &b) in fetched.indices.iter().zip(&best) {
            right += usize::from(labels[i] == b);
        }
        seen += best.len();
    }
    if seen == 0 {
        candle_core::bail!("none of the {n} examples could be read");
    }
    Ok((right as f64 / seen as f64, seen))
}

/// Draws `n` samples at `temperature` with a seeded stream.
pub fn sample(
    flow: &Flow,
    n: usize,
    temperature: f64,
    seed: u64,
    device: &Device,
) -> candle_core::Result<Tensor> {
    sample_range(flow, 0..n, Classes::None, temperature, seed, device)
}

/// The class each sample of a conditioned flow is drawn from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Classes {
    /// The flow has no condition.
    None,
    /// Every sample of class `k` (`flowc sample --class k`).
    All(u32),
    /// A grid with a row per class: sample `i` of class `i / per_row`.
    Rows { per_row: usize },
}

impl Classes {
    /// The classes of samples `range`, for a flow given class(`k`).
    fn labels(self, range: std::ops::Range<usize>) -> Option<Vec<u32>> {
        match self {
            Classes::None => None,
            Classes::All(k) => Some(vec![k; range.len()]),
            Classes::Rows { per_row } => Some(range.map(|i| (i / per_row.max(1)) as u32).collect()),
        }
    }
}

/// Samples `range` of the endless seeded sequence: sample `i` has its own
/// stream, so it is the same whatever the batch it is drawn in. A
/// conditioned flow draws each from its class in `classes`.
pub fn sample_range(
    flow: &Flow,
    range: std::ops::Range<usize>,
    classes: Classes,
    temperature: f64,
    seed: u64,
    device: &Device,
) -> candle_core::Result<Tensor> {
    let given = match classes.labels(range.clone()) {
        Some(l) => Some(flow.one_hot(&l)?),
        None => None,
    };
    let shapes = flow.plan().latent_shapes();
    let bases = &flow.plan().bases;
    let mut values: Vec<Vec<f32>> = vec![vec![]; shapes.len()];
    for i in range.clone() {
        let mut rng = Rng::keyed(seed, rng::SAMPLE, i as u64);
        for ((v, s), &base) in values.iter_mut().zip(&shapes).zip(bases) {
            v.extend((0..s.size()).map(|_| (base_draw(base, &mut rng) * temperature) as f32));
        }
    }
    let latents = values
        .into_iter()
        .zip(&shapes)
        .map(|(v, s)| {
            let mut dims = vec![range.len()];
            dims.extend(s.dims().iter().map(|&d| d as usize));
            Tensor::from_vec(v, dims, device)
        })
        .collect::<candle_core::Result<Vec<_>>>()?;
    flow.inverse_given(&latents, given.as_ref())
}

/// One draw of a latent slot's base distribution at temperature 1 (with a
/// learned or split prior, a standardized value: the inverse moves it to
/// `m + exp(s) e`, so the temperature scales the standard deviation).
fn base_draw(base: crate::ir::Base, rng: &mut Rng) -> f64 {
    match base {
        crate::ir::Base::Normal => rng.normal(),
        crate::ir::Base::Logistic => {
            let u = rng.uniform().clamp(1e-9, 1.0 - 1e-9);
            (u / (1.0 - u)).ln()
        }
    }
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
        TrainError::Failed(format!(
            "the flow has {n} error{}; run `flowc check` on it",
            if n == 1 { "" } else { "s" }
        ))
    })?;
    let varmap = VarMap::new();
    let flow = Flow::new(
        &plan,
        VarBuilder::from_varmap(&varmap, DType::F32, device),
        device,
    )?;
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
        TrainError::Io(format!(
            "{} is not a run folder: cannot read {}: {e}",
            run.display(),
            flow_path.display()
        ))
    })?;
    let loaded = build(&source, device)
        .map_err(|e| TrainError::Data(format!("{}: {e}", flow_path.display())))?;
    let (tensors, state) = checkpoint::load(run, device).map_err(TrainError::Data)?;
    if state.flow_hash != checkpoint::flow_hash(&source) {
        return Err(TrainError::Data(format!(
            "{} was saved for a different flow than {}",
            run.join(checkpoint::CHECKPOINT).display(),
            flow_path.display()
        )));
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
            .ok_or_else(|| TrainError::Data(format!("the checkpoint has no tensor `{name}`")))?;
        if t.dims() != var.dims() {
            return Err(TrainError::Data(format!(
                "checkpoint tensor `{name}` has shape {:?}, the flow needs {:?}",
                t.dims(),
                var.dims()
            )));
        }
        var.set(t)?;
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
