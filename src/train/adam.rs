//! Adam (Kingma & Ba) over the flow's parameters, with the paper's L2 penalty
//! on the weight-norm gains, global gradient-norm clipping, and moments that
//! a checkpoint can save and restore exactly.

use candle_core::backprop::GradStore;
use candle_core::{Result, Tensor, Var};

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

    /// The gradients with the L2 term added, and their global norm.
    fn gradients(&self, grads: &GradStore) -> Result<(Vec<Option<Tensor>>, f64)> {
        let mut out = Vec::with_capacity(self.params.len());
        let mut sq = 0f64;
        for (name, p) in &self.params {
            let Some(g) = grads.get(p.as_tensor()) else {
                out.push(None);
                continue;
            };
            // Gradients carry the graph that made them; the moments must not,
            // or every step's graph would stay alive through them.
            let g = g.detach();
            let g = if self.l2 > 0.0 && name.ends_with(".g") {
                (g + (p.as_tensor().detach() * (2.0 * self.l2))?)?
            } else {
                g.clone()
            };
            sq += g
                .sqr()?
                .sum_all()?
                .to_dtype(candle_core::DType::F64)?
                .to_scalar::<f64>()?;
            out.push(Some(g));
        }
        Ok((out, sq.sqrt()))
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
            let g = if scale != 1.0 { (g * scale)? } else { g };
            self.m[i] = ((&self.m[i] * b1)? + (&g * (1.0 - b1))?)?;
            self.v[i] = ((&self.v[i] * b2)? + (g.sqr()? * (1.0 - b2))?)?;
            let update = (&self.m[i] / (self.v[i].sqrt()? + self.eps)?)?;
            let p = &self.params[i].1;
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
}
