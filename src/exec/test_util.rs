//! Test helpers: random tensors, parameter randomization, round-trip and log-det checks
//! (Jacobian by central finite differences in f64, log |det| by an independent small LU).

use super::FlowLayer;
use candle_core::{DType, Device, Result, Tensor};
use candle_nn::VarMap;

thread_local! {
    /// The draws of [`randn`] and [`randomize`]. Seeded: the test harness
    /// runs each test on a thread of its own, so a test draws the same
    /// values every run, and a failure can be run again.
    static DRAWS: std::cell::RefCell<crate::train::rng::Rng> =
        std::cell::RefCell::new(crate::train::rng::Rng::new(0x7e57_5eed));
}

/// `N(0, std^2)` values of `shape`, in f64 on the CPU.
fn normal(shape: &[usize], std: f64) -> Result<Tensor> {
    let len = shape.iter().product();
    let v: Vec<f64> = DRAWS.with(|r| {
        let mut r = r.borrow_mut();
        (0..len).map(|_| r.normal() * std).collect()
    });
    Tensor::from_vec(v, shape, &Device::Cpu)
}

/// Standard normal tensor on the CPU.
pub fn randn(shape: &[usize], dtype: DType) -> Result<Tensor> {
    normal(shape, 1.0)?.to_dtype(dtype)
}

/// Overwrites every `Var` of the map with `N(0, std^2)` values (including zero-initialized
/// output layers, scales and log-scales), so no layer is trivially the identity.
pub fn randomize(vm: &VarMap, std: f64) -> Result<()> {
    // In name order: the map's own order changes from run to run.
    let mut vars: Vec<_> = vm
        .data()
        .lock()
        .expect("varmap")
        .clone()
        .into_iter()
        .collect();
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    for (_, var) in vars {
        let t = normal(var.dims(), std)?
            .to_dtype(var.dtype())?
            .to_device(var.device())?;
        var.set(&t)?;
    }
    Ok(())
}

pub fn max_abs(t: &Tensor) -> Result<f64> {
    if t.elem_count() == 0 {
        return Ok(0.0);
    }
    t.to_dtype(DType::F64)?
        .abs()?
        .flatten_all()?
        .max(0)?
        .to_scalar::<f64>()
}

pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> Result<f64> {
    assert_eq!(a.dims(), b.dims(), "shape mismatch");
    max_abs(&(a.to_dtype(DType::F64)? - b.to_dtype(DType::F64)?)?)
}

/// `max |a - b| / max(1, |b|)` elementwise.
pub fn max_rel_diff(a: &Tensor, b: &Tensor) -> Result<f64> {
    assert_eq!(a.dims(), b.dims(), "shape mismatch");
    let a: Vec<f64> = a.to_dtype(DType::F64)?.flatten_all()?.to_vec1()?;
    let b: Vec<f64> = b.to_dtype(DType::F64)?.flatten_all()?.to_vec1()?;
    Ok(a.iter()
        .zip(&b)
        .map(|(x, y)| (x - y).abs() / y.abs().max(1.0))
        .fold(0.0, f64::max))
}

/// Asserts `inverse(forward(x, eval)) == x` within `tol` (max abs), and that the layer is not
/// the identity when input and output shapes agree. Returns `y`.
pub fn check_roundtrip<L: FlowLayer + ?Sized>(layer: &L, x: &Tensor, tol: f64) -> Result<Tensor> {
    let (y, ld) = layer.forward(x, None, false)?;
    assert_eq!(ld.dims(), &[x.dim(0)?]);
    let x2 = layer.inverse(&y, None)?;
    let err = max_abs_diff(&x2, x)?;
    assert!(err <= tol, "round-trip error {err} > {tol}");
    if y.dims() == x.dims() {
        assert!(
            max_abs_diff(&y, x)? > 1e-3,
            "layer is (nearly) the identity"
        );
    }
    Ok(y)
}

/// `log |det a|` of a row-major `n x n` matrix by LU with partial pivoting
/// (deliberately independent of `crate::exec::linalg`).
pub fn log_abs_det(a: &[f64], n: usize) -> f64 {
    let mut m = a.to_vec();
    let mut acc = 0.0;
    for k in 0..n {
        let p = (k..n)
            .max_by(|&i, &j| m[i * n + k].abs().total_cmp(&m[j * n + k].abs()))
            .unwrap();
        for j in 0..n {
            m.swap(k * n + j, p * n + j);
        }
        let piv = m[k * n + k];
        assert!(piv != 0.0, "singular Jacobian");
        acc += piv.abs().ln();
        for i in k + 1..n {
            let f = m[i * n + k] / piv;
            for j in k..n {
                m[i * n + j] -= f * m[k * n + j];
            }
        }
    }
    acc
}

/// Jacobian (row-major, `out x in`) of `f` at `x` by central differences.
pub fn jacobian_fd(
    f: &dyn Fn(&[f64]) -> Result<Vec<f64>>,
    x: &[f64],
    eps: f64,
) -> Result<Vec<f64>> {
    let d = x.len();
    let mut cols = Vec::with_capacity(d);
    let mut xp = x.to_vec();
    for j in 0..d {
        xp[j] = x[j] + eps;
        let fp = f(&xp)?;
        xp[j] = x[j] - eps;
        let fm = f(&xp)?;
        xp[j] = x[j];
        cols.push(
            fp.iter()
                .zip(&fm)
                .map(|(a, b)| (a - b) / (2.0 * eps))
                .collect::<Vec<_>>(),
        );
    }
    let m = cols[0].len();
    assert_eq!(m, d, "Jacobian must be square");
    let mut jac = vec![0.0; m * d];
    for (j, col) in cols.iter().enumerate() {
        for (i, v) in col.iter().enumerate() {
            jac[i * d + j] = *v;
        }
    }
    Ok(jac)
}

/// Asserts that the layer's per-example log-det equals `log |det J|` of the per-example
/// Jacobian (f64 central differences, step 1e-5) to 1e-3 relative (plus 1e-6 absolute, for
/// log-dets that are exactly 0).
/// Eval mode examines each example of the batch; train mode requires a batch of one (so the
/// Jacobian includes the dependence through batch statistics).
pub fn check_logdet<L: FlowLayer + ?Sized>(layer: &L, x: &Tensor, train: bool) -> Result<Vec<f64>> {
    assert_eq!(x.dtype(), DType::F64);
    if train {
        assert_eq!(
            x.dim(0)?,
            1,
            "train-mode Jacobian check needs a batch of one"
        );
    }
    let (_, ld) = layer.forward(x, None, train)?;
    let ld: Vec<f64> = ld.to_vec1()?;
    let ex_shape: Vec<usize> = std::iter::once(1)
        .chain(x.dims()[1..].iter().copied())
        .collect();
    let f = |v: &[f64]| -> Result<Vec<f64>> {
        let t = Tensor::from_vec(v.to_vec(), ex_shape.as_slice(), &Device::Cpu)?;
        layer.forward(&t, None, train)?.0.flatten_all()?.to_vec1()
    };
    let mut refs = vec![];
    for (n, &got) in ld.iter().enumerate() {
        let xn: Vec<f64> = x.narrow(0, n, 1)?.flatten_all()?.to_vec1()?;
        let jac = jacobian_fd(&f, &xn, 1e-5)?;
        let want = log_abs_det(&jac, xn.len());
        assert!(
            (got - want).abs() <= 1e-3 * want.abs() + 1e-6,
            "example {n}: logdet {got} vs log|det J| {want}"
        );
        refs.push(want);
    }
    Ok(refs)
}
