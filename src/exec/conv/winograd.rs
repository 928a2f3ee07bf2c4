//! 3x3 "same" convolutions by Winograd's minimal filtering F(2x2, 3x3)
//! (Lavin & Gray 2016), f32 with AVX-512: 16 multiplications per 2x2
//! outputs and channel pair instead of 36.
//!
//! ```text
//! Y = A^T [ (G g G^T) (.) (B^T d B) ] A      per 4x4 input tile d, stride 2
//! B^T = [1 0 -1 0; 0 1 1 0; 0 -1 1 0; 0 1 0 -1]
//! G   = [1 0 0; 1/2 1/2 1/2; 1/2 -1/2 1/2; 0 0 1]
//! A^T = [1 1 1 0; 0 1 -1 -1]
//! ```
//! The 16 products of a tile are 16 GEMMs `M[xi] (O x T) = U[xi] (O x C) .
//! V[xi] (C x T)` over the tiles T of a chunk of examples, run by the direct
//! path's micro-kernel with a single tap. The transforms are vectorized
//! across 16 tiles of a tile row: the column transform along x (contiguous),
//! the row transform on even/odd lanes split by permutes.
//!
//! Inputs sit on their own padded grid: `(2*th + 2) x (2*tw + 2)` planes
//! with the image at (1, 1) and zeros around, so every tile, also those
//! past an odd edge, reads inside its plane. Results come out as
//! `rows x 2th x 2tw` planes per example (rows and columns past the image
//! are junk).
//!
//! Every multiplication of the transforms is by 1 or 1/2, so the results
//! differ from the direct path's by rounding only (tested against the f64
//! im2col path).

// The transforms index matrices by their math names (rows k, columns l).
#![allow(clippy::needless_range_loop)]

use std::arch::x86_64::*;

use super::direct::{conv_block, MR, NR};

/// Tile geometry of one `h x w` map.
#[derive(Clone, Copy, Debug)]
pub struct Tiles {
    pub h: usize,
    pub w: usize,
    /// Tiles per column and per row.
    th: usize,
    tw: usize,
    /// Padded plane width and size.
    pw: usize,
    plane: usize,
}

impl Tiles {
    pub fn new(h: usize, w: usize) -> Tiles {
        let (th, tw) = (h.div_ceil(2), w.div_ceil(2));
        let pw = 2 * tw + 2;
        Tiles {
            h,
            w,
            th,
            tw,
            pw,
            plane: (2 * th + 2) * pw,
        }
    }
    pub fn per_example(&self) -> usize {
        self.th * self.tw
    }
    /// Values of one example's padded input of `planes` planes, with slack
    /// for the input transform's whole-vector reads past the last row.
    pub fn padded_len(&self, planes: usize) -> usize {
        planes * self.plane + 34
    }
    /// Where row `i` of plane `c` starts in a padded input.
    pub fn interior_row(&self, c: usize, i: usize) -> usize {
        c * self.plane + (i + 1) * self.pw + 1
    }
    /// Values of one example's result of `rows` planes.
    pub fn result_len(&self, rows: usize) -> usize {
        rows * 4 * self.th * self.tw
    }
    /// Where row `i` of output channel `c` starts in a result.
    pub fn result_row(&self, c: usize, i: usize) -> usize {
        (c * 2 * self.th + i) * 2 * self.tw
    }
    /// Examples per chunk (about 512 tiles), and the chunk's tile count
    /// rounded up to whole micro-kernel blocks.
    pub fn chunk(&self) -> (usize, usize) {
        let e = (512 / self.per_example()).max(1);
        (e, (e * self.per_example()).div_ceil(NR) * NR)
    }
    /// Scratch of a chunk: transformed inputs of `cols` planes and products
    /// of `rows` planes.
    pub fn scratch_len(&self, cols: usize, rows: usize) -> (usize, usize) {
        let t = self.chunk().1;
        // The output transform reads whole vectors of 16 tiles: slack past the end.
        (16 * cols * t, 16 * rows.div_ceil(MR) * MR * t + 16)
    }
}

/// `U = G g G^T` of a `[o][c][3][3]` kernel, packed for the micro-kernel:
/// `[xi][block of MR rows][c][MR]`. With `transpose`, of the input
/// gradient's kernel (`c` and `o` swapped, taps flipped).
pub fn pack_filters(wt: &[f32], o: usize, c: usize, transpose: bool) -> Vec<f32> {
    let (rows, cols) = if transpose { (c, o) } else { (o, c) };
    let blocks = rows.div_ceil(MR);
    let per_xi = blocks * cols * MR;
    let mut p = vec![0f32; 16 * per_xi];
    for r in 0..rows {
        for k in 0..cols {
            let g = |i: usize, j: usize| {
                if transpose {
                    wt[(k * c + r) * 9 + (2 - i) * 3 + (2 - j)]
                } else {
                    wt[(r * c + k) * 9 + i * 3 + j]
                }
            };
            // G g (4 x 3), then (G g) G^T (4 x 4).
            let mut gg = [[0f32; 3]; 4];
            for j in 0..3 {
                let (a, b, d) = (g(0, j), g(1, j), g(2, j));
                gg[0][j] = a;
                gg[1][j] = 0.5 * (a + b + d);
                gg[2][j] = 0.5 * (a - b + d);
                gg[3][j] = d;
            }
            for (i, row) in gg.iter().enumerate() {
                let (a, b, d) = (row[0], row[1], row[2]);
                let u = [a, 0.5 * (a + b + d), 0.5 * (a - b + d), d];
                for (j, &v) in u.iter().enumerate() {
                    p[(i * 4 + j) * per_xi + ((r / MR) * cols + k) * MR + r % MR] = v;
                }
            }
        }
    }
    p
}

/// Convolves the `e` examples of a chunk: `xp` holds their padded inputs
/// (`cols` planes each, one after the other), `res` receives their results
/// (`rows` planes each); `v` and `m` are scratch of [`Tiles::scratch_len`].
#[allow(clippy::too_many_arguments)]
pub fn conv_chunk(
    t: &Tiles,
    e: usize,
    xp: &[f32],
    cols: usize,
    upk: &[f32],
    rows: usize,
    v: &mut [f32],
    m: &mut [f32],
    res: &mut [f32],
) {
    let tpad = t.chunk().1;
    let (vlen, mlen) = t.scratch_len(cols, rows);
    assert!(super::direct::available() && e * t.per_example() <= tpad);
    assert!(xp.len() >= e * t.padded_len(cols) && res.len() >= e * t.result_len(rows));
    assert!(v.len() >= vlen && m.len() >= mlen && upk.len() >= 16 * rows.div_ceil(MR) * cols * MR);
    // SAFETY (all three): AVX-512F is present (asserted above), and every
    // index stays inside the slices whose lengths were just checked.
    unsafe { input_transform(t, e, xp, cols, tpad, v) };
    let blocks = rows.div_ceil(MR);
    for xi in 0..16 {
        for b in 0..blocks {
            for r in (0..tpad).step_by(NR) {
                unsafe {
                    conv_block::<1, { NR / 16 }>(
                        v.as_ptr().add(xi * cols * tpad + r),
                        cols,
                        tpad,
                        &[0],
                        upk.as_ptr().add((xi * blocks + b) * cols * MR),
                        m.as_mut_ptr().add((xi * blocks + b) * MR * tpad + r),
                        tpad,
                    );
                }
            }
        }
    }
    unsafe { output_transform(t, e, m, blocks * MR, rows, tpad, res) };
}

/// Lanes 2i (`even`) and 2i+1 (`odd`) of the 32 floats at `p`.
#[target_feature(enable = "avx512f")]
unsafe fn deinterleave(p: *const f32) -> (__m512, __m512) {
    let (a, b) = (_mm512_loadu_ps(p), _mm512_loadu_ps(p.add(16)));
    let even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    let odd = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
    (
        _mm512_permutex2var_ps(a, even, b),
        _mm512_permutex2var_ps(a, odd, b),
    )
}

/// `v[xi][c][tile] = (B^T d B)[xi]` for every tile of the chunk, 16 tiles
/// of a tile row at a time. The column transform is linear, so it is
/// applied to the even and odd lanes after they are split; everything stays
/// in registers (a band written to memory and read back at another offset
/// stalls on store forwarding).
#[target_feature(enable = "avx512f")]
unsafe fn input_transform(
    t: &Tiles,
    e: usize,
    xp: &[f32],
    cols: usize,
    tpad: usize,
    v: &mut [f32],
) {
    let pw = t.pw;
    for ex in 0..e {
        for c in 0..cols {
            let plane = xp.as_ptr().add(ex * t.padded_len(cols) + c * t.plane);
            for ty in 0..t.th {
                let tile0 = ex * t.per_example() + ty * t.tw;
                for tx in (0..t.tw).step_by(16) {
                    let left = t.tw - tx;
                    let mask: __mmask16 = if left >= 16 {
                        0xffff
                    } else {
                        (1u16 << left) - 1
                    };
                    // Row i of the tile group: lanes x = 2tx + {0, 1, 2, 3}.
                    let mut d = [[_mm512_setzero_ps(); 4]; 4];
                    for (i, di) in d.iter_mut().enumerate() {
                        let row = plane.add((2 * ty + i) * pw + 2 * tx);
                        let (e0, o0) = deinterleave(row);
                        let (e2, o2) = deinterleave(row.add(2));
                        *di = [e0, o0, e2, o2];
                    }
                    for k in 0..4 {
                        // (B^T d)[k] for the four lane sets.
                        let col = |j: usize| match k {
                            0 => _mm512_sub_ps(d[0][j], d[2][j]),
                            1 => _mm512_add_ps(d[1][j], d[2][j]),
                            2 => _mm512_sub_ps(d[2][j], d[1][j]),
                            _ => _mm512_sub_ps(d[1][j], d[3][j]),
                        };
                        let (e0, o0, e2, o2) = (col(0), col(1), col(2), col(3));
                        let vals = [
                            _mm512_sub_ps(e0, e2),
                            _mm512_add_ps(o0, e2),
                            _mm512_sub_ps(e2, o0),
                            _mm512_sub_ps(o0, o2),
                        ];
                        for (l, &val) in vals.iter().enumerate() {
                            let at = ((k * 4 + l) * cols + c) * tpad + tile0 + tx;
                            _mm512_mask_storeu_ps(v.as_mut_ptr().add(at), mask, val);
                        }
                    }
                }
            }
        }
    }
}

/// `res[ex][o][2ty + a][2tx + b] = (A^T M A)[a][b]` for every tile.
#[target_feature(enable = "avx512f")]
unsafe fn output_transform(
    t: &Tiles,
    e: usize,
    m: &[f32],
    mrows: usize,
    rows: usize,
    tpad: usize,
    res: &mut [f32],
) {
    let lo = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
    let hi = _mm512_setr_epi32(8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31);
    for ex in 0..e {
        let out = &mut res[ex * t.result_len(rows)..][..t.result_len(rows)];
        for o in 0..rows {
            for ty in 0..t.th {
                let tile0 = ex * t.per_example() + ty * t.tw;
                for tx in (0..t.tw).step_by(16) {
                    let n = (t.tw - tx).min(16);
                    let mk = |xi: usize| {
                        _mm512_loadu_ps(m.as_ptr().add((xi * mrows + o) * tpad + tile0 + tx))
                    };
                    // A^T M: s[a][l], then (A^T M) A.
                    let mut s = [[_mm512_setzero_ps(); 4]; 2];
                    for l in 0..4 {
                        let (m0, m1, m2, m3) = (mk(l), mk(4 + l), mk(8 + l), mk(12 + l));
                        s[0][l] = _mm512_add_ps(_mm512_add_ps(m0, m1), m2);
                        s[1][l] = _mm512_sub_ps(_mm512_sub_ps(m1, m2), m3);
                    }
                    for (a, s) in s.iter().enumerate() {
                        let y0 = _mm512_add_ps(_mm512_add_ps(s[0], s[1]), s[2]);
                        let y1 = _mm512_sub_ps(_mm512_sub_ps(s[1], s[2]), s[3]);
                        let row = out.as_mut_ptr().add(t.result_row(o, 2 * ty + a) + 2 * tx);
                        let (first, second) = (
                            _mm512_permutex2var_ps(y0, lo, y1),
                            _mm512_permutex2var_ps(y0, hi, y1),
                        );
                        let m1 = if 2 * n >= 16 {
                            0xffff
                        } else {
                            (1u16 << (2 * n)) - 1
                        };
                        _mm512_mask_storeu_ps(row, m1, first);
                        if 2 * n > 16 {
                            let m2 = if 2 * n >= 32 {
                                0xffff
                            } else {
                                (1u16 << (2 * n - 16)) - 1
                            };
                            _mm512_mask_storeu_ps(row.add(16), m2, second);
                        }
                    }
                }
            }
        }
    }
}
