//! Invertible 1x1 convolution (Glow), LU-parametrized: `W = P L (U + diag(sign * exp(log_s)))`
//! with `L` unit lower triangular (learned strict part `lower`), `U` strictly upper (learned
//! `upper`), learned `log_s`, and fixed `P` (permutation) and `sign`. `y[:, :, h, w] = W x[:, :, h, w]`
//! (vectors: `y = W x` per example); log-det `positions * sum(log_s)`.
//!
//! [`InvConv::new`] initializes to the identity (`P = I`, `L = U = 0`, `log_s = 0`, `sign = +1`);
//! [`InvConv::with_fixed`] takes another `P` / `sign`. `P` and `sign` are constants, not
//! parameters. Only the strict lower / upper parts of `lower` / `upper` are used (the rest is
//! masked out and gets zero gradient). The inverse computes `W^-1` on the host in f64 by an
//! LU solve ([`crate::exec::linalg`]); no gradient flows through the inverse.
//!
//! ```
//! use candle_core::{DType, Device, Tensor};
//! use candle_nn::{VarBuilder, VarMap};
//! use flowc::exec::{invconv::InvConv, FlowLayer};
//! let vm = VarMap::new();
//! let vb = VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
//! let conv = InvConv::new(4, vb.pp("inv"))?;
//! let x = Tensor::randn(0f32, 1., (2, 4, 3, 3), &Device::Cpu)?;
//! let (y, logdet) = conv.forward(&x, None, true)?;
//! let x2 = conv.inverse(&y, None)?;
//! # Ok::<(), candle_core::Error>(())
//! ```

use super::{linalg, positions, FlowLayer, Given};
use candle_core::{bail, DType, Result, Tensor};
use candle_nn::{Init, VarBuilder};

#[derive(Debug, Clone)]
pub struct InvConv {
    channels: usize,
    lower: Tensor,
    upper: Tensor,
    log_s: Tensor,
    p: Tensor,
    sign: Tensor,
    l_mask: Tensor,
    u_mask: Tensor,
    eye: Tensor,
}

impl InvConv {
    /// Identity-initialized invertible 1x1 convolution over `channels`.
    pub fn new(channels: usize, vb: VarBuilder) -> Result<Self> {
        let perm: Vec<usize> = (0..channels).collect();
        Self::with_fixed(channels, &perm, &vec![1.0; channels], vb)
    }

    /// With a fixed permutation (`P[i, perm[i]] = 1`) and signs (each +1 or -1).
    pub fn with_fixed(
        channels: usize,
        perm: &[usize],
        sign: &[f64],
        vb: VarBuilder,
    ) -> Result<Self> {
        let c = channels;
        let (dtype, dev) = (vb.dtype(), vb.device().clone());
        if perm.len() != c || sign.len() != c {
            bail!("invconv: perm and sign need {c} entries")
        }
        let mut pm = vec![0f64; c * c];
        let mut seen = vec![false; c];
        for (i, &j) in perm.iter().enumerate() {
            if j >= c || seen[j] {
                bail!("invconv: not a permutation: {perm:?}")
            }
            seen[j] = true;
            pm[i * c + j] = 1.0;
        }
        let f = |v: Vec<f64>, s: (usize, usize)| Tensor::from_vec(v, s, &dev)?.to_dtype(dtype);
        Ok(Self {
            channels: c,
            lower: vb.get_with_hints((c, c), "lower", Init::Const(0.0))?,
            upper: vb.get_with_hints((c, c), "upper", Init::Const(0.0))?,
            log_s: vb.get_with_hints(c, "log_s", Init::Const(0.0))?,
            p: f(pm, (c, c))?,
            sign: f(sign.to_vec(), (1, c))?,
            l_mask: Tensor::tril2(c, dtype, &dev)?.sub(&Tensor::eye(c, dtype, &dev)?)?,
            u_mask: Tensor::triu2(c, dtype, &dev)?.sub(&Tensor::eye(c, dtype, &dev)?)?,
            eye: Tensor::eye(c, dtype, &dev)?,
        })
    }

    /// `W = P L (U + diag(sign * exp(log_s)))`, `[C, C]`.
    pub fn weight(&self) -> Result<Tensor> {
        let l = ((&self.lower * &self.l_mask)? + &self.eye)?;
        let diag = self.eye.broadcast_mul(
            &self
                .sign
                .broadcast_mul(&self.log_s.exp()?.reshape((1, self.channels))?)?,
        )?;
        let u = ((&self.upper * &self.u_mask)? + diag)?;
        self.p.matmul(&l)?.matmul(&u)
    }

    /// `W^-1` computed on the host in f64 (detached).
    pub fn inverse_weight(&self) -> Result<Tensor> {
        let w = self.weight()?.detach();
        let wv: Vec<f64> = w.to_dtype(DType::F64)?.flatten_all()?.to_vec1()?;
        let inv = linalg::inverse(&wv, self.channels)?;
        Tensor::from_vec(inv, (self.channels, self.channels), w.device())?.to_dtype(w.dtype())
    }

    fn apply(&self, w: &Tensor, x: &Tensor) -> Result<Tensor> {
        let w = w.to_dtype(x.dtype())?;
        if x.rank() == 2 {
            x.matmul(&w.t()?)
        } else {
            let (n, c) = (x.dim(0)?, x.dim(1)?);
            let s = positions(x);
            w.broadcast_matmul(&x.reshape((n, c, s))?)?
                .reshape(x.shape())
        }
    }
}

impl FlowLayer for InvConv {
    fn forward(&self, x: &Tensor, _given: Given, _train: bool) -> Result<(Tensor, Tensor)> {
        let y = self.apply(&self.weight()?, x)?;
        let logdet = (self.log_s.sum_all()? * positions(x) as f64)?;
        Ok((y, logdet.broadcast_as(x.dim(0)?)?))
    }

    fn inverse(&self, y: &Tensor, _given: Given) -> Result<Tensor> {
        self.apply(&self.inverse_weight()?, y)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exec::test_util::*;
    use candle_core::Device;
    use candle_nn::VarMap;

    #[test]
    fn fresh_invconv_is_identity() -> Result<()> {
        let vm = VarMap::new();
        let conv = InvConv::new(3, VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu))?;
        let x = randn(&[2, 3, 2, 2], DType::F32)?;
        let (y, ld) = conv.forward(&x, None, true)?;
        assert_eq!(max_abs_diff(&y, &x)?, 0.0);
        assert_eq!(max_abs(&ld)?, 0.0);
        Ok(())
    }

    #[test]
    fn invconv_roundtrip_logdet_inverse_weight() -> Result<()> {
        for shape in [&[2, 4, 3, 3][..], &[3, 5]] {
            let c = shape[1];
            let vm = VarMap::new();
            let conv = InvConv::new(c, VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu))?;
            randomize(&vm, 0.3)?;
            check_roundtrip(&conv, &randn(shape, DType::F32)?, 1e-4)?;

            let vm = VarMap::new();
            let mut perm: Vec<usize> = (0..c).collect();
            perm.rotate_left(1);
            let sign: Vec<f64> = (0..c)
                .map(|i| if i % 2 == 0 { 1.0 } else { -1.0 })
                .collect();
            let vb = VarBuilder::from_varmap(&vm, DType::F64, &Device::Cpu);
            let conv = InvConv::with_fixed(c, &perm, &sign, vb)?;
            randomize(&vm, 0.3)?;
            check_logdet(&conv, &randn(shape, DType::F64)?, false)?;
            let prod = conv.weight()?.matmul(&conv.inverse_weight()?)?;
            assert!(max_abs_diff(&prod, &Tensor::eye(c, DType::F64, &Device::Cpu)?)? < 1e-12);
        }
        Ok(())
    }
}
