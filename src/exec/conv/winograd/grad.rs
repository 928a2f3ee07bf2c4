//! The kernel gradient of a Winograd F(4x4, 3x3) convolution ([`super`])
//! in the transformed domain. With `U = G g G^T` and `V = B^T d B` per
//! kernel and input tile, a tile's output is `Y = A^T (sum_c U (.) V) A`, so
//!
//! ```text
//! dM = A dY A^T                                   per 4x4 output-gradient tile
//! dU[xi][c][o] = sum over tiles of dM[xi][o] V[xi][c]    36 products O x C
//! dg = G^T dU G
//! ```
//!
//! 2.25 multiplications per output position and channel pair, where the
//! direct kernel gradient takes 9. `V` is the forward's input transform
//! ([`super::transform_input`]), recomputed. `dM` is computed with 16
//! output channels in the vector lanes (no shuffles), from a copy of the
//! output gradient in `[position][channel]` order on the tiles' grid, and
//! stored `[xi][tile][channel]`, which is what the direct path's
//! kernel-gradient micro-kernel takes: outer products of 32 output channels
//! by 8 input channels, summed over the tiles in registers.
//!
//! Outputs past the image (the tiles cover `4th x 4tw`) have a zero
//! gradient, so their junk values in the forward contribute nothing.

use std::arch::x86_64::*;
use std::ops::Range;

use crate::exec::parallel::{chunks, map_parts, threads};

use super::super::direct::{dw_block, OB};
use super::Tiles;

/// Input channels per block of the products.
const CB: usize = 8;

/// `G` of the filter transform, `U = G g G^T`.
const G: [[f64; 3]; 6] = [
    [0.25, 0.0, 0.0],
    [-1.0 / 6.0, -1.0 / 6.0, -1.0 / 6.0],
    [-1.0 / 6.0, 1.0 / 6.0, -1.0 / 6.0],
    [1.0 / 24.0, 1.0 / 12.0, 1.0 / 6.0],
    [1.0 / 24.0, -1.0 / 12.0, 1.0 / 6.0],
    [0.0, 0.0, 1.0],
];

impl Tiles {
    /// Output channels rounded up to the products' blocks of 32.
    fn opad(&self) -> usize {
        self.rows.div_ceil(OB) * OB
    }
    /// Input channels rounded up to blocks of [`CB`].
    fn cpad(&self) -> usize {
        self.cols.div_ceil(CB) * CB
    }
    /// Values of one example's output gradient in `[position][channel]`
    /// order on the `4th x 4tw` grid ([`transpose_grad`]).
    pub fn grad_positions_len(&self) -> usize {
        16 * self.per_example() * self.opad()
    }
    /// Distance between the `dM` of two positions `xi`, a cache line more
    /// than their values (as [`Tiles::v_stride`]).
    fn dm_stride(&self) -> usize {
        self.tpad * self.opad() + 16
    }
    /// Values of a chunk's transformed output gradients.
    pub fn grad_scratch_len(&self) -> usize {
        36 * self.dm_stride()
    }
    /// Values of the transformed kernel gradient `dU`: `[xi][cpad][opad]`.
    pub fn du_len(&self) -> usize {
        36 * self.cpad() * self.opad()
    }
}

/// Copies one example's output gradient `gy` (`rows x h x w`) to `dyt`
/// (of [`Tiles::grad_positions_len`]) as `[i * 4tw + j][channel]`.
/// Positions past the image and channels past `rows` are never written:
/// zero in a buffer kept for this geometry.
pub fn transpose_grad(t: &Tiles, gy: &[f32], dyt: &mut [f32]) {
    let (h, w, opad, rw) = (t.h, t.w, t.opad(), 4 * t.tw);
    assert!(super::super::direct::available());
    assert!(gy.len() >= t.rows * h * w && dyt.len() >= t.grad_positions_len());
    for ob in (0..t.rows).step_by(16) {
        for i in 0..h {
            for jb in (0..w).step_by(16) {
                // SAFETY: AVX-512F is present; the block reads channels
                // `ob..` (below `rows`) of row `i`, columns `jb..` (below
                // `w`), of `gy`, and writes 16 channels from `ob` (below
                // `opad`) of positions on row `i` of the grid.
                unsafe {
                    transpose_block(
                        gy[ob * h * w + i * w + jb..].as_ptr(),
                        h * w,
                        (t.rows - ob).min(16),
                        (w - jb).min(16),
                        dyt[(i * rw + jb) * opad + ob..].as_mut_ptr(),
                        opad,
                    );
                }
            }
        }
    }
}

/// `dst[j * dst_stride + r] = src[r * src_stride + j]` for `j < cols` and
/// the 16 rows `r` (zero past `rows`): a 16x16 transpose in four rounds
/// of shuffles (32-bit, 64-bit, then twice 128-bit interleaves).
#[target_feature(enable = "avx512f")]
unsafe fn transpose_block(
    src: *const f32,
    src_stride: usize,
    rows: usize,
    cols: usize,
    dst: *mut f32,
    dst_stride: usize,
) {
    let mask = if cols >= 16 {
        0xffff
    } else {
        ((1u32 << cols) - 1) as __mmask16
    };
    // A loop, not array::from_fn: a closure would not inherit this
    // function's target features.
    let mut r = [_mm512_setzero_ps(); 16];
    for (k, r) in r.iter_mut().enumerate().take(rows) {
        *r = _mm512_maskz_loadu_ps(mask, src.add(k * src_stride));
    }
    // Within 128-bit lanes: t[2k], t[2k+1] interleave rows 2k and 2k+1.
    let mut t = [_mm512_setzero_ps(); 16];
    for k in 0..8 {
        t[2 * k] = _mm512_unpacklo_ps(r[2 * k], r[2 * k + 1]);
        t[2 * k + 1] = _mm512_unpackhi_ps(r[2 * k], r[2 * k + 1]);
    }
    // s[4g + m]: lane L holds column 4L + m of rows 4g..4g+4.
    let pd = _mm512_castps_pd;
    let ps = _mm512_castpd_ps;
    let mut s = [_mm512_setzero_ps(); 16];
    for g in 0..4 {
        let (a, b, c, d) = (t[4 * g], t[4 * g + 1], t[4 * g + 2], t[4 * g + 3]);
        s[4 * g] = ps(_mm512_unpacklo_pd(pd(a), pd(c)));
        s[4 * g + 1] = ps(_mm512_unpackhi_pd(pd(a), pd(c)));
        s[4 * g + 2] = ps(_mm512_unpacklo_pd(pd(b), pd(d)));
        s[4 * g + 3] = ps(_mm512_unpackhi_pd(pd(b), pd(d)));
    }
    for m in 0..4 {
        let x = _mm512_shuffle_f32x4::<0x88>(s[m], s[4 + m]);
        let y = _mm512_shuffle_f32x4::<0xDD>(s[m], s[4 + m]);
        let z = _mm512_shuffle_f32x4::<0x88>(s[8 + m], s[12 + m]);
        let w = _mm512_shuffle_f32x4::<0xDD>(s[8 + m], s[12 + m]);
        let columns = [
            _mm512_shuffle_f32x4::<0x88>(x, z),
            _mm512_shuffle_f32x4::<0x88>(y, w),
            _mm512_shuffle_f32x4::<0xDD>(x, z),
            _mm512_shuffle_f32x4::<0xDD>(y, w),
        ];
        for (l, &col) in columns.iter().enumerate() {
            let j = 4 * l + m;
            if j < cols {
                _mm512_storeu_ps(dst.add(j * dst_stride), col);
            }
        }
    }
}

/// `dM` of example `j` of a chunk from its `dyt` ([`transpose_grad`]),
/// into the chunk's `dm` (of [`Tiles::grad_scratch_len`]).
pub fn transform_grad(t: &Tiles, j: usize, dyt: &[f32], dm: &mut [f32]) {
    assert!(super::super::direct::available() && j < t.per);
    assert!(dyt.len() >= t.grad_positions_len() && dm.len() >= t.grad_scratch_len());
    // SAFETY: AVX-512F is present; the loads read 16 channels of positions
    // inside the example's `4th x 4tw` grid; the stores write 16 channels
    // of tiles `j * per_example ..` plus the example's tiles, below
    // `tpad`, of each of the 36 positions.
    unsafe { grad_transform(t, j * t.per_example(), dyt, dm) }
}

/// `A^T`-transform of one row or column of four: `[y0, y0+y1+y2+y3,
/// y0-y1+y2-y3, y0+2y1+4y2+8y3, y0-2y1+4y2-8y3, y3]`.
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn grad_1d(y: [__m512; 4]) -> [__m512; 6] {
    let even = _mm512_add_ps(y[0], y[2]);
    let odd = _mm512_add_ps(y[1], y[3]);
    let even4 = _mm512_fmadd_ps(_mm512_set1_ps(4.0), y[2], y[0]);
    let odd4 = _mm512_fmadd_ps(_mm512_set1_ps(4.0), y[3], y[1]);
    let odd4 = _mm512_add_ps(odd4, odd4);
    [
        y[0],
        _mm512_add_ps(even, odd),
        _mm512_sub_ps(even, odd),
        _mm512_add_ps(even4, odd4),
        _mm512_sub_ps(even4, odd4),
        y[3],
    ]
}

#[target_feature(enable = "avx512f")]
unsafe fn grad_transform(t: &Tiles, first: usize, dyt: &[f32], dm: &mut [f32]) {
    let (opad, rw, ms) = (t.opad(), 4 * t.tw, t.dm_stride());
    for ty in 0..t.th {
        for tx in 0..t.tw {
            let tile = ty * t.tw + tx;
            for ov in (0..t.rows).step_by(16) {
                let at = |a: usize, b: usize| {
                    _mm512_loadu_ps(
                        dyt.as_ptr()
                            .add(((4 * ty + a) * rw + 4 * tx + b) * opad + ov),
                    )
                };
                // dY A^T by rows a, then A (dY A^T) by columns l.
                let row = |a: usize| grad_1d([at(a, 0), at(a, 1), at(a, 2), at(a, 3)]);
                let r = [row(0), row(1), row(2), row(3)];
                for l in 0..6 {
                    let col = grad_1d([r[0][l], r[1][l], r[2][l], r[3][l]]);
                    for (k, &val) in col.iter().enumerate() {
                        let to = (k * 6 + l) * ms + (first + tile) * opad + ov;
                        _mm512_storeu_ps(dm.as_mut_ptr().add(to), val);
                    }
                }
            }
        }
    }
}

/// `du[xi][c][o] += sum over the tiles of the chunk's first `e` examples
/// of dm[xi][tile][o] * v[xi][c][tile]` (`v` from [`super::transform_input`]).
pub fn accumulate(t: &Tiles, e: usize, dm: &[f32], v: &[f32], du: &mut [f32]) {
    assert!(super::super::direct::available() && e <= t.per);
    assert!(dm.len() >= t.grad_scratch_len() && v.len() >= t.scratch_len().0);
    assert!(du.len() >= t.du_len());
    let (tiles, opad, cpad) = (e * t.per_example(), t.opad(), t.cpad());
    for xi in 0..36 {
        for cb in (0..cpad).step_by(CB) {
            // Channels past `cols` read channel `cb`'s row again; their
            // sums land in rows of `du` nobody reads.
            let taps: [isize; CB] = std::array::from_fn(|k| {
                let c = if cb + k < t.cols { k } else { 0 };
                (c * t.tpad) as isize
            });
            let x = v[xi * t.v_stride() + cb * t.tpad..].as_ptr();
            for ob in (0..opad).step_by(OB) {
                // SAFETY: AVX-512F is present; `dm[xi]` holds `tiles`
                // rows of `opad` from column 0, `v[xi]` rows `cb + taps`
                // (below `cols`) hold `tiles <= tpad` values, and `du[xi]`
                // holds the CB rows of `opad` from row `cb`.
                unsafe {
                    dw_block::<CB>(
                        dm[xi * t.dm_stride() + ob..].as_ptr(),
                        opad,
                        tiles,
                        x,
                        &taps,
                        du[(xi * cpad + cb) * opad + ob..].as_mut_ptr(),
                        opad,
                    );
                }
            }
        }
    }
}

/// `dk[o][c][i][j] += (G^T dU[.][c][o] G)[i][j]` with `dU` the sum of
/// `parts` (added in order): the kernel gradient (`[rows][cols][3][3]`)
/// from the transformed one, in f64, the input channels split over threads.
pub fn add_kernel_grad(t: &Tiles, parts: &[Vec<f32>], dk: &mut [f32]) {
    let opad = t.opad();
    assert!(dk.len() >= t.rows * t.cols * 9);
    let ranges = chunks(t.cols, threads());
    let taps = map_parts(ranges.clone(), |cs| kernel_grad_taps(t, parts, cs));
    for (cs, taps) in ranges.into_iter().zip(taps) {
        let m = cs.len() * opad;
        for c in cs.clone() {
            for o in 0..t.rows {
                let at = (c - cs.start) * opad + o;
                let dko = &mut dk[(o * t.cols + c) * 9..][..9];
                for (tap, v) in dko.iter_mut().enumerate() {
                    *v += taps[tap * m + at] as f32;
                }
            }
        }
    }
}

/// `G^T dU G` for the input channels `cs` and every output channel, from
/// the sum of `parts` (each a `dU`, `[xi][c][o]`, added in order), in f64:
/// `[tap][c - cs.start][opad]`. Each row is contiguous in the channel pairs,
/// so the loops vectorize; callers split the input channels over threads.
fn kernel_grad_taps(t: &Tiles, parts: &[Vec<f32>], cs: Range<usize>) -> Vec<f64> {
    let (opad, n) = (t.opad(), t.cpad() * t.opad());
    let (first, m) = (cs.start * opad, cs.len() * opad);
    assert!(cs.end <= t.cpad() && parts.iter().all(|p| p.len() >= t.du_len()));
    let mut du = vec![0f64; 36 * m];
    for part in parts {
        for (kl, row) in du.chunks_exact_mut(m).enumerate() {
            for (d, &s) in row.iter_mut().zip(&part[kl * n + first..][..m]) {
                *d += f64::from(s);
            }
        }
    }
    // gdu[i][l] = sum over k of G[k][i] dU[k][l].
    let mut gdu = vec![0f64; 18 * m];
    for i in 0..3 {
        for (k, g) in G.iter().enumerate().filter(|(_, g)| g[i] != 0.0) {
            for l in 0..6 {
                let src = &du[(k * 6 + l) * m..][..m];
                for (d, &s) in gdu[(i * 6 + l) * m..][..m].iter_mut().zip(src) {
                    *d += g[i] * s;
                }
            }
        }
    }
    // tap[i][j] = sum over l of gdu[i][l] G[l][j].
    let mut taps = vec![0f64; 9 * m];
    for (ij, tap) in taps.chunks_exact_mut(m).enumerate() {
        let (i, j) = (ij / 3, ij % 3);
        for (l, g) in G.iter().enumerate().filter(|(_, g)| g[j] != 0.0) {
            for (d, &s) in tap.iter_mut().zip(&gdu[(i * 6 + l) * m..][..m]) {
                *d += s * g[j];
            }
        }
    }
    taps
}
