//! The backward of the fused ResNet conditioner ([`super`]): back through
//! each convolution (input gradient by the transposed kernel, kernel and
//! bias gradients) and each batch norm + ReLU (through the batch statistics
//! in training), block by block from the output, reading the block inputs
//! and first-convolution outputs the forward kept.

use candle_core::{CpuStorage, CustomOp3, Layout, Result, Shape};

use super::weight_norm::{effective_kernels, weight_norm_backward};
use super::{bn_affine, dims_of, Dims, ParamLayout, ResNetOp, Saved};
use crate::exec::conv::layer::{Conv3x3, KernelGrad, Pre};
use crate::exec::parallel::{add_parts, par, zeros};
use crate::exec::rows::{bn_relu_grad, bn_relu_sums, shifted_sums};
use crate::exec::scratch;

/// `[dx | dparams]` from `(x, params, grad of [y | stats])`.
pub(super) struct ResNetBackward {
    pub(super) op: ResNetOp,
}

/// Gradients of `y = conv(pre(input)) + bias`: fills `d_act` (the gradient
/// of the convolution's input, after `pre`) and adds the kernel and bias
/// gradients to `dk` and `db`.
#[allow(clippy::too_many_arguments)]
fn conv_layer_backward(
    d: Dims,
    input: &[f32],
    cin: usize,
    pre: Pre,
    kernel: &[f32],
    cout: usize,
    gy: &[f32],
    d_act: &mut [f32],
    dk: &mut [f32],
    db: &mut [f32],
) {
    let (g, hw) = (d.g, d.hw());
    let dconv = Conv3x3::new(g.h, g.w, kernel, cout, cin, true);
    let kgrad = KernelGrad::new(g.h, g.w, cin, cout);
    let parts = par(d.n, d_act, cin * hw, |r, mine| {
        let first = r.start;
        dconv.run(gy, r.clone(), Pre::Identity, |e, res, rows| {
            let dxe = &mut mine[(e - first) * cin * hw..][..cin * hw];
            for c in 0..cin {
                for i in 0..g.h {
                    let src = &res[rows.at(c, i)..][..g.w];
                    dxe[(c * g.h + i) * g.w..][..g.w].copy_from_slice(src);
                }
            }
        });
        let mut dbias = vec![0f64; cout];
        for e in r.clone() {
            let ge = &gy[e * cout * hw..][..cout * hw];
            for (c, s) in dbias.iter_mut().enumerate() {
                *s += shifted_sums(&ge[c * hw..(c + 1) * hw], 0.0).0;
            }
        }
        (kgrad.part(input, pre, gy, r), dbias)
    });
    let (dk_parts, dbias): (Vec<_>, Vec<_>) = parts.into_iter().unzip();
    kgrad.add_parts(&dk_parts, dk);
    for dbias in dbias {
        for (t, v) in db.iter_mut().zip(dbias) {
            *t += v as f32;
        }
    }
}

/// Gradient through `relu(bn(x))` (batch norm with statistics `mean`, `inv`):
/// `d_act` is the gradient of the ReLU's output; writes (or, with `add`,
/// adds) the gradient of `x` into `dx` and the gamma and beta gradients
/// into `dpar` (`[dgamma | dbeta]`). In training the statistics are the
/// batch's and the gradient flows through them.
#[allow(clippy::too_many_arguments)]
fn bn_relu_backward(
    d: Dims,
    x: &[f32],
    d_act: &[f32],
    gamma_beta: &[f32],
    mean: &[f32],
    inv: &[f32],
    train: bool,
    dx: &mut [f32],
    add: bool,
    dpar: &mut [f32],
) {
    let f = mean.len();
    let hw = d.hw();
    let (a, b) = bn_affine(gamma_beta, f, mean, inv);
    let gamma = &gamma_beta[..f];
    // Pass 1: per channel, S1 = sum(dy), S2 = sum(dy * xhat), dy the gradient before the ReLU.
    let parts = par(d.n, &mut [], 0, |r, _| {
        let mut s = vec![0f64; 2 * f];
        for e in r {
            for c in 0..f {
                let at = (e * f + c) * hw;
                let (x, g) = (&x[at..at + hw], &d_act[at..at + hw]);
                let (s1, s2) = bn_relu_sums(x, g, [a[c], b[c], mean[c], inv[c]]);
                s[c] += s1;
                s[f + c] += s2;
            }
        }
        s
    });
    let s = add_parts(parts, 2 * f);
    let m = (d.n * hw) as f32;
    for c in 0..f {
        dpar[c] += s[f + c] as f32;
        dpar[f + c] += s[c] as f32;
    }
    // Pass 2: dx = gamma*inv*(dy - S1/m - xhat*S2/m) in training, a*dy otherwise.
    par(d.n, dx, f * hw, |r, mine| {
        for (e, dxe) in r.zip(mine.chunks_mut(f * hw)) {
            for c in 0..f {
                let at = (e * f + c) * hw;
                let (k, m1, m2) = if train {
                    (gamma[c] * inv[c], s[c] as f32 / m, s[f + c] as f32 / m)
                } else {
                    (a[c], 0.0, 0.0)
                };
                let out = &mut dxe[c * hw..(c + 1) * hw];
                let (x, g) = (&x[at..at + hw], &d_act[at..at + hw]);
                let bn = [a[c], b[c], mean[c], inv[c]];
                bn_relu_grad(x, g, bn, [k, m1, m2], out, add);
            }
        }
    });
}

/// What a backward pass reads: sizes, parameters and what the forward kept.
struct Back<'a> {
    d: Dims,
    p: &'a [f32],
    lay: ParamLayout,
    /// The effective kernels ([`effective_kernels`]).
    kernels: &'a [f32],
    saved: &'a Saved,
    features: usize,
    train: bool,
}

impl Back<'_> {
    /// Back through `conv_i(relu(bn_j(input)))`, given `gy`, the gradient of
    /// the convolution's output: writes (with `add`, adds) the gradient of
    /// `input` to `dinput`, and the parameter gradients to `dp`; `d_act` is
    /// scratch for the gradient between the two.
    #[allow(clippy::too_many_arguments)]
    fn conv_bn(
        &self,
        i: usize,
        j: usize,
        input: &[f32],
        gy: &[f32],
        d_act: &mut [f32],
        dinput: &mut [f32],
        add: bool,
        dp: &mut [f32],
    ) {
        let f = self.features;
        let gamma_beta = &self.p[self.lay.bns[j]..self.lay.bns[j] + 2 * f];
        let (mean, inv) = &self.saved.stats[j];
        let (a, b) = bn_affine(gamma_beta, f, mean, inv);
        let c = self.lay.convs[i];
        let (dk, db) = split_kernel_grad(dp, c);
        let pre = Pre::AffineRelu(&a, &b);
        let kernel = &self.kernels[c.k..][..c.kernel_len()];
        conv_layer_backward(self.d, input, f, pre, kernel, c.out, gy, d_act, dk, db);
        let dpar = &mut dp[self.lay.bns[j]..self.lay.bns[j] + 2 * f];
        bn_relu_backward(
            self.d, input, d_act, gamma_beta, mean, inv, self.train, dinput, add, dpar,
        );
    }
}

impl ResNetBackward {
    fn run(&self, x: &[f32], p: &[f32], gy: &[f32], d: Dims) -> Vec<f32> {
        let op = &self.op;
        let net = op.net;
        let saved = op.saved.lock().expect("saved activations").take();
        // A forward that kept nothing (evaluation mode) is run again to keep it.
        let saved = saved.unwrap_or_else(|| op.run(x, p, d, true).1.expect("saved"));
        let lay = net.layout();
        let kernels = effective_kernels(p, &lay);
        let back = Back {
            d,
            p,
            kernels: &kernels,
            lay,
            saved: &saved,
            features: net.features,
            train: op.train,
        };
        let len = d.n * net.features * d.hw();
        let mut out = zeros(x.len() + back.lay.len);
        let (dx, dp) = out.split_at_mut(x.len());
        let (mut d_act, mut dh, mut du) = (scratch::any(len), scratch::any(len), scratch::any(len));
        // The output convolution and batch norm, then the blocks backwards:
        // h_{j+1} = h_j + conv2(relu(bn2(u_j))), u_j = conv1(relu(bn1(h_j))).
        let (jo, gy) = (2 * net.blocks, &gy[..d.n * net.out * d.hw()]);
        back.conv_bn(
            jo + 1,
            jo,
            &saved.h[net.blocks],
            gy,
            &mut d_act,
            &mut dh,
            false,
            dp,
        );
        for j in (0..net.blocks).rev() {
            back.conv_bn(
                2 + 2 * j,
                2 * j + 1,
                &saved.u[j],
                &dh,
                &mut d_act,
                &mut du,
                false,
                dp,
            );
            back.conv_bn(
                1 + 2 * j,
                2 * j,
                &saved.h[j],
                &du,
                &mut d_act,
                &mut dh,
                true,
                dp,
            );
        }
        let c = back.lay.convs[0];
        let (dk, db) = split_kernel_grad(dp, c);
        let kernel = &kernels[c.k..][..c.kernel_len()];
        conv_layer_backward(d, x, net.c, Pre::Identity, kernel, c.out, &dh, dx, dk, db);
        weight_norm_backward(p, &back.lay, dp);
        out
    }
}

/// The slices of `dp` where one convolution's effective-kernel gradient
/// (in `v`'s place, until [`weight_norm_backward`]) and bias gradient go.
fn split_kernel_grad(dp: &mut [f32], c: super::ConvAt) -> (&mut [f32], &mut [f32]) {
    let (dvg, rest) = dp[c.v..c.bias + c.out].split_at_mut(c.bias - c.v);
    (&mut dvg[..c.kernel_len()], rest)
}

impl CustomOp3 for ResNetBackward {
    fn name(&self) -> &'static str {
        "resnet-fused-backward"
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
        let d = dims_of(l1, self.op.net)?;
        let x = crate::exec::cpu_slice::<f32>(s1, l1, self.name())?;
        let p = crate::exec::cpu_slice::<f32>(s2, l2, self.name())?;
        let g = crate::exec::cpu_slice::<f32>(s3, l3, self.name())?;
        let out = self.run(x, p, g, d);
        let len = out.len();
        Ok((CpuStorage::F32(out), Shape::from(len)))
    }
}
