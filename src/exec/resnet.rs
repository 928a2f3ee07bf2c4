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
//! let vm = VarMap::new();
//! let vb = VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
//! let net = ResNet::new(3, 6, 2, 16, vb.pp("net"))?;
//! let h = net.forward(&Tensor::ones((2, 3, 4, 4), DType::F32, &Device::Cpu)?, true)?;
//! assert_eq!(h.dims(), &[2, 6, 4, 4]);
//! assert_eq!(vm.all_vars().iter().map(|v| v.elem_count()).sum::<usize>(),
//!            ResNet::param_count(3, 6, 2, 16));
//! # Ok::<(), candle_core::Error>(())
//! ```

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

    /// Number of scalar parameters: convs (`v`, `g`, `bias`) and bn `gamma`/`beta`
    /// (running statistics are not parameters).
    pub fn param_count(
        in_channels: usize,
        out_channels: usize,
        blocks: usize,
        features: usize,
    ) -> usize {
        let conv = |i: usize, o: usize| o * i * 9 + 2 * o;
        let bn = |c: usize| 2 * c;
        conv(in_channels, features)
            + blocks * (2 * bn(features) + 2 * conv(features, features))
            + bn(features)
            + conv(features, out_channels)
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
    use candle_core::{DType, Device};
    use candle_nn::VarMap;

    #[test]
    fn resnet_param_count_and_names() -> Result<()> {
        let vm = VarMap::new();
        let vb = VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
        let _net = ResNet::new(2, 4, 2, 5, vb)?;
        let total: usize = vm.all_vars().iter().map(|v| v.elem_count()).sum();
        assert_eq!(total, ResNet::param_count(2, 4, 2, 5));
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
}
