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
mod blocked;
mod fused;

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
}

impl Conditioner for Mlp {
    fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        if fused::fits(x) {
            return self.forward_fused(x, train);
        }
        self.forward_layers(x)
    }
}

impl Mlp {
    fn layers(&self) -> impl Iterator<Item = &Linear> {
        self.hidden.iter().chain([&self.out])
    }

    /// The network as one custom op ([`fused`]), its parameters as one vector.
    fn forward_fused(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let mut dims = vec![x.dim(1)?];
        let mut parts = vec![];
        for l in self.layers() {
            dims.push(l.weight().dim(0)?);
            parts.push(l.weight().flatten_all()?);
            parts.push(l.bias().expect("mlp layers have biases").clone());
        }
        let params = Tensor::cat(&parts, 0)?;
        fused::forward(x, &params, fused::Net { dims }, train)
    }

    /// Layer by layer in candle ops (any device).
    fn forward_layers(&self, x: &Tensor) -> Result<Tensor> {
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
    use crate::ir::{params, CouplingKind, NetKind};
    use candle_core::{DType, Device};
    use candle_nn::VarMap;

    #[test]
    fn mlp_shapes_params_and_zero_output() -> Result<()> {
        let vm = VarMap::new();
        let vb = VarBuilder::from_varmap(&vm, DType::F64, &Device::Cpu);
        let net = Mlp::new(5, 10, 7, 3, vb)?;
        let total: usize = vm.all_vars().iter().map(|v| v.elem_count()).sum();
        // 5 features in, 10 out: an affine coupling's net, as LANGUAGE.md counts it.
        let kind = NetKind::Mlp {
            hidden: 7,
            layers: 3,
        };
        assert_eq!(total as u128, params::net(kind, 5, 0, CouplingKind::Affine));
        let x = randn(&[4, 5], DType::F64)?;
        let h = net.forward(&x, true)?;
        assert_eq!(h.dims(), &[4, 10]);
        assert_eq!(max_abs(&h)?, 0.0);
        randomize(&vm, 0.5)?;
        assert!(max_abs(&net.forward(&x, true)?)? > 0.0);
        Ok(())
    }

    /// The fused op against the layered candle ops: values, the input's and
    /// every parameter's gradient, in f64 (same arithmetic, 1e-10) and in
    /// f32 (against f64), on awkward sizes (one row, widths off the vector
    /// width, more rows than threads by one).
    /// Output, input gradient, named parameter gradients.
    type Outcome = (Tensor, Tensor, Vec<(String, Tensor)>);

    #[test]
    fn fused_matches_layered() -> Result<()> {
        use candle_core::Var;
        for (n, d, out, hidden, layers) in [
            (1usize, 1usize, 2usize, 3usize, 1usize),
            (7, 3, 6, 17, 3),
            (513, 2, 4, 64, 2),
            (97, 5, 10, 33, 2),
        ] {
            // The parameters every run copies: made once, randomized.
            let vm64 = VarMap::new();
            Mlp::new(
                d,
                out,
                hidden,
                layers,
                VarBuilder::from_varmap(&vm64, DType::F64, &Device::Cpu),
            )?;
            randomize(&vm64, 0.5)?;
            let x = randn(&[n, d], DType::F64)?;
            let probe = randn(&[n, out], DType::F64)?;
            let run = |dtype: DType, fused: bool| -> Result<Outcome> {
                let vm = VarMap::new();
                let net = Mlp::new(
                    d,
                    out,
                    hidden,
                    layers,
                    VarBuilder::from_varmap(&vm, dtype, &Device::Cpu),
                )?;
                for (k, v) in vm64.data().lock().unwrap().iter() {
                    vm.data().lock().unwrap()[k].set(&v.as_tensor().to_dtype(dtype)?)?;
                }
                let xv = Var::from_tensor(&x.to_dtype(dtype)?)?;
                let y = if fused {
                    // f64 keeps no hidden outputs: its backward runs the
                    // forward again; f32 keeps them (blocked on AVX-512).
                    net.forward_fused(xv.as_tensor(), dtype == DType::F32)?
                } else {
                    net.forward_layers(xv.as_tensor())?
                };
                let g = (&y * probe.to_dtype(dtype)?)?.sum_all()?.backward()?;
                let mut named: Vec<(String, Tensor)> = vm
                    .data()
                    .lock()
                    .unwrap()
                    .iter()
                    .map(|(k, v)| (k.clone(), g.get(v.as_tensor()).unwrap().clone()))
                    .collect();
                named.sort_by(|a, b| a.0.cmp(&b.0));
                Ok((y, g.get(xv.as_tensor()).unwrap().clone(), named))
            };
            let reference = run(DType::F64, false)?;
            for (dtype, tol) in [(DType::F64, 1e-10), (DType::F32, 1e-4)] {
                let ours = run(dtype, true)?;
                let case = (n, d, out, hidden, layers, dtype);
                assert!(max_abs_diff(&ours.0, &reference.0)? < tol, "y {case:?}");
                assert!(max_abs_diff(&ours.1, &reference.1)? < tol, "dx {case:?}");
                for ((name, a), (_, b)) in ours.2.iter().zip(&reference.2) {
                    let scale = max_abs(b)?.max(1.0);
                    assert!(max_abs_diff(a, b)? < tol * scale, "d{name} {case:?}");
                }
            }
        }
        Ok(())
    }
}
