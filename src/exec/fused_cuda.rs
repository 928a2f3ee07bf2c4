//! CUDA drivers of the fused coupling ops (feature `cuda`): launch the kernels of
//! `src/exec/kernels/fused_coupling.cu`, compiled to PTX by `build.rs` and embedded here, loaded
//! once per device with [`CudaDevice::get_or_load_custom_func`].
//!
//! Outputs have the same flat layouts as the CPU kernels of [`super::fused`]:
//! affine forward `[y (N*D) | logdet (N)]`, affine backward `[dx (N*D) | dh (N*2D) | dscale (C)]`.
//! The log-det (per example) and the scale gradient (per channel, over the batch) are reduced
//! deterministically in f64: per-(example, channel) partials, then a fixed-order sum (see the
//! kernel file). The host mask is uploaded once per device and mask content, then cached.

use candle_core::backend::BackendStorage;
use candle_core::cuda_backend::cudarc::driver::{
    CudaSlice, CudaView, DeviceRepr, LaunchConfig, PushKernelArg, ValidAsZeroBits,
};
use candle_core::cuda_backend::{kernel_name, CudaDType, DeviceId, WrapErr};
use candle_core::{bail, builder_arg, CudaDevice, CudaStorage, DType, Layout, Result, WithDType};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

const PTX: &str = include_str!(concat!(env!("OUT_DIR"), "/fused_coupling.ptx"));
const MODULE: &str = "flowc_fused_coupling";
/// Threads per block of the elementwise and the small reduction kernels.
const BLOCK: usize = 256;
/// Rows (one example, one channel) of at least this many positions are reduced by one block
/// each; shorter rows (vectors: one position) by one thread each.
const ROW_BLOCK_MIN: usize = 32;
/// Distinct masks kept on each device.
const MASK_CACHE_PER_DEVICE: usize = 64;

/// The kernels' element types.
trait Elem: CudaDType + DeviceRepr + ValidAsZeroBits + WithDType {}
impl Elem for f32 {}
impl Elem for f64 {}

type MaskCache = HashMap<DeviceId, Vec<(Arc<[u8]>, Arc<CudaSlice<u8>>)>>;

/// The mask on `dev` (uploaded on first use, then cached by content).
fn device_mask(dev: &CudaDevice, mask: &Arc<[u8]>) -> Result<Arc<CudaSlice<u8>>> {
    static CACHE: OnceLock<Mutex<MaskCache>> = OnceLock::new();
    let mut cache = CACHE
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    let entries = cache.entry(dev.id()).or_default();
    if let Some((_, m)) = entries
        .iter()
        .find(|(h, _)| Arc::ptr_eq(h, mask) || h[..] == mask[..])
    {
        return Ok(m.clone());
    }
    let m = Arc::new(dev.clone_htod(&mask[..])?);
    if entries.len() >= MASK_CACHE_PER_DEVICE {
        entries.remove(0);
    }
    entries.push((mask.clone(), m.clone()));
    Ok(m)
}

/// The contiguous elements of `s` described by `l`.
fn view<'a, T: Elem>(s: &'a CudaStorage, l: &Layout, op: &str) -> Result<CudaView<'a, T>> {
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(s.as_cuda_slice::<T>()?.slice(a..b)),
        None => bail!("{op}: inputs must be contiguous"),
    }
}

fn grid_u32(blocks: usize, op: &str) -> Result<u32> {
    match u32::try_from(blocks) {
        Ok(b) if b <= i32::MAX as u32 => Ok(b),
        _ => bail!("{op}: too many blocks ({blocks}) for one launch"),
    }
}

/// One thread per item.
fn threads_cfg(items: usize, op: &str) -> Result<LaunchConfig> {
    Ok(LaunchConfig {
        grid_dim: (grid_u32(items.div_ceil(BLOCK), op)?, 1, 1),
        block_dim: (BLOCK as u32, 1, 1),
        shared_mem_bytes: 0,
    })
}

/// Grid-stride elementwise launch over `numel` elements.
fn elementwise_cfg(numel: usize) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (numel.div_ceil(BLOCK).clamp(1, 1 << 20) as u32, 1, 1),
        block_dim: (BLOCK as u32, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// One block per row of `s` positions: a power of two of threads in `[32, 256]`.
fn rows_block_cfg(rows: usize, s: usize, op: &str) -> Result<LaunchConfig> {
    Ok(LaunchConfig {
        grid_dim: (grid_u32(rows, op)?, 1, 1),
        block_dim: (s.next_power_of_two().clamp(32, BLOCK) as u32, 1, 1),
        shared_mem_bytes: 0,
    })
}

fn same_dtype(storages: &[&CudaStorage], op: &str) -> Result<DType> {
    let dt = storages[0].dtype();
    if storages.iter().any(|s| s.dtype() != dt) || !matches!(dt, DType::F32 | DType::F64) {
        bail!("{op}: only f32 and f64 (all inputs of one dtype) are supported")
    }
    Ok(dt)
}

macro_rules! dispatch {
    ($dt:expr, $f:ident($($a:expr),*)) => {
        match $dt {
            DType::F32 => $f::<f32>($($a),*),
            _ => $f::<f64>($($a),*),
        }
    };
}

// ---------------------------------------------------------------------------------------------
// Affine forward.
// ---------------------------------------------------------------------------------------------

/// `(x, h, scale)` -> `[y (N*D) | logdet (N)]`.
#[allow(clippy::too_many_arguments)]
pub(super) fn affine_fwd(
    x: &CudaStorage,
    lx: &Layout,
    h: &CudaStorage,
    lh: &Layout,
    scale: &CudaStorage,
    ls: &Layout,
    mask: &Arc<[u8]>,
    dims: (usize, usize, usize),
    op: &str,
) -> Result<CudaStorage> {
    let dt = same_dtype(&[x, h, scale], op)?;
    dispatch!(dt, affine_fwd_t(x, lx, h, lh, scale, ls, mask, dims, op))
}

#[allow(clippy::too_many_arguments)]
fn affine_fwd_t<T: Elem>(
    x: &CudaStorage,
    lx: &Layout,
    h: &CudaStorage,
    lh: &Layout,
    scale: &CudaStorage,
    ls: &Layout,
    mask: &Arc<[u8]>,
    (n, c, s): (usize, usize, usize),
    op: &str,
) -> Result<CudaStorage> {
    let dev = x.device().clone();
    let (d, rows) = (c * s, n * c);
    let nd = n * d;
    if n == 0 || d == 0 {
        return Ok(CudaStorage::wrap_cuda_slice(
            dev.alloc_zeros::<T>(nd + n)?,
            dev,
        ));
    }
    let (xv, hv, sv) = (
        view::<T>(x, lx, op)?,
        view::<T>(h, lh, op)?,
        view::<T>(scale, ls, op)?,
    );
    let mv = device_mask(&dev, mask)?;
    // SAFETY: every element is written by the kernels below.
    let mut out = unsafe { dev.alloc::<T>(nd + n)? };
    let mut partial = unsafe { dev.alloc::<f64>(rows)? };
    {
        let (name, cfg) = if s >= ROW_BLOCK_MIN {
            ("fused_affine_fwd_rows_block", rows_block_cfg(rows, s, op)?)
        } else {
            ("fused_affine_fwd_rows_thread", threads_cfg(rows, op)?)
        };
        let func = dev.get_or_load_custom_func(&kernel_name::<T>(name), MODULE, PTX)?;
        let mut b = func.builder();
        b.arg(&xv).arg(&hv).arg(&sv).arg(&*mv);
        b.arg(&mut out).arg(&mut partial);
        if s < ROW_BLOCK_MIN {
            b.arg(&rows);
        }
        builder_arg!(b, c, s);
        // SAFETY: argument list matches the kernel's signature; buffers have the sizes above.
        unsafe { b.launch(cfg) }.w()?;
    }
    {
        let func =
            dev.get_or_load_custom_func(&kernel_name::<T>("fused_sum_partials_rows"), MODULE, PTX)?;
        let mut ld = out.slice_mut(nd..);
        let mut b = func.builder();
        b.arg(&partial).arg(&mut ld);
        builder_arg!(b, n, c);
        // SAFETY: as above.
        unsafe { b.launch(threads_cfg(n, op)?) }.w()?;
    }
    Ok(CudaStorage::wrap_cuda_slice(out, dev))
}

// ---------------------------------------------------------------------------------------------
// Affine backward.
// ---------------------------------------------------------------------------------------------

/// `(x, h, g = [gy | glogdet], scale)` -> `[dx (N*D) | dh (N*2D) | dscale (C)]`.
#[allow(clippy::too_many_arguments)]
pub(super) fn affine_bwd(
    x: &CudaStorage,
    lx: &Layout,
    h: &CudaStorage,
    lh: &Layout,
    g: &CudaStorage,
    lg: &Layout,
    scale: &CudaStorage,
    ls: &Layout,
    mask: &Arc<[u8]>,
    dims: (usize, usize, usize),
    op: &str,
) -> Result<CudaStorage> {
    let dt = same_dtype(&[x, h, g, scale], op)?;
    dispatch!(
        dt,
        affine_bwd_t(x, lx, h, lh, g, lg, scale, ls, mask, dims, op)
    )
}

#[allow(clippy::too_many_arguments)]
fn affine_bwd_t<T: Elem>(
    x: &CudaStorage,
    lx: &Layout,
    h: &CudaStorage,
    lh: &Layout,
    g: &CudaStorage,
    lg: &Layout,
    scale: &CudaStorage,
    ls: &Layout,
    mask: &Arc<[u8]>,
    (n, c, s): (usize, usize, usize),
    op: &str,
) -> Result<CudaStorage> {
    let dev = x.device().clone();
    let (d, rows) = (c * s, n * c);
    let nd = n * d;
    if n == 0 || d == 0 {
        return Ok(CudaStorage::wrap_cuda_slice(
            dev.alloc_zeros::<T>(3 * nd + c)?,
            dev,
        ));
    }
    let (xv, hv, gv) = (
        view::<T>(x, lx, op)?,
        view::<T>(h, lh, op)?,
        view::<T>(g, lg, op)?,
    );
    let sv = view::<T>(scale, ls, op)?;
    let mv = device_mask(&dev, mask)?;
    // SAFETY: every element is written by the kernels below.
    let mut out = unsafe { dev.alloc::<T>(3 * nd + c)? };
    let mut partial = unsafe { dev.alloc::<f64>(rows)? };
    {
        let (name, cfg) = if s >= ROW_BLOCK_MIN {
            ("fused_affine_bwd_rows_block", rows_block_cfg(rows, s, op)?)
        } else {
            ("fused_affine_bwd_rows_thread", threads_cfg(rows, op)?)
        };
        let func = dev.get_or_load_custom_func(&kernel_name::<T>(name), MODULE, PTX)?;
        let mut b = func.builder();
        b.arg(&xv).arg(&hv).arg(&gv).arg(&sv).arg(&*mv);
        b.arg(&mut out).arg(&mut partial);
        builder_arg!(b, n, c, s);
        // SAFETY: argument list matches the kernel's signature; buffers have the sizes above.
        unsafe { b.launch(cfg) }.w()?;
    }
    {
        let func =
            dev.get_or_load_custom_func(&kernel_name::<T>("fused_sum_partials_cols"), MODULE, PTX)?;
        let mut ds = out.slice_mut(3 * nd..);
        let mut b = func.builder();
        b.arg(&partial).arg(&mut ds);
        builder_arg!(b, n, c);
        // SAFETY: as above.
        unsafe { b.launch(threads_cfg(c, op)?) }.w()?;
    }
    Ok(CudaStorage::wrap_cuda_slice(out, dev))
}

// ---------------------------------------------------------------------------------------------
// Affine inverse, additive forward / inverse / backward (elementwise).
// ---------------------------------------------------------------------------------------------

/// `(y, h, scale)` -> `x` (`N*D` elements).
#[allow(clippy::too_many_arguments)]
pub(super) fn affine_inv(
    y: &CudaStorage,
    ly: &Layout,
    h: &CudaStorage,
    lh: &Layout,
    scale: &CudaStorage,
    ls: &Layout,
    mask: &Arc<[u8]>,
    dims: (usize, usize, usize),
    op: &str,
) -> Result<CudaStorage> {
    let dt = same_dtype(&[y, h, scale], op)?;
    dispatch!(dt, affine_inv_t(y, ly, h, lh, scale, ls, mask, dims, op))
}

#[allow(clippy::too_many_arguments)]
fn affine_inv_t<T: Elem>(
    y: &CudaStorage,
    ly: &Layout,
    h: &CudaStorage,
    lh: &Layout,
    scale: &CudaStorage,
    ls: &Layout,
    mask: &Arc<[u8]>,
    (n, c, s): (usize, usize, usize),
    op: &str,
) -> Result<CudaStorage> {
    let dev = y.device().clone();
    let numel = n * c * s;
    if numel == 0 {
        return Ok(CudaStorage::wrap_cuda_slice(dev.alloc_zeros::<T>(0)?, dev));
    }
    let (yv, hv, sv) = (
        view::<T>(y, ly, op)?,
        view::<T>(h, lh, op)?,
        view::<T>(scale, ls, op)?,
    );
    let mv = device_mask(&dev, mask)?;
    // SAFETY: every element is written by the kernel.
    let mut out = unsafe { dev.alloc::<T>(numel)? };
    let func = dev.get_or_load_custom_func(&kernel_name::<T>("fused_affine_inv"), MODULE, PTX)?;
    let mut b = func.builder();
    b.arg(&yv).arg(&hv).arg(&sv).arg(&*mv).arg(&mut out);
    builder_arg!(b, numel, c, s);
    // SAFETY: argument list matches the kernel's signature.
    unsafe { b.launch(elementwise_cfg(numel)) }.w()?;
    drop(b);
    Ok(CudaStorage::wrap_cuda_slice(out, dev))
}

/// `(x, t)` -> `x + (1-b) t` (or `x - (1-b) t` when `inverse`).
pub(super) fn additive(
    x: &CudaStorage,
    lx: &Layout,
    t: &CudaStorage,
    lt: &Layout,
    mask: &Arc<[u8]>,
    inverse: bool,
    op: &str,
) -> Result<CudaStorage> {
    let dt = same_dtype(&[x, t], op)?;
    dispatch!(dt, additive_t(x, lx, t, lt, mask, inverse, op))
}

fn additive_t<T: Elem>(
    x: &CudaStorage,
    lx: &Layout,
    t: &CudaStorage,
    lt: &Layout,
    mask: &Arc<[u8]>,
    inverse: bool,
    op: &str,
) -> Result<CudaStorage> {
    let dev = x.device().clone();
    let (numel, d) = (lx.shape().elem_count(), mask.len());
    if numel == 0 || d == 0 {
        return Ok(CudaStorage::wrap_cuda_slice(
            dev.alloc_zeros::<T>(numel)?,
            dev,
        ));
    }
    let (xv, tv) = (view::<T>(x, lx, op)?, view::<T>(t, lt, op)?);
    let mv = device_mask(&dev, mask)?;
    // SAFETY: every element is written by the kernel.
    let mut out = unsafe { dev.alloc::<T>(numel)? };
    let func = dev.get_or_load_custom_func(&kernel_name::<T>("fused_additive"), MODULE, PTX)?;
    let mut b = func.builder();
    b.arg(&xv).arg(&tv).arg(&*mv).arg(&mut out);
    builder_arg!(b, numel, d, inverse as i32);
    // SAFETY: argument list matches the kernel's signature.
    unsafe { b.launch(elementwise_cfg(numel)) }.w()?;
    drop(b);
    Ok(CudaStorage::wrap_cuda_slice(out, dev))
}

/// `g` -> `(1-b) g`.
pub(super) fn additive_bwd(
    g: &CudaStorage,
    lg: &Layout,
    mask: &Arc<[u8]>,
    op: &str,
) -> Result<CudaStorage> {
    let dt = same_dtype(&[g], op)?;
    dispatch!(dt, additive_bwd_t(g, lg, mask, op))
}

fn additive_bwd_t<T: Elem>(
    g: &CudaStorage,
    lg: &Layout,
    mask: &Arc<[u8]>,
    op: &str,
) -> Result<CudaStorage> {
    let dev = g.device().clone();
    let (numel, d) = (lg.shape().elem_count(), mask.len());
    if numel == 0 || d == 0 {
        return Ok(CudaStorage::wrap_cuda_slice(
            dev.alloc_zeros::<T>(numel)?,
            dev,
        ));
    }
    let gv = view::<T>(g, lg, op)?;
    let mv = device_mask(&dev, mask)?;
    // SAFETY: every element is written by the kernel.
    let mut out = unsafe { dev.alloc::<T>(numel)? };
    let func = dev.get_or_load_custom_func(&kernel_name::<T>("fused_additive_bwd"), MODULE, PTX)?;
    let mut b = func.builder();
    b.arg(&gv).arg(&*mv).arg(&mut out);
    builder_arg!(b, numel, d);
    // SAFETY: argument list matches the kernel's signature.
    unsafe { b.launch(elementwise_cfg(numel)) }.w()?;
    drop(b);
    Ok(CudaStorage::wrap_cuda_slice(out, dev))
}
