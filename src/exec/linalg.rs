//! Small dense linear algebra on the host: LU decomposition with partial pivoting, solve,
//! inverse and log |det| in f64 (used by [`crate::exec::invconv`] to invert its C x C
//! weight), and a strided single-threaded GEMM for the CPU kernels (the `gemm` crate).
//!
//! ```
//! use flowc::exec::linalg::Lu;
//! let a = [2.0, 1.0, 1.0, 3.0]; // row-major 2x2
//! let lu = Lu::new(&a, 2).unwrap();
//! let inv = lu.inverse();
//! assert!((inv[0] - 0.6).abs() < 1e-12);
//! assert!((lu.log_abs_det() - 5f64.ln()).abs() < 1e-12);
//! ```

use candle_core::WithDType;
use gemm::{gemm, Parallelism};

/// LU factorization `P A = L U` of a square row-major matrix.
#[derive(Debug, Clone)]
pub struct Lu {
    n: usize,
    /// L (strictly below the diagonal, unit diagonal implied) and U (on and above), row-major.
    lu: Vec<f64>,
    /// Row `i` of `P A` is row `piv[i]` of `A`.
    piv: Vec<usize>,
}

impl Lu {
    /// Factorizes the `n x n` row-major matrix `a`; `None` if it is singular (zero pivot).
    pub fn new(a: &[f64], n: usize) -> Option<Self> {
        assert_eq!(a.len(), n * n, "matrix must be n x n");
        let mut lu = a.to_vec();
        let mut piv: Vec<usize> = (0..n).collect();
        for k in 0..n {
            let p = (k..n)
                .max_by(|&i, &j| lu[i * n + k].abs().total_cmp(&lu[j * n + k].abs()))
                .unwrap();
            if lu[p * n + k] == 0.0 || !lu[p * n + k].is_finite() {
                return None;
            }
            if p != k {
                for j in 0..n {
                    lu.swap(k * n + j, p * n + j);
                }
                piv.swap(k, p);
            }
            let pivot = lu[k * n + k];
            for i in k + 1..n {
                let f = lu[i * n + k] / pivot;
                lu[i * n + k] = f;
                for j in k + 1..n {
                    lu[i * n + j] -= f * lu[k * n + j];
                }
            }
        }
        Some(Self { n, lu, piv })
    }

    /// Solves `A x = b`.
    pub fn solve(&self, b: &[f64]) -> Vec<f64> {
        let n = self.n;
        let mut x: Vec<f64> = self.piv.iter().map(|&p| b[p]).collect();
        for i in 0..n {
            for j in 0..i {
                x[i] -= self.lu[i * n + j] * x[j];
            }
        }
        for i in (0..n).rev() {
            for j in i + 1..n {
                x[i] -= self.lu[i * n + j] * x[j];
            }
            x[i] /= self.lu[i * n + i];
        }
        x
    }

    /// `A^-1`, row-major.
    pub fn inverse(&self) -> Vec<f64> {
        let n = self.n;
        let mut inv = vec![0.0; n * n];
        let mut e = vec![0.0; n];
        for j in 0..n {
            e.iter_mut().for_each(|v| *v = 0.0);
            e[j] = 1.0;
            let col = self.solve(&e);
            for i in 0..n {
                inv[i * n + j] = col[i];
            }
        }
        inv
    }

    /// `log |det A|`.
    pub fn log_abs_det(&self) -> f64 {
        (0..self.n)
            .map(|i| self.lu[i * self.n + i].abs().ln())
            .sum()
    }
}

/// Inverse of an `n x n` row-major matrix, or an error if singular.
pub fn inverse(a: &[f64], n: usize) -> candle_core::Result<Vec<f64>> {
    Lu::new(a, n)
        .map(|lu| lu.inverse())
        .ok_or_else(|| candle_core::Error::Msg("singular matrix".into()))
}

/// `dst (m x n) = [dst +] lhs (m x k) · rhs (k x n)`, strides in elements (row, column).
#[allow(clippy::too_many_arguments)]
pub(crate) fn matmul<T: WithDType>(
    m: usize,
    n: usize,
    k: usize,
    dst: &mut [T],
    accumulate: bool,
    lhs: &[T],
    lhs_rs: usize,
    lhs_cs: usize,
    rhs: &[T],
    rhs_rs: usize,
    rhs_cs: usize,
) {
    // SAFETY: the slices hold the m x n, m x k and k x n matrices at the given strides.
    unsafe {
        gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            accumulate,
            lhs.as_ptr(),
            lhs_cs as isize,
            lhs_rs as isize,
            rhs.as_ptr(),
            rhs_cs as isize,
            rhs_rs as isize,
            if accumulate { T::one() } else { T::zero() },
            T::one(),
            false,
            false,
            false,
            Parallelism::None,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lu_inverse_and_det() {
        let a = [0.0, 2.0, 1.0, 1.0, 1.0, 0.0, 3.0, 0.0, 1.0];
        let lu = Lu::new(&a, 3).unwrap();
        let inv = lu.inverse();
        for i in 0..3 {
            for j in 0..3 {
                let v: f64 = (0..3).map(|k| a[i * 3 + k] * inv[k * 3 + j]).sum();
                assert!((v - if i == j { 1.0 } else { 0.0 }).abs() < 1e-12);
            }
        }
        // det = 0*(1-0) - 2*(1-0) + 1*(0-3) = -5
        assert!((lu.log_abs_det() - 5f64.ln()).abs() < 1e-12);
        assert!(Lu::new(&[1.0, 2.0, 2.0, 4.0], 2).is_none());
    }
}
