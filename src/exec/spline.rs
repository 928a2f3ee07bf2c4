//! The monotone rational-quadratic spline of `coupling spline` (Durkan et
//! al. 2019, "Neural Spline Flows"), elementwise, in candle ops only: it
//! runs on any device, in f32 and f64, and autograd differentiates it.
//!
//! ```text
//! per value, from its 3n - 1 raw parameters (n widths, n heights, n - 1 slopes):
//!   w = 1e-3 + (1 - 1e-3 n) softmax(raw_w)     knots x_0 = -B, x_k = -B + 2B (w_1 + .. + w_k), x_n = B
//!   h likewise                                 knots y_k
//!   d = 1e-3 + (1 - 1e-3) softplus(raw_d) / ln 2 at the interior knots, 1 at -B and B
//! in bin k, xi = (x - x_k) / (x_k+1 - x_k), s = (y_k+1 - y_k) / (x_k+1 - x_k):
//!   y = y_k + (y_k+1 - y_k) (s xi^2 + d_k xi (1 - xi)) / (s + (d_k+1 + d_k - 2 s) xi (1 - xi))
//!   dy/dx = s^2 (d_k+1 xi^2 + 2 s xi (1 - xi) + d_k (1 - xi)^2) / (s + (d_k+1 + d_k - 2 s) xi (1 - xi))^2
//! outside [-B, B]: y = x, dy/dx = 1
//! ```
//! A zero raw parameter gives `w = h = 1/n`, `d = 1`: the identity. The
//! bin of a value is the count of interior knots at or below it, kept as
//! a one-hot row (no gradient), so selecting a bin's knots is a product and
//! a sum that autograd passes through. The inverse solves the bin's
//! quadratic in the paper's stable form `xi = 2c / (-b - sqrt(b^2 - 4ac))`.
//! Values outside `[-B, B]` go through the spline at 0 (a finite value,
//! then discarded), so no NaN reaches a gradient.

use candle_core::{Result, Tensor, D};

/// Smallest share of the interval for a bin's width and height, and the
/// smallest interior slope.
pub const MIN: f64 = 1e-3;

/// A spline's size: `bins` bins on `[-bound, bound]`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Spline {
    pub bins: usize,
    pub bound: f64,
}

/// One row per value: its bin's knots, as `(M, 1)` columns.
struct Bin {
    x0: Tensor,
    w: Tensor,
    y0: Tensor,
    h: Tensor,
    d0: Tensor,
    d1: Tensor,
}

impl Spline {
    /// Raw parameters per value.
    pub fn params(&self) -> usize {
        3 * self.bins - 1
    }

    /// The net output `h` of shape `(N, k C, ...)` (parameter `j` of channel
    /// `c` at channel `j C + c`) as `(N C ..., k)`: one row per value of the
    /// coupling's input, in the input's order.
    pub fn per_value(&self, h: &Tensor) -> Result<Tensor> {
        let k = self.params();
        let n = h.dim(0)?;
        let rest = h.elem_count() / (n * k);
        h.reshape((n, k, rest))?
            .transpose(1, 2)?
            .contiguous()?
            .reshape((n * rest, k))
    }

    /// `y` and `log dy/dx` for every value of `x` (any shape), given its
    /// parameters `p` of shape `(x.elem_count(), 3n - 1)`.
    pub fn forward(&self, x: &Tensor, p: &Tensor) -> Result<(Tensor, Tensor)> {
        let v = x.reshape((x.elem_count(), 1))?;
        let inside = v.abs()?.le(self.bound)?;
        let vc = inside.where_cond(&v, &v.zeros_like()?)?;
        let (xs, ys, ds) = self.knots(p)?;
        let bin = select(&vc, &xs, &ys, &ds)?;
        let xi = ((&vc - &bin.x0)? / &bin.w)?.clamp(0f64, 1f64)?;
        let s = (&bin.h / &bin.w)?;
        let t = (&xi * xi.affine(-1.0, 1.0)?)?;
        let dd = ((&bin.d0 + &bin.d1)? - s.affine(2.0, 0.0)?)?;
        let den = (&s + (&dd * &t)?)?;
        let num = (&bin.h * ((&s * xi.sqr()?)? + (&bin.d0 * &t)?)?)?;
        let y = (&bin.y0 + (num / &den)?)?;
        let slope = (((&bin.d1 * xi.sqr()?)? + (&s * t.affine(2.0, 0.0)?)?)?
            + (&bin.d0 * xi.affine(-1.0, 1.0)?.sqr()?)?)?;
        let log = ((s.log()?.affine(2.0, 0.0)? + slope.log()?)? - den.log()?.affine(2.0, 0.0)?)?;
        let y = inside.where_cond(&y, &v)?.reshape(x.shape())?;
        let log = inside
            .where_cond(&log, &log.zeros_like()?)?
            .reshape(x.shape())?;
        Ok((y, log))
    }

    /// `x` for every value of `y`: the inverse of [`Spline::forward`].
    pub fn inverse(&self, y: &Tensor, p: &Tensor) -> Result<Tensor> {
        let v = y.reshape((y.elem_count(), 1))?;
        let inside = v.abs()?.le(self.bound)?;
        let vc = inside.where_cond(&v, &v.zeros_like()?)?;
        let (xs, ys, ds) = self.knots(p)?;
        // The bin is found among the y knots; `select` reads the same rows.
        let bin = select(&vc, &ys, &xs, &ds)?;
        let Bin {
            x0: y0,
            w: h,
            y0: x0,
            h: w,
            d0,
            d1,
        } = bin;
        let s = (&h / &w)?;
        let dy = (&vc - &y0)?;
        let dd = ((&d0 + &d1)? - s.affine(2.0, 0.0)?)?;
        let a = ((&h * (&s - &d0)?)? + (&dy * &dd)?)?;
        let b = ((&h * &d0)? - (&dy * &dd)?)?;
        let c = (&s * &dy)?.neg()?;
        let disc = (b.sqr()? - (&a * &c)?.affine(4.0, 0.0)?)?.relu()?;
        let xi = (c.affine(2.0, 0.0)? / (b.neg()? - disc.sqrt()?)?)?.clamp(0f64, 1f64)?;
        let x = (&x0 + (&xi * &w)?)?;
        inside.where_cond(&x, &v)?.reshape(y.shape())
    }

    /// The knots `(x, y, slope)`, each `(M, n + 1)`, from raw parameters `(M, 3n - 1)`.
    fn knots(&self, p: &Tensor) -> Result<(Tensor, Tensor, Tensor)> {
        let n = self.bins;
        let xs = self.positions(&p.narrow(1, 0, n)?)?;
        let ys = self.positions(&p.narrow(1, n, n)?)?;
        let raw = p.narrow(1, 2 * n, n - 1)?;
        let one = Tensor::ones((p.dim(0)?, 1), p.dtype(), p.device())?;
        let d = softplus(&raw)?.affine((1.0 - MIN) / std::f64::consts::LN_2, MIN)?;
        let ds = Tensor::cat(&[&one, &d, &one], 1)?;
        Ok((xs, ys, ds))
    }

    /// Knot positions from raw widths (heights): `-B`, the interior sums, `B`.
    fn positions(&self, raw: &Tensor) -> Result<Tensor> {
        let (n, b) = (self.bins, self.bound);
        let share = softmax(raw)?.affine(1.0 - MIN * n as f64, MIN)?;
        let inner = share.cumsum(1)?.narrow(1, 0, n - 1)?.affine(2.0 * b, -b)?;
        let ends = Tensor::ones((raw.dim(0)?, 1), raw.dtype(), raw.device())?;
        Tensor::cat(&[&ends.affine(-b, 0.0)?, &inner, &ends.affine(b, 0.0)?], 1)
    }
}

/// The bin of each value `v` (`(M, 1)`) among the knots `at` (`(M, n + 1)`),
/// and its knots: `x0, w` from `at`, `y0, h` from `other`, slopes from `ds`.
fn select(v: &Tensor, at: &Tensor, other: &Tensor, ds: &Tensor) -> Result<Bin> {
    let n = at.dim(1)? - 1;
    let inner = at.narrow(1, 1, n - 1)?;
    // 1 up to the value's bin, 0 after: a row [1, .., 1, 0, .., 0] of n + 1.
    let below = v.broadcast_ge(&inner)?.to_dtype(v.dtype())?;
    let one = v.ones_like()?;
    let steps = Tensor::cat(&[&one, &below, &one.zeros_like()?], 1)?;
    let hot = (steps.narrow(1, 0, n)? - steps.narrow(1, 1, n)?)?.detach();
    let pick = |t: &Tensor, from: usize| (t.narrow(1, from, n)? * &hot)?.sum_keepdim(1);
    let (x0, y0) = (pick(at, 0)?, pick(other, 0)?);
    Ok(Bin {
        w: (pick(at, 1)? - &x0)?,
        h: (pick(other, 1)? - &y0)?,
        x0,
        y0,
        d0: pick(ds, 0)?,
        d1: pick(ds, 1)?,
    })
}

/// Softmax over the last dimension, the maximum held constant.
fn softmax(u: &Tensor) -> Result<Tensor> {
    let e = u
        .broadcast_sub(&u.max_keepdim(D::Minus1)?.detach())?
        .exp()?;
    e.broadcast_div(&e.sum_keepdim(D::Minus1)?)
}

/// `log(1 + exp(u))` without overflow: `max(u, 0) + log(1 + exp(-|u|))`.
fn softplus(u: &Tensor) -> Result<Tensor> {
    u.relu()? + u.abs()?.neg()?.exp()?.affine(1.0, 1.0)?.log()?
}
