//! Toy 2-D sets: determinism, moments, densities and entropies.

use std::path::Path;

use crate::data::toy::{grid_entropy, ln_i0, radial_entropy, EIGHT_GAUSSIANS_ENTROPY};
use crate::data::{load, toy_entropy, toy_log_density, toy_sample, Examples, Toy, TOY_NAMES};

fn points(e: &Examples) -> Vec<[f64; 2]> {
    match e {
        Examples::Vectors { data, d: 2, .. } => data
            .chunks(2)
            .map(|p| [f64::from(p[0]), f64::from(p[1])])
            .collect(),
        other => panic!("expected 2-D vectors, got {other:?}"),
    }
}

fn mean_var(p: &[[f64; 2]]) -> ([f64; 2], [f64; 2]) {
    let n = p.len() as f64;
    let m = [0, 1].map(|k| p.iter().map(|x| x[k]).sum::<f64>() / n);
    let v = [0, 1].map(|k| p.iter().map(|x| (x[k] - m[k]).powi(2)).sum::<f64>() / n);
    (m, v)
}

#[test]
fn every_toy_set_is_deterministic_with_a_fixed_test_set() {
    for name in TOY_NAMES {
        let spec = format!("toy:{name}");
        let a = load(&spec, Path::new("."), None, 1).unwrap();
        let b = load(&spec, Path::new("."), None, 1).unwrap();
        let c = load(&spec, Path::new("."), None, 2).unwrap();
        assert_eq!(a.name, spec);
        assert_eq!(a.train.shape(), vec![50_000, 2]);
        assert_eq!(a.test.shape(), vec![10_000, 2]);
        assert_eq!(a, b, "{name}: same seed, same data");
        assert_ne!(
            a.train, c.train,
            "{name}: another seed, other training points"
        );
        assert_eq!(
            a.test, c.test,
            "{name}: the test set does not depend on the seed"
        );
        assert_ne!(points(&a.train)[..10_000], points(&a.test)[..], "{name}");
        let p = points(&a.train);
        assert!(p.iter().all(|x| x[0].is_finite() && x[1].is_finite()));
        let (m, v) = mean_var(&p);
        // Literature scale: centred-ish, standard deviations between 0.8 and 2.5.
        for k in 0..2 {
            assert!(m[k].abs() < 1.0, "{name}: mean {m:?}");
            assert!((0.64..6.25).contains(&v[k]), "{name}: var {v:?}");
        }
        let max = p
            .iter()
            .map(|x| x[0].abs().max(x[1].abs()))
            .fold(0.0, f64::max);
        assert!(max < 6.0, "{name}: max |x| {max}");
    }
}

#[test]
fn eight_gaussians_moments_match_the_formula() {
    // Means on the circle of radius 2√2, σ = 1/(2√2): per-coordinate
    // mean 0 and variance R²/2 + σ² = 4 + 1/8.
    let p = toy_sample("eight-gaussians", 50_000, 5).unwrap();
    let (m, v) = mean_var(&p);
    for k in 0..2 {
        assert!(m[k].abs() < 0.05, "mean {m:?}");
        assert!((v[k] - 4.125).abs() < 0.1, "var {v:?}");
    }
    // Every point is near one of the eight centres.
    let s = 0.5 / std::f64::consts::SQRT_2;
    let mut counts = [0usize; 8];
    for x in &p {
        let ang = x[1].atan2(x[0]).rem_euclid(std::f64::consts::TAU);
        let k = (ang / (std::f64::consts::PI / 4.0)).round() as usize % 8;
        let c = [0, 1].map(|i| {
            let a = k as f64 * std::f64::consts::PI / 4.0;
            2.0 * std::f64::consts::SQRT_2 * if i == 0 { a.cos() } else { a.sin() }
        });
        let d = ((x[0] - c[0]).powi(2) + (x[1] - c[1]).powi(2)).sqrt();
        assert!(d < 6.0 * s, "{x:?} far from centre {k}");
        counts[k] += 1;
    }
    for c in counts {
        assert!((c as f64 - 6250.0).abs() < 400.0, "{counts:?}");
    }
}

#[test]
fn densities_integrate_to_one() {
    let h = 0.02;
    for name in ["eight-gaussians", "circles", "checkerboard"] {
        let mut total = 0.0;
        let m = (16.0 / h) as i64;
        for i in 0..m {
            for j in 0..m {
                let x = [-8.0 + (i as f64 + 0.5) * h, -8.0 + (j as f64 + 0.5) * h];
                total += toy_log_density(name, x).unwrap().exp();
            }
        }
        total *= h * h;
        assert!((total - 1.0).abs() < 1e-3, "{name}: ∫p = {total}");
    }
    for name in ["two-moons", "pinwheel", "two-spirals", "nope"] {
        assert!(toy_log_density(name, [0.0, 0.0]).is_none());
        assert!(toy_entropy(name).is_none());
    }
    // Checkerboard: 1/32 on (0.5, 0.5) [square (0,0)], nothing on (2.5, 0.5).
    assert_eq!(
        toy_log_density("checkerboard", [0.5, 0.5]),
        Some(-(32f64.ln()))
    );
    assert_eq!(
        toy_log_density("checkerboard", [2.5, 0.5]),
        Some(f64::NEG_INFINITY)
    );
}

#[test]
fn samples_lie_where_the_density_is() {
    // Every checkerboard sample is on a black square; no eight-gaussians or
    // circles sample is in a region of negligible density.
    for name in ["checkerboard", "eight-gaussians", "circles"] {
        for x in toy_sample(name, 5_000, 11).unwrap() {
            let lp = toy_log_density(name, x).unwrap();
            assert!(lp > -30.0, "{name}: {x:?} has log density {lp}");
        }
    }
}

#[test]
fn entropies_match_monte_carlo() {
    // −mean log p over samples of the generator estimates the entropy
    // (standard error about 1/√n · sd(log p) < 0.005 here).
    for name in ["eight-gaussians", "circles", "checkerboard"] {
        let h = toy_entropy(name).unwrap();
        let x = toy_sample(name, 100_000, 12_345).unwrap();
        let mc = -x
            .iter()
            .map(|p| toy_log_density(name, *p).unwrap())
            .sum::<f64>()
            / x.len() as f64;
        assert!(
            (mc - h).abs() < 0.02,
            "{name}: documented {h}, Monte-Carlo {mc}"
        );
    }
    assert_eq!(toy_entropy("checkerboard"), Some(32f64.ln()));
    assert!((toy_entropy("eight-gaussians").unwrap() - 2.831_578_360_525).abs() < 1e-12);
    assert!((toy_entropy("circles").unwrap() - 3.268_135_711_706).abs() < 1e-12);
}

#[test]
fn entropy_constants_match_a_coarse_quadrature() {
    let e = grid_entropy(Toy::EightGaussians, 8.0, 0.04);
    assert!((e - EIGHT_GAUSSIANS_ENTROPY).abs() < 1e-8, "{e}");
    let c = radial_entropy(Toy::Circles, 10.0, 1e-3);
    assert!((c - toy_entropy("circles").unwrap()).abs() < 1e-9, "{c}");
}

#[test]
fn bessel_i0() {
    // I₀ values from its series at high precision.
    for (z, i0) in [
        (0.0, 1.0),
        (1.0, 1.266_065_877_752_008_4),
        (10.0, 2_815.716_628_466_254),
    ] {
        assert!((ln_i0(z) - f64::ln(i0)).abs() < 1e-12, "{z}");
    }
    // The two branches meet at 30.
    let (a, b) = (ln_i0(30.0 - 1e-9), ln_i0(30.0));
    assert!((a - b).abs() < 1e-9, "{a} {b}");
    let z = 200.0f64;
    let series = 1.0 + 1.0 / (8.0 * z) + 9.0 / (2.0 * (8.0 * z).powi(2));
    let asymptotic = z - 0.5 * (std::f64::consts::TAU * z).ln() + series.ln();
    assert!((ln_i0(z) - asymptotic).abs() < 1e-8);
}

#[test]
fn toy_sample_is_deterministic_and_names_are_checked() {
    assert_eq!(
        toy_sample("pinwheel", 100, 3).unwrap(),
        toy_sample("pinwheel", 100, 3).unwrap()
    );
    assert!(toy_sample("nope", 1, 0).is_err());
    assert_eq!(
        toy_sample("2spirals", 5, 1).unwrap(),
        toy_sample("two-spirals", 5, 1).unwrap()
    );
}
