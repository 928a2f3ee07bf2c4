//! Numeric layers of `flowc`: the bijections of Real NVP / Glow style normalizing flows and the
//! conditioner networks of their coupling layers, on candle (CPU; f32 and f64).
//!
//! Conventions
//! - Tensors are NCHW for images and ND for vectors; the batch is always dimension 0 and the
//!   channel (feature) dimension is always dimension 1.
//! - Every flow layer implements [`FlowLayer`]: `forward(x, given, train)` returns `(y, logdet)` with
//!   `logdet` of shape `[N]` (log |det dy/dx| per example) and `inverse(y, given)` returns `x`.
//!   `inverse` always runs in evaluation mode (running statistics for batch normalization).
//! - Conditioner networks implement [`Conditioner`].
//! - Parameters come from a `candle_nn::VarBuilder`; running statistics of batch normalization
//!   are *not* parameters and are kept as `Var`s inside the layers (see [`batchnorm`]).
//!
//! ```
//! use candle_core::{DType, Device, Tensor};
//! use candle_nn::{VarBuilder, VarMap};
//! use flowc::exec::{coupling::{Coupling, CouplingConfig}, FlowLayer};
//!
//! let dev = Device::Cpu;
//! let vm = VarMap::new();
//! let vb = VarBuilder::from_varmap(&vm, DType::F32, &dev);
//! let layer = Coupling::new(&[3, 4, 4], &CouplingConfig::default(), 0, vb.pp("c0"))?;
//! let x = Tensor::randn(0f32, 1., (2, 3, 4, 4), &dev)?;
//! let (y, logdet) = layer.forward(&x, None, true)?;
//! assert_eq!(logdet.dims(), &[2]);
//! let x2 = layer.inverse(&y, None)?;
//! # Ok::<(), candle_core::Error>(())
//! ```

pub mod actnorm;
pub mod batchnorm;
pub mod channel;
pub mod conv;
pub mod coupling;
pub mod flow;
pub mod fused;
pub mod invconv;
pub mod linalg;
pub mod logit;
pub mod mask;
pub mod mlp;
pub mod numeric;
pub(crate) mod parallel;
pub mod permute;
pub mod prior;
pub mod resnet;
pub(crate) mod rows;
pub(crate) mod scratch;
pub mod spline;
pub mod split;
pub mod squeeze;
pub mod stack;
pub mod wn_conv;

#[cfg(test)]
pub(crate) mod test_util;

use candle_core::{Result, Tensor};

pub use stack::with_stack_for;

/// A bijection with a tractable log-determinant.
pub trait FlowLayer {
    /// Maps `x` to `y`; returns `(y, logdet)` where `logdet` has shape `[N]`.
    /// `given`: the labels of a conditioned flow's examples (see [`Given`]).
    /// `train` selects batch statistics / data-dependent init / running-stat updates.
    fn forward(&self, x: &Tensor, given: Given, train: bool) -> Result<(Tensor, Tensor)>;
    /// Maps `y` back to `x` (evaluation mode, no gradient required).
    fn inverse(&self, y: &Tensor, given: Given) -> Result<Tensor>;
    /// State that is not a parameter but belongs in a checkpoint (running
    /// statistics), as `(name under prefix, var)`.
    fn buffers(&self, _prefix: &str, _out: &mut Vec<(String, candle_core::Var)>) {}
    /// Data-initialized layers (actnorm) stop initializing: their parameters
    /// came from a checkpoint.
    fn mark_initialized(&self) {}
}

/// The labels of a conditioned flow's examples, one-hot (`[N, K]`, in the
/// flow's dtype), or `None` for a flow without a condition. Layers with a
/// net append them to its input ([`with_labels`]); the learned prior picks
/// its row by them; the others ignore them.
pub type Given<'a> = Option<&'a Tensor>;

/// `x` with the one-hot labels appended as channels: `K` constant planes
/// of an image (`[N, C + K, H, W]`) or `K` more features (`[N, D + K]`).
pub fn with_labels(x: &Tensor, given: Given) -> Result<Tensor> {
    let Some(y) = given else {
        return Ok(x.clone());
    };
    let planes = match x.dims() {
        [n, _, h, w] => y
            .reshape((*n, y.dim(1)?, 1, 1))?
            .broadcast_as((*n, y.dim(1)?, *h, *w))?,
        _ => y.clone(),
    };
    Tensor::cat(&[x, &planes.to_dtype(x.dtype())?], 1)
}

/// A conditioner network of a coupling layer (input: masked `x`, output: `k*C` channels).
pub trait Conditioner {
    fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor>;
    /// Running statistics of its batch normalizations, named under `prefix`.
    fn buffers(&self, _prefix: &str, _out: &mut Vec<(String, candle_core::Var)>) {}
}

/// The contiguous data of a custom op's CPU input (callers make inputs contiguous).
pub(crate) fn cpu_slice<'a, T: candle_core::WithDType>(
    s: &'a candle_core::CpuStorage,
    l: &candle_core::Layout,
    op: &str,
) -> Result<&'a [T]> {
    let (a, b) = l
        .contiguous_offsets()
        .ok_or_else(|| candle_core::Error::Msg(format!("{op}: the input must be contiguous")))?;
    Ok(&s.as_slice::<T>()?[a..b])
}

/// The backward of a two-input custom op whose backward kernel (a custom op
/// on `(a, b, grad)`) returns both gradients as one flat `[da | db]`.
pub(crate) fn packed_grads(
    a: &Tensor,
    b: &Tensor,
    grad: &Tensor,
    backward: &impl candle_core::CustomOp3,
) -> Result<(Option<Tensor>, Option<Tensor>)> {
    let packed = a.apply_op3_no_bwd(b, &grad.contiguous()?, backward)?;
    let na = a.elem_count();
    let da = packed.narrow(0, 0, na)?.reshape(a.shape())?;
    let db = packed.narrow(0, na, b.elem_count())?.reshape(b.shape())?;
    Ok((Some(da), Some(db)))
}

/// A zero log-determinant of shape `[N]` matching `x`'s batch size, dtype and device.
pub(crate) fn zero_logdet(x: &Tensor) -> Result<Tensor> {
    Tensor::zeros(x.dim(0)?, x.dtype(), x.device())
}

/// Shape `[1, C, 1, 1, ..]` (same rank as `x`) used to broadcast a per-channel vector.
pub(crate) fn channel_shape(rank: usize, c: usize) -> Vec<usize> {
    let mut s = vec![1; rank];
    s[1] = c;
    s
}

/// Number of positions per channel (H*W for images, 1 for vectors).
pub(crate) fn positions(x: &Tensor) -> usize {
    x.dims()[2..].iter().product()
}

/// All dims except the channel dim (for per-channel statistics).
pub(crate) fn non_channel_dims(rank: usize) -> Vec<usize> {
    (0..rank).filter(|&d| d != 1).collect()
}

#[cfg(test)]
mod coupling_tests;
#[cfg(test)]
mod spline_tests;
pub use flow::Flow;
