//! Per-example scores: negative log-likelihood in nats and bits per
//! dimension, for anomaly and out-of-distribution scoring; and the
//! importance-weighted bound on 8-bit data.
//!
//! Real NVP's figure scores `x + u` for one draw of the dequantization noise
//! `u`, an upper bound on the discrete data's `-log P(v)` (Theis et al.
//! 2016). With `K` draws, `-log((1/K) sum_k p((v + u_k) / 256)) + D ln 256`
//! is a tighter bound (Burda et al.'s importance weighting with the uniform
//! proposal), which can only go down, in expectation, as `K` grows.

use candle_core::{Device, Result};

use crate::data::Batched;
use crate::exec::Flow;
use crate::train::{bits_per_dim, log_probs};

/// One example's score.
#[derive(Clone, Debug, PartialEq)]
pub struct Score {
    /// `-log p(x)` for one draw of the noise (nats), as `flowc eval`.
    pub nll: f64,
    pub bits_per_dim: f64,
    /// The importance-weighted bound over `K` draws (8-bit data only).
    pub nll_iw: Option<f64>,
    pub bits_per_dim_iw: Option<f64>,
}

/// The scores of every example; `importance`: K draws for the bound (at
/// least 1; 1 gives the single-draw figure again), or none. `progress`
/// advances once per draw over the examples (`ProgressBar::hidden()` for none).
pub fn scores<B: Batched + ?Sized>(
    flow: &Flow,
    ex: &B,
    batch: usize,
    importance: Option<usize>,
    seed: u64,
    device: &Device,
    progress: &indicatif::ProgressBar,
) -> Result<Vec<Score>> {
    let shape = flow.plan().input;
    let first = log_probs(flow, ex, None, batch, 0, seed, device)?;
    if first.len() != ex.count() {
        // Scores are by index: a left-out file would shift every later row.
        candle_core::bail!(
            "{} of the {} examples' files do not decode (named above); scores need every one",
            ex.count() - first.len(),
            ex.count()
        );
    }
    progress.inc(1);
    let iw = match importance {
        Some(k) if shape.is_image() => Some(importance_nll(flow, ex, batch, k, &first, seed, device, progress)?),
        Some(_) => candle_core::bail!("the importance-weighted bound is for 8-bit (image) data; a vector flow's density is already of its data"),
        None => None,
    };
    Ok(first
        .iter()
        .enumerate()
        .map(|(i, &lp)| {
            let nll_iw = iw.as_ref().map(|v| v[i]);
            Score {
                nll: -lp,
                bits_per_dim: bits_per_dim(-lp, shape),
                nll_iw,
                bits_per_dim_iw: nll_iw.map(|n| bits_per_dim(n, shape)),
            }
        })
        .collect())
}

/// `-log((1/K) sum_k p(x_k))` per example, with draw 0 already computed.
#[allow(clippy::too_many_arguments)]
fn importance_nll<B: Batched + ?Sized>(
    flow: &Flow,
    ex: &B,
    batch: usize,
    k: usize,
    first: &[f64],
    seed: u64,
    device: &Device,
    progress: &indicatif::ProgressBar,
) -> Result<Vec<f64>> {
    if k == 0 {
        candle_core::bail!("importance sampling needs at least 1 draw");
    }
    // A running log-sum-exp per example: the draws need not be kept.
    let mut max = first.to_vec();
    let mut sum = vec![1f64; first.len()];
    for draw in 1..k {
        let lps = log_probs(flow, ex, None, batch, draw, seed, device)?;
        if lps.len() != first.len() {
            candle_core::bail!(
                "the examples changed between noise draws (a file stopped decoding)"
            );
        }
        for (i, lp) in lps.into_iter().enumerate() {
            if lp > max[i] {
                sum[i] = sum[i] * (max[i] - lp).exp() + 1.0;
                max[i] = lp;
            } else {
                sum[i] += (lp - max[i]).exp();
            }
        }
        progress.inc(1);
    }
    Ok(max
        .iter()
        .zip(&sum)
        .map(|(m, s)| -(m + s.ln() - (k as f64).ln()))
        .collect())
}
