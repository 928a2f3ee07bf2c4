//! Elementwise passes over short rows, in AVX-512 with a masked tail.
//!
//! Why: the fused ResNet applies a batch norm + ReLU to each row of a
//! convolution's input on its way onto the padded grid, and the bias and the
//! residual to each result row on its way out. Its rows are 7 to 32 values
//! long; compiled for the baseline x86-64 those loops ran four lanes at a
//! time with a scalar tail (14% of a realnvp_fashion pass). Here a row is
//! one or two 16-lane vectors, the last one masked. Other machines run the
//! same formulas in plain loops.

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

fn avx512() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Where the rows of a plane lie in a buffer: row `i` at `at + i * pitch`,
/// each `w` values long.
#[derive(Clone, Copy, Debug)]
pub struct Plane {
    pub at: usize,
    pub pitch: usize,
    pub h: usize,
    pub w: usize,
}

impl Plane {
    /// `h` rows of `w` values one after the other.
    pub fn packed(h: usize, w: usize) -> Plane {
        Plane {
            at: 0,
            pitch: w,
            h,
            w,
        }
    }
    /// The values a buffer needs to hold the plane's last row.
    fn end(&self) -> usize {
        if self.h == 0 {
            0
        } else {
            self.at + (self.h - 1) * self.pitch + self.w
        }
    }
}

/// `dst[to's row i][j] = max(src[i * w + j] * a + b, 0)`.
pub fn affine_relu(src: &[f32], a: f32, b: f32, dst: &mut [f32], to: Plane) {
    assert!(src.len() >= to.h * to.w && dst.len() >= to.end() && to.pitch >= to.w);
    #[cfg(target_arch = "x86_64")]
    if avx512() {
        // SAFETY: AVX-512F is present; the rows read and written lie inside
        // `src` and `dst` (asserted).
        return unsafe { affine_relu_avx512(src, a, b, dst, to) };
    }
    for i in 0..to.h {
        let out = &mut dst[to.at + i * to.pitch..][..to.w];
        for (d, &s) in out.iter_mut().zip(&src[i * to.w..]) {
            *d = (s * a + b).max(0.0);
        }
    }
}

/// `dst[i * w + j] = src[from's row i][j] + bias + residual[i * w + j]`
/// (no residual: without it).
pub fn add_bias(src: &[f32], from: Plane, bias: f32, residual: Option<&[f32]>, dst: &mut [f32]) {
    let n = from.h * from.w;
    assert!(src.len() >= from.end() && dst.len() >= n && from.pitch >= from.w);
    assert!(residual.is_none_or(|r| r.len() >= n));
    #[cfg(target_arch = "x86_64")]
    if avx512() {
        // SAFETY: AVX-512F is present; the rows read and written lie inside
        // `src`, `residual` and `dst` (asserted).
        return unsafe { add_bias_avx512(src, from, bias, residual, dst) };
    }
    for i in 0..from.h {
        let row = &src[from.at + i * from.pitch..][..from.w];
        for (j, &s) in row.iter().enumerate() {
            let k = i * from.w + j;
            dst[k] = s + bias + residual.map_or(0.0, |r| r[k]);
        }
    }
}

/// `(sum(v - k), sum((v - k)^2))`: 16 f32 lanes, lane `l` summing
/// `v[16 i + l]` in order (so each lane sums few values), totalled in f64,
/// and the last `len % 16` values added in f64. A batch norm's statistics
/// about a shift near the mean (`var = E[(v-k)^2] - E[v-k]^2` without
/// cancellation).
pub fn shifted_sums(v: &[f32], k: f32) -> (f64, f64) {
    let full = v.len() / 16 * 16;
    let (mut s, mut ss) = ([0f32; 16], [0f32; 16]);
    #[cfg(target_arch = "x86_64")]
    let done = avx512() && {
        // SAFETY: AVX-512F is present; the loads read whole chunks of `v`.
        unsafe { shifted_sums_avx512(&v[..full], k, &mut s, &mut ss) };
        true
    };
    #[cfg(not(target_arch = "x86_64"))]
    let done = false;
    if !done {
        for ch in v[..full].chunks_exact(16) {
            for l in 0..16 {
                let d = ch[l] - k;
                s[l] += d;
                ss[l] += d * d;
            }
        }
    }
    let (mut a, mut b) = (total(&s), total(&ss));
    for &x in &v[full..] {
        a += (x - k) as f64;
        b += ((x - k) * (x - k)) as f64;
    }
    (a, b)
}

/// `(sum(dy), sum(dy * xhat))` of one channel's batch norm + ReLU backward,
/// `dy = g` where `x * a + b > 0` (else 0), `xhat = (x - mean) * inv`;
/// lanes as [`shifted_sums`].
pub fn bn_relu_sums(x: &[f32], g: &[f32], [a, b, mean, inv]: [f32; 4]) -> (f64, f64) {
    assert_eq!(x.len(), g.len());
    let full = x.len() / 16 * 16;
    let (mut s, mut s2) = ([0f32; 16], [0f32; 16]);
    let step = |x: f32, g: f32| {
        let dy = if x * a + b > 0.0 { g } else { 0.0 };
        (dy, dy * (x - mean) * inv)
    };
    #[cfg(target_arch = "x86_64")]
    let done = avx512() && {
        // SAFETY: AVX-512F is present; the loads read whole chunks of `x`, `g`.
        unsafe { bn_relu_sums_avx512(&x[..full], &g[..full], [a, b, mean, inv], &mut s, &mut s2) };
        true
    };
    #[cfg(not(target_arch = "x86_64"))]
    let done = false;
    if !done {
        for (xs, gs) in x[..full].chunks_exact(16).zip(g.chunks_exact(16)) {
            for l in 0..16 {
                let (d, d2) = step(xs[l], gs[l]);
                s[l] += d;
                s2[l] += d2;
            }
        }
    }
    let (mut t, mut t2) = (total(&s), total(&s2));
    for (&x, &g) in x[full..].iter().zip(&g[full..]) {
        let (d, d2) = step(x, g);
        t += d as f64;
        t2 += d2 as f64;
    }
    (t, t2)
}

/// `out = k (dy - m1 - xhat m2)` (with `add`: `out += ...`), `dy` and
/// `xhat` as in [`bn_relu_sums`]: the gradient through a batch norm + ReLU
/// (in training, through its batch statistics; `m1 = m2 = 0` otherwise).
pub fn bn_relu_grad(
    x: &[f32],
    g: &[f32],
    [a, b, mean, inv]: [f32; 4],
    [k, m1, m2]: [f32; 3],
    out: &mut [f32],
    add: bool,
) {
    assert!(x.len() == g.len() && out.len() == x.len());
    #[cfg(target_arch = "x86_64")]
    if avx512() {
        // SAFETY: AVX-512F is present; the three slices have the same
        // length (asserted) and the last vector is masked to it.
        return unsafe { bn_relu_grad_avx512(x, g, [a, b, mean, inv], [k, m1, m2], out, add) };
    }
    for (o, (&xv, &g)) in out.iter_mut().zip(x.iter().zip(g)) {
        let dy = if xv * a + b > 0.0 { g } else { 0.0 };
        let v = k * (dy - m1 - (xv - mean) * inv * m2);
        *o = if add { *o + v } else { v };
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn bn_relu_grad_avx512(
    x: &[f32],
    g: &[f32],
    [a, b, mean, inv]: [f32; 4],
    [k, m1, m2]: [f32; 3],
    out: &mut [f32],
    add: bool,
) {
    let set = _mm512_set1_ps;
    let (av, bv, mv, iv) = (set(a), set(b), set(mean), set(inv));
    let (kv, m1v, m2v) = (set(k), set(m1), set(m2));
    for j in (0..x.len()).step_by(16) {
        let m = lanes(j, x.len());
        let xv = _mm512_maskz_loadu_ps(m, x.as_ptr().add(j));
        let pre = _mm512_add_ps(_mm512_mul_ps(xv, av), bv);
        let on = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(pre, _mm512_setzero_ps());
        let dy = _mm512_maskz_loadu_ps(m & on, g.as_ptr().add(j));
        let xhat_m2 = _mm512_mul_ps(_mm512_mul_ps(_mm512_sub_ps(xv, mv), iv), m2v);
        let mut v = _mm512_mul_ps(kv, _mm512_sub_ps(_mm512_sub_ps(dy, m1v), xhat_m2));
        let o = out.as_mut_ptr().add(j);
        if add {
            v = _mm512_add_ps(_mm512_maskz_loadu_ps(m, o), v);
        }
        _mm512_mask_storeu_ps(o, m, v);
    }
}

fn total(lanes: &[f32; 16]) -> f64 {
    lanes.iter().map(|&x| x as f64).sum()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn shifted_sums_avx512(v: &[f32], k: f32, s: &mut [f32; 16], ss: &mut [f32; 16]) {
    let kv = _mm512_set1_ps(k);
    let (mut sv, mut ssv) = (_mm512_setzero_ps(), _mm512_setzero_ps());
    for j in (0..v.len()).step_by(16) {
        let d = _mm512_sub_ps(_mm512_loadu_ps(v.as_ptr().add(j)), kv);
        sv = _mm512_add_ps(sv, d);
        // A product, then a sum: the rounding of the plain loop.
        ssv = _mm512_add_ps(ssv, _mm512_mul_ps(d, d));
    }
    _mm512_storeu_ps(s.as_mut_ptr(), sv);
    _mm512_storeu_ps(ss.as_mut_ptr(), ssv);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn bn_relu_sums_avx512(
    x: &[f32],
    g: &[f32],
    [a, b, mean, inv]: [f32; 4],
    s: &mut [f32; 16],
    s2: &mut [f32; 16],
) {
    let (av, bv, mv, iv) = (
        _mm512_set1_ps(a),
        _mm512_set1_ps(b),
        _mm512_set1_ps(mean),
        _mm512_set1_ps(inv),
    );
    let (mut sv, mut s2v) = (_mm512_setzero_ps(), _mm512_setzero_ps());
    for j in (0..x.len()).step_by(16) {
        let xv = _mm512_loadu_ps(x.as_ptr().add(j));
        let pre = _mm512_add_ps(_mm512_mul_ps(xv, av), bv);
        let on = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(pre, _mm512_setzero_ps());
        let dy = _mm512_maskz_mov_ps(on, _mm512_loadu_ps(g.as_ptr().add(j)));
        sv = _mm512_add_ps(sv, dy);
        let d2 = _mm512_mul_ps(_mm512_mul_ps(dy, _mm512_sub_ps(xv, mv)), iv);
        s2v = _mm512_add_ps(s2v, d2);
    }
    _mm512_storeu_ps(s.as_mut_ptr(), sv);
    _mm512_storeu_ps(s2.as_mut_ptr(), s2v);
}

/// The lanes of the vector at `j` that lie inside a row of `len`.
#[cfg(target_arch = "x86_64")]
fn lanes(j: usize, len: usize) -> __mmask16 {
    let left = len - j;
    if left >= 16 {
        0xffff
    } else {
        ((1u32 << left) - 1) as __mmask16
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn affine_relu_avx512(src: &[f32], a: f32, b: f32, dst: &mut [f32], to: Plane) {
    let (av, bv, zero) = (_mm512_set1_ps(a), _mm512_set1_ps(b), _mm512_setzero_ps());
    for i in 0..to.h {
        let (s, d) = (
            src.as_ptr().add(i * to.w),
            dst.as_mut_ptr().add(to.at + i * to.pitch),
        );
        for j in (0..to.w).step_by(16) {
            let m = lanes(j, to.w);
            let x = _mm512_maskz_loadu_ps(m, s.add(j));
            // max(v, 0) is 0 for NaN, as `f32::max` (it returns the other operand).
            let y = _mm512_max_ps(_mm512_fmadd_ps(x, av, bv), zero);
            _mm512_mask_storeu_ps(d.add(j), m, y);
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn add_bias_avx512(
    src: &[f32],
    from: Plane,
    bias: f32,
    residual: Option<&[f32]>,
    dst: &mut [f32],
) {
    let bv = _mm512_set1_ps(bias);
    for i in 0..from.h {
        let s = src.as_ptr().add(from.at + i * from.pitch);
        let d = dst.as_mut_ptr().add(i * from.w);
        for j in (0..from.w).step_by(16) {
            let m = lanes(j, from.w);
            let mut y = _mm512_add_ps(_mm512_maskz_loadu_ps(m, s.add(j)), bv);
            if let Some(r) = residual {
                let r = r.as_ptr().add(i * from.w + j);
                y = _mm512_add_ps(y, _mm512_maskz_loadu_ps(m, r));
            }
            _mm512_mask_storeu_ps(d.add(j), m, y);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every row length around the vector width, rows apart by more than
    /// their length, against the formulas; the values between rows are
    /// left alone.
    #[test]
    fn planes_of_every_row_length_match_the_formulas() {
        for w in [0, 1, 7, 15, 16, 17, 28, 32, 33] {
            let h = 3;
            let grid = Plane {
                at: 2,
                pitch: w + 5,
                h,
                w,
            };
            let src: Vec<f32> = (0..h * w).map(|i| (i as f32 - 5.0) * 0.75).collect();
            let res: Vec<f32> = (0..h * w).map(|i| i as f32 * 0.5).collect();
            let mut padded = vec![9.0f32; grid.end() + 4];
            affine_relu(&src, 1.5, -0.25, &mut padded, grid);
            for (k, &v) in padded.iter().enumerate() {
                let (i, j) = ((k.max(2) - 2) / grid.pitch, (k.max(2) - 2) % grid.pitch);
                if k < 2 || i >= h || j >= w {
                    assert_eq!(v, 9.0, "w {w}: {k} is not in a row");
                    continue;
                }
                // One rounding (fused) or two: within an ulp of the value.
                let want = (src[i * w + j] as f64 * 1.5 - 0.25).max(0.0);
                assert!((v as f64 - want).abs() <= 1e-6 * want, "w {w} at {i},{j}");
            }
            let mut out = vec![9.0f32; h * w + 3];
            add_bias(&padded, grid, 0.5, Some(&res), &mut out);
            for i in 0..h {
                for j in 0..w {
                    let k = i * w + j;
                    assert_eq!(out[k], padded[2 + i * grid.pitch + j] + 0.5 + res[k]);
                }
            }
            add_bias(&padded, grid, -2.0, None, &mut out);
            for i in 0..h {
                for j in 0..w {
                    assert_eq!(out[i * w + j], padded[2 + i * grid.pitch + j] - 2.0);
                }
            }
            assert_eq!(&out[h * w..], &[9.0; 3]);
        }
    }

    /// The sums take lane `l` as every 16th value in order, totalled in
    /// f64 with the tail added in f64: exactly, on every length around the
    /// vector width; and the batch norm's ReLU gate sends nothing through
    /// where `x a + b <= 0` (NaN included).
    #[test]
    fn sums_match_their_lanes_exactly() {
        let lanes = |v: &[f32], f: &dyn Fn(usize) -> (f32, f32)| {
            let full = v.len() / 16 * 16;
            let (mut s, mut s2) = ([0f32; 16], [0f32; 16]);
            for i in 0..full {
                let (a, b) = f(i);
                s[i % 16] += a;
                s2[i % 16] += b;
            }
            let (mut t, mut t2) = (total(&s), total(&s2));
            for i in full..v.len() {
                let (a, b) = f(i);
                t += a as f64;
                t2 += b as f64;
            }
            (t, t2)
        };
        for n in [0, 1, 15, 16, 17, 31, 33, 196, 1024] {
            let x: Vec<f32> = (0..n)
                .map(|i| ((i * 37 % 101) as f32 - 50.0) * 0.0137)
                .collect();
            let mut g: Vec<f32> = (0..n)
                .map(|i| ((i * 53 % 97) as f32 - 48.0) * 0.021)
                .collect();
            let k = 0.3f32;
            let want = lanes(&x, &|i| ((x[i] - k), (x[i] - k) * (x[i] - k)));
            assert_eq!(shifted_sums(&x, k), want, "n {n}");
            let (a, b, mean, inv) = (1.7f32, -0.2f32, 0.1f32, 2.5f32);
            if n > 3 {
                g[3] = f32::NAN;
            }
            let gate = |i: usize| {
                let dy = if x[i] * a + b > 0.0 { g[i] } else { 0.0 };
                (dy, dy * (x[i] - mean) * inv)
            };
            let got = bn_relu_sums(&x, &g, [a, b, mean, inv]);
            let want = lanes(&x, &gate);
            // x[3] a + b < 0: the NaN at 3 stays out.
            assert!(got.0.is_finite() && got.1.is_finite(), "n {n}");
            let (kk, m1, m2) = (0.7f32, 0.05f32, -0.3f32);
            let mut out: Vec<f32> = (0..n).map(|i| i as f32 * 0.5).collect();
            let before = out.clone();
            for add in [false, true] {
                let base = if add { out.clone() } else { before.clone() };
                bn_relu_grad(&x, &g, [a, b, mean, inv], [kk, m1, m2], &mut out, add);
                for i in 0..n {
                    let v = kk * (gate(i).0 - m1 - (x[i] - mean) * inv * m2);
                    let want = if add { base[i] + v } else { v };
                    assert_eq!(out[i].to_bits(), want.to_bits(), "n {n} at {i}, add {add}");
                }
            }
            assert_eq!(got.0.to_bits(), want.0.to_bits(), "n {n}");
            assert_eq!(got.1.to_bits(), want.1.to_bits(), "n {n}");
        }
    }
}
