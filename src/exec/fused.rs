//! Fused coupling steps: candle custom ops with CPU kernels (f32 and f64), and CUDA kernels
//! with the cargo feature `cuda` (see `fused_cuda.rs` and `kernels/fused_coupling.cu`), that
//! apply the coupling transform and compute the per-example log-det in a single pass over memory.
//!
//! Affine (`x`, net output `h` = `[s_raw | t]` with `2C` channels, per-channel `scale`, mask `b`):
//! ```text
//! s = scale * tanh(s_raw)
//! y = b*x + (1-b)*(x*exp(s) + t)          logdet[n] = sum((1-b)*s)
//! x = b*y + (1-b)*((y - t)*exp(-s))       (inverse)
//! ```
//! Additive: the same with `s = 0` (`h` = `t` with `C` channels, no scale, logdet 0).
//!
//! Design: the forward op ([`candle_core::CustomOp3`] on `(x, h, scale)`, the mask is a constant
//! held by the op) emits one flat buffer `[y (N*D) | logdet (N)]`; `y` and `logdet` are
//! zero-copy `narrow`s of it, so gradients of both reach the op's `bwd` as one flat gradient.
//! `bwd` runs a second fused kernel (custom op on `(x, h, grad)`) that emits
//! `[dx (N*D) | dh (N*2D) | dscale (C)]` in one pass (the scale gradient is reduced over the
//! batch inside the kernel, accumulated in f64; on CUDA from per-example partials summed in a
//! fixed order, so results are deterministic on both). The inverse ops carry no gradient.
//! Non-contiguous inputs are made contiguous first. Supported devices: the CPU, and CUDA when
//! built with the `cuda` feature ([`supports_device`]); use the reference implementation
//! ([`crate::exec::coupling::CouplingImpl::Reference`]) elsewhere.
//!
//! ```
//! use candle_core::{DType, Device, Tensor};
//! use flowc::exec::{fused, mask::Mask};
//! use flowc::ir::{self, Parity};
//! let dev = Device::Cpu;
//! let mask = Mask::new(ir::Mask::Checkerboard(Parity::Even), &[2, 4, 4], DType::F32, &dev)?;
//! let x = Tensor::randn(0f32, 1., (3, 2, 4, 4), &dev)?;
//! let h = Tensor::randn(0f32, 1., (3, 4, 4, 4), &dev)?;
//! let scale = Tensor::ones(2, DType::F32, &dev)?;
//! let (y, logdet) = fused::affine_coupling(&x, &h, &scale, &mask)?;
//! let x2 = fused::affine_coupling_inverse(&y, &h, &scale, &mask)?;
//! assert_eq!(logdet.dims(), &[3]);
//! # Ok::<(), candle_core::Error>(())
//! ```

use super::mask::Mask;
use candle_core::{
    bail, CpuStorage, CustomOp1, CustomOp2, CustomOp3, DType, Device, Layout, Result, Shape, Tensor,
};
use std::ops::{Add, Mul, Neg, Sub};
use std::sync::Arc;

#[cfg(feature = "cuda")]
#[path = "fused_cuda.rs"]
mod cuda;
#[cfg(feature = "cuda")]
use candle_core::CudaStorage;

/// Whether the fused ops run on `device`: the CPU, and CUDA with the `cuda` feature.
pub fn supports_device(device: &Device) -> bool {
    device.is_cpu() || (cfg!(feature = "cuda") && device.is_cuda())
}

/// The float types the kernels are instantiated for.
trait Real:
    Copy
    + Default
    + Send
    + Sync
    + 'static
    + Add<Output = Self>
    + Sub<Output = Self>
    + Mul<Output = Self>
    + Neg<Output = Self>
{
    const ZERO: Self;
    const ONE: Self;
    fn exp(self) -> Self;
    fn tanh(self) -> Self;
    fn from_f64(v: f64) -> Self;
    fn to_f64(self) -> f64;
}

macro_rules! impl_real {
    ($t:ty) => {
        impl Real for $t {
            const ZERO: Self = 0.0;
            const ONE: Self = 1.0;
            #[inline(always)]
            fn exp(self) -> Self {
                <$t>::exp(self)
            }
            #[inline(always)]
            fn tanh(self) -> Self {
                <$t>::tanh(self)
            }
            #[inline(always)]
            fn from_f64(v: f64) -> Self {
                v as $t
            }
            #[inline(always)]
            fn to_f64(self) -> f64 {
                self as f64
            }
        }
    };
}
impl_real!(f32);
impl_real!(f64);

// ---------------------------------------------------------------------------------------------
// Kernels. Layouts (all contiguous): x, y: [N, C, S]; h: [N, 2C, S] (affine) or [N, C, S]
// (additive); mask: [C, S]; scale: [C]. S = H*W for images, 1 for vectors; D = C*S.
// Each kernel is a per-example function; the drivers below split the batch into contiguous
// example ranges, one per thread (`parallel::map_parts`) when the work is
// large enough, and run inline otherwise. Results do not depend on the number of threads.
// ---------------------------------------------------------------------------------------------

/// Elements per thread below which a kernel runs single-threaded.
const MIN_ELEMS_PER_THREAD: usize = 1 << 12;

/// Examples per chunk (`n` examples of `d` elements each): one chunk per thread.
fn examples_per_chunk(n: usize, d: usize) -> usize {
    let threads = super::parallel::threads()
        .min((n * d) / MIN_ELEMS_PER_THREAD)
        .clamp(1, n.max(1));
    n.div_ceil(threads).max(1)
}

/// Runs the jobs, one a thread (the caller runs one of them).
fn run_jobs<F: FnOnce() + Send>(jobs: Vec<F>) {
    super::parallel::map_parts(jobs, |job| job());
}

/// One example of the affine forward; returns its log-det.
#[inline]
fn affine_fwd_example<T: Real>(
    xe: &[T],
    he: &[T],
    scale: &[T],
    mask: &[u8],
    s: usize,
    ye: &mut [T],
) -> f64 {
    let d = xe.len();
    let (sr, tr) = he.split_at(d);
    let mut ld = 0f64;
    for (ch, &sc) in scale.iter().enumerate() {
        let r = ch * s..(ch + 1) * s;
        let it = ye[r.clone()]
            .iter_mut()
            .zip(&xe[r.clone()])
            .zip(&sr[r.clone()])
            .zip(&tr[r.clone()])
            .zip(&mask[r]);
        for ((((y, &xv), &rv), &tv), &b) in it {
            if b != 0 {
                *y = xv;
            } else {
                let sv = sc * rv.tanh();
                *y = xv * sv.exp() + tv;
                ld += sv.to_f64();
            }
        }
    }
    ld
}

/// Returns `[y (N*D) | logdet (N)]`.
fn affine_fwd_kernel<T: Real>(
    x: &[T],
    h: &[T],
    scale: &[T],
    mask: &[u8],
    (n, c, s): (usize, usize, usize),
) -> Vec<T> {
    let d = c * s;
    let mut out = super::parallel::zeros(n * d + n);
    if n == 0 || d == 0 {
        return out;
    }
    let per = examples_per_chunk(n, d);
    let (ys, lds) = out.split_at_mut(n * d);
    let jobs: Vec<_> = ys
        .chunks_mut(per * d)
        .zip(lds.chunks_mut(per))
        .zip(x.chunks(per * d).zip(h.chunks(per * 2 * d)))
        .map(|((ys, lds), (xs, hs))| {
            move || {
                let it = ys
                    .chunks_exact_mut(d)
                    .zip(lds.iter_mut())
                    .zip(xs.chunks_exact(d).zip(hs.chunks_exact(2 * d)));
                for ((ye, ld), (xe, he)) in it {
                    *ld = T::from_f64(affine_fwd_example(xe, he, scale, mask, s, ye));
                }
            }
        })
        .collect();
    run_jobs(jobs);
    out
}

/// One example of the affine backward; `dsp` receives this example's scale gradient.
#[allow(clippy::too_many_arguments)]
#[inline]
fn affine_bwd_example<T: Real>(
    xe: &[T],
    he: &[T],
    gye: &[T],
    gl: T,
    scale: &[T],
    mask: &[u8],
    s: usize,
    dxe: &mut [T],
    dhe: &mut [T],
    dsp: &mut [f64],
) {
    let d = xe.len();
    let sr = &he[..d];
    let (dsr, dtr) = dhe.split_at_mut(d);
    for ((ch, &sc), acc) in scale.iter().enumerate().zip(dsp.iter_mut()) {
        let r = ch * s..(ch + 1) * s;
        let it = dxe[r.clone()]
            .iter_mut()
            .zip(dsr[r.clone()].iter_mut())
            .zip(dtr[r.clone()].iter_mut())
            .zip(xe[r.clone()].iter().zip(&sr[r.clone()]))
            .zip(gye[r.clone()].iter().zip(&mask[r]));
        for ((((dx, dsraw), dt), (&xv, &rv)), (&gy, &b)) in it {
            if b != 0 {
                *dx = gy;
            } else {
                let th = rv.tanh();
                let e = (sc * th).exp();
                *dx = gy * e;
                *dt = gy;
                let ds = gy * xv * e + gl;
                *dsraw = ds * sc * (T::ONE - th * th);
                *acc += (ds * th).to_f64();
            }
        }
    }
}

/// `g` = `[gy (N*D) | glogdet (N)]`; returns `[dx (N*D) | dh (N*2D) | dscale (C)]`.
fn affine_bwd_kernel<T: Real>(
    x: &[T],
    h: &[T],
    g: &[T],
    scale: &[T],
    mask: &[u8],
    (n, c, s): (usize, usize, usize),
) -> Vec<T> {
    let d = c * s;
    let nd = n * d;
    let mut out = super::parallel::zeros(3 * nd + c);
    if n == 0 || d == 0 {
        return out;
    }
    // Per-example scale gradients (f64), reduced below in example order: deterministic.
    let mut dsp = vec![0f64; n * c];
    let per = examples_per_chunk(n, d);
    let (dxs, rest) = out.split_at_mut(nd);
    let (dhs, dscale_out) = rest.split_at_mut(2 * nd);
    let (gy, gl) = g.split_at(nd);
    let jobs: Vec<_> = dxs
        .chunks_mut(per * d)
        .zip(dhs.chunks_mut(per * 2 * d))
        .zip(dsp.chunks_mut(per * c))
        .zip(x.chunks(per * d).zip(h.chunks(per * 2 * d)))
        .zip(gy.chunks(per * d).zip(gl.chunks(per)))
        .map(|((((dxs, dhs), dsp), (xs, hs)), (gys, gls))| {
            move || {
                let it = dxs
                    .chunks_exact_mut(d)
                    .zip(dhs.chunks_exact_mut(2 * d))
                    .zip(dsp.chunks_exact_mut(c))
                    .zip(xs.chunks_exact(d).zip(hs.chunks_exact(2 * d)))
                    .zip(gys.chunks_exact(d).zip(gls));
                for ((((dxe, dhe), dse), (xe, he)), (gye, &gl)) in it {
                    affine_bwd_example(xe, he, gye, gl, scale, mask, s, dxe, dhe, dse);
                }
            }
        })
        .collect();
    run_jobs(jobs);
    let mut dscale = vec![0f64; c];
    for row in dsp.chunks_exact(c) {
        for (a, v) in dscale.iter_mut().zip(row) {
            *a += v;
        }
    }
    for (o, v) in dscale_out.iter_mut().zip(dscale) {
        *o = T::from_f64(v);
    }
    out
}

/// One example of the affine inverse.
#[inline]
fn affine_inv_example<T: Real>(
    ye: &[T],
    he: &[T],
    scale: &[T],
    mask: &[u8],
    s: usize,
    xe: &mut [T],
) {
    let d = ye.len();
    let (sr, tr) = he.split_at(d);
    for (ch, &sc) in scale.iter().enumerate() {
        let r = ch * s..(ch + 1) * s;
        let it = xe[r.clone()]
            .iter_mut()
            .zip(&ye[r.clone()])
            .zip(&sr[r.clone()])
            .zip(&tr[r.clone()])
            .zip(&mask[r]);
        for ((((x, &yv), &rv), &tv), &b) in it {
            *x = if b != 0 {
                yv
            } else {
                (yv - tv) * (-(sc * rv.tanh())).exp()
            };
        }
    }
}

fn affine_inv_kernel<T: Real>(
    y: &[T],
    h: &[T],
    scale: &[T],
    mask: &[u8],
    (n, c, s): (usize, usize, usize),
) -> Vec<T> {
    let d = c * s;
    let mut out = super::parallel::zeros(n * d);
    if n == 0 || d == 0 {
        return out;
    }
    let per = examples_per_chunk(n, d);
    let jobs: Vec<_> = out
        .chunks_mut(per * d)
        .zip(y.chunks(per * d).zip(h.chunks(per * 2 * d)))
        .map(|(xs, (ys, hs))| {
            move || {
                let it = xs
                    .chunks_exact_mut(d)
                    .zip(ys.chunks_exact(d).zip(hs.chunks_exact(2 * d)));
                for (xe, (ye, he)) in it {
                    affine_inv_example(ye, he, scale, mask, s, xe);
                }
            }
        })
        .collect();
    run_jobs(jobs);
    out
}

/// Forward `y = x + (1-b) t`, or inverse `x = y - (1-b) t` (memory-bound: single-threaded).
fn additive_kernel<T: Real>(x: &[T], t: &[T], mask: &[u8], inverse: bool) -> Vec<T> {
    let d = mask.len();
    let mut out = Vec::with_capacity(x.len());
    if d == 0 {
        return out;
    }
    for (xe, te) in x.chunks_exact(d).zip(t.chunks_exact(d)) {
        for ((&xv, &tv), &b) in xe.iter().zip(te).zip(mask) {
            out.push(match (b != 0, inverse) {
                (true, _) => xv,
                (false, false) => xv + tv,
                (false, true) => xv - tv,
            });
        }
    }
    out
}

/// `dt = (1-b) * g`.
fn additive_bwd_kernel<T: Real>(g: &[T], mask: &[u8]) -> Vec<T> {
    let d = mask.len();
    let mut out = Vec::with_capacity(g.len());
    if d == 0 {
        return out;
    }
    for ge in g.chunks_exact(d) {
        for (&gv, &b) in ge.iter().zip(mask) {
            out.push(if b != 0 { T::ZERO } else { gv });
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Plumbing.
// ---------------------------------------------------------------------------------------------

fn contiguous<'a, T>(v: &'a [T], l: &Layout, op: &str) -> Result<&'a [T]> {
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&v[a..b]),
        None => bail!("{op}: inputs must be contiguous"),
    }
}

/// `(N, C, S)` of a `[N, C, ..]` layout.
fn ncs(l: &Layout) -> Result<(usize, usize, usize)> {
    let d = l.dims();
    if d.len() < 2 {
        bail!("coupling inputs must have rank >= 2, got {:?}", d)
    }
    Ok((d[0], d[1], d[2..].iter().product()))
}

/// Checks that `h` is `[N, k*C, ..rest of x]` and the mask matches `x`.
fn check(
    lx: &Layout,
    lh: &Layout,
    k: usize,
    mask: &[u8],
    op: &str,
) -> Result<(usize, usize, usize)> {
    let (n, c, s) = ncs(lx)?;
    let (dx, dh) = (lx.dims(), lh.dims());
    if dh.len() != dx.len() || dh[0] != n || dh[1] != k * c || dh[2..] != dx[2..] {
        bail!("{op}: net output shape {dh:?} does not match input {dx:?} (expected {k}C channels)")
    }
    if mask.len() != c * s {
        bail!(
            "{op}: mask of {} elements for examples of {} elements",
            mask.len(),
            c * s
        )
    }
    Ok((n, c, s))
}

macro_rules! float_dispatch {
    ($op:expr, ($($s:ident => $v:ident, $l:ident),+), |$($w:ident),+| $body:expr) => {
        match ($($s,)+) {
            ($(CpuStorage::F32($v),)+) => {
                $(let $w = contiguous($v, $l, $op)?;)+
                CpuStorage::F32($body)
            }
            ($(CpuStorage::F64($v),)+) => {
                $(let $w = contiguous($v, $l, $op)?;)+
                CpuStorage::F64($body)
            }
            _ => bail!("{}: only f32 and f64 (all inputs of one dtype) are supported", $op),
        }
    };
}

struct AffineFwd {
    mask: Arc<[u8]>,
}

struct AffineBwd {
    mask: Arc<[u8]>,
    /// The scale on the host (CPU kernels).
    scale: Vec<f64>,
    /// The scale on the device, detached and contiguous (CUDA kernels; None on the CPU).
    #[cfg_attr(not(feature = "cuda"), allow(dead_code))]
    scale_dev: Option<Tensor>,
}

struct AffineInv {
    mask: Arc<[u8]>,
}

impl CustomOp3 for AffineFwd {
    fn name(&self) -> &'static str {
        "fused-affine-coupling"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let dims = check(l1, l2, 2, &self.mask, self.name())?;
        if l3.shape().elem_count() != dims.1 {
            bail!("{}: scale must have C = {} elements", self.name(), dims.1)
        }
        let out = float_dispatch!(self.name(), (s1 => a, l1, s2 => b, l2, s3 => c, l3), |x, h, sc| {
            affine_fwd_kernel(x, h, sc, &self.mask, dims)
        });
        Ok((out, Shape::from(dims.0 * dims.1 * dims.2 + dims.0)))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &CudaStorage,
        l1: &Layout,
        s2: &CudaStorage,
        l2: &Layout,
        s3: &CudaStorage,
        l3: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        let dims = check(l1, l2, 2, &self.mask, self.name())?;
        if l3.shape().elem_count() != dims.1 {
            bail!("{}: scale must have C = {} elements", self.name(), dims.1)
        }
        let out = cuda::affine_fwd(s1, l1, s2, l2, s3, l3, &self.mask, dims, self.name())?;
        Ok((out, Shape::from(dims.0 * dims.1 * dims.2 + dims.0)))
    }

    fn bwd(
        &self,
        x: &Tensor,
        h: &Tensor,
        scale: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let n = x.dim(0)?;
        let c = x.dim(1)?;
        let nd = x.elem_count();
        let op = if x.device().is_cpu() {
            AffineBwd {
                mask: self.mask.clone(),
                scale: scale.to_dtype(DType::F64)?.flatten_all()?.to_vec1()?,
                scale_dev: None,
            }
        } else {
            // No device-to-host copy: the CUDA kernel reads the scale where it lies.
            AffineBwd {
                mask: self.mask.clone(),
                scale: Vec::new(),
                scale_dev: Some(scale.detach().contiguous()?),
            }
        };
        let grad = grad.contiguous()?;
        if grad.elem_count() != nd + n {
            bail!(
                "fused-affine-coupling bwd: unexpected gradient shape {:?}",
                grad.dims()
            )
        }
        let out = x.apply_op3_no_bwd(h, &grad, &op)?;
        let dx = out.narrow(0, 0, nd)?.reshape(x.shape())?;
        let dh = out.narrow(0, nd, 2 * nd)?.reshape(h.shape())?;
        let ds = out.narrow(0, 3 * nd, c)?.reshape(scale.shape())?;
        Ok((Some(dx), Some(dh), Some(ds)))
    }
}

impl CustomOp3 for AffineBwd {
    fn name(&self) -> &'static str {
        "fused-affine-coupling-bwd"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let dims = check(l1, l2, 2, &self.mask, self.name())?;
        let (n, c, s) = dims;
        if l3.shape().elem_count() != n * c * s + n {
            bail!("{}: gradient must have N*D + N elements", self.name())
        }
        let out = float_dispatch!(self.name(), (s1 => a, l1, s2 => b, l2, s3 => g, l3), |x, h, g| {
            let scale: Vec<_> = self.scale.iter().map(|&v| Real::from_f64(v)).collect();
            affine_bwd_kernel(x, h, g, &scale, &self.mask, dims)
        });
        Ok((out, Shape::from(3 * n * c * s + c)))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &CudaStorage,
        l1: &Layout,
        s2: &CudaStorage,
        l2: &Layout,
        s3: &CudaStorage,
        l3: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        let dims = check(l1, l2, 2, &self.mask, self.name())?;
        let (n, c, s) = dims;
        if l3.shape().elem_count() != n * c * s + n {
            bail!("{}: gradient must have N*D + N elements", self.name())
        }
        let Some(scale) = &self.scale_dev else {
            bail!("{}: no device scale", self.name())
        };
        if scale.elem_count() != c {
            bail!("{}: scale must have C = {c} elements", self.name())
        }
        let (st, ls) = scale.storage_and_layout();
        let candle_core::Storage::Cuda(ss) = &*st else {
            bail!("{}: the scale is not on the CUDA device", self.name())
        };
        let out = cuda::affine_bwd(
            s1,
            l1,
            s2,
            l2,
            s3,
            l3,
            ss,
            ls,
            &self.mask,
            dims,
            self.name(),
        )?;
        Ok((out, Shape::from(3 * n * c * s + c)))
    }
}

impl CustomOp3 for AffineInv {
    fn name(&self) -> &'static str {
        "fused-affine-coupling-inverse"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let dims = check(l1, l2, 2, &self.mask, self.name())?;
        if l3.shape().elem_count() != dims.1 {
            bail!("{}: scale must have C = {} elements", self.name(), dims.1)
        }
        let out = float_dispatch!(self.name(), (s1 => a, l1, s2 => b, l2, s3 => c, l3), |y, h, sc| {
            affine_inv_kernel(y, h, sc, &self.mask, dims)
        });
        Ok((out, l1.shape().clone()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &CudaStorage,
        l1: &Layout,
        s2: &CudaStorage,
        l2: &Layout,
        s3: &CudaStorage,
        l3: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        let dims = check(l1, l2, 2, &self.mask, self.name())?;
        if l3.shape().elem_count() != dims.1 {
            bail!("{}: scale must have C = {} elements", self.name(), dims.1)
        }
        let out = cuda::affine_inv(s1, l1, s2, l2, s3, l3, &self.mask, dims, self.name())?;
        Ok((out, l1.shape().clone()))
    }
}

struct AdditiveOp {
    mask: Arc<[u8]>,
    inverse: bool,
}

struct AdditiveBwd {
    mask: Arc<[u8]>,
}

impl CustomOp2 for AdditiveOp {
    fn name(&self) -> &'static str {
        if self.inverse {
            "fused-additive-coupling-inverse"
        } else {
            "fused-additive-coupling"
        }
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        check(l1, l2, 1, &self.mask, self.name())?;
        let out = float_dispatch!(self.name(), (s1 => a, l1, s2 => b, l2), |x, t| {
            additive_kernel(x, t, &self.mask, self.inverse)
        });
        Ok((out, l1.shape().clone()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &CudaStorage,
        l1: &Layout,
        s2: &CudaStorage,
        l2: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        check(l1, l2, 1, &self.mask, self.name())?;
        let out = cuda::additive(s1, l1, s2, l2, &self.mask, self.inverse, self.name())?;
        Ok((out, l1.shape().clone()))
    }

    fn bwd(
        &self,
        _x: &Tensor,
        _h: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let grad = grad.contiguous()?;
        let dt = grad.apply_op1_no_bwd(&AdditiveBwd {
            mask: self.mask.clone(),
        })?;
        Ok((Some(grad), Some(dt)))
    }
}

impl CustomOp1 for AdditiveBwd {
    fn name(&self) -> &'static str {
        "fused-additive-coupling-bwd"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let (_, c, sp) = ncs(l)?;
        if c * sp != self.mask.len() {
            bail!("{}: mask does not match the gradient", self.name())
        }
        let out = float_dispatch!(self.name(), (s => a, l), |g| additive_bwd_kernel(
            g, &self.mask
        ));
        Ok((out, l.shape().clone()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(&self, s: &CudaStorage, l: &Layout) -> Result<(CudaStorage, Shape)> {
        let (_, c, sp) = ncs(l)?;
        if c * sp != self.mask.len() {
            bail!("{}: mask does not match the gradient", self.name())
        }
        let out = cuda::additive_bwd(s, l, &self.mask, self.name())?;
        Ok((out, l.shape().clone()))
    }
}

// ---------------------------------------------------------------------------------------------
// Public API.
// ---------------------------------------------------------------------------------------------

fn check_inputs(x: &Tensor, others: &[&Tensor], mask: &Mask) -> Result<()> {
    if !supports_device(x.device()) {
        bail!(
            "fused coupling ops run on the CPU (and CUDA with the `cuda` feature), not on {:?}; \
             use CouplingImpl::Reference",
            x.device().location()
        )
    }
    if x.rank() < 2 || x.dims()[1..] != *mask.shape() {
        bail!(
            "coupling input {:?} does not match mask shape {:?}",
            x.dims(),
            mask.shape()
        )
    }
    for t in others {
        if t.dtype() != x.dtype() {
            bail!(
                "coupling inputs must share a dtype ({:?} vs {:?})",
                t.dtype(),
                x.dtype()
            )
        }
    }
    Ok(())
}

/// Fused affine coupling forward: returns `(y, logdet)` with `logdet` of shape `[N]`.
/// `h` is the net output `[N, 2C, ..]` (`s_raw` then `t`), `scale` has `C` elements.
/// Differentiable w.r.t. `x`, `h` and `scale`.
pub fn affine_coupling(
    x: &Tensor,
    h: &Tensor,
    scale: &Tensor,
    mask: &Mask,
) -> Result<(Tensor, Tensor)> {
    check_inputs(x, &[h, scale], mask)?;
    let (x, h, scale) = (x.contiguous()?, h.contiguous()?, scale.contiguous()?);
    let n = x.dim(0)?;
    let nd = x.elem_count();
    let out = x.apply_op3(
        &h,
        &scale,
        AffineFwd {
            mask: mask.host_arc(),
        },
    )?;
    let y = out.narrow(0, 0, nd)?.reshape(x.shape())?;
    let logdet = out.narrow(0, nd, n)?;
    Ok((y, logdet))
}

/// Fused affine coupling inverse (no gradient).
pub fn affine_coupling_inverse(
    y: &Tensor,
    h: &Tensor,
    scale: &Tensor,
    mask: &Mask,
) -> Result<Tensor> {
    check_inputs(y, &[h, scale], mask)?;
    let (y, h, scale) = (y.contiguous()?, h.contiguous()?, scale.contiguous()?);
    y.apply_op3_no_bwd(
        &h,
        &scale,
        &AffineInv {
            mask: mask.host_arc(),
        },
    )
}

/// Fused additive coupling forward: returns `(y, zeros[N])`; `h` = `t` is `[N, C, ..]`.
/// Differentiable w.r.t. `x` and `h`.
pub fn additive_coupling(x: &Tensor, h: &Tensor, mask: &Mask) -> Result<(Tensor, Tensor)> {
    check_inputs(x, &[h], mask)?;
    let (x, h) = (x.contiguous()?, h.contiguous()?);
    let y = x.apply_op2(
        &h,
        AdditiveOp {
            mask: mask.host_arc(),
            inverse: false,
        },
    )?;
    Ok((y, super::zero_logdet(&x)?))
}

/// Fused additive coupling inverse (no gradient).
pub fn additive_coupling_inverse(y: &Tensor, h: &Tensor, mask: &Mask) -> Result<Tensor> {
    check_inputs(y, &[h], mask)?;
    let (y, h) = (y.contiguous()?, h.contiguous()?);
    y.apply_op2_no_bwd(
        &h,
        &AdditiveOp {
            mask: mask.host_arc(),
            inverse: true,
        },
    )
}
