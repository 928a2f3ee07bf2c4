//! Weight-normalized 2-D convolution: `w = g * v / ||v||`, the norm taken per output channel
//! over `(in, kh, kw)`. Parameters: `v` `[out, in, k, k]`, `g` `[out]`, `bias` `[out]`.
//!
//! [`wn_conv2d`] initializes `v` with Kaiming-normal values, `g = 1` (so each output filter
//! starts with unit norm) and `bias = 0`. [`wn_conv2d_zero`] sets `g = 0` and `bias = 0`
//! (`v` random): the layer outputs exactly zero yet gradients reach `g`.
//!
//! ```
//! use candle_core::{DType, Device, Module, Tensor};
//! use candle_nn::{VarBuilder, VarMap};
//! use flowc::exec::wn_conv::wn_conv2d;
//! let vm = VarMap::new();
//! let vb = VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
//! let conv = wn_conv2d(3, 8, 3, 1, vb.pp("conv"))?;
//! let y = conv.forward(&Tensor::zeros((2, 3, 4, 4), DType::F32, &Device::Cpu)?)?;
//! assert_eq!(y.dims(), &[2, 8, 4, 4]);
//! # Ok::<(), candle_core::Error>(())
//! ```

use candle_core::{Module, Result, Tensor};
use candle_nn::{init, Init, VarBuilder};

#[derive(Debug, Clone)]
pub struct WnConv2d {
    v: Tensor,
    g: Tensor,
    bias: Tensor,
    padding: usize,
}

fn build(
    in_c: usize,
    out_c: usize,
    kernel: usize,
    padding: usize,
    g_init: f64,
    vb: VarBuilder,
) -> Result<WnConv2d> {
    let v = vb.get_with_hints(
        (out_c, in_c, kernel, kernel),
        "v",
        init::DEFAULT_KAIMING_NORMAL,
    )?;
    let g = vb.get_with_hints(out_c, "g", Init::Const(g_init))?;
    let bias = vb.get_with_hints(out_c, "bias", Init::Const(0.0))?;
    Ok(WnConv2d {
        v,
        g,
        bias,
        padding,
    })
}

/// A weight-normalized `kernel x kernel` convolution, stride 1, with `g = 1`, `bias = 0`.
pub fn wn_conv2d(
    in_c: usize,
    out_c: usize,
    kernel: usize,
    padding: usize,
    vb: VarBuilder,
) -> Result<WnConv2d> {
    build(in_c, out_c, kernel, padding, 1.0, vb)
}

/// A weight-normalized convolution whose output starts at exactly zero (`g = 0`, `bias = 0`).
pub fn wn_conv2d_zero(
    in_c: usize,
    out_c: usize,
    kernel: usize,
    padding: usize,
    vb: VarBuilder,
) -> Result<WnConv2d> {
    build(in_c, out_c, kernel, padding, 0.0, vb)
}

impl WnConv2d {
    /// The effective kernel `g * v / ||v||`.
    pub fn weight(&self) -> Result<Tensor> {
        let out_c = self.g.dim(0)?;
        let norm = self.v.sqr()?.sum_keepdim(vec![1, 2, 3])?.sqrt()?;
        self.v
            .broadcast_div(&norm)?
            .broadcast_mul(&self.g.reshape((out_c, 1, 1, 1))?)
    }
    pub fn v(&self) -> &Tensor {
        &self.v
    }
    pub fn g(&self) -> &Tensor {
        &self.g
    }
    pub fn bias(&self) -> &Tensor {
        &self.bias
    }
}

impl Module for WnConv2d {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let out_c = self.g.dim(0)?;
        let w = self.weight()?;
        let y = if self.padding == w.dim(3)? / 2 {
            super::conv::conv2d_same(x, &w)?
        } else {
            x.conv2d(&w, self.padding, 1, 1, 1)?
        };
        // The bias through the per-channel kernel: its gradient is a fast row sum.
        super::channel::affine(&y, &Tensor::ones(out_c, y.dtype(), y.device())?, &self.bias)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exec::test_util::*;
    use candle_core::{DType, Device, Var};
    use candle_nn::VarMap;

    #[test]
    fn wn_weight_norm_equals_g() -> Result<()> {
        let vm = VarMap::new();
        let vb = VarBuilder::from_varmap(&vm, DType::F64, &Device::Cpu);
        let conv = wn_conv2d(2, 3, 3, 1, vb)?;
        randomize(&vm, 0.5)?;
        let w = conv.weight()?;
        let norms: Vec<f64> = w
            .sqr()?
            .sum_keepdim(vec![1, 2, 3])?
            .sqrt()?
            .flatten_all()?
            .to_vec1()?;
        let g: Vec<f64> = conv.g().to_vec1()?;
        for (n, g) in norms.iter().zip(&g) {
            assert!((n - g.abs()).abs() < 1e-12);
        }
        // padding 1 keeps the spatial size, and the conv matches conv2d with the explicit kernel
        let x = randn(&[2, 2, 4, 4], DType::F64)?;
        let y = conv.forward(&x)?;
        let y2 = x
            .conv2d(&w, 1, 1, 1, 1)?
            .broadcast_add(&conv.bias().reshape((1, 3, 1, 1))?)?;
        assert_eq!(y.dims(), &[2, 3, 4, 4]);
        assert!(max_abs_diff(&y, &y2)? < 1e-12);
        Ok(())
    }

    #[test]
    fn zero_conv_is_exactly_zero_but_g_gets_gradient() -> Result<()> {
        let vm = VarMap::new();
        let vb = VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
        let conv = wn_conv2d_zero(2, 3, 3, 1, vb)?;
        let x = randn(&[2, 2, 4, 4], DType::F32)?;
        let y = conv.forward(&x)?;
        assert_eq!(max_abs(&y)?, 0.0);
        let r = randn(&[2, 3, 4, 4], DType::F32)?;
        let grads = (y * r)?.sum_all()?.backward()?;
        let g = Var::from_tensor(conv.g())?;
        let dg = grads.get(g.as_tensor()).expect("g has a gradient");
        assert!(max_abs(dg)? > 0.0);
        Ok(())
    }
}
