//! 3x3 "same" convolutions by Winograd's minimal filtering F(4x4, 3x3)
//! (Lavin & Gray 2016), f32 with AVX-512: 36 multiplications per 4x4
//! outputs and channel pair instead of 144.
//!
//! ```text
//! Y = A^T [ (G g G^T) (.) (B^T d B) ] A      per 6x6 input tile d, stride 4
//! B^T = [4 0 -5 0 1 0; 0 -4 -4 1 1 0; 0 4 -4 -1 1 0;
//!        0 -2 -1 2 1 0; 0 2 -1 -2 1 0; 0 4 0 -5 0 1]
//! G   = [1/4 0 0; -1/6 -1/6 -1/6; -1/6 1/6 -1/6;
//!        1/24 1/12 1/6; 1/24 -1/12 1/6; 0 0 1]
//! A^T = [1 1 1 1 1 0; 0 1 -1 2 -2 0; 0 1 1 4 4 0; 0 1 -1 8 -8 1]
//! ```
//! The 36 products of a tile are 36 GEMMs `M[xi] (O x T) = U[xi] (O x C) .
//! V[xi] (C x T)` over the tiles T of a chunk of examples, run by the direct
//! path's micro-kernel with a single tap.
//!
//! The transforms are vectorized across 16 consecutive tiles of an
//! example, whatever row they are in: the input transform loads each
//! tile's rows (eight values from its corner) and transposes them in 8x8
//! blocks, the output transform interleaves its columns so that each
//! tile's row of four results is one 128-bit store. Vectorizing along a
//! tile row instead leaves most lanes idle on the maps Real NVP
//! conditioners see (a 16x16 map has four tiles a row).
//!
//! Inputs sit on their own padded grid: `(4*th + 2) x (4*tw + 2)` planes
//! with the image at (1, 1) and zeros around, so every tile, also those
//! past an edge, reads inside its plane. Results come out as
//! `rows x 4th x 4tw` planes per example (rows and columns past the image
//! are junk).
//!
//! The transforms multiply by 1/6, 1/24 and up to 8, so results differ
//! from the direct path's by more than rounding of the sums: up to about
//! 1e-5 of the sum of the products' sizes, against 3e-7 for the direct
//! path (tested against an f64 convolution in `layer.rs`).

// The transforms index matrices by their math names (rows k, columns l).
#![allow(clippy::needless_range_loop)]

use std::arch::x86_64::*;

use super::direct::{conv_block, MR};
use crate::exec::parallel::{chunks, map_parts, threads};

pub mod grad;

/// Values a chunk's transformed inputs aim at (256 KiB in f32): with its
/// products and the packed filters (590 KiB for 64 channels in and out),
/// well inside one core's L2. Chunks of 1 MiB, about all of a 2 MiB L2,
/// ran realnvp_fashion's density and realnvp_small's train step 10-15%
/// slower on one thread; 128 KiB alike or slower.
const CHUNK_VALUES: usize = 1 << 16;

/// Examples per chunk for `per_example` tiles each and `width` channels
/// (the wider of input and output): about what [`CHUNK_VALUES`] allows (at
/// least one), the count among the last third whose tiles fill the
/// micro-kernel's blocks of 48 best (a narrower block at the end runs
/// slower).
fn examples_per_chunk(per_example: usize, width: usize) -> usize {
    let most = (CHUNK_VALUES / (36 * width * per_example)).max(1);
    let tail = |e: usize| (e * per_example).div_ceil(48) * 48 - e * per_example;
    (most.div_ceil(3) * 2..=most)
        .min_by_key(|&e| (tail(e) * 48 / (e * per_example), std::cmp::Reverse(e)))
        .unwrap_or(most)
}

/// Tile geometry of one `h x w` map with `cols` input and `rows` output
/// channels, and where the tiles of an example are.
///
/// A chunk of examples is convolved in three stages: each example's
/// padded input is transformed right after it is written (while it is in
/// cache) into the chunk's columns `j * per_example ..` ([`transform_input`]),
/// the products of the whole chunk are taken ([`multiply`]), and each
/// example's result is transformed back ([`transform_output`]).
#[derive(Clone, Debug)]
pub struct Tiles {
    pub h: usize,
    pub w: usize,
    cols: usize,
    rows: usize,
    /// Tiles per column and per row.
    th: usize,
    tw: usize,
    /// Padded plane width and size.
    pw: usize,
    plane: usize,
    /// Examples per chunk, and the columns of a chunk's transformed inputs
    /// (the last example's tiles rounded up to whole vectors, and the whole
    /// again).
    per: usize,
    tpad: usize,
    /// Per tile of an example, rounded up to whole vectors: where its 6x6
    /// input starts in the padded input (plane 0; 0 past the example's
    /// tiles), and where its 4x4 result starts in the result (plane 0).
    input_at: Vec<i32>,
    result_at: Vec<i32>,
}

impl Tiles {
    pub fn new(h: usize, w: usize, cols: usize, rows: usize) -> Tiles {
        let (th, tw) = (h.div_ceil(4), w.div_ceil(4));
        let pw = 4 * tw + 2;
        let plane = (4 * th + 2) * pw;
        let per_example = th * tw;
        let groups = per_example.div_ceil(16) * 16;
        let per = examples_per_chunk(per_example, cols.max(rows));
        let mut t = Tiles {
            h,
            w,
            cols,
            rows,
            th,
            tw,
            pw,
            plane,
            per,
            // Whole vectors, so that the products' last block (16, 32 or
            // 48 columns) stays inside a row.
            tpad: ((per - 1) * per_example + groups).div_ceil(16) * 16,
            input_at: vec![0; groups],
            result_at: vec![0; groups],
        };
        assert!(
            t.padded_len().max(t.result_len()) < i32::MAX as usize,
            "conv: a {h}x{w} map of {cols} or {rows} channels is too large for 32-bit offsets"
        );
        for ty in 0..th {
            for tx in 0..tw {
                t.input_at[ty * tw + tx] = (4 * ty * pw + 4 * tx) as i32;
                t.result_at[ty * tw + tx] = (4 * ty * 4 * tw + 4 * tx) as i32;
            }
        }
        t
    }
    fn per_example(&self) -> usize {
        self.th * self.tw
    }
    /// Input and output channels.
    pub fn cols(&self) -> usize {
        self.cols
    }
    pub fn rows(&self) -> usize {
        self.rows
    }
    /// Examples per chunk.
    pub fn chunk(&self) -> usize {
        self.per
    }
    /// Values of one example's padded input, with slack for the input
    /// transform's reads of eight columns where a tile has six.
    pub fn padded_len(&self) -> usize {
        self.cols * self.plane + 2
    }
    /// Where row `i` of plane `c` starts in a padded input.
    pub fn interior_row(&self, c: usize, i: usize) -> usize {
        c * self.plane + (i + 1) * self.pw + 1
    }
    /// Values of one example's result.
    pub fn result_len(&self) -> usize {
        self.rows * 16 * self.per_example()
    }
    /// Where row `i` of output channel `c` starts in a result.
    pub fn result_row(&self, c: usize, i: usize) -> usize {
        (c * 4 * self.th + i) * 4 * self.tw
    }
    /// Scratch of a chunk: transformed inputs and products.
    pub fn scratch_len(&self) -> (usize, usize) {
        (36 * self.v_stride(), 36 * self.m_stride())
    }
    /// Distance between the transformed inputs of two positions `xi`: one
    /// cache line more than their `cols x tpad` values, so that the 36
    /// positions of a tile, written together, do not all fall in one set
    /// of the L1 cache (their size is often a multiple of 4 KiB).
    fn v_stride(&self) -> usize {
        self.cols * self.tpad + 16
    }
    /// The same for the products, `rows` rounded up to micro-kernel blocks.
    fn m_stride(&self) -> usize {
        self.rows.div_ceil(MR) * MR * self.tpad + 16
    }
    /// Length of the packed filters of [`pack_filters`].
    pub fn packed_len(&self) -> usize {
        36 * self.rows.div_ceil(MR) * self.cols * MR
    }
}

/// `G v` for the three rows `v` of a filter (each a row of 8 lanes: the
/// filters of one micro-kernel block's rows):
/// `G = [1/4 0 0; -1/6 -1/6 -1/6; -1/6 1/6 -1/6; 1/24 1/12 1/6; 1/24 -1/12 1/6; 0 0 1]`.
fn g_times(v: [[f32; MR]; 3]) -> [[f32; MR]; 6] {
    let mut out = [[0f32; MR]; 6];
    for m in 0..MR {
        let (a, b, c) = (v[0][m], v[1][m], v[2][m]);
        let (sum, odd) = (a + c, b);
        out[0][m] = a * 0.25;
        out[1][m] = -(sum + odd) / 6.0;
        out[2][m] = -(sum - odd) / 6.0;
        let (even, odd) = (a / 24.0 + c / 6.0, b / 12.0);
        out[3][m] = even + odd;
        out[4][m] = even - odd;
        out[5][m] = c;
    }
    out
}

/// `U = G g G^T` of a `[o][c][3][3]` kernel, packed for the micro-kernel
/// into `p` (of [`Tiles::packed_len`]): `[xi][block of MR rows][c][MR]`,
/// rows past the kernel's zero (they only make products nobody reads).
/// With `transpose`, of the input gradient's kernel (`c` and `o` swapped,
/// taps flipped).
pub fn pack_filters(wt: &[f32], o: usize, c: usize, transpose: bool, p: &mut [f32]) {
    let (rows, cols) = if transpose { (c, o) } else { (o, c) };
    let per_xi = rows.div_ceil(MR) * cols * MR;
    assert!(wt.len() >= o * c * 9 && p.len() >= 36 * per_xi);
    // Kernel `q = block * cols + k` lands at `q * MR` of each of the 36
    // planes: a range of them is a slice of each plane, one range a thread.
    let ranges = chunks(per_xi / MR, threads());
    let mut parts: Vec<_> = ranges.iter().map(|r| (r.clone(), vec![])).collect();
    for plane in p[..36 * per_xi].chunks_exact_mut(per_xi) {
        let mut rest = plane;
        for (r, planes) in &mut parts {
            let (mine, tail) = rest.split_at_mut(r.len() * MR);
            rest = tail;
            planes.push(mine);
        }
    }
    map_parts(parts, |(qs, mut planes)| {
        for q in qs.clone() {
            let (block, k) = (q / cols, q % cols);
            // The block's MR rows as lanes: their packed values are adjacent.
            let mut g = [[[0f32; MR]; 3]; 3];
            for m in 0..MR.min(rows - block * MR) {
                let r = block * MR + m;
                for (i, gi) in g.iter_mut().enumerate() {
                    for (j, gij) in gi.iter_mut().enumerate() {
                        gij[m] = if transpose {
                            wt[(k * c + r) * 9 + (2 - i) * 3 + (2 - j)]
                        } else {
                            wt[(r * c + k) * 9 + i * 3 + j]
                        };
                    }
                }
            }
            // G g by columns j, then (G g) G^T by rows i.
            let cols_of = |j: usize| g_times([g[0][j], g[1][j], g[2][j]]);
            let gg = [cols_of(0), cols_of(1), cols_of(2)];
            let at = (q - qs.start) * MR;
            for i in 0..6 {
                let u = g_times([gg[0][i], gg[1][i], gg[2][i]]);
                for (j, uj) in u.iter().enumerate() {
                    planes[i * 6 + j][at..at + MR].copy_from_slice(uj);
                }
            }
        }
    });
}

/// Transforms example `j` of a chunk, `xp` its padded input, into the
/// chunk's transformed inputs `v` (of [`Tiles::scratch_len`]).
pub fn transform_input(t: &Tiles, j: usize, xp: &[f32], v: &mut [f32]) {
    assert!(super::direct::available() && j < t.per);
    assert!(xp.len() >= t.padded_len() && v.len() >= t.scratch_len().0);
    // SAFETY: AVX-512F is present. The loads read eight values at
    // `input_at` (a tile's corner or 0) plus at most 5 rows of one plane:
    // at most `padded_len` values in (its slack covers the last tile's two
    // extra columns). The stores write columns `j * per_example` plus
    // `input_at.len() <= tpad - (per - 1) * per_example` of each of the
    // 36 x cols rows of `v`.
    unsafe { input_transform(t, j * t.per_example(), xp, v) };
}

/// The products `m[xi] = U[xi] v[xi]` of the first `e` examples of a chunk.
pub fn multiply(t: &Tiles, e: usize, upk: &[f32], v: &[f32], m: &mut [f32]) {
    let (vlen, mlen) = t.scratch_len();
    assert!(super::direct::available() && e <= t.per && upk.len() >= t.packed_len());
    assert!(v.len() >= vlen && m.len() >= mlen);
    let tiles = e * t.per_example();
    let blocks = t.rows.div_ceil(MR);
    let (cols, tpad) = (t.cols, t.tpad);
    for xi in 0..36 {
        for b in 0..blocks {
            let upk = upk[(xi * blocks + b) * cols * MR..].as_ptr();
            let mut r = 0;
            while r < tiles {
                let vr = v[xi * t.v_stride() + r..].as_ptr();
                let out = m[xi * t.m_stride() + b * MR * tpad + r..].as_mut_ptr();
                // SAFETY: AVX-512F is present; a block reads `cols` rows of
                // `v[xi]` and writes MR rows of `m[xi]`, 16, 32 or 48 columns
                // from `r`: below `tiles` rounded up to 16, which is at
                // most `tpad`.
                // Whole blocks of 48 tiles, then 16 or 32 at the end.
                r += unsafe {
                    match tiles - r {
                        n if n > 32 => {
                            conv_block::<1, 3>(vr, cols, tpad, &[0], upk, out, tpad);
                            48
                        }
                        n if n > 16 => {
                            conv_block::<1, 2>(vr, cols, tpad, &[0], upk, out, tpad);
                            32
                        }
                        _ => {
                            conv_block::<1, 1>(vr, cols, tpad, &[0], upk, out, tpad);
                            16
                        }
                    }
                };
            }
        }
    }
}

/// Transforms example `j`'s products back into its result `res` (of
/// [`Tiles::result_len`]).
pub fn transform_output(t: &Tiles, j: usize, m: &[f32], res: &mut [f32]) {
    assert!(super::direct::available() && j < t.per);
    assert!(m.len() >= t.scratch_len().1 && res.len() >= t.result_len());
    // SAFETY: AVX-512F is present; the loads read columns `j * per_example`
    // plus 16 per group of `m`'s rows, inside `tpad`; the stores write four
    // values at `result_at` plus at most 3 rows of one plane, for the
    // example's tiles only: inside its result.
    unsafe { output_transform(t, j * t.per_example(), m, res) };
}

/// `B^T d` of one column `d[0..6]` of a tile (or of rows, applied to `d B`).
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn input_1d(d: [__m512; 6]) -> [__m512; 6] {
    let (four, five) = (_mm512_set1_ps(4.0), _mm512_set1_ps(5.0));
    let t1 = _mm512_fnmadd_ps(four, d[2], d[4]); // d4 - 4 d2
    let t2 = _mm512_fnmadd_ps(four, d[1], d[3]); // d3 - 4 d1
    let t3 = _mm512_sub_ps(d[4], d[2]);
    let t4 = _mm512_add_ps(_mm512_sub_ps(d[3], d[1]), _mm512_sub_ps(d[3], d[1]));
    [
        _mm512_fmadd_ps(four, d[0], _mm512_fnmadd_ps(five, d[2], d[4])),
        _mm512_add_ps(t1, t2),
        _mm512_sub_ps(t1, t2),
        _mm512_add_ps(t3, t4),
        _mm512_sub_ps(t3, t4),
        _mm512_fmadd_ps(four, d[1], _mm512_fnmadd_ps(five, d[3], d[5])),
    ]
}

/// `A^T m` of one column `m[0..6]` of a tile's products.
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn output_1d(m: [__m512; 6]) -> [__m512; 4] {
    let (two, four, eight) = (
        _mm512_set1_ps(2.0),
        _mm512_set1_ps(4.0),
        _mm512_set1_ps(8.0),
    );
    let (p, q) = (_mm512_add_ps(m[1], m[2]), _mm512_sub_ps(m[1], m[2]));
    let (r, s) = (_mm512_add_ps(m[3], m[4]), _mm512_sub_ps(m[3], m[4]));
    [
        _mm512_add_ps(_mm512_add_ps(m[0], p), r),
        _mm512_fmadd_ps(two, s, q),
        _mm512_fmadd_ps(four, r, p),
        _mm512_add_ps(_mm512_fmadd_ps(eight, s, q), m[5]),
    ]
}

/// Columns 0..6 of row `row` (a pointer offset) of the 16 tiles at
/// `at[0..16]`, one vector per column: each tile's eight floats from its
/// corner are loaded (tiles p and p+8 into the two halves of one vector) and
/// the eight 8x8 blocks transposed, half by half.
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn tile_columns(plane: *const f32, at: &[i32; 16], row: usize) -> [__m512; 6] {
    let mut z = [_mm512_setzero_ps(); 8];
    for (p, z) in z.iter_mut().enumerate() {
        let lo = _mm256_loadu_ps(plane.add(at[p] as usize + row));
        let hi = _mm256_loadu_ps(plane.add(at[p + 8] as usize + row));
        let lo = _mm512_castpd256_pd512(_mm256_castps_pd(lo));
        *z = _mm512_castpd_ps(_mm512_insertf64x4::<1>(lo, _mm256_castps_pd(hi)));
    }
    // Within each 256-bit half: the classic 8x8 transpose, of which only
    // the first six columns are kept.
    let t0 = _mm512_unpacklo_ps(z[0], z[1]);
    let t1 = _mm512_unpackhi_ps(z[0], z[1]);
    let t2 = _mm512_unpacklo_ps(z[2], z[3]);
    let t3 = _mm512_unpackhi_ps(z[2], z[3]);
    let t4 = _mm512_unpacklo_ps(z[4], z[5]);
    let t6 = _mm512_unpacklo_ps(z[6], z[7]);
    let t5 = _mm512_unpackhi_ps(z[4], z[5]);
    let t7 = _mm512_unpackhi_ps(z[6], z[7]);
    let u0 = _mm512_shuffle_ps::<0x44>(t0, t2);
    let u1 = _mm512_shuffle_ps::<0xEE>(t0, t2);
    let u2 = _mm512_shuffle_ps::<0x44>(t1, t3);
    let u3 = _mm512_shuffle_ps::<0xEE>(t1, t3);
    let u4 = _mm512_shuffle_ps::<0x44>(t4, t6);
    let u5 = _mm512_shuffle_ps::<0xEE>(t4, t6);
    let u6 = _mm512_shuffle_ps::<0x44>(t5, t7);
    let u7 = _mm512_shuffle_ps::<0xEE>(t5, t7);
    // Column j of a half: the 128-bit chunk j / 4 of u[j % 4] then of u[j % 4 + 4].
    let first = _mm512_setr_epi32(0, 1, 2, 3, 16, 17, 18, 19, 8, 9, 10, 11, 24, 25, 26, 27);
    let second = _mm512_setr_epi32(4, 5, 6, 7, 20, 21, 22, 23, 12, 13, 14, 15, 28, 29, 30, 31);
    [
        _mm512_permutex2var_ps(u0, first, u4),
        _mm512_permutex2var_ps(u1, first, u5),
        _mm512_permutex2var_ps(u2, first, u6),
        _mm512_permutex2var_ps(u3, first, u7),
        _mm512_permutex2var_ps(u0, second, u4),
        _mm512_permutex2var_ps(u1, second, u5),
    ]
}

/// `v[xi][c][first + tile] = (B^T d B)[xi]` for every tile of one example
/// (and up to 15 past it, which read its first tile's place and are
/// overwritten by the next example's), 16 tiles at a time.
#[target_feature(enable = "avx512f")]
unsafe fn input_transform(t: &Tiles, first: usize, xp: &[f32], v: &mut [f32]) {
    let (pw, tpad) = (t.pw, t.tpad);
    for c in 0..t.cols {
        let plane = xp.as_ptr().add(c * t.plane);
        for g in (0..t.input_at.len()).step_by(16) {
            let at: &[i32; 16] = t.input_at[g..g + 16].try_into().unwrap();
            // Rows of d B, then B^T (d B) by columns. (An array literal: a
            // zeroed array filled in a loop is cleared by a call to memset.)
            let row = |i: usize| input_1d(tile_columns(plane, at, i * pw));
            let db = [row(0), row(1), row(2), row(3), row(4), row(5)];
            for l in 0..6 {
                let col = input_1d([db[0][l], db[1][l], db[2][l], db[3][l], db[4][l], db[5][l]]);
                for (k, &val) in col.iter().enumerate() {
                    let at = (k * 6 + l) * t.v_stride() + c * tpad + first + g;
                    _mm512_storeu_ps(v.as_mut_ptr().add(at), val);
                }
            }
        }
    }
}

/// Stores the 4x4 results of 16 tiles, row `a` (`y[b]`: column b of the
/// 16 tiles), at `out + at[tile] + a_off` for the first `n` tiles: the
/// four columns interleaved so that each tile's row is one 128-bit chunk.
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn store_rows(out: *mut f32, at: &[i32; 16], n: usize, a_off: usize, y: [__m512; 4]) {
    let lo01 = _mm512_unpacklo_ps(y[0], y[1]);
    let hi01 = _mm512_unpackhi_ps(y[0], y[1]);
    let lo23 = _mm512_unpacklo_ps(y[2], y[3]);
    let hi23 = _mm512_unpackhi_ps(y[2], y[3]);
    let pd = _mm512_castps_pd;
    // Chunk k of w[m] is tile 4k + m.
    let w = [
        _mm512_castpd_ps(_mm512_unpacklo_pd(pd(lo01), pd(lo23))),
        _mm512_castpd_ps(_mm512_unpackhi_pd(pd(lo01), pd(lo23))),
        _mm512_castpd_ps(_mm512_unpacklo_pd(pd(hi01), pd(hi23))),
        _mm512_castpd_ps(_mm512_unpackhi_pd(pd(hi01), pd(hi23))),
    ];
    for tile in 0..n {
        let (k, m) = (tile / 4, tile % 4);
        let chunk = match k {
            0 => _mm512_extractf32x4_ps::<0>(w[m]),
            1 => _mm512_extractf32x4_ps::<1>(w[m]),
            2 => _mm512_extractf32x4_ps::<2>(w[m]),
            _ => _mm512_extractf32x4_ps::<3>(w[m]),
        };
        _mm_storeu_ps(out.add(at[tile] as usize + a_off), chunk);
    }
}

/// `res[tile's place + o plane + a row + b] = (A^T M A)[a][b]` for every
/// tile of the example whose products start at column `first`, 16 at a time.
#[target_feature(enable = "avx512f")]
unsafe fn output_transform(t: &Tiles, first: usize, m: &[f32], res: &mut [f32]) {
    let (tpad, rw, tiles) = (t.tpad, 4 * t.tw, t.per_example());
    let rplane = 16 * tiles;
    for o in 0..t.rows {
        for g in (0..tiles).step_by(16) {
            let n = (tiles - g).min(16);
            let at: &[i32; 16] = t.result_at[g..g + 16].try_into().unwrap();
            let base = m.as_ptr().add(o * tpad + first + g);
            // A^T M by columns: s[l] = rows a of column l.
            let ms = t.m_stride();
            let column = |l: usize| {
                let at = |k: usize| _mm512_loadu_ps(base.add((k * 6 + l) * ms));
                output_1d([at(0), at(1), at(2), at(3), at(4), at(5)])
            };
            let s = [
                column(0),
                column(1),
                column(2),
                column(3),
                column(4),
                column(5),
            ];
            let out = res.as_mut_ptr().add(o * rplane);
            for a in 0..4 {
                let y = output_1d([s[0][a], s[1][a], s[2][a], s[3][a], s[4][a], s[5][a]]);
                store_rows(out, at, n, a * rw, y);
            }
        }
    }
}
