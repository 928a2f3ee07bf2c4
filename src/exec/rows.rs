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
}
