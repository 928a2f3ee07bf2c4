//! Which training examples each step reads: step `s` takes positions
//! `s * batch .. (s + 1) * batch` of an endless sequence of epochs, each an
//! order of the training set drawn from `(seed, epoch)` alone, so a resumed
//! run reads exactly what the unbroken one would, and the loader can work
//! out the coming batches ahead of the step.

use crate::data::Order;

use super::rng::{self, Rng};

/// Keys the within-block orders of [`Order::Blocks`]: one stream per
/// (epoch, block), apart from the block order's.
const BLOCK: u64 = 0x5EED_B10C;

/// The visiting order of epoch `epoch` over `n` examples.
pub fn epoch_order(order: &Order, seed: u64, epoch: u64, n: usize) -> Vec<usize> {
    match order {
        // A block list that does not cover the set (never made so) falls
        // back to the plain shuffle rather than leaving examples out.
        Order::Blocks(sizes) if sizes.iter().sum::<usize>() == n => blocks(sizes, seed, epoch),
        _ => Rng::keyed(seed, rng::SHUFFLE, epoch).permutation(n),
    }
}

/// The blocks in a drawn order, each block's examples in a drawn order.
fn blocks(sizes: &[usize], seed: u64, epoch: u64) -> Vec<usize> {
    let mut starts = Vec::with_capacity(sizes.len());
    let mut at = 0;
    for &s in sizes {
        starts.push(at);
        at += s;
    }
    let mut out = Vec::with_capacity(at);
    for b in Rng::keyed(seed, rng::SHUFFLE, epoch).permutation(sizes.len()) {
        let key = epoch
            .wrapping_mul(sizes.len() as u64)
            .wrapping_add(b as u64);
        let within = Rng::keyed(seed, rng::SHUFFLE ^ BLOCK, key).permutation(sizes[b]);
        out.extend(within.into_iter().map(|i| starts[b] + i));
    }
    out
}

/// The index lists of steps `from..to`, computed as they are asked for;
/// one epoch's order is held at a time.
#[derive(Clone, Debug)]
pub struct BatchPlan {
    order: Order,
    seed: u64,
    batch: usize,
    n: usize,
    step: u64,
    to: u64,
    epoch: Option<(u64, Vec<usize>)>,
}

impl BatchPlan {
    /// The batches of steps `from..to` of a run with `seed` over `n`
    /// examples (`n` and `batch` at least 1).
    pub fn new(order: Order, seed: u64, batch: usize, n: usize, from: u64, to: u64) -> BatchPlan {
        BatchPlan {
            order,
            seed,
            batch,
            n,
            step: from,
            to,
            epoch: None,
        }
    }

    fn at(&mut self, p: u64) -> usize {
        let n = self.n as u64;
        let epoch = p / n;
        if self.epoch.as_ref().is_none_or(|(e, _)| *e != epoch) {
            self.epoch = Some((epoch, epoch_order(&self.order, self.seed, epoch, self.n)));
        }
        self.epoch.as_ref().expect("set above").1[(p % n) as usize]
    }
}

impl Iterator for BatchPlan {
    type Item = Vec<usize>;

    fn next(&mut self) -> Option<Vec<usize>> {
        if self.step >= self.to || self.n == 0 {
            return None;
        }
        let first = self.step * self.batch as u64;
        self.step += 1;
        Some((0..self.batch as u64).map(|j| self.at(first + j)).collect())
    }
}

/// The index lists of an evaluation: `0..n` in batches of `batch`.
pub fn in_order(n: usize, batch: usize) -> crate::data::Plan {
    let batch = batch.max(1);
    Box::new(
        (0..n)
            .step_by(batch)
            .map(move |s| (s..(s + batch).min(n)).collect()),
    )
}
