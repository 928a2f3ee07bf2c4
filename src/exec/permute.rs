//! Channel (feature) permutations: [`Permute::reverse`] reverses the order, [`Permute::new`]
//! takes any permutation (`y[:, i] = x[:, perm[i]]`), via `index_select` on dim 1. Log-det 0.
//!
//! ```
//! use candle_core::{Device, Tensor};
//! use flowc::exec::{permute::Permute, FlowLayer};
//! let rev = Permute::reverse(3, &Device::Cpu)?;
//! let x = Tensor::new(&[[1f32, 2., 3.]], &Device::Cpu)?;
//! let (y, _) = rev.forward(&x, None, false)?;
//! assert_eq!(y.to_vec2::<f32>()?, [[3., 2., 1.]]);
//! # Ok::<(), candle_core::Error>(())
//! ```

use super::{zero_logdet, FlowLayer, Given};
use candle_core::{bail, Device, Result, Tensor};

#[derive(Debug, Clone)]
pub struct Permute {
    perm: Vec<usize>,
    fwd: Tensor,
    inv: Tensor,
}

impl Permute {
    /// `y[:, i] = x[:, perm[i]]`.
    pub fn new(perm: Vec<usize>, device: &Device) -> Result<Self> {
        let c = perm.len();
        let mut inv = vec![usize::MAX; c];
        for (i, &p) in perm.iter().enumerate() {
            if p >= c || inv[p] != usize::MAX {
                bail!("not a permutation: {perm:?}")
            }
            inv[p] = i;
        }
        let idx =
            |v: &[usize]| Tensor::new(v.iter().map(|&i| i as u32).collect::<Vec<_>>(), device);
        Ok(Self {
            fwd: idx(&perm)?,
            inv: idx(&inv)?,
            perm,
        })
    }
    /// Reverses the channel order.
    pub fn reverse(channels: usize, device: &Device) -> Result<Self> {
        Self::new((0..channels).rev().collect(), device)
    }
    pub fn perm(&self) -> &[usize] {
        &self.perm
    }
}

impl FlowLayer for Permute {
    fn forward(&self, x: &Tensor, _given: Given, _train: bool) -> Result<(Tensor, Tensor)> {
        Ok((x.contiguous()?.index_select(&self.fwd, 1)?, zero_logdet(x)?))
    }
    fn inverse(&self, y: &Tensor, _given: Given) -> Result<Tensor> {
        y.contiguous()?.index_select(&self.inv, 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exec::test_util::*;
    use candle_core::DType;

    #[test]
    fn permute_roundtrip_logdet() -> Result<()> {
        let dev = Device::Cpu;
        let p = Permute::new(vec![2, 0, 3, 1], &dev)?;
        let x = randn(&[2, 4, 3, 3], DType::F32)?;
        let (y, _) = p.forward(&x, None, false)?;
        assert_eq!(max_abs_diff(&y.narrow(1, 0, 1)?, &x.narrow(1, 2, 1)?)?, 0.0);
        check_roundtrip(&p, &x, 0.0)?;
        check_roundtrip(
            &Permute::reverse(5, &dev)?,
            &randn(&[3, 5], DType::F32)?,
            0.0,
        )?;
        check_logdet(
            &Permute::reverse(2, &dev)?,
            &randn(&[2, 2, 4, 4], DType::F64)?,
            false,
        )?;
        check_logdet(&p, &randn(&[1, 4, 2, 2], DType::F64)?, false)?;
        assert!(Permute::new(vec![0, 0], &dev).is_err());
        Ok(())
    }
}
