//! Completion (inpainting): given some values of an example, fill in the
//! rest with the flow's exact density, the observed part clamped.
//!
//! The missing values move in an unconstrained space `u`: for images
//! `x = sigmoid(u)`, so that they stay in `(0, 1)`; for vectors `x = u`.
//! * `Map`: the most likely completion, `argmax log p(x)` over the missing
//!   values, by Adam on `u` from a sample of the flow (temperature 0.7).
//! * `Sample`: draws from `p(x_missing | x_observed)` by the Metropolis-
//!   adjusted Langevin algorithm on `u` (for images the target carries the
//!   sigmoid's log-Jacobian), one chain per draw, from the same start. The
//!   first half of the steps adapts each chain's step size towards an
//!   acceptance rate of 0.574 (the optimal rate of MALA, Roberts & Rosenthal
//!   1998); the second half runs at the adapted size and its acceptance rate
//!   is reported; the draw is the chain's last state.

use candle_core::{DType, Device, Result, Tensor, Var};

use crate::exec::Flow;
use crate::train::rng::{self, Rng};

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Method {
    Map,
    /// `chains` draws per example.
    Sample {
        chains: usize,
    },
}

#[derive(Clone, Copy, Debug)]
pub struct Options {
    pub method: Method,
    pub steps: usize,
    /// Adam's learning rate (map) or the initial Langevin step size (sample), in `u`.
    pub lr: f64,
    pub seed: u64,
}

/// Completions, `chains` per example, example-major.
#[derive(Clone, Debug)]
pub struct Completion {
    /// `(N * chains) x size` values in the flow's space, observed ones as given.
    pub values: Vec<f32>,
    /// `log p(x)` of each completion, nats.
    pub log_likelihood: Vec<f64>,
    pub chains: usize,
    /// Mean acceptance rate of the sampling phase (sample only).
    pub acceptance: Option<f64>,
}

/// The problem in flat form: rows are (example, chain) pairs.
struct Problem<'a> {
    flow: &'a Flow,
    /// Observed values where `observed`, per row.
    x0: Vec<f32>,
    observed: Vec<bool>,
    rows: usize,
    size: usize,
    image: bool,
    device: Device,
}

impl Problem<'_> {
    fn to_x(&self, u: &Tensor) -> Result<Tensor> {
        let shape = (self.rows, self.size);
        let m = Tensor::from_vec(
            self.observed.iter().map(|&o| o as u8 as f32).collect(),
            shape,
            &self.device,
        )?;
        let x0 = Tensor::from_vec(self.x0.clone(), shape, &self.device)?;
        let free = if self.image {
            candle_nn::ops::sigmoid(u)?
        } else {
            u.clone()
        };
        let x = ((&m * &x0)? + ((1.0 - &m)? * free)?)?;
        let mut dims = vec![self.rows];
        dims.extend(self.flow.plan().input.dims().iter().map(|&d| d as usize));
        x.reshape(dims)
    }

    /// Per row: `log p(x(u))` (plus the sigmoid's log-Jacobian on the missing
    /// values when `jacobian`), and its gradient in `u`.
    fn target(&self, u: &[f32], jacobian: bool) -> Result<(Vec<f64>, Vec<f32>)> {
        let var = Var::from_tensor(&Tensor::from_vec(
            u.to_vec(),
            (self.rows, self.size),
            &self.device,
        )?)?;
        let lp = self.flow.log_prob(&self.to_x(var.as_tensor())?, false)?;
        let lp = if jacobian && self.image {
            // log sigmoid'(u) = -softplus(u) - softplus(-u), over missing values.
            let missing = Tensor::from_vec(
                self.observed.iter().map(|&o| (!o) as u8 as f32).collect(),
                (self.rows, self.size),
                &self.device,
            )?;
            let ua = var.as_tensor().abs()?;
            let log_d = (ua.neg()? - ((ua.neg()?.exp()? + 1.0)?.log()? * 2.0)?)?;
            (lp + (log_d * missing)?.sum(1)?)?
        } else {
            lp
        };
        let grads = lp.sum_all()?.backward()?;
        let g = grads
            .get(var.as_tensor())
            .map(|g| g.flatten_all()?.to_vec1::<f32>())
            .transpose()?
            .unwrap_or_else(|| vec![0.0; self.rows * self.size]);
        Ok((lp.to_dtype(DType::F64)?.to_vec1::<f64>()?, g))
    }

    fn log_likelihood(&self, u: &[f32]) -> Result<Vec<f64>> {
        let u = Tensor::from_vec(u.to_vec(), (self.rows, self.size), &self.device)?;
        self.flow
            .log_prob(&self.to_x(&u)?, false)?
            .to_dtype(DType::F64)?
            .to_vec1::<f64>()
    }

    fn values(&self, u: &[f32]) -> Result<Vec<f32>> {
        let u = Tensor::from_vec(u.to_vec(), (self.rows, self.size), &self.device)?;
        self.to_x(&u)?.flatten_all()?.to_vec1::<f32>()
    }
}

/// Completes `x` (`N` examples in the flow's space) where `observed` (N x
/// size) is false.
pub fn complete(
    flow: &Flow,
    x: &Tensor,
    observed: &[bool],
    opts: &Options,
    device: &Device,
) -> Result<Completion> {
    let n = x.dim(0)?;
    let size = flow.plan().input.size() as usize;
    if observed.len() != n * size {
        candle_core::bail!(
            "a mask of {} values for {n} examples of {size}",
            observed.len()
        );
    }
    let chains = match opts.method {
        Method::Map => 1,
        Method::Sample { chains } => chains.max(1),
    };
    let x: Vec<f32> = x.flatten_all()?.to_vec1()?;
    let repeat = |v: &[f32]| -> Vec<f32> {
        v.chunks(size)
            .flat_map(|r| (0..chains).flat_map(move |_| r.iter().copied()))
            .collect()
    };
    let observed_rows: Vec<bool> = observed
        .chunks(size)
        .flat_map(|r| (0..chains).flat_map(move |_| r.iter().copied()))
        .collect();
    let p = Problem {
        flow,
        x0: repeat(&x),
        observed: observed_rows,
        rows: n * chains,
        size,
        image: flow.plan().input.is_image(),
        device: device.clone(),
    };
    let missing = p.observed.iter().filter(|o| !**o).count();
    if missing == 0 || missing == p.observed.len() {
        // Nothing to fill in: the input as it is. Nothing observed: the
        // conditional is the flow itself, drawn exactly by its inverse.
        let u = match missing {
            0 => vec![0.0; p.rows * p.size],
            _ => start(&p, 1.0, opts.seed)?,
        };
        return Ok(Completion {
            values: p.values(&u)?,
            log_likelihood: p.log_likelihood(&u)?,
            chains,
            acceptance: None,
        });
    }
    let mut u = start(&p, 0.7, opts.seed)?;
    let acceptance = match opts.method {
        Method::Map => {
            ascend(&p, &mut u, opts)?;
            None
        }
        Method::Sample { .. } => Some(langevin(&p, &mut u, opts)?),
    };
    Ok(Completion {
        values: p.values(&u)?,
        log_likelihood: p.log_likelihood(&u)?,
        chains,
        acceptance,
    })
}

/// A start for the missing values: a sample of the flow at `temperature`.
fn start(p: &Problem, temperature: f64, seed: u64) -> Result<Vec<f32>> {
    let s: Vec<f32> = crate::train::sample_range(
        p.flow,
        0..p.rows,
        crate::train::Classes::None,
        temperature,
        seed ^ 0xC0DE,
        &p.device,
    )?
    .flatten_all()?
    .to_vec1()?;
    Ok(match p.image {
        true => s.iter().map(|&x| logit(x)).collect(),
        false => s,
    })
}

/// `u` of a value in (0, 1), kept off the ends where it would be infinite.
fn logit(x: f32) -> f32 {
    let x = x.clamp(1e-3, 1.0 - 1e-3);
    (x / (1.0 - x)).ln()
}

/// MAP: Adam on the missing values' `u`.
fn ascend(p: &Problem, u: &mut [f32], opts: &Options) -> Result<()> {
    let (b1, b2, eps) = (0.9f64, 0.999f64, 1e-8f64);
    let (mut m, mut v) = (vec![0f64; u.len()], vec![0f64; u.len()]);
    for t in 1..=opts.steps {
        let (_, g) = p.target(u, false)?;
        let (c1, c2) = (1.0 - b1.powi(t as i32), 1.0 - b2.powi(t as i32));
        for i in 0..u.len() {
            if p.observed[i] {
                continue;
            }
            let gi = g[i] as f64;
            m[i] = b1 * m[i] + (1.0 - b1) * gi;
            v[i] = b2 * v[i] + (1.0 - b2) * gi * gi;
            // Ascent: the step follows the gradient.
            u[i] += (opts.lr * (m[i] / c1) / ((v[i] / c2).sqrt() + eps)) as f32;
        }
    }
    Ok(())
}

/// MALA on the missing values; returns the acceptance rate of the second half.
fn langevin(p: &Problem, u: &mut [f32], opts: &Options) -> Result<f64> {
    let mut rng = Rng::keyed(opts.seed, rng::SAMPLE ^ 0x4D41, 0);
    let mut step = vec![opts.lr; p.rows];
    let (mut lp, mut g) = p.target(u, true)?;
    let adapt = opts.steps / 2;
    let (mut accepted, mut tried) = (0usize, 0usize);
    for t in 0..opts.steps {
        let mut next = u.to_vec();
        for (i, x) in next.iter_mut().enumerate() {
            if !p.observed[i] {
                let e = step[i / p.size];
                *x = (u[i] as f64 + 0.5 * e * e * g[i] as f64 + e * rng.normal()) as f32;
            }
        }
        let (lp2, g2) = p.target(&next, true)?;
        for r in 0..p.rows {
            let e2 = step[r] * step[r];
            // log q(to | from) of the Langevin proposal, over the row's missing values.
            let log_q = |to: &[f32], from: &[f32], grad: &[f32]| -> f64 {
                let span = r * p.size..(r + 1) * p.size;
                span.filter(|&i| !p.observed[i])
                    .map(|i| {
                        let d = to[i] as f64 - from[i] as f64 - 0.5 * e2 * grad[i] as f64;
                        -d * d / (2.0 * e2)
                    })
                    .sum()
            };
            let log_alpha = lp2[r] - lp[r] + log_q(u, &next, &g2) - log_q(&next, u, &g);
            let alpha = if log_alpha.is_finite() {
                log_alpha.min(0.0).exp()
            } else {
                0.0
            };
            let accept = rng.uniform() < alpha;
            if accept {
                let span = r * p.size..(r + 1) * p.size;
                u[span.clone()].copy_from_slice(&next[span.clone()]);
                g[span.clone()].copy_from_slice(&g2[span]);
                lp[r] = lp2[r];
            }
            if t < adapt {
                step[r] *= (0.05 * (alpha - 0.574)).exp();
            } else {
                tried += 1;
                accepted += accept as usize;
            }
        }
    }
    Ok(accepted as f64 / tried.max(1) as f64)
}
