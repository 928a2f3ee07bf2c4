//! The whole MLP conditioner as one custom op on the CPU (f32 and f64),
//! forward and backward.
//!
//! Why: a vector flow's conditioner works on small matrices (a batch of a
//! few hundred rows, widths of tens), where each candle op costs more in
//! dispatch, allocation and thread hand-off than in arithmetic; layer by
//! layer, a coupling of `two_moons` ran some 20 ops forward and 40 backward.
//! Here a step is one op each way, its rows split between threads.
//!
//! Inputs: `x` (`[N, D]`) and one flat parameter vector: per layer (hidden
//! ones, then the output one) the weight `[out, in]` (row-major, as
//! `candle_nn::Linear`) and the bias. Output: `[N, out]`. Hidden layers are
//! followed by a ReLU; their outputs are kept for the backward.

use std::sync::{Arc, Mutex};

use candle_core::{
    bail, CpuStorage, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor, WithDType,
};

use super::blocked;
use crate::exec::linalg::matmul;
use crate::exec::parallel::{chunks, map_parts, par_ranges as rows_par, threads_for};

/// Widths of one MLP: `dims[0]` inputs, hidden widths, `dims.last()` outputs.
#[derive(Clone, Debug)]
pub struct Net {
    pub dims: Vec<usize>,
}

impl Net {
    /// Threads for `n` rows: a deep flow of narrow nets runs one thread.
    fn threads(&self, n: usize) -> usize {
        let per_row: usize = self.dims.windows(2).map(|w| w[0] * w[1]).sum();
        threads_for(n.saturating_mul(per_row))
    }

    /// (offset of the weight, offset of the bias) of each layer, and the total.
    fn layout(&self) -> (Vec<(usize, usize)>, usize) {
        let mut at = 0;
        let mut v = vec![];
        for w in self.dims.windows(2) {
            v.push((at, at + w[0] * w[1]));
            at += w[0] * w[1] + w[1];
        }
        (v, at)
    }
}

/// Whether the fused op runs `x`: a CPU tensor of f32 or f64.
pub fn fits(x: &Tensor) -> bool {
    x.device().is_cpu() && matches!(x.dtype(), candle_core::DType::F32 | candle_core::DType::F64)
}

/// The network on `x`; `train` keeps the hidden layers' outputs for the
/// backward (without it, a backward runs the forward again).
pub fn forward(x: &Tensor, params: &Tensor, net: Net, train: bool) -> Result<Tensor> {
    let op = MlpOp {
        net,
        keep: train,
        saved: Arc::new(Mutex::new(None)),
    };
    x.contiguous()?.apply_op2(&params.contiguous()?, op)
}

/// The hidden layers' outputs (after the ReLU), per layer, `[N, width]`.
type Saved = Vec<CpuStorage>;

struct MlpOp {
    net: Net,
    /// Whether the forward keeps the hidden layers' outputs in `saved`.
    keep: bool,
    saved: Arc<Mutex<Option<Saved>>>,
}

/// `y (rows x out) = relu?(h W^T + b)` for `rows` rows of `h` (`rows x in`).
#[allow(clippy::too_many_arguments)]
fn layer<T: WithDType>(
    h: &[T],
    w: &[T],
    b: &[T],
    din: usize,
    dout: usize,
    relu: bool,
    y: &mut [T],
) {
    let rows = y.len() / dout;
    for i in 0..rows {
        y[i * dout..(i + 1) * dout].copy_from_slice(b);
    }
    // y (rows x out) += h (rows x in) . W^T (in x out)
    matmul(rows, dout, din, y, true, h, din, 1, w, 1, din);
    if relu {
        // A product, not a branch (the signs are random: a branch per value
        // mispredicts half the time); NaN stays NaN.
        for v in y.iter_mut() {
            let x = v.to_f64();
            *v = T::from_f64(x * (x > 0.0) as u8 as f64);
        }
    }
}

impl MlpOp {
    /// The output and the hidden layers' outputs. Rows are independent, so
    /// each task runs every layer on its own rows (one hand-off a call).
    fn run<T: WithDType>(&self, x: &[T], p: &[T], n: usize) -> (Vec<T>, Vec<Vec<T>>) {
        let (lay, _) = self.net.layout();
        let dims = &self.net.dims;
        let layers = dims.len() - 1;
        let mut outs: Vec<Vec<T>> = dims[1..].iter().map(|&d| vec![T::zero(); n * d]).collect();
        let ranges = chunks(n, self.net.threads(n));
        // Per range, its rows of every layer's output.
        let mut parts: Vec<Vec<&mut [T]>> = ranges.iter().map(|_| vec![]).collect();
        for (l, out) in outs.iter_mut().enumerate() {
            let mut rest = out.as_mut_slice();
            for (k, r) in ranges.iter().enumerate() {
                let (mine, tail) = rest.split_at_mut(r.len() * dims[l + 1]);
                rest = tail;
                parts[k].push(mine);
            }
        }
        map_parts(ranges.into_iter().zip(parts).collect(), |(r, mut ys)| {
            for l in 0..layers {
                let (wo, bo) = lay[l];
                let (din, dout) = (dims[l], dims[l + 1]);
                let (w, b) = (&p[wo..bo], &p[bo..bo + dout]);
                let (done, rest) = ys.split_at_mut(l);
                let input: &[T] = if l == 0 {
                    &x[r.start * din..r.end * din]
                } else {
                    done[l - 1]
                };
                layer(input, w, b, din, dout, l + 1 < layers, rest[0]);
            }
        });
        let out = outs.pop().expect("an output layer");
        (out, outs)
    }

    fn backward<T: WithDType>(
        &self,
        x: &[T],
        p: &[T],
        g: &[T],
        hidden: &[&[T]],
        n: usize,
    ) -> Vec<T> {
        let (lay, total) = self.net.layout();
        let dims = &self.net.dims;
        let layers = dims.len() - 1;
        let d0 = dims[0];
        // Per thread: its rows' dx and its partial parameter gradients.
        let parts = rows_par(n, self.net.threads(n), |r| {
            let rows = r.len();
            let mut dp = vec![T::zero(); total];
            let mut delta: Vec<T> = g[r.start * dims[layers]..r.end * dims[layers]].to_vec();
            for l in (0..layers).rev() {
                let (wo, bo) = lay[l];
                let (din, dout) = (dims[l], dims[l + 1]);
                let input: &[T] = if l == 0 {
                    &x[r.start * d0..r.end * d0]
                } else {
                    &hidden[l - 1][r.start * din..r.end * din]
                };
                // dW (out x in) += delta^T (out x rows) . input (rows x in); db += column sums.
                matmul(
                    dout,
                    din,
                    rows,
                    &mut dp[wo..bo],
                    true,
                    &delta,
                    1,
                    dout,
                    input,
                    din,
                    1,
                );
                for i in 0..rows {
                    for (s, &d) in dp[bo..bo + dout]
                        .iter_mut()
                        .zip(&delta[i * dout..(i + 1) * dout])
                    {
                        *s += d;
                    }
                }
                // d input (rows x in) = delta (rows x out) . W (out x in), then the ReLU's mask.
                let mut next = vec![T::zero(); rows * din];
                matmul(
                    rows,
                    din,
                    dout,
                    &mut next,
                    false,
                    &delta,
                    dout,
                    1,
                    &p[wo..bo],
                    din,
                    1,
                );
                if l > 0 {
                    for (d, &h) in next.iter_mut().zip(input) {
                        let keep = (h.to_f64() > 0.0) as u8 as f64;
                        *d = T::from_f64(d.to_f64() * keep);
                    }
                }
                delta = next;
            }
            (delta, dp)
        });
        let mut out = Vec::with_capacity(n * d0 + total);
        let mut dp = vec![T::zero(); total];
        for (dx, part) in &parts {
            out.extend_from_slice(dx);
            for (a, &b) in dp.iter_mut().zip(part) {
                *a += b;
            }
        }
        out.extend_from_slice(&dp);
        out
    }
}

fn check(net: &Net, l1: &Layout, l2: &Layout) -> Result<usize> {
    let d = l1.shape().dims();
    if d.len() != 2 || d[1] != net.dims[0] || l2.shape().elem_count() != net.layout().1 {
        bail!(
            "fused mlp: input {d:?} or parameters {:?} do not fit {:?}",
            l2.shape(),
            net.dims
        )
    }
    Ok(d[0])
}

macro_rules! per_type {
    ($s:expr, |$t:ident, $v:ident| $body:expr) => {
        match $s {
            CpuStorage::F32(_) => {
                type $t = f32;
                let $v = <f32 as WithDType>::to_cpu_storage_owned;
                $body
            }
            CpuStorage::F64(_) => {
                type $t = f64;
                let $v = <f64 as WithDType>::to_cpu_storage_owned;
                $body
            }
            _ => bail!("fused mlp: only f32 and f64"),
        }
    };
}

impl CustomOp2 for MlpOp {
    fn name(&self) -> &'static str {
        "mlp-fused"
    }
    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let n = check(&self.net, l1, l2)?;
        let out_dim = *self.net.dims.last().expect("widths");
        if let (CpuStorage::F32(_), true) = (s1, blocked::available()) {
            return self.forward_blocked(s1, l1, s2, l2, n);
        }
        per_type!(s1, |T, store| {
            let x = crate::exec::cpu_slice::<T>(s1, l1, self.name())?;
            let p = crate::exec::cpu_slice::<T>(s2, l2, self.name())?;
            let (y, hidden) = self.run(x, p, n);
            if self.keep {
                *self.saved.lock().expect("saved activations") =
                    Some(hidden.into_iter().map(store).collect());
            }
            Ok((store(y), Shape::from((n, out_dim))))
        })
    }
    fn bwd(
        &self,
        x: &Tensor,
        params: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let back = MlpBackward {
            op: MlpOp {
                net: self.net.clone(),
                keep: self.keep,
                saved: self.saved.clone(),
            },
        };
        crate::exec::packed_grads(x, params, grad, &back)
    }
}

impl MlpOp {
    /// The forward of [`blocked`] (f32, AVX-512).
    fn forward_blocked(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        n: usize,
    ) -> Result<(CpuStorage, Shape)> {
        let x = crate::exec::cpu_slice::<f32>(s1, l1, self.name())?;
        let p = crate::exec::cpu_slice::<f32>(s2, l2, self.name())?;
        let dims = &self.net.dims;
        let out_dim = dims[dims.len() - 1];
        let mut y = vec![0f32; n * out_dim];
        let mut hidden: Vec<Vec<f32>> = match self.keep {
            true => dims[1..dims.len() - 1]
                .iter()
                .map(|&w| vec![0f32; n * w])
                .collect(),
            false => vec![],
        };
        blocked::forward(dims, p, x, n, self.net.threads(n), &mut y, &mut hidden);
        if self.keep {
            *self.saved.lock().expect("saved activations") =
                Some(hidden.into_iter().map(CpuStorage::F32).collect());
        }
        Ok((CpuStorage::F32(y), Shape::from((n, out_dim))))
    }
}

struct MlpBackward {
    op: MlpOp,
}

impl CustomOp3 for MlpBackward {
    fn name(&self) -> &'static str {
        "mlp-fused-backward"
    }
    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let n = check(&self.op.net, l1, l2)?;
        let saved = self.op.saved.lock().expect("saved activations").take();
        per_type!(s1, |T, store| {
            let x = crate::exec::cpu_slice::<T>(s1, l1, self.name())?;
            let p = crate::exec::cpu_slice::<T>(s2, l2, self.name())?;
            let g = crate::exec::cpu_slice::<T>(s3, l3, self.name())?;
            let recomputed;
            let hidden: Vec<&[T]> = match &saved {
                Some(s) => s.iter().map(|h| h.as_slice::<T>()).collect::<Result<_>>()?,
                // A second backward of the same graph runs the forward again.
                None => {
                    recomputed = self.op.run(x, p, n).1;
                    recomputed.iter().map(|v| v.as_slice()).collect()
                }
            };
            let out = self.op.backward(x, p, g, &hidden, n);
            let len = out.len();
            Ok((store(out), Shape::from(len)))
        })
    }
}
