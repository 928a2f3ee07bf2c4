//! Adam (Kingma & Ba) over the flow's parameters, with the paper's L2 penalty
//! on the weight-norm gains, global gradient-norm clipping, and moments that
//! a checkpoint can save and restore exactly.

use candle_core::backprop::GradStore;
use candle_core::{bail, CpuStorage, CustomOp2, InplaceOp3, Layout, Result, Shape, Tensor, Var};

pub struct Adam {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    /// L2 coefficient on weight-norm gains (names ending in `.g`), as Real NVP.
    pub l2: f64,
    /// Clip the global gradient norm to this (0: off).
    pub clip: f64,
    /// Steps taken.
    pub t: u64,
    params: Vec<(String, Var)>,
    m: Vec<Tensor>,
    v: Vec<Tensor>,
}

/// What one step saw, for the log and for refusing bad steps.
pub struct StepInfo {
    pub grad_norm: f64,
}

impl Adam {
    /// `params` sorted by name, so the order (and saved state) is stable.
    pub fn new(mut params: Vec<(String, Var)>, lr: f64, l2: f64, clip: f64) -> Result<Adam> {
        params.sort_by(|a, b| a.0.cmp(&b.0));
        let m = params
            .iter()
            .map(|(_, p)| p.zeros_like())
            .collect::<Result<Vec<_>>>()?;
        let v = params
            .iter()
            .map(|(_, p)| p.zeros_like())
            .collect::<Result<Vec<_>>>()?;
        Ok(Adam {
            lr,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            l2,
            clip,
            t: 0,
            params,
            m,
            v,
        })
    }

    /// The gradients (detached: they carry the graph that made them, and the
    /// moments must not, or every step's graph would stay alive through
    /// them) and the global norm of gradient plus L2 term.
    fn gradients(&self, grads: &GradStore) -> Result<(Vec<Option<Tensor>>, f64)> {
        let mut out = Vec::with_capacity(self.params.len());
        let mut sq = 0f64;
        for (name, p) in &self.params {
            let Some(g) = grads.get(p.as_tensor()) else {
                out.push(None);
                continue;
            };
            let g = g.detach().contiguous()?;
            let l2 = self.l2_of(name);
            sq += if fast(p) {
                g.apply_op2_no_bwd(p.as_tensor(), &SquaredNorm { l2 })?
                    .to_scalar::<f64>()?
            } else {
                (&g + (p.as_tensor().detach() * l2)?)?
                    .sqr()?
                    .sum_all()?
                    .to_dtype(candle_core::DType::F64)?
                    .to_scalar::<f64>()?
            };
            out.push(Some(g));
        }
        Ok((out, sq.sqrt()))
    }

    /// The factor of the L2 term's gradient `2 * l2 * p` (weight-norm gains only).
    fn l2_of(&self, name: &str) -> f64 {
        if self.l2 > 0.0 && name.ends_with(".g") {
            2.0 * self.l2
        } else {
            0.0
        }
    }

    /// One update. A non-finite gradient is refused before anything changes.
    pub fn step(&mut self, grads: &GradStore) -> Result<std::result::Result<StepInfo, f64>> {
        let (grads, norm) = self.gradients(grads)?;
        if !norm.is_finite() {
            return Ok(Err(norm));
        }
        let scale = if self.clip > 0.0 && norm > self.clip {
            self.clip / norm
        } else {
            1.0
        };
        self.t += 1;
        let t = self.t as i32;
        let (b1, b2) = (self.beta1, self.beta2);
        let step = self.lr * (1.0 - b2.powi(t)).sqrt() / (1.0 - b1.powi(t));
        for (i, g) in grads.into_iter().enumerate() {
            let Some(g) = g else { continue };
            let (name, p) = &self.params[i];
            let l2 = self.l2_of(name);
            if fast(p) {
                // Three passes in place: no tensor is allocated.
                let moment = |beta: f64, square: bool| Moment {
                    beta: beta as f32,
                    scale: scale as f32,
                    l2: l2 as f32,
                    square,
                };
                self.m[i].inplace_op3(&g, p.as_tensor(), &moment(b1, false))?;
                self.v[i].inplace_op3(&g, p.as_tensor(), &moment(b2, true))?;
                let apply = Apply {
                    step: step as f32,
                    eps: self.eps as f32,
                };
                p.as_tensor().inplace_op3(&self.m[i], &self.v[i], &apply)?;
                continue;
            }
            let g = (g + (p.as_tensor().detach() * l2)?)?;
            let g = if scale != 1.0 { (g * scale)? } else { g };
            self.m[i] = ((&self.m[i] * b1)? + (&g * (1.0 - b1))?)?;
            self.v[i] = ((&self.v[i] * b2)? + (g.sqr()? * (1.0 - b2))?)?;
            let update = (&self.m[i] / (self.v[i].sqrt()? + self.eps)?)?;
            p.set(&(p.as_tensor() - (update * step)?)?)?;
        }
        Ok(Ok(StepInfo { grad_norm: norm }))
    }

    /// The moments, named for a checkpoint.
    pub fn state(&self) -> Vec<(String, Tensor)> {
        let mut out = vec![];
        for (i, (name, _)) in self.params.iter().enumerate() {
            out.push((format!("adam.m.{name}"), self.m[i].clone()));
            out.push((format!("adam.v.{name}"), self.v[i].clone()));
        }
        out
    }

    /// Restores moments saved by [`Adam::state`].
    pub fn load_state(&mut self, t: u64, get: impl Fn(&str) -> Option<Tensor>) -> Result<()> {
        self.t = t;
        for (i, (name, _)) in self.params.iter().enumerate() {
            if let (Some(m), Some(v)) = (
                get(&format!("adam.m.{name}")),
                get(&format!("adam.v.{name}")),
            ) {
                self.m[i] = m;
                self.v[i] = v;
            }
        }
        Ok(())
    }
}

/// Whether `p` takes the in-place CPU kernels below (contiguous f32 on the CPU).
fn fast(p: &Var) -> bool {
    p.device().is_cpu() && p.dtype() == candle_core::DType::F32 && p.is_contiguous()
}

/// The contiguous f32 values of a kernel input.
fn values<'a>(s: &'a CpuStorage, l: &Layout) -> Result<&'a [f32]> {
    let (a, b) = l
        .contiguous_offsets()
        .ok_or_else(|| candle_core::Error::Msg("adam: non-contiguous tensor".into()))?;
    Ok(&s.as_slice::<f32>()?[a..b])
}

/// `sum((g + l2 * p)^2)` in f64, as a one-element tensor.
struct SquaredNorm {
    l2: f64,
}

impl CustomOp2 for SquaredNorm {
    fn name(&self) -> &'static str {
        "adam-squared-norm"
    }
    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (g, p) = (values(s1, l1)?, values(s2, l2)?);
        let k = self.l2 as f32;
        let sq: f64 = g
            .iter()
            .zip(p)
            .map(|(&g, &p)| ((g + k * p) as f64).powi(2))
            .sum();
        Ok((CpuStorage::F64(vec![sq]), Shape::from(())))
    }
}

/// A moment in place: `m = beta * m + (1 - beta) * u` (or `u^2` when
/// `square`), `u = scale * (g + l2 * p)`; sources `[g, p]`.
struct Moment {
    beta: f32,
    scale: f32,
    l2: f32,
    square: bool,
}

/// The contiguous f32 values of an in-place kernel's destination.
fn values_mut<'a>(s: &'a mut CpuStorage, l: &Layout) -> Result<&'a mut [f32]> {
    match (s, l.contiguous_offsets()) {
        (CpuStorage::F32(v), Some((a, b))) => Ok(&mut v[a..b]),
        _ => bail!("adam: the in-place kernels take contiguous f32 tensors"),
    }
}

impl InplaceOp3 for Moment {
    fn name(&self) -> &'static str {
        "adam-moment"
    }
    fn cpu_fwd(
        &self,
        dst: &mut CpuStorage,
        dl: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<()> {
        let (g, p) = (values(s2, l2)?, values(s3, l3)?);
        let m = values_mut(dst, dl)?;
        let (beta, k, l2) = (self.beta, self.scale, self.l2);
        for ((m, &g), &p) in m.iter_mut().zip(g).zip(p) {
            let u = k * (g + l2 * p);
            let u = if self.square { u * u } else { u };
            *m = beta * *m + (1.0 - beta) * u;
        }
        Ok(())
    }
}

/// The parameter in place: `p -= step * m / (sqrt(v) + eps)`; sources `[m, v]`.
struct Apply {
    step: f32,
    eps: f32,
}

impl InplaceOp3 for Apply {
    fn name(&self) -> &'static str {
        "adam-apply"
    }
    fn cpu_fwd(
        &self,
        dst: &mut CpuStorage,
        dl: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<()> {
        let (m, v) = (values(s2, l2)?, values(s3, l3)?);
        let p = values_mut(dst, dl)?;
        for ((p, &m), &v) in p.iter_mut().zip(m).zip(v) {
            *p -= self.step * m / (v.sqrt() + self.eps);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};

    /// Minimizes sum((p - 3)^2): Adam must get there, and its moments must
    /// hold no autograd graph (else every step's graph stays alive).
    #[test]
    fn converges_and_keeps_no_graph() -> Result<()> {
        let p = Var::zeros(4, DType::F32, &Device::Cpu)?;
        let mut adam = Adam::new(vec![("w".into(), p.clone())], 0.1, 0.0, 0.0)?;
        for _ in 0..300 {
            let loss = (p.as_tensor() - 3.0)?.sqr()?.sum_all()?;
            assert!(adam.step(&loss.backward()?)?.is_ok());
        }
        let v: Vec<f32> = p.as_tensor().to_vec1()?;
        assert!(v.iter().all(|x| (x - 3.0).abs() < 1e-2), "{v:?}");
        assert!(adam.state().iter().all(|(_, t)| !t.track_op()));
        Ok(())
    }

    #[test]
    fn clipping_bounds_the_first_step() -> Result<()> {
        let p = Var::zeros(1, DType::F32, &Device::Cpu)?;
        let mut adam = Adam::new(vec![("w".into(), p.clone())], 0.5, 0.0, 1.0)?;
        let loss = (p.as_tensor() * 1000.0)?.sum_all()?;
        let info = adam.step(&loss.backward()?)?.unwrap();
        assert!((info.grad_norm - 1000.0).abs() < 1e-3);
        // Adam's first step is lr * sign(g) whatever the scale.
        assert!((p.as_tensor().to_vec1::<f32>()?[0] + 0.5).abs() < 1e-4);
        Ok(())
    }

    /// The in-place f32 kernels against the tensor-op path (f64), with the
    /// L2 term and clipping active, over steps with varying gradients.
    #[test]
    fn in_place_kernels_match_the_tensor_path() -> Result<()> {
        let init = [0.5f64, -1.0, 2.0, 0.0, 3.0];
        let run = |dtype: DType| -> Result<Vec<f64>> {
            let p = Var::from_tensor(&Tensor::new(&init, &Device::Cpu)?.to_dtype(dtype)?)?;
            let mut adam = Adam::new(vec![("net.g".into(), p.clone())], 0.05, 0.1, 2.0)?;
            let w = Tensor::new(&[1.0f64, -2.0, 0.5, 3.0, -1.0], &Device::Cpu)?.to_dtype(dtype)?;
            for k in 0..20 {
                let loss = ((p.as_tensor() * &w)?.sqr()?.sum_all()? * (1.0 + k as f64))?;
                assert!(adam.step(&loss.backward()?)?.is_ok());
            }
            p.as_tensor().to_dtype(DType::F64)?.to_vec1()
        };
        let (fast, reference) = (run(DType::F32)?, run(DType::F64)?);
        for (a, b) in fast.iter().zip(&reference) {
            assert!((a - b).abs() < 1e-4, "{fast:?} vs {reference:?}");
        }
        assert!(fast.iter().zip(&init).any(|(a, b)| (a - b).abs() > 0.1));
        Ok(())
    }
}
