//! `flowc check --numeric`: run the user's own flow with random parameters and
//! measure what the compiler promises, the round trip `f^-1(f(x)) = x` and the
//! log-determinant against `log|det J|` of a finite-difference Jacobian.
//!
//! It takes a compiled plan; for inputs too large to form J, the front end
//! first downsizes the flow (`crate::downsize`: same layers, smaller
//! `input`).

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use serde::Serialize;

use super::linalg::Lu;
use super::Flow;
use crate::plan::Plan;
use crate::shape::Shape;

/// Round-trip error allowed in f32.
pub const ROUNDTRIP_BOUND: f64 = 1e-4;
/// Relative log-det error allowed against the Jacobian.
pub const LOGDET_BOUND: f64 = 1e-3;

#[derive(Clone, Debug, Serialize)]
pub struct NumericReport {
    /// Max |x - f^-1(f(x))| over a batch, f32.
    pub roundtrip_max_abs: f64,
    /// Max over examples of |logdet - log|det J|| / max(1, |log|det J||), f64.
    pub logdet_max_rel: f64,
    /// The input shape the checks ran on (downsized where needed).
    pub shape: Shape,
}

impl NumericReport {
    pub fn within_bounds(&self) -> bool {
        self.roundtrip_max_abs < ROUNDTRIP_BOUND && self.logdet_max_rel < LOGDET_BOUND
    }
}

/// Standard deviation of the noise added to every parameter.
pub const NOISE: f64 = 0.02;
/// Learned layers up to which the noise is [`NOISE`]; deeper flows get less.
pub const NOISE_DEPTH: usize = 64;

/// The noise for a plan. Each learned layer's map is the identity plus terms
/// of the size of the noise; over `L` layers of independent noise, the log-det
/// and the log of the values' growth wander like `sqrt(L)` times that. At
/// 0.02 a 20,000-coupling flow's values overflow f32 (round trip NaN), so
/// past [`NOISE_DEPTH`] layers the noise shrinks as `1/sqrt(L)`: every flow
/// is then as far from the identity as a 64-layer one, and no layer is the
/// identity.
pub fn noise_std(plan: &Plan) -> f64 {
    let learned = plan
        .forward
        .iter()
        .filter(|s| s.op.layer().is_some())
        .count();
    NOISE * (NOISE_DEPTH as f64 / learned.max(1) as f64).sqrt().min(1.0)
}

/// Adds N(0, std²) noise to every variable.
pub fn randomize(vm: &VarMap, std: f64) -> candle_core::Result<()> {
    for var in vm.all_vars() {
        let noise = var.randn_like(0.0, std)?;
        var.set(&(var.as_tensor() + noise)?)?;
    }
    Ok(())
}

fn build(plan: &Plan, dtype: DType) -> candle_core::Result<Flow> {
    let vm = VarMap::new();
    let flow = Flow::new(
        plan,
        VarBuilder::from_varmap(&vm, dtype, &Device::Cpu),
        &Device::Cpu,
    )?;
    randomize(&vm, noise_std(plan))?;
    Ok(flow)
}

fn sample_input(shape: Shape, n: usize, dtype: DType) -> candle_core::Result<Tensor> {
    let mut dims = vec![n];
    dims.extend(shape.dims().iter().map(|&d| d as usize));
    let x = if shape.is_image() {
        Tensor::rand(0.05f32, 0.95, dims, &Device::Cpu)?
    } else {
        Tensor::randn(0f32, 1., dims, &Device::Cpu)?
    };
    x.to_dtype(dtype)
}

fn flat(latents: &[Tensor]) -> candle_core::Result<Tensor> {
    let parts = latents
        .iter()
        .map(|z| z.flatten_from(1))
        .collect::<candle_core::Result<Vec<_>>>()?;
    Tensor::cat(&parts, 1)
}

/// Runs both checks on a plan (on a thread with a stack for the flow's
/// depth, see [`super::stack`]); the Jacobian is `D x D` for `D` values
/// per example of its input.
pub fn measure(plan: &Plan) -> candle_core::Result<NumericReport> {
    let shape = plan.input;
    super::with_stack_for(plan, || {
        let roundtrip_max_abs = roundtrip(plan, shape)?;
        let logdet_max_rel = logdet_error(plan, shape)?;
        Ok(NumericReport {
            roundtrip_max_abs,
            logdet_max_rel,
            shape,
        })
    })
}

/// Max |x - f^-1(f(x))| over a batch of 8, in f32.
fn roundtrip(plan: &Plan, shape: Shape) -> candle_core::Result<f64> {
    let flow = build(plan, DType::F32)?;
    let x = sample_input(shape, 8, DType::F32)?;
    // A conditioned flow: the examples' labels cycle through its classes.
    let given = flow.labels_if_given(8, |i| i as u32)?;
    let (z, _) = flow.forward_given(&x, given.as_ref(), false)?;
    let back = flow.inverse_given(&z, given.as_ref())?;
    let max: f32 = (back - &x)?.abs()?.flatten_all()?.max(0)?.to_scalar()?;
    Ok(max as f64)
}

/// Max relative error of the log-det against log|det J| of a central
/// finite-difference Jacobian, over two examples, in f64.
fn logdet_error(plan: &Plan, shape: Shape) -> candle_core::Result<f64> {
    let flow = build(plan, DType::F64)?;
    let d = shape.size() as usize;
    let h = 1e-6;
    let eye = (Tensor::eye(d, DType::F64, &Device::Cpu)? * h)?;
    let mut logdet_max_rel: f64 = 0.0;
    for k in 0..2 {
        let x = sample_input(shape, 1, DType::F64)?;
        // A conditioned flow: example k of class k, its d shifted copies too.
        let one = flow.labels_if_given(1, |_| k)?;
        let all = flow.labels_if_given(d, |_| k)?;
        let (_, logdet) = flow.forward_given(&x, one.as_ref(), false)?;
        let logdet: f64 = logdet.get(0)?.to_scalar()?;
        let base = x.flatten_all()?.unsqueeze(0)?.broadcast_as((d, d))?;
        let dims: Vec<usize> = std::iter::once(d)
            .chain(x.dims()[1..].iter().copied())
            .collect();
        let plus = (&base + &eye)?.reshape(dims.clone())?;
        let minus = (&base - &eye)?.reshape(dims)?;
        let jt = ((flat(&flow.forward_given(&plus, all.as_ref(), false)?.0)?
            - flat(&flow.forward_given(&minus, all.as_ref(), false)?.0)?)?
            / (2.0 * h))?;
        let j: Vec<f64> = jt.flatten_all()?.to_vec1()?;
        let reference = Lu::new(&j, d).map_or(f64::NEG_INFINITY, |lu| lu.log_abs_det());
        let rel = (logdet - reference).abs() / reference.abs().max(1.0);
        logdet_max_rel = logdet_max_rel.max(if rel.is_finite() { rel } else { f64::INFINITY });
    }
    Ok(logdet_max_rel)
}
