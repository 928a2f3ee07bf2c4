//! Binary coupling masks (`b = 1`: kept and fed to the conditioner, `b = 0`: transformed).
//!
//! - `checkerboard(even|odd)`, images `[C, H, W]`: pixels with `h + w` even / odd, every channel.
//! - `channel(even|odd)`, images with even `C`: first / second half of the channels.
//! - `alternate(even|odd)`, vectors `[D]`: even / odd feature index.
//! - `half(even|odd)`, vectors `[D]`: the first `floor(D/2)` / the other features.
//!
//! A mask is built once: a constant tensor of shape `(1, C, H, W)` / `(1, D)` for the reference
//! (unfused) ops and a host copy (`u8`, one per element of an example) for the fused kernels.
//!
//! ```
//! use candle_core::{DType, Device};
//! use flowc::exec::mask::Mask;
//! use flowc::ir::{self, Parity};
//! let m = Mask::new(ir::Mask::Checkerboard(Parity::Even), &[1, 2, 2], DType::F32, &Device::Cpu)?;
//! assert_eq!(m.host(), &[1, 0, 0, 1]);
//! assert_eq!(m.tensor().dims(), &[1, 1, 2, 2]);
//! # Ok::<(), candle_core::Error>(())
//! ```

use candle_core::{bail, DType, Device, Result, Tensor};
use std::sync::Arc;

use crate::ir::{self, MaskKind, Parity};

#[derive(Debug, Clone)]
pub struct Mask {
    pattern: ir::Mask,
    shape: Vec<usize>,
    host: Arc<[u8]>,
    tensor: Tensor,
    complement: Tensor,
}

/// The host mask (one byte per element of an example, row-major over `shape`).
pub fn mask_values(pattern: ir::Mask, shape: &[usize]) -> Result<Vec<u8>> {
    let (kind, odd) = (pattern.kind(), pattern.parity() == Parity::Odd);
    let v: Vec<u8> = match kind {
        MaskKind::Checkerboard | MaskKind::Channel => {
            let &[c, h, w] = shape else {
                bail!("{kind:?} mask needs an image shape [C, H, W], got {shape:?}")
            };
            let mut v = Vec::with_capacity(c * h * w);
            for ch in 0..c {
                for i in 0..h {
                    for j in 0..w {
                        let first = match kind {
                            MaskKind::Checkerboard => (i + j) % 2 == 0,
                            _ => ch < c / 2,
                        };
                        v.push((first != odd) as u8);
                    }
                }
            }
            if kind == MaskKind::Channel && c % 2 != 0 {
                bail!("channel mask needs an even number of channels, got {c}")
            }
            v
        }
        MaskKind::Alternate | MaskKind::Half => {
            let &[d] = shape else {
                bail!("{kind:?} mask needs a vector shape [D], got {shape:?}")
            };
            (0..d)
                .map(|i| {
                    let first = match kind {
                        MaskKind::Alternate => i % 2 == 0,
                        _ => i < d / 2,
                    };
                    (first != odd) as u8
                })
                .collect()
        }
    };
    Ok(v)
}

impl Mask {
    /// Builds the mask for examples of shape `shape` (`[C, H, W]` or `[D]`).
    pub fn new(pattern: ir::Mask, shape: &[usize], dtype: DType, device: &Device) -> Result<Self> {
        let v = mask_values(pattern, shape)?;
        let mut tshape = vec![1];
        tshape.extend_from_slice(shape);
        let f: Vec<f64> = v.iter().map(|&b| b as f64).collect();
        let tensor = Tensor::from_vec(f, tshape, device)?.to_dtype(dtype)?;
        let complement = tensor.affine(-1.0, 1.0)?;
        Ok(Self {
            pattern,
            shape: shape.to_vec(),
            host: v.into(),
            tensor,
            complement,
        })
    }

    /// The pattern and parity, as the language names them.
    pub fn pattern(&self) -> ir::Mask {
        self.pattern
    }
    pub fn kind(&self) -> MaskKind {
        self.pattern.kind()
    }
    pub fn parity(&self) -> Parity {
        self.pattern.parity()
    }
    /// Per-example shape (`[C, H, W]` or `[D]`).
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }
    /// Number of channels (features for vectors).
    pub fn channels(&self) -> usize {
        self.shape[0]
    }
    /// `b` as a constant tensor of shape `(1, ..shape)`.
    pub fn tensor(&self) -> &Tensor {
        &self.tensor
    }
    /// `1 - b` as a constant tensor of shape `(1, ..shape)`.
    pub fn complement(&self) -> &Tensor {
        &self.complement
    }
    /// `b` on the host, one byte per element of an example.
    pub fn host(&self) -> &[u8] {
        &self.host
    }
    pub(crate) fn host_arc(&self) -> Arc<[u8]> {
        self.host.clone()
    }
    /// Number of kept (`b = 1`) elements per example.
    pub fn kept(&self) -> usize {
        self.host.iter().filter(|&&b| b != 0).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mask_patterns() -> Result<()> {
        let e = |k, p, s: &[usize]| mask_values(ir::Mask::new(k, p), s).unwrap();
        assert_eq!(
            e(MaskKind::Checkerboard, Parity::Even, &[1, 2, 3]),
            [1, 0, 1, 0, 1, 0]
        );
        assert_eq!(
            e(MaskKind::Checkerboard, Parity::Odd, &[2, 2, 2]),
            [0, 1, 1, 0, 0, 1, 1, 0]
        );
        assert_eq!(e(MaskKind::Channel, Parity::Even, &[2, 1, 2]), [1, 1, 0, 0]);
        assert_eq!(e(MaskKind::Channel, Parity::Odd, &[2, 1, 2]), [0, 0, 1, 1]);
        assert_eq!(e(MaskKind::Alternate, Parity::Even, &[5]), [1, 0, 1, 0, 1]);
        assert_eq!(e(MaskKind::Alternate, Parity::Odd, &[5]), [0, 1, 0, 1, 0]);
        assert_eq!(e(MaskKind::Half, Parity::Even, &[5]), [1, 1, 0, 0, 0]);
        assert_eq!(e(MaskKind::Half, Parity::Odd, &[5]), [0, 0, 1, 1, 1]);
        assert!(mask_values(ir::Mask::Channel(Parity::Even), &[3, 2, 2]).is_err());
        assert!(mask_values(ir::Mask::Half(Parity::Even), &[3, 2, 2]).is_err());
        assert!(mask_values(ir::Mask::Checkerboard(Parity::Even), &[4]).is_err());
        let m = Mask::new(
            ir::Mask::Checkerboard(Parity::Odd),
            &[2, 2, 2],
            DType::F64,
            &Device::Cpu,
        )?;
        assert_eq!(m.tensor().dims(), &[1, 2, 2, 2]);
        let t: Vec<f64> = m.tensor().flatten_all()?.to_vec1()?;
        let c: Vec<f64> = m.complement().flatten_all()?.to_vec1()?;
        for ((a, b), h) in t.iter().zip(&c).zip(m.host()) {
            assert_eq!(*a, *h as f64);
            assert_eq!(a + b, 1.0);
        }
        assert_eq!(m.kept(), 4);
        Ok(())
    }
}
