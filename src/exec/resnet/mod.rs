//! ResNet conditioner (Real NVP) for image couplings:
//! ```text
//! h = conv3x3(x)                                   C -> F
//! B times: h = h + conv3x3(relu(bn(conv3x3(relu(bn(h))))))
//! out = conv3x3(relu(bn(h)))                       F -> out channels, zero-initialized
//! ```
//! All convolutions are weight-normalized ([`crate::exec::wn_conv`]), padding 1. The output
//! convolution starts with `g = 0`, `bias = 0` so a fresh network outputs exactly zero.
//! `bn` uses batch statistics when `train` is true (updating its running averages) and the
//! running averages otherwise. Parameter names: `in_conv`, `blocks.{i}.{bn1,conv1,bn2,conv2}`,
//! `out_bn`, `out_conv`.
//!
//! ```
//! use candle_core::{DType, Device, Tensor};
//! use candle_nn::{VarBuilder, VarMap};
//! use flowc::exec::{resnet::ResNet, Conditioner};
//! use flowc::ir::{params, CouplingKind, NetKind};
//! let vm = VarMap::new();
//! let vb = VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
//! let net = ResNet::new(3, 6, 2, 16, vb.pp("net"))?;
//! let h = net.forward(&Tensor::ones((2, 3, 4, 4), DType::F32, &Device::Cpu)?, true)?;
//! assert_eq!(h.dims(), &[2, 6, 4, 4]);
//! // 3 channels in, 6 out: the (s, t) net of an affine coupling.
//! let resnet = NetKind::Resnet { blocks: 2, features: 16 };
//! assert_eq!(vm.all_vars().iter().map(|v| v.elem_count()).sum::<usize>() as u128,
//!            params::net(resnet, 3, 0, CouplingKind::Affine));
//! # Ok::<(), candle_core::Error>(())
//! ```

// The fused op runs on the AVX-512 kernels of `exec::conv::direct` (x86-64).
#[cfg(target_arch = "x86_64")]
mod fused;

use super::batchnorm::BatchNorm;
use super::wn_conv::{wn_conv2d, wn_conv2d_zero, WnConv2d};
use super::Conditioner;
use candle_core::{Module, Result, Tensor};
use candle_nn::VarBuilder;

#[derive(Debug, Clone)]
struct ResBlock {
    bn1: BatchNorm,
    conv1: WnConv2d,
    bn2: BatchNorm,
    conv2: WnConv2d,
}

impl ResBlock {
    fn new(features: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            bn1: BatchNorm::new(features, vb.pp("bn1"))?,
            conv1: wn_conv2d(features, features, 3, 1, vb.pp("conv1"))?,
            bn2: BatchNorm::new(features, vb.pp("bn2"))?,
            conv2: wn_conv2d(features, features, 3, 1, vb.pp("conv2"))?,
        })
    }

    fn forward(&self, h: &Tensor, train: bool) -> Result<Tensor> {
        let r = self.bn1.forward(h, train)?.relu()?;
        let r = self.conv1.forward(&r)?;
        let r = self.bn2.forward(&r, train)?.relu()?;
        h + self.conv2.forward(&r)?
    }
}

#[derive(Debug, Clone)]
pub struct ResNet {
    in_conv: WnConv2d,
    blocks: Vec<ResBlock>,
    out_bn: BatchNorm,
    out_conv: WnConv2d,
}

impl ResNet {
    /// `in_channels` (C) -> `out_channels` (k*C), `blocks` residual blocks of `features` maps.
    pub fn new(
        in_channels: usize,
        out_channels: usize,
        blocks: usize,
        features: usize,
        vb: VarBuilder,
    ) -> Result<Self> {
        let vbb = vb.pp("blocks");
        Ok(Self {
            in_conv: wn_conv2d(in_channels, features, 3, 1, vb.pp("in_conv"))?,
            blocks: (0..blocks)
                .map(|i| ResBlock::new(features, vbb.pp(i)))
                .collect::<Result<_>>()?,
            out_bn: BatchNorm::new(features, vb.pp("out_bn"))?,
            out_conv: wn_conv2d_zero(features, out_channels, 3, 1, vb.pp("out_conv"))?,
        })
    }
}

impl Conditioner for ResNet {
    fn buffers(&self, prefix: &str, out: &mut Vec<(String, candle_core::Var)>) {
        for (i, b) in self.blocks.iter().enumerate() {
            b.bn1
                .running_stats()
                .buffers(&format!("{prefix}blocks.{i}.bn1."), out);
            b.bn2
                .running_stats()
                .buffers(&format!("{prefix}blocks.{i}.bn2."), out);
        }
        self.out_bn
            .running_stats()
            .buffers(&format!("{prefix}out_bn."), out);
    }
    fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        #[cfg(target_arch = "x86_64")]
        if fused::fits(x) {
            return self.forward_fused(x, train);
        }
        self.forward_layers(x, train)
    }
}

impl ResNet {
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    fn batch_norms(&self) -> impl Iterator<Item = &BatchNorm> {
        self.blocks
            .iter()
            .flat_map(|b| [&b.bn1, &b.bn2])
            .chain([&self.out_bn])
    }

    /// The conditioner as one custom op ([`fused`]), weight normalization
    /// included; the parameters go in as one vector in the order of
    /// [`fused::Net::layout`].
    #[cfg(target_arch = "x86_64")]
    fn forward_fused(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let (n, c, h, w) = x.dims4()?;
        let features = self.in_conv.g().dim(0)?;
        let out = self.out_conv.g().dim(0)?;
        let net = fused::Net {
            c,
            out,
            blocks: self.blocks.len(),
            features,
            eps: self.out_bn.eps(),
        };
        let mut parts = vec![];
        let convs = std::iter::once(&self.in_conv)
            .chain(self.blocks.iter().flat_map(|b| [&b.conv1, &b.conv2]))
            .chain([&self.out_conv]);
        for conv in convs {
            parts.push(conv.v().flatten_all()?);
            parts.extend([conv.g().clone(), conv.bias().clone()]);
        }
        for bn in self.batch_norms() {
            let stats = bn.running_stats();
            parts.extend([bn.gamma().clone(), bn.beta().clone()]);
            parts.extend([stats.mean().detach(), stats.var().detach()]);
        }
        let params = Tensor::cat(&parts, 0)?;
        let packed = fused::forward(x, &params, net, train)?;
        let ny = n * out * h * w;
        if train {
            let stats = packed.narrow(0, ny, packed.dim(0)? - ny)?.detach();
            for (j, bn) in self.batch_norms().enumerate() {
                let mean = stats.narrow(0, 2 * j * features, features)?;
                let var = stats.narrow(0, (2 * j + 1) * features, features)?;
                bn.running_stats().update(&mean, &var, n * h * w)?;
            }
        }
        packed.narrow(0, 0, ny)?.reshape((n, out, h, w))
    }

    /// The conditioner layer by layer, in candle ops (any device and dtype).
    fn forward_layers(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let mut h = self.in_conv.forward(x)?;
        for b in &self.blocks {
            h = b.forward(&h, train)?;
        }
        let h = self.out_bn.forward(&h, train)?.relu()?;
        self.out_conv.forward(&h)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exec::test_util::*;
    use crate::ir::{params, CouplingKind, NetKind};
    use candle_core::{DType, Device};
    use candle_nn::VarMap;

    #[test]
    fn resnet_param_count_and_names() -> Result<()> {
        let vm = VarMap::new();
        let vb = VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
        let _net = ResNet::new(2, 4, 2, 5, vb)?;
        let total: usize = vm.all_vars().iter().map(|v| v.elem_count()).sum();
        // 2 channels in, 4 out: an affine coupling's net, as LANGUAGE.md counts it.
        let kind = NetKind::Resnet {
            blocks: 2,
            features: 5,
        };
        assert_eq!(total as u128, params::net(kind, 2, 0, CouplingKind::Affine));
        assert_eq!(vm.all_vars().len(), 6 * 3 + 5 * 2); // 6 convs, 5 bns
        assert!(vm.data().lock().unwrap().contains_key("blocks.1.conv2.g"));
        Ok(())
    }

    #[test]
    fn fresh_resnet_outputs_zero_and_gradients_reach_output_g() -> Result<()> {
        let vm = VarMap::new();
        let vb = VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
        let net = ResNet::new(2, 4, 1, 6, vb)?;
        let x = randn(&[3, 2, 4, 4], DType::F32)?;
        for train in [true, false] {
            assert_eq!(max_abs(&net.forward(&x, train)?)?, 0.0);
        }
        let r = randn(&[3, 4, 4, 4], DType::F32)?;
        let grads = (net.forward(&x, true)? * r)?.sum_all()?.backward()?;
        let g = vm.data().lock().unwrap()["out_conv.g"].clone();
        assert!(max_abs(grads.get(g.as_tensor()).unwrap())? > 0.0);
        Ok(())
    }

    /// Output, named parameter gradients, input gradient.
    #[cfg(target_arch = "x86_64")]
    type Outcome = (Tensor, Vec<(String, Tensor)>, Tensor);

    /// The fused op (f32, where the CPU has AVX-512) against the layered
    /// candle ops in f64: outputs, every parameter's gradient, the input's
    /// gradient and the running statistics, in training and evaluation,
    /// on awkward sizes (batch 1, 1x1 and odd maps, widths off the blocks).
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn fused_matches_layered_f64() -> Result<()> {
        use candle_core::Var;
        let probe_grads = |net: &ResNet,
                           vm: &VarMap,
                           x: &Tensor,
                           probe: &Tensor,
                           train: bool,
                           fused: bool|
         -> Result<Outcome> {
            let xv = Var::from_tensor(x)?;
            let y = if fused {
                net.forward_fused(xv.as_tensor(), train)?
            } else {
                net.forward_layers(xv.as_tensor(), train)?
            };
            let grads = (&y * probe.to_dtype(y.dtype())?)?.sum_all()?.backward()?;
            let mut named: Vec<(String, Tensor)> = vm
                .data()
                .lock()
                .unwrap()
                .iter()
                .map(|(k, v)| (k.clone(), grads.get(v.as_tensor()).unwrap().clone()))
                .collect();
            named.sort_by(|a, b| a.0.cmp(&b.0));
            Ok((y, named, grads.get(xv.as_tensor()).unwrap().clone()))
        };
        for (n, c, out, blocks, f, h, w) in [
            (1usize, 1usize, 2usize, 1usize, 3usize, 1usize, 1usize),
            (3, 3, 6, 2, 8, 5, 7),
            (4, 2, 4, 1, 33, 6, 4),
            (2, 6, 12, 1, 16, 16, 16),
            // Wider Winograd layers (see exec::conv::layer) on odd
            // maps, on more than 16 tiles a row, on a 1x1 map, and with a
            // width off the micro-kernel's 8-row blocks.
            (2, 3, 6, 1, 48, 7, 5),
            (1, 2, 4, 1, 48, 3, 34),
            (3, 1, 2, 1, 50, 1, 1),
            // Evaluation runs one example at a time here (a 24x48x48
            // activation is past its 256 KiB), two in a row on one thread.
            (3, 2, 4, 1, 24, 48, 48),
        ] {
            if !fused::fits(&Tensor::zeros(1, DType::F32, &Device::Cpu)?) {
                eprintln!("no AVX-512 here: the fused op is not used, nothing to compare");
                return Ok(());
            }
            let (vm64, vm32, vmr) = (VarMap::new(), VarMap::new(), VarMap::new());
            let net64 = ResNet::new(
                c,
                out,
                blocks,
                f,
                VarBuilder::from_varmap(&vm64, DType::F64, &Device::Cpu),
            )?;
            let net32 = ResNet::new(
                c,
                out,
                blocks,
                f,
                VarBuilder::from_varmap(&vm32, DType::F32, &Device::Cpu),
            )?;
            // The same network layer by layer in f32: the error of the f32
            // reference path bounds what the fused op may have.
            let netr = ResNet::new(
                c,
                out,
                blocks,
                f,
                VarBuilder::from_varmap(&vmr, DType::F32, &Device::Cpu),
            )?;
            // Seeded draws, the same every run. (They do not make the run
            // deterministic: the f32 results still move by rounding between
            // runs, enough to flip a kink now and then; see `close` below.)
            let mut rng =
                crate::train::rng::Rng::new(0x5eed ^ (n * 7 + c * 131 + f * 1031 + h * w) as u64);
            let mut seeded = |shape: &[usize], std: f64| -> Result<Tensor> {
                let len = shape.iter().product::<usize>();
                let v: Vec<f64> = (0..len).map(|_| rng.normal() * std).collect();
                Tensor::from_vec(v, shape, &Device::Cpu)
            };
            for var in vm64.all_vars() {
                var.set(&seeded(var.dims(), 0.5)?)?;
            }
            for (k, v) in vm64.data().lock().unwrap().iter() {
                // Weight-norm gains away from 0 (a conv of gain ~0 before a
                // training batch norm makes its gradients all rounding noise).
                if k.ends_with(".g") {
                    v.set(&(v.as_tensor().abs()? + 0.5)?)?;
                }
                let v32 = v.as_tensor().to_dtype(DType::F32)?;
                vm32.data().lock().unwrap()[k].set(&v32)?;
                vmr.data().lock().unwrap()[k].set(&v32)?;
            }
            let x = seeded(&[n, c, h, w], 1.0)?;
            let probe = seeded(&[n, out, h, w], 1.0)?;
            // Training first (running statistics move), then evaluation with them.
            for train in [true, false] {
                let x32 = x.to_dtype(DType::F32)?;
                let (y64, g64, dx64) = probe_grads(&net64, &vm64, &x, &probe, train, false)?;
                let (y32, g32, dx32) = probe_grads(&net32, &vm32, &x32, &probe, train, true)?;
                let reference32 = Some(probe_grads(&netr, &vmr, &x32, &probe, train, false)?);
                let case = (n, c, out, blocks, f, h, w, train);
                // f32 sums over the batch: noise grows with their length, and
                // a training batch norm amplifies it (a bias before one has a
                // true gradient of 0). Bound: 2e-5 sqrt(terms) relative, or
                // 4x the layered f32 path's own error where it ran.
                let terms = ((n * h * w) as f64).sqrt();
                let tol = |b: &Tensor, ref32: Option<&Tensor>| -> Result<f64> {
                    let floor = 2e-5 * terms * max_abs(b)?.max(1.0);
                    Ok(match ref32 {
                        Some(r) => floor.max(4.0 * max_abs_diff(r, b)?),
                        None => floor,
                    })
                };
                let r32 = reference32.as_ref();
                assert!(
                    max_abs_diff(&y32, &y64)? < tol(&y64, r32.map(|r| &r.0))?,
                    "y {case:?}"
                );
                // Gradients: within the bound everywhere, or within 1% as a
                // whole (L2, against the larger of their norm and one per
                // entry: a bias before a training batch norm has a true
                // gradient of 0). In f32 a pre-activation within rounding of
                // a ReLU's kink can land on the other side than in f64, which
                // moves the gradients that pass through it by a weight's size
                // (up to 37 of 13,824 entries seen, L2 1.4e-3; 24 of 192 on a
                // 6x4 map, L2 7e-3): over random draws, a few runs in a
                // hundred with the direct kernels, more through Winograd
                // layers (a larger rounding error). A fused op that is wrong
                // is off by far more than 1%.
                let close = |a: &Tensor, b: &Tensor, bound: f64| -> Result<(bool, String)> {
                    let (a, b) = (
                        a.flatten_all()?.to_vec1::<f64>()?,
                        b.flatten_all()?.to_vec1::<f64>()?,
                    );
                    let off = a
                        .iter()
                        .zip(&b)
                        .filter(|(x, y)| (*x - *y).abs() >= bound)
                        .count();
                    let diff: f64 = a.iter().zip(&b).map(|(x, y)| (x - y) * (x - y)).sum();
                    let norm: f64 = b.iter().map(|y| y * y).sum();
                    let rel = (diff / norm.max(b.len() as f64)).sqrt();
                    let ok = off == 0 || rel <= 1e-2;
                    Ok((
                        ok,
                        format!("{off} of {} entries past {bound}, L2 {rel:.2e}", b.len()),
                    ))
                };
                // The 48x48 case is for evaluation's sub-batches: in training,
                // a batch norm over 6,912 positions spreads one flipped kink
                // into every channel's gamma and beta gradients (15 of 24 off,
                // L2 2.3%, in 2 runs of 100); the smaller cases check those.
                if train && h * w > 1000 {
                    continue;
                }
                let f64s = |t: &Tensor| t.to_dtype(DType::F64);
                let (ok, how) = close(&f64s(&dx32)?, &dx64, tol(&dx64, r32.map(|r| &r.2))?)?;
                assert!(ok, "dx {case:?}: {how}");
                for (i, ((name, a), (_, b))) in g32.iter().zip(&g64).enumerate() {
                    let (ok, how) = close(&f64s(a)?, b, tol(b, r32.map(|r| &r.1[i].1))?)?;
                    assert!(ok, "d{name} {case:?}: {how}");
                }
                for (b32, b64) in net32.batch_norms().zip(net64.batch_norms()) {
                    let (s32, s64) = (b32.running_stats(), b64.running_stats());
                    assert!(
                        max_abs_diff(s32.mean(), s64.mean())? < 1e-5,
                        "running mean {case:?}"
                    );
                    assert!(
                        max_abs_diff(s32.var(), s64.var())? < 1e-4,
                        "running var {case:?}"
                    );
                }
            }
        }
        Ok(())
    }
}
