//! A compiled [`Plan`] made runnable: [`Flow`] builds one layer object per
//! forward step from a `VarBuilder`, and runs the plan's steps forward
//! (density) or inverse (sampling), freeing slots where the schedule says.
//!
//! ```
//! use candle_core::{DType, Device, Tensor};
//! use candle_nn::{VarBuilder, VarMap};
//! let plan = flowc::compile("flow f { input vector(4) net m = mlp(hidden = 8, layers = 2) \
//!     coupling affine(mask = half(even), net = m) coupling affine(mask = half(odd), net = m) }").unwrap();
//! let vm = VarMap::new();
//! let flow = flowc::exec::Flow::new(&plan, VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu), &Device::Cpu)?;
//! let x = Tensor::randn(0f32, 1., (3, 4), &Device::Cpu)?;
//! let (z, logdet) = flow.forward(&x, false)?;
//! let back = flow.inverse(&z)?;
//! # Ok::<(), candle_core::Error>(())
//! ```

use candle_core::{DType, Device, Result, Tensor};
use candle_nn::VarBuilder;

use super::actnorm::ActNorm;
use super::batchnorm::BatchNormFlow;
use super::coupling::{Coupling, CouplingConfig, CouplingImpl};
use super::invconv::InvConv;
use super::logit::Logit;
use super::permute::Permute;
use super::prior::LearnedPrior;
use super::split::SplitPrior;
use super::squeeze::{factor_in, factor_out, Squeeze};
use super::{FlowLayer, Given};
use crate::ir::{Base, Condition};
use crate::plan::{Op, Plan};
use crate::shape::Shape;

/// What runs one forward step (and, backwards, its inverse).
enum Runner {
    Layer(Box<dyn FlowLayer + Send + Sync>),
    /// `view`: hand out narrows of the input; otherwise copies (the unfused plan).
    FactorOut {
        view: bool,
    },
    /// `factor_out(net = N)`: the latent leaves standardized by its split prior.
    Split {
        prior: SplitPrior,
        view: bool,
    },
}

/// A flow ready to run: the plan and a layer per forward step.
pub struct Flow {
    plan: Plan,
    runners: Vec<Runner>,
    device: Device,
    dtype: DType,
}

fn dims(shape: Shape) -> Vec<usize> {
    shape.dims().into_iter().map(|d| d as usize).collect()
}

impl Flow {
    /// Creates (or, with a loaded `VarBuilder`, reads) every parameter of the
    /// plan under the names of its parameter table.
    pub fn new(plan: &Plan, vb: VarBuilder, device: &Device) -> Result<Flow> {
        let labels = Condition::label_channels(plan.condition) as usize;
        let mut runners = Vec::with_capacity(plan.forward.len());
        for step in &plan.forward {
            let input = plan.slots[step.inputs[0]].shape;
            let c = input.channels() as usize;
            let layer: Box<dyn FlowLayer + Send + Sync> = match &step.op {
                Op::Logit { alpha } => Box::new(Logit::new(*alpha)?),
                Op::Coupling {
                    layer,
                    kind,
                    mask,
                    net,
                    fused,
                } => {
                    let cfg = CouplingConfig {
                        kind: *kind,
                        mask: *mask,
                        net: *net,
                        imp: if *fused {
                            CouplingImpl::Fused
                        } else {
                            CouplingImpl::Reference
                        },
                    };
                    Box::new(Coupling::new(
                        &dims(input),
                        &cfg,
                        labels,
                        vb.pp(format!("layer{layer}")),
                    )?)
                }
                Op::Squeeze => Box::new(Squeeze),
                Op::Permute { perm } => Box::new(Permute::new(perm.indices(), device)?),
                Op::BatchNorm { layer } => {
                    Box::new(BatchNormFlow::new(c, vb.pp(format!("layer{layer}")))?)
                }
                Op::ActNorm { layer } => Box::new(ActNorm::new(c, vb.pp(format!("layer{layer}")))?),
                Op::InvConv { layer } => Box::new(InvConv::new(c, vb.pp(format!("layer{layer}")))?),
                Op::FactorOut { view, .. } => {
                    runners.push(Runner::FactorOut { view: *view });
                    continue;
                }
                Op::SplitOut {
                    layer, net, view, ..
                } => {
                    let vb = vb.pp(format!("layer{layer}"));
                    let prior = SplitPrior::new(&dims(input), *net, labels, vb)?;
                    runners.push(Runner::Split { prior, view: *view });
                    continue;
                }
                Op::LearnedPrior { latent } => {
                    let rows = labels.max(1);
                    Box::new(LearnedPrior::new(
                        c,
                        rows,
                        vb.pp(format!("prior.z{latent}")),
                    )?)
                }
                Op::Sigmoid { .. }
                | Op::SplitIn { .. }
                | Op::LearnedPriorInverse { .. }
                | Op::CouplingInverse { .. }
                | Op::Unsqueeze
                | Op::FactorIn { .. }
                | Op::BatchNormInverse { .. }
                | Op::ActNormInverse { .. }
                | Op::InvConvInverse { .. } => {
                    candle_core::bail!("a forward plan cannot hold `{}`", step.op)
                }
            };
            runners.push(Runner::Layer(layer));
        }
        if plan.inverse.len() != plan.forward.len() {
            candle_core::bail!("the plan's inverse does not mirror its forward pass");
        }
        Ok(Flow {
            plan: plan.clone(),
            runners,
            device: device.clone(),
            dtype: vb.dtype(),
        })
    }

    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    /// Running statistics of every batch normalization, named like the
    /// parameters (`layer3.net.out_bn.running_mean`): what a checkpoint needs
    /// besides the parameters.
    pub fn buffers(&self) -> Vec<(String, candle_core::Var)> {
        let mut out = vec![];
        for (step, runner) in self.plan.forward.iter().zip(&self.runners) {
            let prefix = step.op.layer().map(|i| format!("layer{i}."));
            match (runner, prefix) {
                (Runner::Layer(layer), Some(p)) => layer.buffers(&p, &mut out),
                (Runner::Split { prior, .. }, Some(p)) => prior.buffers(&p, &mut out),
                (Runner::Layer(_) | Runner::Split { .. } | Runner::FactorOut { .. }, _) => {}
            }
        }
        out
    }

    /// Marks every actnorm as initialized (after loading trained parameters).
    pub fn mark_initialized(&self) {
        for r in &self.runners {
            if let Runner::Layer(l) = r {
                l.mark_initialized();
            }
        }
    }

    /// `x -> (latents, log|det J|)`; the log-det has shape `[N]`. A flow
    /// without a condition; see [`Flow::forward_given`].
    pub fn forward(&self, x: &Tensor, train: bool) -> Result<(Vec<Tensor>, Tensor)> {
        self.forward_given(x, None, train)
    }

    /// The one-hot labels of a conditioned flow's examples: `[N, K]` in the
    /// flow's dtype, checked against K.
    pub fn one_hot(&self, labels: &[u32]) -> Result<Tensor> {
        let Some(c) = self.plan.condition else {
            candle_core::bail!(
                "flow {} has no condition: it takes no labels",
                self.plan.flow
            )
        };
        let k = c.classes as usize;
        let mut v = vec![0f32; labels.len() * k];
        for (i, &l) in labels.iter().enumerate() {
            if l as usize >= k {
                candle_core::bail!(
                    "label {l} of example {i} is not below K = {k} (given class({k}))"
                )
            }
            v[i * k + l as usize] = 1.0;
        }
        Tensor::from_vec(v, (labels.len(), k), &self.device)?.to_dtype(self.dtype)
    }

    /// For the checks and benchmarks that run any flow: the one-hot labels
    /// `class(i) mod K` of examples `0..n` of a conditioned flow, `None` for
    /// a flow without a condition.
    pub fn labels_if_given(
        &self,
        n: usize,
        class: impl Fn(usize) -> u32,
    ) -> Result<Option<Tensor>> {
        let Some(c) = self.plan.condition else {
            return Ok(None);
        };
        let labels: Vec<u32> = (0..n).map(|i| class(i) % c.classes).collect();
        self.one_hot(&labels).map(Some)
    }

    /// Labels exactly where the flow has a condition, one per example.
    fn check_given(&self, given: Given, n: usize) -> Result<()> {
        match (self.plan.condition, given) {
            (None, None) => Ok(()),
            (Some(c), Some(y)) if y.dims() == [n, c.classes as usize] => Ok(()),
            (Some(c), Some(y)) => candle_core::bail!(
                "labels of shape {:?} for {n} examples of a flow given class({}): expected [{n}, {}] (Flow::one_hot)",
                y.dims(),
                c.classes,
                c.classes
            ),
            (Some(c), None) => candle_core::bail!(
                "flow {} is conditioned (given class({})): each example needs its label",
                self.plan.flow,
                c.classes
            ),
            (None, Some(_)) => {
                candle_core::bail!("flow {} has no condition: it takes no labels", self.plan.flow)
            }
        }
    }

    /// As [`Flow::forward`], given the examples' one-hot labels under a
    /// condition ([`Flow::one_hot`]).
    pub fn forward_given(
        &self,
        x: &Tensor,
        given: Given,
        train: bool,
    ) -> Result<(Vec<Tensor>, Tensor)> {
        let n = x.dim(0)?;
        self.check_given(given, n)?;
        let mut slots: Vec<Option<Tensor>> = vec![None; self.plan.slots.len()];
        slots[self.plan.x] = Some(x.clone());
        let mut logdet = Tensor::zeros(n, x.dtype(), x.device())?;
        for (step, runner) in self.plan.forward.iter().zip(&self.runners) {
            let input = slots[step.inputs[0]]
                .clone()
                .expect("scheduled slot is live");
            match runner {
                Runner::FactorOut { view } => {
                    let (z, rest) = factor_out(&input)?;
                    let (z, rest) = if *view {
                        (z, rest)
                    } else {
                        (z.copy()?, rest.copy()?)
                    };
                    slots[step.outputs[0]] = Some(z);
                    slots[step.outputs[1]] = Some(rest);
                }
                Runner::Split { prior, view } => {
                    let (e, rest, ld) = prior.forward(&input, given, train)?;
                    let rest = if *view { rest } else { rest.copy()? };
                    logdet = (logdet + ld)?;
                    slots[step.outputs[0]] = Some(e);
                    slots[step.outputs[1]] = Some(rest);
                }
                Runner::Layer(layer) => {
                    let (y, ld) = layer.forward(&input, given, train)?;
                    if step.logdet {
                        logdet = (logdet + ld)?;
                    }
                    slots[step.outputs[0]] = Some(y);
                }
            }
            for &s in &step.free {
                slots[s] = None;
            }
        }
        let latents = self
            .plan
            .latents
            .iter()
            .map(|&s| slots[s].clone().expect("latents are kept"))
            .collect();
        Ok((latents, logdet))
    }

    /// `latents -> x` (evaluation mode). A flow without a condition; see
    /// [`Flow::inverse_given`].
    pub fn inverse(&self, latents: &[Tensor]) -> Result<Tensor> {
        self.inverse_given(latents, None)
    }

    /// As [`Flow::inverse`], given the examples' one-hot labels.
    pub fn inverse_given(&self, latents: &[Tensor], given: Given) -> Result<Tensor> {
        self.check_given(given, latents.first().map_or(Ok(0), |z| z.dim(0))?)?;
        if latents.len() != self.plan.latents.len() {
            candle_core::bail!(
                "expected {} latents, found {}",
                self.plan.latents.len(),
                latents.len()
            );
        }
        let mut slots: Vec<Option<Tensor>> = vec![None; self.plan.slots.len()];
        for (&s, z) in self.plan.latents.iter().zip(latents) {
            slots[s] = Some(z.clone());
        }
        let n = self.runners.len();
        for (j, step) in self.plan.inverse.iter().enumerate() {
            let get = |k: usize| {
                slots[step.inputs[k]]
                    .clone()
                    .expect("scheduled slot is live")
            };
            let out = match &self.runners[n - 1 - j] {
                Runner::FactorOut { .. } => factor_in(&get(0), &get(1))?,
                Runner::Split { prior, .. } => prior.inverse(&get(0), &get(1), given)?,
                Runner::Layer(layer) => layer.inverse(&get(0), given)?,
            };
            slots[step.outputs[0]] = Some(out);
            for &s in &step.free {
                slots[s] = None;
            }
        }
        Ok(slots[self.plan.x].clone().expect("the inverse writes x"))
    }

    /// `log p(x) = log p_Z(f(x)) + log|det df/dx|`, per example, in nats.
    /// Learned and split priors are in the log-det (their standardizing
    /// steps); each latent slot is scored by its fixed base distribution.
    pub fn log_prob(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        self.log_prob_given(x, None, train)
    }

    /// `log p(x | y)` of a conditioned flow, `y` one-hot ([`Flow::one_hot`]).
    pub fn log_prob_given(&self, x: &Tensor, given: Given, train: bool) -> Result<Tensor> {
        let (latents, logdet) = self.forward_given(x, given, train)?;
        let mut lp = logdet;
        for (z, base) in latents.iter().zip(&self.plan.bases) {
            let z = z.flatten_from(1)?;
            let per_example = match base {
                // -0.5 * sum(z^2) - D/2 * ln(2 pi): the sum first, then the
                // affine map on N values (on a vector flow's small batches
                // every op over N x D costs more than the arithmetic).
                Base::Normal => {
                    let half_log_2pi = 0.5 * (2.0 * std::f64::consts::PI).ln();
                    z.sqr()?
                        .sum(1)?
                        .affine(-0.5, -half_log_2pi * z.dim(1)? as f64)?
                }
                Base::Logistic => base_log_density(*base, &z)?.sum(1)?,
            };
            lp = (lp + per_example)?;
        }
        Ok(lp)
    }

    /// `log p(x | y)` for every class `y` of a conditioned flow (evaluation
    /// mode): `[N, K]`. Its argmax over `y` is the Bayes classifier under a
    /// uniform class prior.
    pub fn log_prob_per_class(&self, x: &Tensor) -> Result<Tensor> {
        let Some(c) = self.plan.condition else {
            candle_core::bail!(
                "flow {} has no condition: it has no classes",
                self.plan.flow
            )
        };
        let n = x.dim(0)?;
        let per_class = (0..c.classes)
            .map(|k| self.log_prob_given(x, Some(&self.one_hot(&vec![k; n])?), false))
            .collect::<Result<Vec<_>>>()?;
        Tensor::stack(&per_class, 1)
    }

    /// `n` samples at `temperature`: every latent slot's base draw scaled
    /// by it (with a learned or split prior, the standard deviation around
    /// the mean, as Glow).
    pub fn sample(&self, n: usize, temperature: f64) -> Result<Tensor> {
        self.sample_given(n, temperature, None)
    }

    /// As [`Flow::sample`], each sample of its label's class (`given`: `n`
    /// one-hot rows) under a condition.
    pub fn sample_given(&self, n: usize, temperature: f64, given: Given) -> Result<Tensor> {
        let latents = self
            .plan
            .latent_shapes()
            .into_iter()
            .zip(&self.plan.bases)
            .map(|(shape, base)| {
                let mut d = vec![n];
                d.extend(dims(shape));
                let z = match base {
                    Base::Normal => Tensor::randn(0f32, 1f32, d, &self.device)?,
                    Base::Logistic => {
                        let u = Tensor::rand(1e-6f32, 1.0 - 1e-6, d, &self.device)?;
                        (u.log()? - (1.0 - &u)?.log()?)?
                    }
                };
                z.to_dtype(self.dtype)? * temperature
            })
            .collect::<Result<Vec<_>>>()?;
        self.inverse_given(&latents, given)
    }
}

/// A base distribution's log-density of each value.
pub fn base_log_density(base: Base, z: &Tensor) -> Result<Tensor> {
    match base {
        Base::Normal => (z.sqr()? * -0.5)? - 0.5 * (2.0 * std::f64::consts::PI).ln(),
        // log sigmoid(z) + log sigmoid(-z) = -(softplus(z) + softplus(-z))
        Base::Logistic => {
            let softplus_abs = (z.abs()?.neg()?.exp()? + 1.0)?.log()?;
            z.abs()?.neg()? - (softplus_abs * 2.0)?
        }
    }
}
