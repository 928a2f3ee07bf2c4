//! Tests of the rational-quadratic spline (`exec/spline.rs`) and of spline
//! couplings: against a plain scalar evaluation of the paper's formulas,
//! finite differences, round trips over and outside the interval, on knots,
//! for extreme raw parameters, exactness of the identity, gradients.

use super::coupling::{Coupling, CouplingConfig, CouplingImpl};
use super::spline::{Spline, MIN};
use super::test_util::*;
use super::FlowLayer;
use crate::ir::{self, CouplingKind, NetKind, Parity};
use candle_core::{DType, Device, Result, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};
use proptest::prelude::*;

/// The knots `(x, y, d)` of one value, from its raw parameters, in plain f64.
fn knots(raw: &[f64], n: usize, b: f64) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let pos = |u: &[f64]| {
        let m = u.iter().cloned().fold(f64::MIN, f64::max);
        let e: Vec<f64> = u.iter().map(|v| (v - m).exp()).collect();
        let sum: f64 = e.iter().sum();
        let mut k = vec![-b];
        let mut acc = 0.0;
        for v in &e[..n - 1] {
            acc += MIN + (1.0 - MIN * n as f64) * v / sum;
            k.push(-b + 2.0 * b * acc);
        }
        k.push(b);
        k
    };
    let softplus = |u: f64| u.max(0.0) + (-u.abs()).exp().ln_1p();
    let mut d = vec![1.0];
    d.extend(
        raw[2 * n..]
            .iter()
            .map(|&u| MIN + (1.0 - MIN) * softplus(u) / std::f64::consts::LN_2),
    );
    d.push(1.0);
    (pos(&raw[..n]), pos(&raw[n..2 * n]), d)
}

/// `(y, dy/dx)` by the paper's formulas, written out for one value.
fn reference(x: f64, raw: &[f64], n: usize, b: f64) -> (f64, f64) {
    if x.abs() > b {
        return (x, 1.0);
    }
    let (xs, ys, d) = knots(raw, n, b);
    let k = xs[1..n].iter().filter(|&&k| x >= k).count();
    let (w, h) = (xs[k + 1] - xs[k], ys[k + 1] - ys[k]);
    let (s, xi) = (h / w, (x - xs[k]) / w);
    let t = xi * (1.0 - xi);
    let den = s + (d[k + 1] + d[k] - 2.0 * s) * t;
    let y = ys[k] + h * (s * xi * xi + d[k] * t) / den;
    let num = d[k + 1] * xi * xi + 2.0 * s * t + d[k] * (1.0 - xi) * (1.0 - xi);
    (y, s * s * num / (den * den))
}

/// `m` rows of `3n - 1` raw parameters and the tensor holding them.
fn raw_rows(m: usize, n: usize, std: f64, dtype: DType) -> Result<(Vec<Vec<f64>>, Tensor)> {
    let t = (randn(&[m, 3 * n - 1], DType::F64)? * std)?;
    let rows: Vec<Vec<f64>> = t.to_vec2()?;
    Ok((rows, t.to_dtype(dtype)?))
}

fn column(v: &[f64], dtype: DType) -> Result<Tensor> {
    Tensor::from_vec(v.to_vec(), v.len(), &Device::Cpu)?.to_dtype(dtype)
}

fn values(t: &Tensor) -> Result<Vec<f64>> {
    t.to_dtype(DType::F64)?.flatten_all()?.to_vec1()
}

#[test]
fn matches_the_papers_formulas() -> Result<()> {
    for (n, b) in [(2, 1.0), (8, 3.0), (17, 0.5)] {
        let spline = Spline { bins: n, bound: b };
        let (rows, p) = raw_rows(400, n, 1.5, DType::F64)?;
        let xs: Vec<f64> = (0..400)
            .map(|i| -1.2 * b + 2.4 * b * i as f64 / 399.0)
            .collect();
        let (y, log) = spline.forward(&column(&xs, DType::F64)?, &p)?;
        let (y, log) = (values(&y)?, values(&log)?);
        for i in 0..xs.len() {
            let (ry, rd) = reference(xs[i], &rows[i], n, b);
            assert!(
                (y[i] - ry).abs() < 1e-12 * b,
                "n {n} x {}: {} vs {ry}",
                xs[i],
                y[i]
            );
            assert!(
                (log[i] - rd.ln()).abs() < 1e-10,
                "n {n} x {}: log slope",
                xs[i]
            );
        }
    }
    Ok(())
}

#[test]
fn log_slope_matches_finite_differences() -> Result<()> {
    let (n, b) = (6, 2.0);
    let spline = Spline { bins: n, bound: b };
    let (_, p) = raw_rows(300, n, 2.0, DType::F64)?;
    let xs: Vec<f64> = (0..300)
        .map(|i| -2.5 + 5.0 * (i as f64 + 0.37) / 300.0)
        .collect();
    let eps = 1e-6;
    let at = |dx: f64| -> Result<Vec<f64>> {
        let v: Vec<f64> = xs.iter().map(|x| x + dx).collect();
        values(&spline.forward(&column(&v, DType::F64)?, &p)?.0)
    };
    let (up, down) = (at(eps)?, at(-eps)?);
    let log = values(&spline.forward(&column(&xs, DType::F64)?, &p)?.1)?;
    for i in 0..xs.len() {
        let fd = ((up[i] - down[i]) / (2.0 * eps)).ln();
        // a knot within eps makes the difference straddle two bins
        let (kx, _, _) = knots(&values(&p.narrow(0, i, 1)?)?, n, b);
        if kx.iter().any(|k| (k - xs[i]).abs() < 10.0 * eps) {
            continue;
        }
        assert!(
            (log[i] - fd).abs() < 1e-3 * fd.abs().max(1.0),
            "x {}: {} vs {fd}",
            xs[i],
            log[i]
        );
    }
    Ok(())
}

#[test]
fn zero_parameters_are_exactly_the_identity() -> Result<()> {
    for dtype in [DType::F32, DType::F64] {
        for (n, b) in [(2, 3.0), (8, 3.0), (999, 0.5), (5, 7.25)] {
            let spline = Spline { bins: n, bound: b };
            let mut xs: Vec<f64> = (0..201)
                .map(|i| -2.0 * b + 4.0 * b * i as f64 / 200.0)
                .collect();
            xs.extend([-b, b, 0.0, 1e-30, -1e-30]);
            let x = column(&xs, dtype)?;
            let p = Tensor::zeros((xs.len(), 3 * n - 1), dtype, &Device::Cpu)?;
            let (y, log) = spline.forward(&x, &p)?;
            assert_eq!(values(&y)?, values(&x)?, "{dtype:?} n {n}");
            assert!(values(&log)?.iter().all(|&l| l == 0.0), "{dtype:?} n {n}");
            assert!(max_abs_diff(&spline.inverse(&y, &p)?, &x)? <= 1e-6 * b);
        }
    }
    Ok(())
}

/// Inputs on every knot, just beside them, at and beyond `+-B`, up to `10B`.
fn awkward_inputs(rows: &[Vec<f64>], n: usize, b: f64) -> Vec<(usize, f64)> {
    let mut out = vec![];
    for (r, raw) in rows.iter().enumerate() {
        let (xs, _, _) = knots(raw, n, b);
        for k in &xs {
            out.extend([(r, *k), (r, k + 1e-7 * b), (r, k - 1e-7 * b)]);
        }
        out.extend([(r, 10.0 * b), (r, -10.0 * b), (r, 1.0001 * b), (r, 0.0)]);
    }
    out
}

/// The round trip's largest error beyond what the dtype can resolve: at
/// each input, the smaller of the error over 1e-4 and the inverse's
/// backward error (`|f(f^-1(y)) - y|`, all in the dtype) over
/// `64 eps max(B, |y|)`; and the plain error, max |x - f^-1(f(x))|. The
/// first is at most 1 where the inverse is within 1e-4 of `x`, or the
/// exact inverse of a `y` within rounding of the computed one (where the
/// spline is too flat for the dtype to tell `x` from its neighbours).
/// Panics on any value, log slope or inverse that is not finite.
fn round_trip(
    spline: Spline,
    rows: &[Vec<f64>],
    x: &[(usize, f64)],
    dtype: DType,
) -> Result<(f64, f64)> {
    let k = spline.params();
    let p: Vec<f64> = x.iter().flat_map(|&(r, _)| rows[r].clone()).collect();
    let p = Tensor::from_vec(p, (x.len(), k), &Device::Cpu)?;
    let xs: Vec<f64> = x.iter().map(|v| v.1).collect();
    let (p, xt) = (p.to_dtype(dtype)?, column(&xs, dtype)?);
    let (y, log) = spline.forward(&xt, &p)?;
    let back = spline.inverse(&y, &p)?;
    for v in [&y, &log, &back] {
        assert!(
            values(v)?.iter().all(|v| v.is_finite()),
            "{spline:?} {dtype:?}"
        );
    }
    let (want, got) = (values(&y)?, values(&spline.forward(&back, &p)?.0)?);
    let eps = if dtype == DType::F32 {
        f32::EPSILON as f64
    } else {
        f64::EPSILON
    };
    let back = values(&back)?;
    let (mut worst, mut plain) = (0.0f64, 0.0f64);
    for i in 0..xs.len() {
        let forward = (back[i] - xs[i]).abs() / 1e-4;
        let backward = (got[i] - want[i]).abs() / (64.0 * eps * spline.bound.max(want[i].abs()));
        let e = forward.min(backward);
        if e > 1.0 {
            let raw = &rows[x[i].0];
            eprintln!(
                "{spline:?} {dtype:?} x {} back {} raw {raw:?}",
                xs[i], back[i]
            );
        }
        worst = worst.max(e);
        plain = plain.max((back[i] - xs[i]).abs());
    }
    Ok((worst, plain))
}

#[test]
fn round_trips_on_knots_outside_and_for_extreme_parameters() -> Result<()> {
    let b = 3.0;
    for n in [2, 8, 64] {
        let spline = Spline { bins: n, bound: b };
        let (rows, _) = raw_rows(20, n, 1.0, DType::F64)?;
        let x = awkward_inputs(&rows, n, b);
        // moderate parameters (raw ~ N(0, 1)): f64 within 1e-10 outright
        let (_, err) = round_trip(spline, &rows, &x, DType::F64)?;
        assert!(err < 1e-10, "n {n} f64: {err}");
        assert!(
            round_trip(spline, &rows, &x, DType::F32)?.0 <= 1.0,
            "n {n} f32"
        );
        let mut rows = raw_rows(20, n, 5.0, DType::F64)?.0;
        // extreme raw outputs: sign patterns of +-50 and +-1e4
        for big in [50.0, 1e4] {
            for pattern in 0..8u32 {
                let row: Vec<f64> = (0..3 * n - 1)
                    .map(|j| {
                        if (pattern >> (j % 3)) & 1 == 1 {
                            big
                        } else {
                            -big
                        }
                    })
                    .collect();
                rows.push(row);
            }
        }
        let x = awkward_inputs(&rows, n, b);
        let (_, err) = round_trip(spline, &rows, &x, DType::F64)?;
        assert!(err < 1e-4, "n {n} extreme f64: {err}");
        assert!(
            round_trip(spline, &rows, &x, DType::F32)?.0 <= 1.0,
            "n {n} extreme f32"
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    /// Random widths, heights and slopes (raw values up to 4e4 in size),
    /// `|x| <= 10B`: never a NaN or an infinity, in f32 or f64. In f64 the
    /// round trip is within 1e-4 outright for raw values up to 400, and
    /// within 1e-4 or exact to rounding in `y` (`round_trip`) up to 4e4
    /// (slopes of `s^2 / d`, ~1e-11, leave even f64 short of resolving `x`
    /// to 1e-4 when B is near 20); in f32 within 1e-4 or exact to rounding
    /// in `y` for raw values up to 50 (past that a bin can be flatter than
    /// f32 resolves, and its inverse lands at the bin's end).
    #[test]
    fn random_splines_round_trip(
        n in 2usize..24,
        b in 0.1f64..20.0,
        raw in prop::collection::vec((-4.0f64..4.0, 0u8..3), 24 * 3),
        xs in prop::collection::vec(-10.0f64..10.0, 16),
    ) {
        let spline = Spline { bins: n, bound: b };
        let raw: Vec<f64> = raw
            .iter()
            .take(3 * n - 1)
            .map(|&(v, e)| v * 10f64.powi(e as i32 * 2))
            .collect();
        let xs: Vec<f64> = xs.iter().map(|v| v * b).collect();
        let x: Vec<(usize, f64)> = xs.iter().map(|&v| (0, v)).collect();
        let clamp = |m: f64| [raw.iter().map(|v| v.clamp(-m, m)).collect::<Vec<f64>>()];
        prop_assert!(round_trip(spline, &clamp(400.0), &x, DType::F64).unwrap().1 < 1e-4);
        prop_assert!(round_trip(spline, &clamp(50.0), &x, DType::F32).unwrap().0 <= 1.0);
        let rows = [raw];
        prop_assert!(round_trip(spline, &rows, &x, DType::F64).unwrap().0 <= 1.0);
        round_trip(spline, &rows, &x, DType::F32).unwrap(); // finite
    }
}

fn spline_config(mask: ir::Mask, net: NetKind, bins: u64) -> CouplingConfig {
    CouplingConfig {
        kind: CouplingKind::Spline { bins, bound: 2.0 },
        mask,
        net,
        imp: CouplingImpl::Fused,
    }
}

/// Spline couplings on images (resnet) and vectors (mlp), every parity.
fn configs() -> Vec<(Vec<usize>, CouplingConfig)> {
    let res = NetKind::Resnet {
        blocks: 1,
        features: 4,
    };
    let mlp = NetKind::Mlp {
        hidden: 8,
        layers: 2,
    };
    let mut out = vec![];
    for p in [Parity::Even, Parity::Odd] {
        out.push((
            vec![2, 4, 4],
            spline_config(ir::Mask::Checkerboard(p), res, 4),
        ));
        out.push((vec![4, 2, 3], spline_config(ir::Mask::Channel(p), res, 3)));
        out.push((vec![5], spline_config(ir::Mask::Alternate(p), mlp, 8)));
        out.push((vec![6], spline_config(ir::Mask::Half(p), mlp, 2)));
    }
    out
}

#[test]
fn fresh_spline_couplings_are_exactly_the_identity() -> Result<()> {
    for dtype in [DType::F32, DType::F64] {
        for (shape, cfg) in configs() {
            let vm = VarMap::new();
            let layer = Coupling::new(
                &shape,
                &cfg,
                0,
                VarBuilder::from_varmap(&vm, dtype, &Device::Cpu),
            )?;
            let mut dims = vec![3];
            dims.extend(&shape);
            let x = (randn(&dims, dtype)? * 3.0)?;
            for train in [false, true] {
                let (y, ld) = layer.forward(&x, None, train)?;
                assert_eq!(values(&y)?, values(&x)?, "{cfg:?}");
                assert!(values(&ld)?.iter().all(|&l| l == 0.0), "{cfg:?}");
            }
        }
    }
    Ok(())
}

#[test]
fn spline_couplings_round_trip_and_match_the_jacobian() -> Result<()> {
    for (shape, cfg) in configs() {
        let mut dims = vec![2];
        dims.extend(&shape);
        for dtype in [DType::F32, DType::F64] {
            let vm = VarMap::new();
            let layer = Coupling::new(
                &shape,
                &cfg,
                0,
                VarBuilder::from_varmap(&vm, dtype, &Device::Cpu),
            )?;
            randomize(&vm, 0.1)?;
            let x = (randn(&dims, dtype)? * 1.5)?;
            let tol = if dtype == DType::F32 { 1e-4 } else { 1e-10 };
            check_roundtrip(&layer, &x, tol)?;
            if dtype == DType::F64 {
                check_logdet(&layer, &x, false)?;
            }
        }
    }
    Ok(())
}

/// A ResNet's biases whose every path to the output passes a batch norm:
/// the input convolution's and each block's two (the block output is the
/// next batch norm's input); only the output convolution's reaches the
/// output directly.
fn before_a_batch_norm(name: &str) -> bool {
    name.ends_with(".bias") && (name.contains(".in_conv.") || name.contains(".blocks."))
}

#[test]
fn gradients_reach_the_net_through_the_spline() -> Result<()> {
    // d(loss)/d(raw parameters) against central differences, f64
    let spline = Spline {
        bins: 5,
        bound: 2.0,
    };
    let (_, p0) = raw_rows(6, 5, 1.0, DType::F64)?;
    let x = column(&[-2.5, -1.9, -0.3, 0.0, 0.7, 1.99], DType::F64)?;
    let loss = |p: &Tensor| -> Result<Tensor> {
        let (y, log) = spline.forward(&x, p)?;
        (y.sqr()?.sum_all()? + log.sum_all()?.affine(0.5, 0.0)?)?.sum_all()
    };
    let p = Var::from_tensor(&p0)?;
    let grads = loss(p.as_tensor())?.backward()?;
    let g = values(grads.get(p.as_tensor()).unwrap())?;
    let raw = values(&p0)?;
    let eps = 1e-6;
    for (j, &gj) in g.iter().enumerate() {
        let at = |d: f64| -> Result<f64> {
            let mut v = raw.clone();
            v[j] += d;
            loss(&Tensor::from_vec(v, p0.shape(), &Device::Cpu)?)?.to_scalar::<f64>()
        };
        let fd = (at(eps)? - at(-eps)?) / (2.0 * eps);
        assert!(
            (gj - fd).abs() < 1e-5 * fd.abs().max(1.0),
            "param {j}: {gj} vs {fd}"
        );
        let row = j / 14;
        if row == 0 {
            // x = -2.5 lies outside [-2, 2]: its parameters do nothing
            assert_eq!(gj, 0.0);
        }
    }
    // and through a coupling, to every tensor of its net (the output layer included)
    for (shape, cfg) in configs() {
        let vm = VarMap::new();
        let layer = Coupling::new(
            &shape,
            &cfg,
            0,
            VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu),
        )?;
        randomize(&vm, 0.3)?;
        let mut dims = vec![4];
        dims.extend(&shape);
        let (y, ld) = layer.forward(&randn(&dims, DType::F32)?, None, true)?;
        let grads = (y.sqr()?.sum_all()? + ld.sum_all()?)?.backward()?;
        for (name, var) in vm.data().lock().expect("varmap").iter() {
            let g = grads
                .get(var.as_tensor())
                .expect("every parameter gets a gradient");
            assert!(values(g)?.iter().all(|v| v.is_finite()), "{name} {cfg:?}");
            if before_a_batch_norm(name) {
                // A training batch norm takes out the batch mean, and with
                // it any bias added before: the true gradient is zero, and
                // what arrives is rounding (sometimes exactly zero).
                assert!(max_abs(g)? < 1e-4, "{name}: {g} {cfg:?}");
            } else {
                assert!(max_abs(g)? > 0.0, "{name}: {g} {cfg:?}");
            }
        }
    }
    Ok(())
}
