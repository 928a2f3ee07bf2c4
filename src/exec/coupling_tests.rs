//! Tests of the coupling layers and of the fused coupling ops against the reference chain.

use super::coupling::*;
use super::fused;
use super::mask::Mask;
use super::test_util::*;
use super::FlowLayer;
use crate::ir::{self, CouplingKind, MaskKind, NetKind, Parity};
use candle_core::{DType, Device, Result, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};
use proptest::prelude::*;

const IMAGE: [usize; 3] = [2, 4, 4];
const VECTOR: [usize; 1] = [5];

/// Every mask kind and parity, affine and additive: (example shape, config).
fn configs(imp: CouplingImpl) -> Vec<(Vec<usize>, CouplingConfig)> {
    let mut out = vec![];
    for kind in [CouplingKind::Affine, CouplingKind::Additive] {
        for parity in [Parity::Even, Parity::Odd] {
            for mask in [MaskKind::Checkerboard, MaskKind::Channel] {
                let net = NetKind::Resnet {
                    blocks: 1,
                    features: 4,
                };
                out.push((
                    IMAGE.to_vec(),
                    CouplingConfig {
                        kind,
                        mask: ir::Mask::new(mask, parity),
                        net,
                        imp,
                    },
                ));
            }
            for mask in [MaskKind::Alternate, MaskKind::Half] {
                let net = NetKind::Mlp {
                    hidden: 8,
                    layers: 2,
                };
                out.push((
                    VECTOR.to_vec(),
                    CouplingConfig {
                        kind,
                        mask: ir::Mask::new(mask, parity),
                        net,
                        imp,
                    },
                ));
            }
        }
    }
    out
}

fn batch(n: usize, shape: &[usize]) -> Vec<usize> {
    std::iter::once(n).chain(shape.iter().copied()).collect()
}

/// A coupling with every parameter randomized and running stats fed by two training batches.
fn randomized(shape: &[usize], cfg: &CouplingConfig, dtype: DType) -> Result<(VarMap, Coupling)> {
    let vm = VarMap::new();
    let layer = Coupling::new(
        shape,
        cfg,
        0,
        VarBuilder::from_varmap(&vm, dtype, &Device::Cpu),
    )?;
    randomize(&vm, 0.5)?;
    for _ in 0..2 {
        layer.forward(&randn(&batch(4, shape), dtype)?, None, true)?;
    }
    Ok((vm, layer))
}

#[test]
fn coupling_roundtrip_all_masks() -> Result<()> {
    for imp in [CouplingImpl::Fused, CouplingImpl::Reference] {
        for (shape, cfg) in configs(imp) {
            let (_vm, layer) = randomized(&shape, &cfg, DType::F32)?;
            let x = randn(&batch(3, &shape), DType::F32)?;
            let y = check_roundtrip(&layer, &x, 1e-4)?;
            // the kept half is untouched
            let b = layer.mask().tensor();
            assert_eq!(
                max_abs_diff(&y.broadcast_mul(b)?, &x.broadcast_mul(b)?)?,
                0.0
            );
        }
    }
    Ok(())
}

#[test]
fn coupling_logdet_matches_jacobian() -> Result<()> {
    for imp in [CouplingImpl::Fused, CouplingImpl::Reference] {
        for (shape, cfg) in configs(imp) {
            let (_vm, layer) = randomized(&shape, &cfg, DType::F64)?;
            let x = randn(&batch(2, &shape), DType::F64)?;
            let refs = check_logdet(&layer, &x, false)?;
            if cfg.kind == CouplingKind::Affine {
                assert!(
                    refs.iter().any(|v| v.abs() > 1e-4),
                    "{cfg:?}: trivial logdet {refs:?}"
                );
            }
        }
    }
    Ok(())
}

/// In training mode the conditioner uses batch statistics; the per-example Jacobian of a batch
/// of one then includes that dependence and the log-det is still exact (triangular structure).
#[test]
fn coupling_train_mode_logdet_exact() -> Result<()> {
    for (shape, cfg) in configs(CouplingImpl::Fused)
        .into_iter()
        .filter(|(s, c)| s.len() == 3 && c.kind == CouplingKind::Affine)
    {
        let (_vm, layer) = randomized(&shape, &cfg, DType::F64)?;
        check_logdet(&layer, &randn(&batch(1, &shape), DType::F64)?, true)?;
    }
    Ok(())
}

#[test]
fn fresh_coupling_is_exact_identity() -> Result<()> {
    for imp in [CouplingImpl::Fused, CouplingImpl::Reference] {
        for (shape, cfg) in configs(imp) {
            for dtype in [DType::F32, DType::F64] {
                let vm = VarMap::new();
                let layer = Coupling::new(
                    &shape,
                    &cfg,
                    0,
                    VarBuilder::from_varmap(&vm, dtype, &Device::Cpu),
                )?;
                let x = randn(&batch(3, &shape), dtype)?;
                for train in [true, false] {
                    let (y, ld) = layer.forward(&x, None, train)?;
                    assert_eq!(max_abs_diff(&y, &x)?, 0.0, "{cfg:?}");
                    assert_eq!(max_abs(&ld)?, 0.0, "{cfg:?}");
                }
                assert_eq!(max_abs_diff(&layer.inverse(&x, None)?, &x)?, 0.0);
            }
        }
    }
    Ok(())
}

/// Values and gradients (w.r.t. x, h, scale) of the fused op vs the reference chain.
fn compare_op(
    kind: CouplingKind,
    mask: &Mask,
    n: usize,
    dtype: DType,
    transposed_x: bool,
) -> Result<()> {
    let (vtol, gtol) = (1e-5, 1e-4);
    let shape = batch(n, mask.shape());
    let c = mask.channels();
    let mut hshape = shape.clone();
    hshape[1] *= kind.outputs_per_channel() as usize;
    let x0 = randn(&shape, dtype)?;
    let x = Var::from_tensor(&x0)?;
    let h = Var::from_tensor(&randn(&hshape, dtype)?)?;
    let scale = Var::from_tensor(&(randn(&[c], dtype)? * 0.7)?)?;
    // random cotangents so no gradient is trivially uniform
    let ry = randn(&shape, dtype)?;
    let rl = randn(&[n], dtype)?;
    let run = |imp: CouplingImpl| -> Result<(Tensor, Tensor, Vec<Tensor>)> {
        // optionally feed a non-contiguous view holding the same values
        let xin = if transposed_x && shape.len() == 4 {
            x.as_tensor()
                .transpose(2, 3)?
                .contiguous()?
                .transpose(2, 3)?
        } else {
            x.as_tensor().clone()
        };
        let s = kind.has_scale().then(|| scale.as_tensor());
        let (y, ld) = step(kind, imp, &xin, h.as_tensor(), s, mask)?;
        let loss = ((&y * &ry)?.sum_all()? + (&ld * &rl)?.sum_all()?)?;
        let grads = loss.backward()?;
        let mut gs = vec![
            grads.get(x.as_tensor()).unwrap().clone(),
            grads.get(h.as_tensor()).unwrap().clone(),
        ];
        if kind == CouplingKind::Affine {
            gs.push(grads.get(scale.as_tensor()).unwrap().clone());
        }
        Ok((y, ld, gs))
    };
    let (yf, lf, gf) = run(CouplingImpl::Fused)?;
    let (yr, lr, gr) = run(CouplingImpl::Reference)?;
    assert!(
        max_rel_diff(&yf, &yr)? <= vtol,
        "{kind:?} {:?} y",
        mask.kind()
    );
    assert!(
        max_rel_diff(&lf, &lr)? <= vtol,
        "{kind:?} {:?} logdet",
        mask.kind()
    );
    for (i, (a, b)) in gf.iter().zip(&gr).enumerate() {
        assert!(
            max_rel_diff(a, b)? <= gtol,
            "{kind:?} {:?} {dtype:?} grad {i}",
            mask.kind()
        );
    }
    // the inverses agree and undo the forward
    let s = (kind == CouplingKind::Affine).then(|| scale.as_tensor());
    let xf = step_inverse(kind, CouplingImpl::Fused, &yf, h.as_tensor(), s, mask)?;
    let xr = step_inverse(kind, CouplingImpl::Reference, &yf, h.as_tensor(), s, mask)?;
    assert!(max_rel_diff(&xf, &xr)? <= vtol);
    assert!(max_abs_diff(&xf, &x0)? <= 1e-4);
    Ok(())
}

fn all_masks(dtype: DType) -> Result<Vec<Mask>> {
    let mut v = vec![];
    for p in [Parity::Even, Parity::Odd] {
        for (k, s) in [
            (MaskKind::Checkerboard, &[2usize, 4, 4][..]),
            (MaskKind::Checkerboard, &[3, 3, 5]),
            (MaskKind::Channel, &[4, 2, 3]),
            (MaskKind::Alternate, &[5]),
            (MaskKind::Half, &[7]),
        ] {
            v.push(Mask::new(ir::Mask::new(k, p), s, dtype, &Device::Cpu)?);
        }
    }
    Ok(v)
}

#[test]
fn fused_matches_reference_values_and_grads() -> Result<()> {
    for dtype in [DType::F32, DType::F64] {
        for mask in all_masks(dtype)? {
            for kind in [CouplingKind::Affine, CouplingKind::Additive] {
                compare_op(kind, &mask, 3, dtype, false)?;
                compare_op(kind, &mask, 2, dtype, true)?;
            }
        }
    }
    Ok(())
}

/// Whole layers (conditioner included, training mode): the same gradient for every parameter.
#[test]
fn fused_matches_reference_net_param_grads() -> Result<()> {
    for dtype in [DType::F32, DType::F64] {
        for (shape, cfg) in configs(CouplingImpl::Fused) {
            let (vm, mut layer) = randomized(&shape, &cfg, dtype)?;
            let x = randn(&batch(3, &shape), dtype)?;
            let ry = randn(&batch(3, &shape), dtype)?;
            let rl = randn(&[3], dtype)?;
            let mut results = vec![];
            for imp in [CouplingImpl::Fused, CouplingImpl::Reference] {
                layer.set_impl(imp);
                let (y, ld) = layer.forward(&x, None, true)?;
                let loss = ((&y * &ry)?.sum_all()? + (&ld * &rl)?.sum_all()?)?;
                let grads = loss.backward()?;
                let mut named: Vec<(String, Tensor)> = vm
                    .data()
                    .lock()
                    .unwrap()
                    .iter()
                    .map(|(k, v)| (k.clone(), grads.get(v.as_tensor()).cloned()))
                    .map(|(k, g)| {
                        (
                            k.clone(),
                            g.unwrap_or_else(|| panic!("no gradient for {k}")),
                        )
                    })
                    .collect();
                named.sort_by(|a, b| a.0.cmp(&b.0));
                results.push((y, ld, named));
            }
            let (f, r) = (&results[0], &results[1]);
            assert!(max_rel_diff(&f.0, &r.0)? <= 1e-5);
            assert!(max_rel_diff(&f.1, &r.1)? <= 1e-5);
            for ((name, a), (_, b)) in f.2.iter().zip(&r.2) {
                let d = max_rel_diff(a, b)?;
                assert!(d <= 1e-4, "{cfg:?} {dtype:?} {name}: {d}");
            }
        }
    }
    Ok(())
}

#[test]
fn fused_rejects_mismatched_inputs() -> Result<()> {
    let mask = Mask::new(
        ir::Mask::Checkerboard(Parity::Even),
        &[2, 4, 4],
        DType::F32,
        &Device::Cpu,
    )?;
    let x = randn(&[1, 2, 4, 4], DType::F32)?;
    let scale = randn(&[2], DType::F32)?;
    // additive-sized h for an affine step
    assert!(fused::affine_coupling(&x, &x, &scale, &mask).is_err());
    // wrong dtype
    let h64 = randn(&[1, 4, 4, 4], DType::F64)?;
    assert!(fused::affine_coupling(&x, &h64, &scale, &mask).is_err());
    // wrong example shape
    let x2 = randn(&[1, 2, 2, 8], DType::F32)?;
    assert!(fused::additive_coupling(&x2, &x2, &mask).is_err());
    Ok(())
}

fn mask_strategy() -> impl Strategy<Value = (MaskKind, Parity, Vec<usize>)> {
    let parity = prop_oneof![Just(Parity::Even), Just(Parity::Odd)];
    let image = (
        prop_oneof![Just(MaskKind::Checkerboard), Just(MaskKind::Channel)],
        parity.clone(),
        1usize..3,
        1usize..5,
        1usize..5,
    )
        .prop_map(|(k, p, c, h, w)| (k, p, vec![2 * c, h, w]));
    let vector = (
        prop_oneof![Just(MaskKind::Alternate), Just(MaskKind::Half)],
        parity,
        2usize..9,
    )
        .prop_map(|(k, p, d)| (k, p, vec![d]));
    prop_oneof![image, vector]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]
    #[test]
    fn fused_matches_reference_random_shapes(
        (kind, parity, shape) in mask_strategy(),
        n in 1usize..4,
        affine in any::<bool>(),
        f64_ in any::<bool>(),
    ) {
        let dtype = if f64_ { DType::F64 } else { DType::F32 };
        let mask = Mask::new(ir::Mask::new(kind, parity), &shape, dtype, &Device::Cpu).unwrap();
        let k = if affine { CouplingKind::Affine } else { CouplingKind::Additive };
        compare_op(k, &mask, n, dtype, false).unwrap();
    }
}
