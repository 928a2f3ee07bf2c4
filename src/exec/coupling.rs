//! Affine and additive coupling layers (Real NVP / NICE) with a masked conditioner.
//!
//! ```text
//! affine:   (s_raw, t) = net(b*x)   s = scale * tanh(s_raw)   (scale: per channel, init 1)
//!           y = b*x + (1-b)*(x*exp(s) + t)       logdet = sum((1-b)*s)
//!           x = b*y + (1-b)*((y - t)*exp(-s))    with (s, t) from net(b*y)
//! additive: the same with s = 0 (net emits t only, no scale parameter), logdet = 0
//! spline:   y = b*x + (1-b)*spline(x; net(b*x))  logdet = sum((1-b)*log spline'(x))
//! ```
//! The net output has `2C` channels for affine (first `C` are `s_raw`, next `C` are `t`) and
//! `C` for additive, `(3n - 1)C` for a spline of `n` bins (parameter `j` of channel `c` at
//! `jC + c`; [`super::spline`]). The affine and additive coupling step runs either the fused custom op
//! ([`CouplingImpl::Fused`], [`crate::exec::fused`], CPU) or the reference chain of candle ops
//! ([`CouplingImpl::Reference`], any device); both give the same values and gradients.
//! A layer configured as fused runs the reference chain on non-CPU devices. A spline has one
//! implementation, candle ops on any device, whatever the configuration says.
//! Parameters: `scale` (affine only) and the conditioner's under `net`.
//! `inverse` runs the conditioner in evaluation mode (running batch-norm statistics).
//!
//! ```
//! use candle_core::{DType, Device, Tensor};
//! use candle_nn::{VarBuilder, VarMap};
//! use flowc::exec::coupling::{Coupling, CouplingConfig, CouplingImpl};
//! use flowc::ir::{CouplingKind, Mask, NetKind, Parity};
//! use flowc::exec::FlowLayer;
//! let vm = VarMap::new();
//! let vb = VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
//! let cfg = CouplingConfig {
//!     kind: CouplingKind::Affine,
//!     mask: Mask::Half(Parity::Odd),
//!     net: NetKind::Mlp { hidden: 16, layers: 2 },
//!     imp: CouplingImpl::Fused,
//! };
//! let layer = Coupling::new(&[5], &cfg, 0, vb.pp("c1"))?;
//! let x = Tensor::randn(0f32, 1., (8, 5), &Device::Cpu)?;
//! let (y, logdet) = layer.forward(&x, None, true)?;
//! assert_eq!(y.to_vec2::<f32>()?, x.to_vec2::<f32>()?); // fresh coupling = identity
//! # Ok::<(), candle_core::Error>(())
//! ```

use super::mask::Mask;
use super::mlp::Mlp;
use super::resnet::ResNet;
use super::spline::Spline;
use super::{channel_shape, fused, with_labels, Conditioner, FlowLayer, Given};
use candle_core::{bail, Result, Tensor};
use candle_nn::{Init, VarBuilder};

use crate::ir::{self, CouplingKind, NetKind, Parity};

/// Which implementation of the coupling step to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CouplingImpl {
    /// The fused custom op (CPU only).
    Fused,
    /// The unfused chain of candle ops (reference; any device).
    Reference,
}

#[derive(Debug, Clone, PartialEq)]
pub struct CouplingConfig {
    pub kind: CouplingKind,
    pub mask: ir::Mask,
    /// The conditioner template, instantiated with fresh weights.
    pub net: NetKind,
    pub imp: CouplingImpl,
}

impl Default for CouplingConfig {
    /// Affine, checkerboard(even), resnet(blocks=1, features=8), fused.
    fn default() -> Self {
        Self {
            kind: CouplingKind::Affine,
            mask: ir::Mask::Checkerboard(Parity::Even),
            net: NetKind::Resnet {
                blocks: 1,
                features: 8,
            },
            imp: CouplingImpl::Fused,
        }
    }
}

pub struct Coupling {
    kind: CouplingKind,
    imp: CouplingImpl,
    mask: Mask,
    net: Box<dyn Conditioner + Send + Sync>,
    scale: Option<Tensor>,
}

impl Coupling {
    /// A coupling for examples of shape `shape` (`[C, H, W]` or `[D]`, no
    /// batch dim), its net also taking `labels` one-hot label channels (0
    /// without a condition).
    pub fn new(
        shape: &[usize],
        cfg: &CouplingConfig,
        labels: usize,
        vb: VarBuilder,
    ) -> Result<Self> {
        let mask = Mask::new(cfg.mask, shape, vb.dtype(), vb.device())?;
        let c = shape[0];
        let out = cfg.kind.outputs_per_channel() as usize * c;
        let cin = c + labels;
        let net: Box<dyn Conditioner + Send + Sync> = match (&cfg.net, shape.len()) {
            (&NetKind::Resnet { blocks, features }, 3) => {
                let (blocks, features) = (blocks as usize, features as usize);
                Box::new(ResNet::new(cin, out, blocks, features, vb.pp("net"))?)
            }
            (&NetKind::Mlp { hidden, layers }, 1) => {
                let (hidden, layers) = (hidden as usize, layers as usize);
                Box::new(Mlp::new(cin, out, hidden, layers, vb.pp("net"))?)
            }
            (net, _) => bail!("conditioner {net:?} does not fit examples of shape {shape:?}"),
        };
        let scale = match cfg.kind.has_scale() {
            true => Some(vb.get_with_hints(c, "scale", Init::Const(1.0))?),
            false => None,
        };
        Ok(Self {
            kind: cfg.kind,
            imp: cfg.imp,
            mask,
            net,
            scale,
        })
    }

    pub fn kind(&self) -> CouplingKind {
        self.kind
    }
    pub fn imp(&self) -> CouplingImpl {
        self.imp
    }
    pub fn set_impl(&mut self, imp: CouplingImpl) {
        self.imp = imp;
    }
    pub fn mask(&self) -> &Mask {
        &self.mask
    }
    /// The per-channel scale of an affine coupling.
    pub fn scale(&self) -> Option<&Tensor> {
        self.scale.as_ref()
    }
    /// The conditioner output `net(b*x)` (with the labels, under a condition).
    pub fn net_output(&self, x: &Tensor, given: Given, train: bool) -> Result<Tensor> {
        let b = self.mask.tensor().to_dtype(x.dtype())?;
        self.net
            .forward(&with_labels(&x.broadcast_mul(&b)?, given)?, train)
    }
}

impl Coupling {
    /// The implementation actually run for `x`: the fused op exists on the CPU (and on CUDA
    /// with the `cuda` feature, see [`fused::supports_device`]), so [`CouplingImpl::Fused`]
    /// falls back to the reference chain on other devices.
    pub fn effective_impl(&self, x: &Tensor) -> CouplingImpl {
        match self.imp {
            CouplingImpl::Fused if fused::supports_device(x.device()) => CouplingImpl::Fused,
            _ => CouplingImpl::Reference,
        }
    }
}

impl FlowLayer for Coupling {
    fn buffers(&self, prefix: &str, out: &mut Vec<(String, candle_core::Var)>) {
        self.net.buffers(&format!("{prefix}net."), out);
    }
    fn forward(&self, x: &Tensor, given: Given, train: bool) -> Result<(Tensor, Tensor)> {
        let h = self.net_output(x, given, train)?;
        let imp = self.effective_impl(x);
        step(self.kind, imp, x, &h, self.scale.as_ref(), &self.mask)
    }

    fn inverse(&self, y: &Tensor, given: Given) -> Result<Tensor> {
        let h = self.net_output(y, given, false)?;
        let imp = self.effective_impl(y);
        step_inverse(self.kind, imp, y, &h, self.scale.as_ref(), &self.mask)
    }
}

/// One coupling step given the net output `h`: `(y, logdet)`.
pub fn step(
    kind: CouplingKind,
    imp: CouplingImpl,
    x: &Tensor,
    h: &Tensor,
    scale: Option<&Tensor>,
    mask: &Mask,
) -> Result<(Tensor, Tensor)> {
    match (kind, imp, scale) {
        (CouplingKind::Affine, CouplingImpl::Fused, Some(s)) => {
            fused::affine_coupling(x, h, s, mask)
        }
        (CouplingKind::Affine, CouplingImpl::Reference, Some(s)) => affine_reference(x, h, s, mask),
        (CouplingKind::Affine, _, None) => bail!("affine coupling needs a scale"),
        (CouplingKind::Additive, CouplingImpl::Fused, _) => fused::additive_coupling(x, h, mask),
        (CouplingKind::Additive, CouplingImpl::Reference, _) => additive_reference(x, h, mask),
        (CouplingKind::Spline { bins, bound }, _, _) => {
            spline_coupling(x, h, spline(bins, bound), mask)
        }
    }
}

/// The inverse coupling step given the net output `h` (computed from `b*y`).
pub fn step_inverse(
    kind: CouplingKind,
    imp: CouplingImpl,
    y: &Tensor,
    h: &Tensor,
    scale: Option<&Tensor>,
    mask: &Mask,
) -> Result<Tensor> {
    match (kind, imp, scale) {
        (CouplingKind::Affine, CouplingImpl::Fused, Some(s)) => {
            fused::affine_coupling_inverse(y, h, s, mask)
        }
        (CouplingKind::Affine, CouplingImpl::Reference, Some(s)) => {
            affine_reference_inverse(y, h, s, mask)
        }
        (CouplingKind::Affine, _, None) => bail!("affine coupling needs a scale"),
        (CouplingKind::Additive, CouplingImpl::Fused, _) => {
            fused::additive_coupling_inverse(y, h, mask)
        }
        (CouplingKind::Additive, CouplingImpl::Reference, _) => {
            additive_reference_inverse(y, h, mask)
        }
        (CouplingKind::Spline { bins, bound }, _, _) => {
            spline_coupling_inverse(y, h, spline(bins, bound), mask)
        }
    }
}

/// `b`, `1 - b` in `x`'s dtype.
fn mask_pair(mask: &Mask, x: &Tensor) -> Result<(Tensor, Tensor)> {
    Ok((
        mask.tensor().to_dtype(x.dtype())?,
        mask.complement().to_dtype(x.dtype())?,
    ))
}

/// `(s, t)` with `s = scale * tanh(s_raw)` from the packed net output `h`.
fn s_t(x: &Tensor, h: &Tensor, scale: &Tensor) -> Result<(Tensor, Tensor)> {
    let c = x.dim(1)?;
    let s_raw = h.narrow(1, 0, c)?;
    let t = h.narrow(1, c, c)?;
    let s = s_raw
        .tanh()?
        .broadcast_mul(&scale.reshape(channel_shape(x.rank(), c))?)?;
    Ok((s, t))
}

/// Reference affine coupling forward (unfused candle ops).
pub fn affine_reference(
    x: &Tensor,
    h: &Tensor,
    scale: &Tensor,
    mask: &Mask,
) -> Result<(Tensor, Tensor)> {
    let (b, nb) = mask_pair(mask, x)?;
    let (s, t) = s_t(x, h, scale)?;
    let y = (x.broadcast_mul(&b)? + ((x * s.exp()?)? + t)?.broadcast_mul(&nb)?)?;
    let logdet = s.broadcast_mul(&nb)?.flatten_from(1)?.sum(1)?;
    Ok((y, logdet))
}

/// Reference affine coupling inverse.
pub fn affine_reference_inverse(
    y: &Tensor,
    h: &Tensor,
    scale: &Tensor,
    mask: &Mask,
) -> Result<Tensor> {
    let (b, nb) = mask_pair(mask, y)?;
    let (s, t) = s_t(y, h, scale)?;
    y.broadcast_mul(&b)? + ((y - t)? * s.neg()?.exp()?)?.broadcast_mul(&nb)?
}

/// Reference additive coupling forward: `y = b*x + (1-b)*(x + t)`, logdet 0.
pub fn additive_reference(x: &Tensor, t: &Tensor, mask: &Mask) -> Result<(Tensor, Tensor)> {
    let (b, nb) = mask_pair(mask, x)?;
    let y = (x.broadcast_mul(&b)? + (x + t)?.broadcast_mul(&nb)?)?;
    Ok((y, super::zero_logdet(x)?))
}

/// Reference additive coupling inverse: `x = b*y + (1-b)*(y - t)`.
pub fn additive_reference_inverse(y: &Tensor, t: &Tensor, mask: &Mask) -> Result<Tensor> {
    let (b, nb) = mask_pair(mask, y)?;
    y.broadcast_mul(&b)? + (y - t)?.broadcast_mul(&nb)?
}

fn spline(bins: u64, bound: f64) -> Spline {
    Spline {
        bins: bins as usize,
        bound,
    }
}

/// Spline coupling forward: `y = b*x + (1-b)*spline(x)`, logdet `sum((1-b)*log spline'(x))`.
/// The spline runs on the transformed values only, gathered per example
/// (`index_select`, differentiable), and its results are added back in place.
pub fn spline_coupling(
    x: &Tensor,
    h: &Tensor,
    spline: Spline,
    mask: &Mask,
) -> Result<(Tensor, Tensor)> {
    let (kept, free, idx) = spline_parts(mask, x)?;
    let (z, log) = spline.forward(&free, &spline_params(h, &idx, spline)?)?;
    let y = kept.index_add(&idx, &z, 1)?.reshape(x.shape())?;
    Ok((y, log.sum(1)?))
}

/// Spline coupling inverse: `x = b*y + (1-b)*spline^-1(y)`.
pub fn spline_coupling_inverse(
    y: &Tensor,
    h: &Tensor,
    spline: Spline,
    mask: &Mask,
) -> Result<Tensor> {
    let (kept, free, idx) = spline_parts(mask, y)?;
    let x = spline.inverse(&free, &spline_params(h, &idx, spline)?)?;
    kept.index_add(&idx, &x, 1)?.reshape(y.shape())
}

/// `b*x` and the transformed values of `x`, both flattened per example, and
/// the transformed values' indices (`(N, C...)` -> `(N, CHW)`, `(N, T)`, `T`).
fn spline_parts(mask: &Mask, x: &Tensor) -> Result<(Tensor, Tensor, Tensor)> {
    let free: Vec<u32> = (mask.host().iter().enumerate())
        .filter(|(_, &b)| b == 0)
        .map(|(i, _)| i as u32)
        .collect();
    let idx = Tensor::new(free.as_slice(), x.device())?;
    // a factor-out view is not contiguous; index_select needs it to be
    let flat = x.flatten_from(1)?.contiguous()?;
    let b = mask.tensor().to_dtype(x.dtype())?.flatten_from(1)?;
    Ok((flat.broadcast_mul(&b)?, flat.index_select(&idx, 1)?, idx))
}

/// The spline parameters of the transformed values, one row each, in the
/// order of `spline_parts`: `(N T, 3n - 1)` from the net output `(N, (3n - 1) C, ...)`.
fn spline_params(h: &Tensor, idx: &Tensor, spline: Spline) -> Result<Tensor> {
    let (n, k) = (h.dim(0)?, spline.params());
    let values = h.elem_count() / (n * k);
    let picked = h
        .contiguous()?
        .reshape((n, k, values))?
        .index_select(idx, 2)?;
    spline.per_value(&picked)
}
