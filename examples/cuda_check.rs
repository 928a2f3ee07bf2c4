//! Checks the CUDA kernels of the fused coupling ops on a GPU, then times them.
//!
//! For every mask kind and parity, affine and additive, f32 and f64, it compares the values
//! (`y`, `logdet`, the inverse) and the gradients (`x`, `h`, `scale`) of the fused op on CUDA
//! against the fused op on the CPU and against the reference chain of candle ops on CUDA, and
//! prints the largest absolute errors. An element passes when `|a - b| <= tol * max(1, |b|)`
//! (absolute for values up to 1, relative above), tol = 1e-5 for values and 1e-4 for gradients.
//! Then it times forward + backward of the fused op and of the reference chain on CUDA at batch
//! 64 for examples of shape (6, 32, 32) and (12, 16, 16). Exits 1 on any FAIL, 2 without a GPU.
//!
//!     ../shared/gpu/build-cuda.sh --release --features cuda --example cuda_check
//!     target/release/examples/cuda_check            (on the GPU machine)

use candle_core::{DType, Device, Result, Tensor, Var};
use flowc::exec::coupling::{
    additive_reference, additive_reference_inverse, affine_reference, affine_reference_inverse,
};
use flowc::exec::fused;
use flowc::exec::mask::Mask;
use flowc::ir::{self, MaskKind, Parity};
use std::time::Instant;

const TOL_VALUE: f64 = 1e-5;
const TOL_GRAD: f64 = 1e-4;

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Affine,
    Additive,
}

#[derive(Clone, Copy, PartialEq)]
enum Imp {
    Fused,
    Reference,
}

/// Inputs of one case, on the host (f64), moved to a device and dtype on demand.
struct Inputs {
    x: Tensor,
    h: Tensor,
    scale: Tensor,
    wy: Tensor,
    wl: Tensor,
}

impl Inputs {
    fn new(kind: Kind, n: usize, shape: &[usize]) -> Result<Self> {
        let cpu = Device::Cpu;
        let mut xs = vec![n];
        xs.extend_from_slice(shape);
        let mut hs = xs.clone();
        if kind == Kind::Affine {
            hs[1] *= 2;
        }
        Ok(Self {
            x: Tensor::randn(0f64, 1., xs.clone(), &cpu)?,
            h: Tensor::randn(0f64, 1., hs, &cpu)?,
            scale: Tensor::rand(0.5f64, 1.5, shape[0], &cpu)?,
            wy: Tensor::randn(0f64, 1., xs, &cpu)?,
            wl: Tensor::randn(0f64, 1., n, &cpu)?,
        })
    }
}

/// Everything compared between two runs, as host f64 vectors (named).
type Outputs = Vec<(&'static str, bool, Vec<f64>)>;

fn host(t: &Tensor) -> Result<Vec<f64>> {
    t.to_device(&Device::Cpu)?
        .to_dtype(DType::F64)?
        .flatten_all()?
        .to_vec1()
}

/// Values and gradients of `loss = sum(y * wy) + sum(logdet * wl)`, plus the inverse of `y`.
fn run(
    kind: Kind,
    imp: Imp,
    inp: &Inputs,
    mask: &Mask,
    dev: &Device,
    dtype: DType,
) -> Result<Outputs> {
    let on = |t: &Tensor| t.to_dtype(dtype)?.to_device(dev);
    let x = Var::from_tensor(&on(&inp.x)?)?;
    let h = Var::from_tensor(&on(&inp.h)?)?;
    let scale = Var::from_tensor(&on(&inp.scale)?)?;
    let (wy, wl) = (on(&inp.wy)?, on(&inp.wl)?);
    let (y, ld) = match (kind, imp) {
        (Kind::Affine, Imp::Fused) => fused::affine_coupling(&x, &h, &scale, mask)?,
        (Kind::Affine, Imp::Reference) => affine_reference(&x, &h, &scale, mask)?,
        (Kind::Additive, Imp::Fused) => fused::additive_coupling(&x, &h, mask)?,
        (Kind::Additive, Imp::Reference) => additive_reference(&x, &h, mask)?,
    };
    let loss = ((&y * &wy)?.sum_all()? + (&ld * &wl)?.sum_all()?)?;
    let grads = loss.backward()?;
    let inv = match (kind, imp) {
        (Kind::Affine, Imp::Fused) => fused::affine_coupling_inverse(&y, &h, &scale, mask)?,
        (Kind::Affine, Imp::Reference) => affine_reference_inverse(&y, &h, &scale, mask)?,
        (Kind::Additive, Imp::Fused) => fused::additive_coupling_inverse(&y, &h, mask)?,
        (Kind::Additive, Imp::Reference) => additive_reference_inverse(&y, &h, mask)?,
    };
    let grad = |v: &Var| -> Result<Vec<f64>> {
        match grads.get(v.as_tensor()) {
            Some(g) => host(g),
            None => candle_core::bail!("no gradient"),
        }
    };
    let mut out: Outputs = vec![
        ("y", false, host(&y)?),
        ("logdet", false, host(&ld)?),
        ("inverse", false, host(&inv)?),
        ("dx", true, grad(&x)?),
        ("dh", true, grad(&h)?),
    ];
    if kind == Kind::Affine {
        out.push(("dscale", true, grad(&scale)?));
    }
    Ok(out)
}

/// Compares `a` to the baseline `b`; prints one line; returns whether all passed.
fn compare(label: &str, a: &Outputs, b: &Outputs, x: &Tensor) -> Result<bool> {
    let mut ok = true;
    let mut parts = Vec::new();
    for ((name, is_grad, va), (_, _, vb)) in a.iter().zip(b) {
        let tol = if *is_grad { TOL_GRAD } else { TOL_VALUE };
        let (mut max_abs, mut pass) = (0f64, va.len() == vb.len());
        for (&p, &q) in va.iter().zip(vb) {
            let e = (p - q).abs();
            max_abs = max_abs.max(e);
            if e.is_nan() || e > tol * q.abs().max(1.0) {
                pass = false;
            }
        }
        ok &= pass;
        parts.push(format!(
            "{name} {max_abs:.1e}{}",
            if pass { "" } else { " (FAIL)" }
        ));
    }
    // The inverse must also give back x.
    let xh = host(x)?;
    let inv = &a.iter().find(|o| o.0 == "inverse").unwrap().2;
    let rt = inv
        .iter()
        .zip(&xh)
        .map(|(p, q)| (p - q).abs())
        .fold(0f64, f64::max);
    let rt_ok = inv
        .iter()
        .zip(&xh)
        .all(|(p, q)| (p - q).abs() <= 1e-4 * q.abs().max(1.0));
    ok &= rt_ok;
    println!(
        "{} {label}: {} | roundtrip {rt:.1e}",
        if ok { "PASS" } else { "FAIL" },
        parts.join(", ")
    );
    Ok(ok)
}

fn check_all(dev: &Device) -> Result<bool> {
    let cases: &[(MaskKind, &[usize])] = &[
        (MaskKind::Checkerboard, &[3, 8, 8]), // rows of 64: one block per row
        (MaskKind::Checkerboard, &[2, 5, 7]), // rows of 35, odd sizes
        (MaskKind::Checkerboard, &[4, 4, 4]), // rows of 16: one thread per row
        (MaskKind::Checkerboard, &[6, 32, 32]), // rows of 1024
        (MaskKind::Channel, &[4, 6, 6]),
        (MaskKind::Channel, &[12, 16, 16]),
        (MaskKind::Channel, &[2, 3, 3]),
        (MaskKind::Alternate, &[7]),
        (MaskKind::Alternate, &[64]),
        (MaskKind::Half, &[9]),
        (MaskKind::Half, &[100]),
    ];
    let mut all = true;
    for &(mk, shape) in cases {
        for parity in [Parity::Even, Parity::Odd] {
            for kind in [Kind::Affine, Kind::Additive] {
                for dtype in [DType::F32, DType::F64] {
                    let n = 5;
                    let inp = Inputs::new(kind, n, shape)?;
                    let mask_gpu = Mask::new(ir::Mask::new(mk, parity), shape, dtype, dev)?;
                    let mask_cpu =
                        Mask::new(ir::Mask::new(mk, parity), shape, dtype, &Device::Cpu)?;
                    let gpu = run(kind, Imp::Fused, &inp, &mask_gpu, dev, dtype)?;
                    let cpu = run(kind, Imp::Fused, &inp, &mask_cpu, &Device::Cpu, dtype)?;
                    let reference = run(kind, Imp::Reference, &inp, &mask_gpu, dev, dtype)?;
                    let label = format!(
                        "{} {mk:?}({parity:?}) {shape:?} {dtype:?} n={n}",
                        match kind {
                            Kind::Affine => "affine",
                            Kind::Additive => "additive",
                        }
                    );
                    let x = inp.x.to_dtype(dtype)?;
                    all &= compare(&format!("{label} cuda-fused vs cpu-fused"), &gpu, &cpu, &x)?;
                    all &= compare(
                        &format!("{label} cuda-fused vs cuda-reference"),
                        &gpu,
                        &reference,
                        &x,
                    )?;
                }
            }
        }
    }
    Ok(all)
}

/// Seconds per forward + backward (mean over `iters`, after warm-up).
fn time_step(kind: Kind, imp: Imp, inp: &Inputs, mask: &Mask, dev: &Device) -> Result<f64> {
    let on = |t: &Tensor| t.to_dtype(DType::F32)?.to_device(dev);
    let x = Var::from_tensor(&on(&inp.x)?)?;
    let h = Var::from_tensor(&on(&inp.h)?)?;
    let scale = Var::from_tensor(&on(&inp.scale)?)?;
    let (wy, wl) = (on(&inp.wy)?, on(&inp.wl)?);
    let step = || -> Result<()> {
        let (y, ld) = match (kind, imp) {
            (Kind::Affine, Imp::Fused) => fused::affine_coupling(&x, &h, &scale, mask)?,
            (Kind::Affine, Imp::Reference) => affine_reference(&x, &h, &scale, mask)?,
            (Kind::Additive, Imp::Fused) => fused::additive_coupling(&x, &h, mask)?,
            (Kind::Additive, Imp::Reference) => additive_reference(&x, &h, mask)?,
        };
        let loss = ((&y * &wy)?.sum_all()? + (&ld * &wl)?.sum_all()?)?;
        let _grads = loss.backward()?;
        Ok(())
    };
    for _ in 0..10 {
        step()?;
    }
    dev.synchronize()?;
    let iters = 100;
    let t0 = Instant::now();
    for _ in 0..iters {
        step()?;
    }
    dev.synchronize()?;
    Ok(t0.elapsed().as_secs_f64() / iters as f64)
}

fn bench(dev: &Device) -> Result<()> {
    let n = 64;
    println!(
        "\nforward+backward, batch {n}, f32, checkerboard(even); loss = sum(y*w) + sum(logdet*v)"
    );
    for shape in [[6usize, 32, 32], [12, 16, 16]] {
        let mask = Mask::new(
            ir::Mask::Checkerboard(Parity::Even),
            &shape,
            DType::F32,
            dev,
        )?;
        for kind in [Kind::Affine, Kind::Additive] {
            let inp = Inputs::new(kind, n, &shape)?;
            let tf = time_step(kind, Imp::Fused, &inp, &mask, dev)?;
            let tr = time_step(kind, Imp::Reference, &inp, &mask, dev)?;
            println!(
                "{:<8} {shape:?}: fused {:8.1} us/step ({:9.0} examples/s) | reference {:8.1} us/step ({:9.0} examples/s) | speed-up {:.2}x",
                match kind {
                    Kind::Affine => "affine",
                    Kind::Additive => "additive",
                },
                tf * 1e6,
                n as f64 / tf,
                tr * 1e6,
                n as f64 / tr,
                tr / tf
            );
        }
    }
    Ok(())
}

fn main() {
    let dev = match Device::new_cuda(0) {
        Ok(d) => d,
        Err(e) => {
            eprintln!(
                "cuda_check: no CUDA device ({e}); build with --features cuda and run on a GPU"
            );
            std::process::exit(2);
        }
    };
    println!(
        "cuda_check: fused coupling ops, CUDA vs CPU and vs the CUDA reference chain \
         (tol: values {TOL_VALUE:e}, grads {TOL_GRAD:e}, relative above 1)"
    );
    let ok = match check_all(&dev) {
        Ok(ok) => ok,
        Err(e) => {
            eprintln!("FAIL: error during checks: {e}");
            false
        }
    };
    if let Err(e) = bench(&dev) {
        eprintln!("benchmark error: {e}");
        std::process::exit(1);
    }
    if ok {
        println!("\ncuda_check: ALL PASS");
    } else {
        println!("\ncuda_check: SOME CHECKS FAILED");
        std::process::exit(1);
    }
}
