//! MLP conditioner for vector couplings:
//! `Linear(D -> H), relu, (L-1) x [Linear(H -> H), relu], Linear(H -> out)`, the last layer
//! zero-initialized (weight and bias 0) so a fresh network outputs exactly zero. Plain
//! `candle_nn::Linear` layers (hidden ones with candle-nn's default init). Parameter names:
//! `fc{i}.{weight,bias}` and `out.{weight,bias}`. `train` has no effect (no batch norm).
//!
//! ```
//! use candle_core::{DType, Device, Tensor};
//! use candle_nn::{VarBuilder, VarMap};
//! use flowc::exec::{mlp::Mlp, Conditioner};
//! let vm = VarMap::new();
//! let vb = VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
//! let net = Mlp::new(5, 10, 32, 2, vb.pp("net"))?;
//! let h = net.forward(&Tensor::ones((4, 5), DType::F32, &Device::Cpu)?, true)?;
//! assert_eq!(h.dims(), &[4, 10]);
//! # Ok::<(), candle_core::Error>(())
//! ```

use super::Conditioner;
use candle_core::{bail, Module, Result, Tensor};
use candle_nn::{linear, Init, Linear, VarBuilder};

#[derive(Debug, Clone)]
pub struct Mlp {
    hidden: Vec<Linear>,
    out: Linear,
}

impl Mlp {
    /// `in_dim` (D) -> `out_dim` (k*D) with `layers` (L >= 1) hidden layers of width `hidden`.
    pub fn new(
        in_dim: usize,
        out_dim: usize,
        hidden: usize,
        layers: usize,
        vb: VarBuilder,
    ) -> Result<Self> {
        if layers == 0 {
            bail!("mlp needs at least one hidden layer")
        }
        let hidden_layers = (0..layers)
            .map(|i| {
                let i_dim = if i == 0 { in_dim } else { hidden };
                linear(i_dim, hidden, vb.pp(format!("fc{i}")))
            })
            .collect::<Result<_>>()?;
        let vbo = vb.pp("out");
        let w = vbo.get_with_hints((out_dim, hidden), "weight", Init::Const(0.0))?;
        let b = vbo.get_with_hints(out_dim, "bias", Init::Const(0.0))?;
        Ok(Self {
            hidden: hidden_layers,
            out: Linear::new(w, Some(b)),
        })
    }

    /// Number of scalar parameters.
    pub fn param_count(in_dim: usize, out_dim: usize, hidden: usize, layers: usize) -> usize {
        (in_dim + 1) * hidden + (layers - 1) * (hidden + 1) * hidden + (hidden + 1) * out_dim
    }
}

impl Conditioner for Mlp {
    fn forward(&self, x: &Tensor, _train: bool) -> Result<Tensor> {
        let mut h = x.clone();
        for l in &self.hidden {
            h = l.forward(&h)?.relu()?;
        }
        self.out.forward(&h)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exec::test_util::*;
    use candle_core::{DType, Device};
    use candle_nn::VarMap;

    #[test]
    fn mlp_shapes_params_and_zero_output() -> Result<()> {
        let vm = VarMap::new();
        let vb = VarBuilder::from_varmap(&vm, DType::F64, &Device::Cpu);
        let net = Mlp::new(5, 10, 7, 3, vb)?;
        let total: usize = vm.all_vars().iter().map(|v| v.elem_count()).sum();
        assert_eq!(total, Mlp::param_count(5, 10, 7, 3));
        let x = randn(&[4, 5], DType::F64)?;
        let h = net.forward(&x, true)?;
        assert_eq!(h.dims(), &[4, 10]);
        assert_eq!(max_abs(&h)?, 0.0);
        randomize(&vm, 0.5)?;
        assert!(max_abs(&net.forward(&x, true)?)? > 0.0);
        Ok(())
    }
}
