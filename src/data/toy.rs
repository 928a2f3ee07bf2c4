//! 2-D toy data sets for flows, as defined in the FFJORD / neural-spline-flow
//! literature (Grathwohl et al. 2019, `toy_data.py`; Durkan et al. 2019),
//! re-derived here from their formulas and sampled i.i.d. (component choices
//! are coin flips rather than fixed equal counts). They keep the literature's
//! scale: every set lies in about [-4, 4]^2 with per-coordinate standard
//! deviations between 1 and 2.1, so numbers are comparable with published ones.
//!
//! Notation: `u ~ U[0,1)`, `z ~ N(0,1)`, all independent.
//!
//! | name | formula |
//! | --- | --- |
//! | `two-moons` | pick an arc with probability 1/2 each, `t = π u`; upper arc `(cos t, sin t)`, lower arc `(1 − cos t, 0.5 − sin t)`; add `0.1 z` to each coordinate; then `x ↦ 2x + (−1, −0.2)` (scikit-learn's `make_moons(noise=0.1)`, scaled as in FFJORD) |
//! | `circles` | pick radius `R = 1` or `0.5` with probability 1/2 each, `θ = 2π u`; `R (cos θ, sin θ) + 0.08 z`; then times 3 (`make_circles(factor=0.5, noise=0.08)·3`): rings of radius 3 and 1.5 blurred by σ = 0.24 |
//! | `eight-gaussians` | `k` uniform in 0..8, centre `c_k = 4 (cos kπ/4, sin kπ/4)`; `x = (c_k + 0.5 z) / √2`: eight equal Gaussians with means on the circle of radius 2√2 and standard deviation σ = 1/(2√2) ≈ 0.354 (FFJORD divides by 1.414; this uses √2 exactly) |
//! | `checkerboard` | `a = 4u − 2`, `b = u' − 2·B` with `B` a fair bit, `b += floor(a) mod 2`; `x = 2 (a, b)`: uniform on the 8 squares of side 2 in [−4, 4)^2 whose indices `floor(x/2) + floor(y/2)` are even |
//! | `pinwheel` | arm `k` uniform in 0..5, `f = (1 + 0.3 z₀, 0.1 z₁)`, angle `a = 2πk/5 + 0.25 e^{f₀}`; `x = 2 (f₀ cos a + f₁ sin a, −f₀ sin a + f₁ cos a)` |
//! | `two-spirals` | `n = 3π √u` (540° of turn), `p = (−n cos n + 0.5 u₁, n sin n + 0.5 u₂)`; with probability 1/2 each `x = p/3` or `x = −p/3`; then add `0.1 z` to each coordinate |
//!
//! Exact densities ([`toy_log_density`]) exist in closed form for
//! `eight-gaussians` (a Gaussian mixture), `circles` (each ring is a uniform
//! angle blurred by an isotropic Gaussian, whose density is
//! `exp(−(r² + R²)/(2σ²)) I₀(rR/σ²) / (2πσ²)`, with I₀ the modified Bessel
//! function), and `checkerboard` (1/32 on its squares).

use super::rng::Rng;
use super::DataError;

/// The toy data set names accepted by `toy:NAME`.
pub const TOY_NAMES: [&str; 6] = [
    "two-moons",
    "circles",
    "eight-gaussians",
    "checkerboard",
    "pinwheel",
    "two-spirals",
];

/// Points in a toy training split.
pub const TOY_TRAIN_SIZE: usize = 50_000;
/// Points in a toy test split.
pub const TOY_TEST_SIZE: usize = 10_000;
/// The fixed seed of every toy test split (mixed with the set's name), so the
/// test set does not depend on the training seed.
pub const TOY_TEST_SEED: u64 = 0x7E57_5E7F_10C0_2D00;

/// Standard deviation of each eight-gaussians component.
pub const EIGHT_GAUSSIANS_SIGMA: f64 = 0.5 / std::f64::consts::SQRT_2;
/// Radius of the circle the eight-gaussians means lie on.
pub const EIGHT_GAUSSIANS_RADIUS: f64 = 2.0 * std::f64::consts::SQRT_2;

const CIRCLES_RADII: [f64; 2] = [3.0, 1.5];
const CIRCLES_SIGMA: f64 = 0.24;

/// Differential entropy of eight-gaussians, in nats: −∫ p ln p of the exact
/// density, by the trapezoid rule on [−8, 8]^2 (steps 0.02, 0.01, 0.005 and
/// 0.0025 agree to 2e-11; the integrand is smooth and negligible at the
/// edges, so the rule converges fast). For comparison, eight components that
/// did not overlap at all would give ln 8 + ln(2πeσ²) ≈ 2.8379.
pub const EIGHT_GAUSSIANS_ENTROPY: f64 = 2.831_578_360_525;
/// Differential entropy of circles, in nats: −∫₀^∞ 2πr p(r) ln p(r) dr of the
/// exact (radially symmetric) density, by the trapezoid rule on r ∈ [0, 10]
/// (steps 1e-3, 1e-4 and 1e-5 agree to 1e-12, and a 2-D grid with step 0.02
/// agrees too).
pub const CIRCLES_ENTROPY: f64 = 3.268_135_711_706;

/// A toy data set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Toy {
    /// Two interleaved half circles.
    TwoMoons,
    /// Two concentric rings.
    Circles,
    /// Eight Gaussians on a circle.
    EightGaussians,
    /// Uniform on the black squares of a 4x4 checkerboard.
    Checkerboard,
    /// Five curved arms.
    Pinwheel,
    /// Two interleaved spirals.
    TwoSpirals,
}

impl Toy {
    /// All toy sets, in the order of [`TOY_NAMES`].
    pub const ALL: [Toy; 6] = [
        Toy::TwoMoons,
        Toy::Circles,
        Toy::EightGaussians,
        Toy::Checkerboard,
        Toy::Pinwheel,
        Toy::TwoSpirals,
    ];

    /// Looks a toy set up by name; FFJORD's names (`moons`, `8gaussians`,
    /// `2spirals`) are accepted too.
    pub fn from_name(name: &str) -> Option<Toy> {
        Some(match name {
            "two-moons" | "moons" => Toy::TwoMoons,
            "circles" => Toy::Circles,
            "eight-gaussians" | "8gaussians" => Toy::EightGaussians,
            "checkerboard" => Toy::Checkerboard,
            "pinwheel" => Toy::Pinwheel,
            "two-spirals" | "2spirals" => Toy::TwoSpirals,
            _ => return None,
        })
    }

    /// The canonical name.
    pub fn name(self) -> &'static str {
        TOY_NAMES[Toy::ALL.iter().position(|&t| t == self).unwrap_or(0)]
    }

    /// The classes of the sets that are mixtures of named parts, with the
    /// part each point was drawn from as its label: the moon (upper 0,
    /// lower 1), the ring (outer 0, inner 1), the Gaussian and the pinwheel
    /// arm (`k`), the spiral (0, 1). Checkerboard has none.
    pub fn classes(self) -> Option<usize> {
        match self {
            Toy::TwoMoons | Toy::Circles | Toy::TwoSpirals => Some(2),
            Toy::EightGaussians => Some(8),
            Toy::Pinwheel => Some(5),
            Toy::Checkerboard => None,
        }
    }

    /// Draws one point and the part it was drawn from (see [`Toy::classes`];
    /// 0 for checkerboard).
    pub(crate) fn sample_one(self, rng: &mut Rng) -> ([f64; 2], u32) {
        use std::f64::consts::{PI, SQRT_2, TAU};
        match self {
            Toy::TwoMoons => {
                let upper = rng.uniform() < 0.5;
                let t = PI * rng.uniform();
                let (x, y) = if upper {
                    (t.cos(), t.sin())
                } else {
                    (1.0 - t.cos(), 0.5 - t.sin())
                };
                let x = x + 0.1 * rng.normal();
                let y = y + 0.1 * rng.normal();
                ([2.0 * x - 1.0, 2.0 * y - 0.2], u32::from(!upper))
            }
            Toy::Circles => {
                let outer = rng.uniform() < 0.5;
                let r = if outer { 1.0 } else { 0.5 };
                let th = TAU * rng.uniform();
                let x = r * th.cos() + 0.08 * rng.normal();
                let y = r * th.sin() + 0.08 * rng.normal();
                ([3.0 * x, 3.0 * y], u32::from(!outer))
            }
            Toy::EightGaussians => {
                let k = rng.below(8);
                let a = k as f64 * PI / 4.0;
                let x = 4.0 * a.cos() + 0.5 * rng.normal();
                let y = 4.0 * a.sin() + 0.5 * rng.normal();
                ([x / SQRT_2, y / SQRT_2], k as u32)
            }
            Toy::Checkerboard => {
                let a = 4.0 * rng.uniform() - 2.0;
                let mut b = rng.uniform() - 2.0 * rng.below(2) as f64;
                b += a.floor().rem_euclid(2.0);
                ([2.0 * a, 2.0 * b], 0)
            }
            Toy::Pinwheel => {
                let k = rng.below(5);
                let f0 = 1.0 + 0.3 * rng.normal();
                let f1 = 0.1 * rng.normal();
                let a = TAU * k as f64 / 5.0 + 0.25 * f0.exp();
                let (s, c) = a.sin_cos();
                let p = [2.0 * (f0 * c + f1 * s), 2.0 * (-f0 * s + f1 * c)];
                (p, k as u32)
            }
            Toy::TwoSpirals => {
                let n = 3.0 * PI * rng.uniform().sqrt();
                let px = -n * n.cos() + 0.5 * rng.uniform();
                let py = n * n.sin() + 0.5 * rng.uniform();
                let first = rng.uniform() < 0.5;
                let sign = if first { 1.0 } else { -1.0 };
                let p = [
                    sign * px / 3.0 + 0.1 * rng.normal(),
                    sign * py / 3.0 + 0.1 * rng.normal(),
                ];
                (p, u32::from(!first))
            }
        }
    }

    /// Draws `n` points from a PRNG seeded with `seed`.
    pub fn sample(self, n: usize, seed: u64) -> Vec<[f64; 2]> {
        self.sample_labelled(n, seed).0
    }

    /// As [`Toy::sample`], with each point's part (see [`Toy::classes`]).
    pub fn sample_labelled(self, n: usize, seed: u64) -> (Vec<[f64; 2]>, Vec<u32>) {
        let mut rng = Rng::new(seed);
        (0..n).map(|_| self.sample_one(&mut rng)).unzip()
    }

    /// The exact log density (natural log) at `x`, where it has a closed
    /// form: eight-gaussians, circles, checkerboard (−∞ off its squares).
    pub fn log_density(self, x: [f64; 2]) -> Option<f64> {
        use std::f64::consts::{PI, TAU};
        match self {
            Toy::EightGaussians => {
                let s2 = EIGHT_GAUSSIANS_SIGMA * EIGHT_GAUSSIANS_SIGMA;
                let terms: Vec<f64> = (0..8)
                    .map(|k| {
                        let a = f64::from(k) * PI / 4.0;
                        let dx = x[0] - EIGHT_GAUSSIANS_RADIUS * a.cos();
                        let dy = x[1] - EIGHT_GAUSSIANS_RADIUS * a.sin();
                        -(dx * dx + dy * dy) / (2.0 * s2)
                    })
                    .collect();
                Some(log_sum_exp(&terms) - 8f64.ln() - (TAU * s2).ln())
            }
            Toy::Circles => {
                let s2 = CIRCLES_SIGMA * CIRCLES_SIGMA;
                let r = x[0].hypot(x[1]);
                let terms: Vec<f64> = CIRCLES_RADII
                    .iter()
                    .map(|&rr| -(r * r + rr * rr) / (2.0 * s2) + ln_i0(r * rr / s2))
                    .collect();
                Some(log_sum_exp(&terms) - 2f64.ln() - (TAU * s2).ln())
            }
            Toy::Checkerboard => {
                let inside = (-4.0..4.0).contains(&x[0]) && (-4.0..4.0).contains(&x[1]);
                let even = ((x[0] / 2.0).floor() + (x[1] / 2.0).floor()).rem_euclid(2.0) == 0.0;
                Some(if inside && even {
                    -(32f64.ln())
                } else {
                    f64::NEG_INFINITY
                })
            }
            Toy::TwoMoons | Toy::Pinwheel | Toy::TwoSpirals => None,
        }
    }

    /// The differential entropy in nats, where known: checkerboard exactly
    /// (ln 32), eight-gaussians and circles by numerical quadrature of the
    /// exact density (see [`EIGHT_GAUSSIANS_ENTROPY`], [`CIRCLES_ENTROPY`]).
    pub fn entropy(self) -> Option<f64> {
        match self {
            Toy::EightGaussians => Some(EIGHT_GAUSSIANS_ENTROPY),
            Toy::Circles => Some(CIRCLES_ENTROPY),
            Toy::Checkerboard => Some(32f64.ln()),
            Toy::TwoMoons | Toy::Pinwheel | Toy::TwoSpirals => None,
        }
    }
}

/// Draws `n` points of the toy set `name` from a PRNG seeded with `seed`
/// (the same seed gives the same points).
pub fn toy_sample(name: &str, n: usize, seed: u64) -> Result<Vec<[f64; 2]>, DataError> {
    let toy = Toy::from_name(name).ok_or_else(|| DataError::UnknownToy {
        name: name.to_string(),
    })?;
    Ok(toy.sample(n, seed))
}

/// The exact log density of the toy set `name` at `x`: `Some` for
/// `eight-gaussians`, `circles` and `checkerboard`; `None` for the others and
/// for unknown names.
pub fn toy_log_density(name: &str, x: [f64; 2]) -> Option<f64> {
    Toy::from_name(name)?.log_density(x)
}

/// The differential entropy (nats) of the toy set `name`: `Some` for
/// `checkerboard` (ln 32, exact), `eight-gaussians` and `circles` (numerical
/// quadrature of the exact density); `None` otherwise. A flow's test NLL in
/// nats per point cannot go below it (up to sampling noise).
pub fn toy_entropy(name: &str) -> Option<f64> {
    Toy::from_name(name)?.entropy()
}

fn log_sum_exp(v: &[f64]) -> f64 {
    let m = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if m == f64::NEG_INFINITY {
        return m;
    }
    m + v.iter().map(|x| (x - m).exp()).sum::<f64>().ln()
}

/// ln I₀(z) for z ≥ 0, I₀ the modified Bessel function of the first kind of
/// order 0: its power series Σ (z²/4)^k / (k!)² below 30, and its asymptotic
/// expansion e^z / √(2πz) · Σ ((2k−1)!!)² / (k! (8z)^k) above.
pub(crate) fn ln_i0(z: f64) -> f64 {
    let z = z.abs();
    if z < 30.0 {
        let q = z * z / 4.0;
        let (mut term, mut sum) = (1.0f64, 1.0f64);
        for k in 1..200 {
            term *= q / f64::from(k * k);
            sum += term;
            if term < 1e-17 * sum {
                break;
            }
        }
        sum.ln()
    } else {
        let (mut term, mut sum) = (1.0f64, 1.0f64);
        for k in 1..60 {
            let odd = f64::from(2 * k - 1);
            let next = term * odd * odd / (8.0 * z * f64::from(k));
            if next.abs() >= term.abs() || next.abs() < 1e-17 {
                break;
            }
            term = next;
            sum += term;
        }
        z - 0.5 * (std::f64::consts::TAU * z).ln() + sum.ln()
    }
}

/// −∫ p ln p over [−half, half]^2 by the trapezoid rule with step `h`
/// (the integrand vanishes at the edges, so it is a plain sum).
#[cfg(test)]
pub(crate) fn grid_entropy(toy: Toy, half: f64, h: f64) -> f64 {
    let m = (2.0 * half / h).round() as i64;
    let mut total = 0.0;
    for i in 0..=m {
        let x = -half + i as f64 * h;
        for j in 0..=m {
            let y = -half + j as f64 * h;
            if let Some(lp) = toy.log_density([x, y]) {
                if lp.is_finite() {
                    total -= lp.exp() * lp;
                }
            }
        }
    }
    total * h * h
}

/// −∫ 2πr p(r) ln p(r) dr over [0, rmax] by the trapezoid rule (radially
/// symmetric sets only).
#[cfg(test)]
pub(crate) fn radial_entropy(toy: Toy, rmax: f64, h: f64) -> f64 {
    let m = (rmax / h).round() as i64;
    let mut total = 0.0;
    for i in 1..=m {
        let r = i as f64 * h;
        if let Some(lp) = toy.log_density([r, 0.0]) {
            total -= std::f64::consts::TAU * r * lp.exp() * lp;
        }
    }
    total * h
}
