//! The monotone rational-quadratic spline of `coupling spline` (Durkan et
//! al. 2019, "Neural Spline Flows"), elementwise, in candle ops only: it
//! runs on any device, in f32 and f64, and autograd differentiates it.
//!
//! ```text
//! per value, from its 3n - 1 raw parameters (n widths, n heights, n - 1 slopes):
//!   w = 1e-3 + (1 - 1e-3 n) softmax(raw_w)     knots x_0 = -B, x_k = -B + 2B (w_1 + .. + w_k), x_n = B
//!   h likewise                                 knots y_k
//!   d = 1e-3 + (1 - 1e-3) softplus(raw_d) / ln 2 at the interior knots, 1 at -B and B
//!     (computed as 1 + (1 - 1e-3) (softplus(raw_d) - ln 2) / ln 2)
//! in bin k, xi = (x - x_k) / (x_k+1 - x_k), s = (y_k+1 - y_k) / (x_k+1 - x_k):
//!   y = y_k + (y_k+1 - y_k) (s xi^2 + d_k xi (1 - xi)) / (s + (d_k+1 + d_k - 2 s) xi (1 - xi))
//!   dy/dx = s^2 (d_k+1 xi^2 + 2 s xi (1 - xi) + d_k (1 - xi)^2) / (s + (d_k+1 + d_k - 2 s) xi (1 - xi))^2
//! outside [-B, B]: y = x, dy/dx = 1
//! ```
//! A zero raw parameter gives `w = h = 1/n`, `d = 1`: the identity, and
//! exactly so, since `y` and `log dy/dx` are computed as the identity's plus
//! terms in `d - s` and `y_k - x_k` (all exactly 0 then). The
//! bin of a value is the count of interior knots at or below it, kept as
//! a one-hot row (no gradient), so selecting a bin's knots is a product and
//! a sum that autograd passes through. The inverse solves the bin's
//! quadratic in closed form, by the paper's stable root where it is stable
//! and its cancellation-free counterpart where it is not (see `root`).
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
    x1: Tensor,
    y0: Tensor,
    y1: Tensor,
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
        let bin = select(&vc, &xs, &xs, &ys, &ds)?;
        let w = (&bin.x1 - &bin.x0)?;
        let h = (&bin.y1 - &bin.y0)?;
        let off = (&vc - &bin.x0)?;
        let xi = (&off / &w)?.clamp(0f64, 1f64)?;
        let s = (&h / &w)?;
        let one_xi = xi.affine(-1.0, 1.0)?;
        let t = (&xi * &one_xi)?;
        let (e0, e1) = ((&bin.d0 - &s)?, (&bin.d1 - &s)?);
        let den = (&s + ((&e0 + &e1)? * &t)?)?;
        // y = y0 + s (x - x0) + h t ((d0 - s)(1 - xi) - (d1 - s) xi) / den
        let bend = ((&e0 * &one_xi)? - (&e1 * &xi)?)?;
        let bend = (((&h * &t)? * bend)? / &den)?;
        // as x + (y0 - x0) + (s - 1)(x - x0) + bend: exactly x for the identity
        let shift = ((&bin.y0 - &bin.x0)? + (s.affine(1.0, -1.0)? * &off)?)?;
        let y = ((&vc + shift)? + bend)?;
        // dy/dx = s^2 (s + (d1 - s) xi^2 + (d0 - s)(1 - xi)^2) / den^2
        let top = ((&s + (&e1 * xi.sqr()?)?)? + (&e0 * one_xi.sqr()?)?)?;
        let log = ((s.log()? + top.log()?.affine(0.5, 0.0)?)? - den.log()?)?.affine(2.0, 0.0)?;
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
        let bin = select(&vc, &ys, &xs, &ys, &ds)?;
        let w = (&bin.x1 - &bin.x0)?;
        let h = (&bin.y1 - &bin.y0)?;
        let (dy, ey) = ((&vc - &bin.y0)?, (&bin.y1 - &vc)?);
        let xi = root(&dy, &ey, &h, &w, &bin.d0, &bin.d1)?;
        let x = (&bin.x0 + (xi * &w)?)?;
        inside.where_cond(&x, &v)?.reshape(y.shape())
    }

    /// The knots `(x, y, slope)`, each `(M, n + 1)`, from raw parameters `(M, 3n - 1)`.
    fn knots(&self, p: &Tensor) -> Result<(Tensor, Tensor, Tensor)> {
        let n = self.bins;
        let xs = self.positions(&p.narrow(1, 0, n)?)?;
        let ys = self.positions(&p.narrow(1, n, n)?)?;
        let raw = p.narrow(1, 2 * n, n - 1)?;
        let one = Tensor::ones((p.dim(0)?, 1), p.dtype(), p.device())?;
        let d = softplus_less_ln2(&raw)?.affine((1.0 - MIN) / std::f64::consts::LN_2, 1.0)?;
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

/// The share `xi` of its bin's width at which the spline has risen by
/// `dy` from the bin's start (`ey` short of its end), in a bin of width `w`
/// and height `h = dy + ey` with slopes `d0`, `d1` at its ends: the root in
/// `[0, 1]` of `a xi^2 + b xi + c = 0`. The coefficients are the paper's
/// with `h` written as `dy + ey`, so that no large terms cancel
/// (`a = h (s - d0) + dy (d0 + d1 - 2s) = dy (d1 - s) + ey (s - d0)`);
/// the root is the paper's `2c / (-b - sqrt(b^2 - 4ac))` where `b >= 0`,
/// else `(-b + sqrt(b^2 - 4ac)) / 2a`, the same root without cancellation
/// (a bin flat but for a steep end has `b < 0`).
fn root(
    dy: &Tensor,
    ey: &Tensor,
    h: &Tensor,
    w: &Tensor,
    d0: &Tensor,
    d1: &Tensor,
) -> Result<Tensor> {
    let s = (h / w)?;
    let a = ((dy * (d1 - &s)?)? + (ey * (&s - d0)?)?)?;
    let b = ((ey * d0)? - (dy * (d1 - s.affine(2.0, 0.0)?)?)?)?;
    let c = (&s * dy)?.neg()?;
    let disc = (b.sqr()? - (&a * &c)?.affine(4.0, 0.0)?)?.relu()?.sqrt()?;
    let positive = b.ge(0f64)?;
    let num = positive.where_cond(&c.affine(2.0, 0.0)?, &(&disc - &b)?)?;
    let den = positive.where_cond(&(b.neg()? - &disc)?, &a.affine(2.0, 0.0)?)?;
    // 0 only where b = 0 and disc = 0, so c = 0 and the root is 0
    let den = den.eq(0f64)?.where_cond(&den.ones_like()?, &den)?;
    (num / den)?.clamp(0f64, 1f64)
}

/// The bin of each value `v` (`(M, 1)`) among the knots `by` (`xs` or
/// `ys`, `(M, n + 1)`), and that bin's knots.
fn select(v: &Tensor, by: &Tensor, xs: &Tensor, ys: &Tensor, ds: &Tensor) -> Result<Bin> {
    let n = by.dim(1)? - 1;
    let inner = by.narrow(1, 1, n - 1)?;
    // 1 up to the value's bin, 0 after: a row [1, .., 1, 0, .., 0] of n + 1.
    let below = v.broadcast_ge(&inner)?.to_dtype(v.dtype())?;
    let one = v.ones_like()?;
    let steps = Tensor::cat(&[&one, &below, &one.zeros_like()?], 1)?;
    let hot = (steps.narrow(1, 0, n)? - steps.narrow(1, 1, n)?)?.detach();
    let pick = |t: &Tensor, from: usize| (t.narrow(1, from, n)? * &hot)?.sum_keepdim(1);
    Ok(Bin {
        x0: pick(xs, 0)?,
        x1: pick(xs, 1)?,
        y0: pick(ys, 0)?,
        y1: pick(ys, 1)?,
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

/// `softplus(u) - ln 2` without overflow, exactly 0 at `u = 0`:
/// `max(u, 0) + log((1 + exp(-|u|)) / 2)`.
fn softplus_less_ln2(u: &Tensor) -> Result<Tensor> {
    u.relu()? + u.abs()?.neg()?.exp()?.affine(0.5, 0.5)?.log()?
}
