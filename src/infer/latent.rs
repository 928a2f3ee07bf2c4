//! Latent space: `encode` (x to the latents, concatenated per example in the
//! plan's latent order, each flattened in C order, and log|det J|), `decode`
//! (back) and `interpolate` (along a line or a great circle between two
//! examples' latents, as in the Real NVP paper's figures).

use candle_core::{Result, Tensor, D};

use crate::exec::Flow;

/// `x (N, ...) -> (z (N, D), log|det df/dx| (N))`, evaluation mode.
pub fn encode(flow: &Flow, x: &Tensor) -> Result<(Tensor, Tensor)> {
    let (latents, logdet) = flow.forward(x, false)?;
    let flat = latents
        .iter()
        .map(|z| z.flatten_from(1))
        .collect::<Result<Vec<_>>>()?;
    Ok((Tensor::cat(&flat, 1)?, logdet))
}

/// `z (N, D) -> x (N, ...)`: the latents split in the plan's order, then the inverse.
pub fn decode(flow: &Flow, z: &Tensor) -> Result<Tensor> {
    let n = z.dim(0)?;
    let shapes = flow.plan().latent_shapes();
    let total: u128 = shapes.iter().map(|s| s.size()).sum();
    if z.dim(1)? as u128 != total {
        candle_core::bail!(
            "latents of {} values per example; this flow's latents have {total}",
            z.dim(1)?
        );
    }
    let mut at = 0;
    let mut latents = Vec::with_capacity(shapes.len());
    for s in shapes {
        let k = s.size() as usize;
        let mut dims = vec![n];
        dims.extend(s.dims().iter().map(|&d| d as usize));
        latents.push(z.narrow(1, at, k)?.contiguous()?.reshape(dims)?);
        at += k;
    }
    flow.inverse(&latents)
}

/// `steps` points from `a` to `b` (each `(1, D)` latents), on the straight
/// line or, with `slerp`, on the great circle through them (which keeps the
/// norm that Gaussian latents concentrate at).
pub fn path(a: &Tensor, b: &Tensor, steps: usize, slerp: bool) -> Result<Tensor> {
    let ts: Vec<f64> = (0..steps)
        .map(|i| i as f64 / (steps.max(2) - 1) as f64)
        .collect();
    let dot = (a * b)?
        .sum(D::Minus1)?
        .to_dtype(candle_core::DType::F64)?
        .to_vec1::<f64>()?[0];
    let norm = |t: &Tensor| -> Result<f64> {
        Ok(t.sqr()?
            .sum_all()?
            .to_dtype(candle_core::DType::F64)?
            .to_scalar::<f64>()?
            .sqrt())
    };
    let cos = (dot / (norm(a)? * norm(b)?).max(1e-30)).clamp(-1.0, 1.0);
    let theta = cos.acos();
    let rows = ts
        .iter()
        .map(|&t| {
            // A great circle through nearly parallel vectors is the line.
            let (wa, wb) = if slerp && theta.sin() > 1e-6 {
                (
                    ((1.0 - t) * theta).sin() / theta.sin(),
                    (t * theta).sin() / theta.sin(),
                )
            } else {
                (1.0 - t, t)
            };
            (a * wa)? + (b * wb)?
        })
        .collect::<Result<Vec<_>>>()?;
    Tensor::cat(&rows, 0)
}

/// The decoded points of [`path`] between examples `a` and `b` (each `(1, ...)`).
pub fn interpolate(
    flow: &Flow,
    a: &Tensor,
    b: &Tensor,
    steps: usize,
    slerp: bool,
) -> Result<Tensor> {
    let (za, _) = encode(flow, a)?;
    let (zb, _) = encode(flow, b)?;
    decode(flow, &path(&za, &zb, steps, slerp)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn slerp_keeps_the_norm_of_equal_norm_endpoints_and_lerp_halves_the_way() {
        let a = Tensor::new(&[[3f32, 0.0, 0.0]], &Device::Cpu).unwrap();
        let b = Tensor::new(&[[0f32, 3.0, 0.0]], &Device::Cpu).unwrap();
        let s = path(&a, &b, 5, true).unwrap().to_vec2::<f32>().unwrap();
        for row in &s {
            let n = row.iter().map(|v| v * v).sum::<f32>().sqrt();
            assert!((n - 3.0).abs() < 1e-5, "{row:?}");
        }
        assert_eq!(s[0], vec![3.0, 0.0, 0.0]);
        assert!((s[4][1] - 3.0).abs() < 1e-6 && s[4][0].abs() < 1e-6);
        let l = path(&a, &b, 3, false).unwrap().to_vec2::<f32>().unwrap();
        assert_eq!(l[1], vec![1.5, 1.5, 0.0]);
    }
}
