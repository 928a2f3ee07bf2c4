//! The whole ResNet conditioner as one custom op, forward and backward, on
//! the CPU in f32 with the AVX-512 convolution kernels of
//! [`crate::exec::conv::direct`].
//!
//! Why: run layer by layer, a conditioner spends more time around its
//! convolutions than in them: every batch norm, ReLU, bias and residual add
//! is a pass over memory with a fresh output, and so is each of their
//! gradients. Here each convolution's prologue applies the batch norm and
//! ReLU of its input while copying it onto the padded grid, and its
//! epilogue adds the bias and the residual and gathers the next batch
//! norm's statistics while copying the result out; the backward recomputes
//! those cheap activations instead of storing them. What stays between the
//! passes is the pre-activation of every batch norm (the block inputs `h`
//! and the first convolutions' outputs `u`).
//!
//! The convolutions' weight normalization is part of the op too
//! ([`weight_norm`]).
//!
//! Inputs: `x` (`[N, C, H, W]`) and one flat parameter vector, in the order
//! of [`ParamLayout`]: per convolution (input, then conv1/conv2 of each
//! block, then output) the weight-norm direction `v`, gain `g` and bias; per
//! batch norm (bn1/bn2 of each block, then the output one) gamma, beta,
//! running mean, running variance. Output: `[y (N·out·H·W) | per batch
//! norm: mean (F), biased variance (F)]`, the statistics the running
//! averages are updated with.
//! Gradients: `x` and every `v`, `g`, bias, gamma and beta (zero for the
//! running statistics). In training the batch statistics are those of the
//! batch and gradients flow through them, as in `BatchNorm`.

use std::sync::{Arc, Mutex};

use candle_core::{bail, CpuStorage, CustomOp2, Layout, Result, Shape, Tensor};

use crate::exec::conv::direct::{self, Grid};
use crate::exec::conv::layer::{Conv3x3, Pre};
use crate::exec::parallel::{add_parts, chunks, map_balanced, par, threads, zeros};
use crate::exec::scratch::{self, Buf};

mod backward;
mod weight_norm;
use backward::ResNetBackward;
use weight_norm::effective_kernels;

/// Sizes of one ResNet conditioner.
#[derive(Clone, Copy, Debug)]
pub struct Net {
    pub c: usize,
    pub out: usize,
    pub blocks: usize,
    pub features: usize,
    pub eps: f64,
}

/// Offsets of the parts of the flat parameter vector.
#[derive(Clone, Debug)]
pub struct ParamLayout {
    convs: Vec<ConvAt>,
    /// Per batch norm: offset of gamma (beta, mean, var follow, F each).
    bns: Vec<usize>,
    /// Values of all the effective kernels ([`effective_kernels`]).
    kernels: usize,
    pub len: usize,
}

impl ParamLayout {
    /// Output channels of all the convolutions: the rows of weight norm.
    fn rows(&self) -> usize {
        self.convs.iter().map(|c| c.out).sum()
    }
}

/// Where one convolution's parameters are: `v` (`[out][inp][3][3]`), then
/// `g` and the bias (`out` each) in the parameter vector; its effective
/// kernel at `k` in [`effective_kernels`]' vector.
#[derive(Clone, Copy, Debug)]
struct ConvAt {
    v: usize,
    g: usize,
    bias: usize,
    k: usize,
    out: usize,
    inp: usize,
}

impl ConvAt {
    fn kernel_len(&self) -> usize {
        self.out * self.inp * 9
    }
}

impl Net {
    /// Convolutions as (out, in): input, conv1/conv2 per block, output.
    fn conv_shapes(&self) -> Vec<(usize, usize)> {
        let f = self.features;
        let mut v = vec![(f, self.c)];
        v.extend((0..2 * self.blocks).map(|_| (f, f)));
        v.push((self.out, f));
        v
    }
    pub fn layout(&self) -> ParamLayout {
        let (mut at, mut k) = (0, 0);
        let mut convs = vec![];
        for (out, inp) in self.conv_shapes() {
            let len = out * inp * 9;
            convs.push(ConvAt {
                v: at,
                g: at + len,
                bias: at + len + out,
                k,
                out,
                inp,
            });
            at += len + 2 * out;
            k += len;
        }
        let mut bns = vec![];
        for _ in 0..2 * self.blocks + 1 {
            bns.push(at);
            at += 4 * self.features;
        }
        ParamLayout {
            convs,
            bns,
            kernels: k,
            len: at,
        }
    }
    fn batch_norms(&self) -> usize {
        2 * self.blocks + 1
    }
}

/// Whether the fused op runs `x`: a CPU f32 tensor on a machine with AVX-512.
pub fn fits(x: &Tensor) -> bool {
    x.device().is_cpu() && x.dtype() == candle_core::DType::F32 && direct::available()
}

/// Runs the conditioner; returns `[y | batch statistics]` (see the module doc).
pub fn forward(x: &Tensor, params: &Tensor, net: Net, train: bool) -> Result<Tensor> {
    let op = ResNetOp {
        net,
        train,
        saved: Arc::new(Mutex::new(None)),
    };
    x.contiguous()?.apply_op2(&params.contiguous()?, op)
}

/// What the backward needs of a training forward.
struct Saved {
    /// Block inputs `h_0..h_B` (`h_B` feeds the output batch norm).
    h: Vec<Buf>,
    /// The first convolution's output of each block.
    u: Vec<Buf>,
    /// Per batch norm: the statistics used (mean, 1/sqrt(var + eps)).
    stats: Vec<(Vec<f32>, Vec<f32>)>,
}

struct ResNetOp {
    net: Net,
    train: bool,
    saved: Arc<Mutex<Option<Saved>>>,
}

/// The sizes of one call.
#[derive(Clone, Copy)]
struct Dims {
    n: usize,
    g: Grid,
}

impl Dims {
    fn hw(&self) -> usize {
        self.g.h * self.g.w
    }
}

fn dims_of(l: &Layout, net: Net) -> Result<Dims> {
    let d = l.shape().dims();
    if d.len() != 4 || d[1] != net.c {
        bail!("fused resnet: input {d:?}, expected [N, {}, H, W]", net.c)
    }
    Ok(Dims {
        n: d[0],
        g: Grid::new(d[2], d[3]),
    })
}

/// Per-channel affine of a batch norm from its statistics: (a, b) with
/// `bn(x) = x * a + b`.
fn bn_affine(p: &[f32], f: usize, mean: &[f32], inv: &[f32]) -> (Vec<f32>, Vec<f32>) {
    let (gamma, beta) = (&p[..f], &p[f..2 * f]);
    let a: Vec<f32> = (0..f).map(|c| gamma[c] * inv[c]).collect();
    let b = (0..f).map(|c| beta[c] - mean[c] * a[c]).collect();
    (a, b)
}

/// `out = conv(pre(input)) + bias [+ residual]` over the batch; returns the
/// per-channel statistics of `out` as [`Sums`] when `stats` (else zeros).
#[allow(clippy::too_many_arguments)]
fn conv_layer(
    d: Dims,
    input: &[f32],
    pre: Pre,
    conv: &Conv3x3,
    cout: usize,
    bias: &[f32],
    residual: Option<&[f32]>,
    out: &mut [f32],
    stats: bool,
) -> Sums {
    let (g, hw) = (d.g, d.hw());
    // Sums of squares are taken about a value near the mean (the bias,
    // plus the residual's first value) so that var = E[(v-k)^2] - E[v-k]^2
    // does not cancel when the mean is large next to the spread.
    let shift: Vec<f32> = (0..cout)
        .map(|c| bias[c] + residual.map_or(0.0, |r| r[c * hw]))
        .collect();
    let parts = par(d.n, out, cout * hw, |r, mine| {
        let mut sums = vec![0f64; 2 * cout];
        let first = r.start;
        conv.run(input, r, pre, |e, res, rows| {
            let y = &mut mine[(e - first) * cout * hw..][..cout * hw];
            for c in 0..cout {
                let out = &mut y[c * hw..][..hw];
                let rr = residual.map(|rs| &rs[(e * cout + c) * hw..][..hw]);
                crate::exec::rows::add_bias(res, rows.plane(c, g.h, g.w), bias[c], rr, out);
                if stats {
                    let (s, ss) =
                        crate::exec::rows::shifted_sums(&y[c * hw..(c + 1) * hw], shift[c]);
                    sums[c] += s;
                    sums[cout + c] += ss;
                }
            }
        });
        sums
    });
    Sums {
        shift,
        sums: add_parts(parts, 2 * cout),
    }
}

/// Per-channel `[sum | sum of squares]` of `v - shift[c]`.
struct Sums {
    shift: Vec<f32>,
    sums: Vec<f64>,
}

/// Mean and 1/sqrt(var + eps) of `m` values per channel, and the biased
/// variance.
fn stats_of(s: &Sums, m: usize, eps: f64) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let (sums, f) = (&s.sums, s.shift.len());
    let d: Vec<f64> = sums[..f].iter().map(|s| s / m as f64).collect();
    let var: Vec<f64> = (0..f)
        .map(|c| (sums[f + c] / m as f64 - d[c] * d[c]).max(0.0))
        .collect();
    let mean: Vec<f64> = (0..f).map(|c| s.shift[c] as f64 + d[c]).collect();
    (
        mean.iter().map(|&v| v as f32).collect(),
        var.iter()
            .map(|&v| (1.0 / (v + eps).sqrt()) as f32)
            .collect(),
        var.iter().map(|&v| v as f32).collect(),
    )
}

impl ResNetOp {
    /// The statistics batch norm `j` uses: the batch's (from `sums`) in
    /// training, the running ones otherwise. Returns (mean, inv, biased var).
    fn bn_stats(
        &self,
        p: &[f32],
        lay: &ParamLayout,
        j: usize,
        sums: &Sums,
        m: usize,
    ) -> [Vec<f32>; 3] {
        let f = self.net.features;
        if self.train {
            let (mean, inv, var) = stats_of(sums, m, self.net.eps);
            [mean, inv, var]
        } else {
            let base = lay.bns[j];
            let mean = p[base + 2 * f..base + 3 * f].to_vec();
            let var = p[base + 3 * f..base + 4 * f].to_vec();
            let inv = var
                .iter()
                .map(|&v| (1.0 / (v as f64 + self.net.eps).sqrt()) as f32)
                .collect();
            [mean, inv, var]
        }
    }

    /// The forward pass; `Saved` when `save`. In evaluation the batch norms
    /// use their running statistics, so every example is independent: the
    /// whole net runs on a few examples at a time (depth first), whose
    /// activations stay in L2 from one layer to the next, instead of each
    /// layer's output for the whole batch going out to memory.
    fn run(&self, x: &[f32], p: &[f32], d: Dims, save: bool) -> (Vec<f32>, Option<Saved>) {
        let net = self.net;
        let (f, hw) = (net.features, d.hw());
        let lay = net.layout();
        let kernels = effective_kernels(p, &lay);
        let convs: Vec<Conv3x3> = lay
            .convs
            .iter()
            .map(|c| {
                let k = &kernels[c.k..][..c.kernel_len()];
                Conv3x3::new(d.g.h, d.g.w, k, c.out, c.inp, false)
            })
            .collect();
        let per_out = net.out * hw;
        let mut y = zeros(d.n * per_out + 2 * f * net.batch_norms());
        let (ys, tail) = y.split_at_mut(d.n * per_out);
        let (stats_out, saved) = if self.train || save {
            self.layers(x, p, d, &convs, save, ys)
        } else {
            // Examples whose widest activation is about 256 KiB, in runs
            // that start each thread's share of the batch.
            let sub = ((1 << 16) / (f.max(net.c) * hw)).max(1);
            let (per_in, mut rest) = (net.c * hw, ys);
            let mut runs = vec![];
            for share in chunks(d.n, threads()) {
                for k in share.clone().step_by(sub) {
                    let n = sub.min(share.end - k);
                    let (out, tail) = rest.split_at_mut(n * per_out);
                    runs.push((k, n, out));
                    rest = tail;
                }
            }
            let stats = map_balanced(runs, |(k, n, out)| {
                let part = Dims { n, g: d.g };
                let xs = &x[k * per_in..][..n * per_in];
                self.layers(xs, p, part, &convs, false, out).0
            });
            (stats.into_iter().next().unwrap_or_default(), None)
        };
        for (k, (mu, var)) in stats_out.iter().enumerate() {
            tail[2 * k * f..(2 * k + 1) * f].copy_from_slice(mu);
            tail[(2 * k + 1) * f..(2 * k + 2) * f].copy_from_slice(var);
        }
        (y, saved)
    }

    /// The layers on the `d.n` examples of `x`, writing `ys`; returns the
    /// statistics each batch norm used (mean, biased variance) and, when
    /// `save`, what the backward needs.
    #[allow(clippy::type_complexity)]
    fn layers(
        &self,
        x: &[f32],
        p: &[f32],
        d: Dims,
        convs: &[Conv3x3],
        save: bool,
        ys: &mut [f32],
    ) -> (Vec<(Vec<f32>, Vec<f32>)>, Option<Saved>) {
        let net = self.net;
        let (f, hw) = (net.features, d.hw());
        let m = d.n * hw;
        let lay = net.layout();
        let bias = |i: usize| {
            let c = lay.convs[i];
            &p[c.bias..c.bias + c.out]
        };
        let mut saved = Saved {
            h: vec![],
            u: vec![],
            stats: vec![],
        };
        let mut stats_out = vec![];
        let st = self.train;
        let mut h = scratch::any(d.n * f * hw);
        let mut sums = conv_layer(d, x, Pre::Identity, &convs[0], f, bias(0), None, &mut h, st);
        for j in 0..net.blocks {
            let [mean1, inv1, var1] = self.bn_stats(p, &lay, 2 * j, &sums, m);
            let (a1, b1) = bn_affine(&p[lay.bns[2 * j]..], f, &mean1, &inv1);
            let (k1, k2) = (1 + 2 * j, 2 + 2 * j);
            let mut u = scratch::any(d.n * f * hw);
            let pre = Pre::AffineRelu(&a1, &b1);
            let usums = conv_layer(d, &h, pre, &convs[k1], f, bias(k1), None, &mut u, st);
            let [mean2, inv2, var2] = self.bn_stats(p, &lay, 2 * j + 1, &usums, m);
            let (a2, b2) = bn_affine(&p[lay.bns[2 * j + 1]..], f, &mean2, &inv2);
            let mut next = scratch::any(d.n * f * hw);
            let pre = Pre::AffineRelu(&a2, &b2);
            sums = conv_layer(d, &u, pre, &convs[k2], f, bias(k2), Some(&h), &mut next, st);
            stats_out.extend([(mean1.clone(), var1), (mean2.clone(), var2)]);
            if save {
                saved.h.push(std::mem::replace(&mut h, next));
                saved.u.push(u);
                saved.stats.extend([(mean1, inv1), (mean2, inv2)]);
            } else {
                h = next;
            }
        }
        let jo = 2 * net.blocks;
        let [mean, inv, var] = self.bn_stats(p, &lay, jo, &sums, m);
        let (a, bb) = bn_affine(&p[lay.bns[jo]..], f, &mean, &inv);
        let pre = Pre::AffineRelu(&a, &bb);
        conv_layer(
            d,
            &h,
            pre,
            &convs[jo + 1],
            net.out,
            bias(jo + 1),
            None,
            ys,
            false,
        );
        stats_out.push((mean.clone(), var));
        if save {
            saved.h.push(h);
            saved.stats.push((mean, inv));
        }
        (stats_out, save.then_some(saved))
    }
}

impl CustomOp2 for ResNetOp {
    fn name(&self) -> &'static str {
        "resnet-fused"
    }
    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let d = dims_of(l1, self.net)?;
        let x = crate::exec::cpu_slice::<f32>(s1, l1, self.name())?;
        let p = crate::exec::cpu_slice::<f32>(s2, l2, self.name())?;
        if p.len() != self.net.layout().len {
            bail!(
                "fused resnet: {} parameters, expected {}",
                p.len(),
                self.net.layout().len
            )
        }
        let (y, saved) = self.run(x, p, d, self.train);
        *self.saved.lock().expect("saved activations") = saved;
        let len = y.len();
        Ok((CpuStorage::F32(y), Shape::from(len)))
    }
    fn bwd(
        &self,
        x: &Tensor,
        params: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let back = ResNetBackward {
            op: ResNetOp {
                net: self.net,
                train: self.train,
                saved: self.saved.clone(),
            },
        };
        crate::exec::packed_grads(x, params, grad, &back)
    }
}
