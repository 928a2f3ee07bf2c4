//! Squeeze (`C x H x W -> 4C x H/2 x W/2`, `out[n, 4c + 2dh + dw, i, j] = in[n, c, 2i+dh, 2j+dw]`),
//! its inverse, and the multi-scale split (`factor_out`: the first `floor(C/2)` channels leave
//! as a latent, the rest go on; `factor_in` concatenates them back).
//!
//! ```
//! use candle_core::{Device, Tensor};
//! use flowc::exec::squeeze::{factor_in, factor_out, squeeze, unsqueeze};
//! let x = Tensor::arange(0f32, 32., &Device::Cpu)?.reshape((1, 2, 4, 4))?;
//! let y = squeeze(&x)?;
//! assert_eq!(y.dims(), &[1, 8, 2, 2]);
//! let (z, rest) = factor_out(&y)?;
//! assert_eq!((z.dim(1)?, rest.dim(1)?), (4, 4));
//! let x2 = unsqueeze(&factor_in(&z, &rest)?)?;
//! # Ok::<(), candle_core::Error>(())
//! ```

use super::{zero_logdet, FlowLayer, Given};
use candle_core::{bail, Result, Tensor};

/// `[N, C, H, W] -> [N, 4C, H/2, W/2]` (H and W even).
pub fn squeeze(x: &Tensor) -> Result<Tensor> {
    let (n, c, h, w) = x.dims4()?;
    if h % 2 != 0 || w % 2 != 0 {
        bail!("squeeze needs even H and W, got {:?}", x.dims())
    }
    x.reshape((n, c, h / 2, 2, w / 2, 2))?
        .permute((0, 1, 3, 5, 2, 4))?
        .reshape((n, 4 * c, h / 2, w / 2))
}

/// `[N, 4C, H, W] -> [N, C, 2H, 2W]`, the inverse of [`squeeze`].
pub fn unsqueeze(y: &Tensor) -> Result<Tensor> {
    let (n, c4, h, w) = y.dims4()?;
    if c4 % 4 != 0 {
        bail!(
            "unsqueeze needs channels divisible by 4, got {:?}",
            y.dims()
        )
    }
    let c = c4 / 4;
    y.reshape((n, c, 2, 2, h, w))?
        .permute((0, 1, 4, 2, 5, 3))?
        .reshape((n, c, 2 * h, 2 * w))
}

/// Splits channels: `(latent = first floor(C/2), rest)`.
pub fn factor_out(x: &Tensor) -> Result<(Tensor, Tensor)> {
    let c = x.dim(1)?;
    let k = c / 2;
    Ok((x.narrow(1, 0, k)?, x.narrow(1, k, c - k)?))
}

/// Inverse of [`factor_out`].
pub fn factor_in(latent: &Tensor, rest: &Tensor) -> Result<Tensor> {
    Tensor::cat(&[latent, rest], 1)
}

/// [`squeeze`] as a flow layer (log-det 0).
#[derive(Debug, Clone, Copy, Default)]
pub struct Squeeze;

impl FlowLayer for Squeeze {
    fn forward(&self, x: &Tensor, _given: Given, _train: bool) -> Result<(Tensor, Tensor)> {
        Ok((squeeze(x)?, zero_logdet(x)?))
    }
    fn inverse(&self, y: &Tensor, _given: Given) -> Result<Tensor> {
        unsqueeze(y)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exec::test_util::*;
    use candle_core::{DType, Device};
    use proptest::prelude::*;

    #[test]
    fn squeeze_index_formula() -> Result<()> {
        let (n, c, h, w) = (2, 3, 4, 6);
        let x =
            Tensor::arange(0f32, (n * c * h * w) as f32, &Device::Cpu)?.reshape((n, c, h, w))?;
        let y = squeeze(&x)?;
        assert_eq!(y.dims(), &[n, 4 * c, h / 2, w / 2]);
        let xv: Vec<f32> = x.flatten_all()?.to_vec1()?;
        let yv: Vec<f32> = y.flatten_all()?.to_vec1()?;
        for b in 0..n {
            for ch in 0..c {
                for dh in 0..2 {
                    for dw in 0..2 {
                        for i in 0..h / 2 {
                            for j in 0..w / 2 {
                                let o = ((b * 4 * c + 4 * ch + 2 * dh + dw) * (h / 2) + i)
                                    * (w / 2)
                                    + j;
                                let s = ((b * c + ch) * h + 2 * i + dh) * w + 2 * j + dw;
                                assert_eq!(yv[o], xv[s]);
                            }
                        }
                    }
                }
            }
        }
        assert!(squeeze(&Tensor::zeros((1, 1, 3, 2), DType::F32, &Device::Cpu)?).is_err());
        Ok(())
    }

    #[test]
    fn squeeze_layer_roundtrip_and_logdet() -> Result<()> {
        check_roundtrip(&Squeeze, &randn(&[2, 3, 4, 4], DType::F32)?, 0.0)?;
        check_logdet(&Squeeze, &randn(&[2, 2, 4, 4], DType::F64)?, false)?;
        Ok(())
    }

    #[test]
    fn factor_out_splits_floor_half() -> Result<()> {
        let x = randn(&[2, 5, 2, 2], DType::F32)?;
        let (z, r) = factor_out(&x)?;
        assert_eq!((z.dim(1)?, r.dim(1)?), (2, 3));
        assert_eq!(max_abs_diff(&z, &x.narrow(1, 0, 2)?)?, 0.0);
        assert_eq!(max_abs_diff(&factor_in(&z, &r)?, &x)?, 0.0);
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        #[test]
        fn squeeze_unsqueeze_roundtrip(n in 1usize..3, c in 1usize..4, h in 1usize..4, w in 1usize..4) {
            let x = randn(&[n, c, 2 * h, 2 * w], DType::F64).unwrap();
            let y = squeeze(&x).unwrap();
            prop_assert_eq!(y.dims(), &[n, 4 * c, h, w]);
            prop_assert_eq!(max_abs_diff(&unsqueeze(&y).unwrap(), &x).unwrap(), 0.0);
        }
    }
}
