//! 3x3 "same" convolutions in f32 with AVX-512, without im2col.
//!
//! Each example's channels are copied into zero-bordered planes of
//! `(H+2) x (W+2)` (the *padded grid*). On that grid a 3x3 tap is a constant
//! offset, so the convolution is a GEMM whose right-hand rows are the
//! padded planes read at nine offsets: the micro-kernel reads them in place
//! and nothing is unfolded. Outputs are computed for every column of the
//! grid's interior rows (the two border columns are junk and dropped when
//! the result is copied out), which costs 2/(W+2) extra work and buys
//! branch-free kernels.
//!
//! - forward and input gradient: [`conv_example`], outer products of 8
//!   broadcast weights by 48 grid positions (24 accumulators). The input
//!   gradient is the same convolution of the output gradient with the
//!   kernel transposed (O <-> C) and flipped.
//! - kernel gradient: [`dw_example`], outer products of 32 output channels
//!   (the output gradient transposed to `[position][channel]`) by the nine
//!   taps of one input channel (18 accumulators), summed over positions in
//!   registers.
//!
//! Callers check [`available`] (AVX-512F at run time); other machines use
//! the im2col path of `super::im2col`.

use std::arch::x86_64::*;

use crate::exec::scratch::{self, Buf};

/// Output channels per forward block.
pub(super) const MR: usize = 8;
/// Grid positions per forward block (three vectors of 16).
pub(super) const NR: usize = 48;
/// Output channels per kernel-gradient block (two vectors of 16).
pub(super) const OB: usize = 32;

pub fn available() -> bool {
    is_x86_feature_detected!("avx512f")
}

/// The padded grid of one `h x w` map: planes of `(h+2) x (w+2)`, one after
/// the other, with `guard` zeros before the first and after the last so
/// that reads at any tap offset of a block stay inside the buffer.
#[derive(Clone, Copy, Debug)]
pub struct Grid {
    pub h: usize,
    pub w: usize,
    /// Padded width.
    pw: usize,
    /// Values per plane, `(h+2)*(w+2)`.
    plane: usize,
    guard: usize,
    /// Interior positions of a plane, `h * pw`, starting at row 1.
    q: usize,
    /// `q` rounded up to whole forward blocks.
    qfwd: usize,
}

impl Grid {
    pub fn new(h: usize, w: usize) -> Grid {
        let pw = w + 2;
        let q = h * pw;
        Grid {
            h,
            w,
            pw,
            plane: (h + 2) * pw,
            guard: NR + 16,
            q,
            qfwd: q.div_ceil(NR) * NR,
        }
    }
    /// Length of a buffer of `planes` padded planes.
    pub fn len(&self, planes: usize) -> usize {
        2 * self.guard + planes * self.plane
    }
    /// Offset of the first interior row (row 1, column 0) of plane 0.
    fn start(&self) -> usize {
        self.guard + self.pw
    }
    /// Offsets of the nine taps (dy, dx) in row-major order.
    fn taps(&self) -> [isize; 9] {
        let pw = self.pw as isize;
        let mut t = [0isize; 9];
        for (i, o) in t.iter_mut().enumerate() {
            *o = (i as isize / 3 - 1) * pw + (i as isize % 3 - 1);
        }
        t
    }
    /// Where row `i` of plane `c` starts in a padded buffer.
    pub fn interior_row(&self, c: usize, i: usize) -> usize {
        self.guard + c * self.plane + (i + 1) * self.pw + 1
    }
    /// Where row `i` of output channel `c` starts in a kernel result.
    pub fn result_row(&self, c: usize, i: usize) -> usize {
        c * self.qfwd + i * self.pw + 1
    }
    /// Copies `x` (`planes x h x w`) into the interior of `dst`; the borders
    /// of `dst` must already be zero (buffers are zeroed once and reused).
    pub fn pad(&self, x: &[f32], planes: usize, dst: &mut [f32]) {
        let (h, w) = (self.h, self.w);
        for c in 0..planes {
            for i in 0..h {
                let at = self.interior_row(c, i);
                dst[at..at + w].copy_from_slice(&x[(c * h + i) * w..][..w]);
            }
        }
    }
    /// Copies the valid columns of a kernel result (`rows x qfwd`) to `y`
    /// (`planes x h x w`).
    pub fn unpack(&self, res: &[f32], planes: usize, y: &mut [f32]) {
        let (h, w) = (self.h, self.w);
        for c in 0..planes {
            for i in 0..h {
                let at = self.result_row(c, i);
                y[(c * h + i) * w..][..w].copy_from_slice(&res[at..at + w]);
            }
        }
    }
    /// Result rows' length of [`conv_example`]: `rows * qfwd`.
    pub fn result_len(&self, rows: usize) -> usize {
        rows.div_ceil(MR) * MR * self.qfwd
    }
    /// Length of the transposed output gradient of [`dw_example`].
    pub fn transposed_len(&self, o: usize) -> usize {
        self.q * o.div_ceil(OB) * OB
    }
}

/// A padded buffer of `planes` planes on grid `g` (borders zero).
pub fn padded(g: &Grid, planes: usize) -> Buf {
    scratch::take(("padded", [g.h, g.w, planes]), g.len(planes))
}

/// A transposed output gradient buffer of `o` channels on grid `g`
/// (junk columns and padded channels zero).
pub fn transposed(g: &Grid, o: usize) -> Buf {
    scratch::take(("transposed", [g.h, g.w, o]), g.transposed_len(o))
}

/// Packs a `[o][c][3][3]` kernel for [`conv_example`]: blocks of [`MR`]
/// output channels, within a block `[c][tap][MR]`, zeros past `o`. With
/// `transpose`, packs the kernel of the input gradient instead: `c` and `o`
/// swapped, taps flipped.
pub fn pack_kernel(wt: &[f32], o: usize, c: usize, transpose: bool) -> Vec<f32> {
    let (rows, cols) = if transpose { (c, o) } else { (o, c) };
    let blocks = rows.div_ceil(MR);
    let mut p = vec![0f32; blocks * cols * 9 * MR];
    for r in 0..rows {
        for k in 0..cols {
            for t in 0..9 {
                let v = if transpose {
                    wt[(k * c + r) * 9 + 8 - t]
                } else {
                    wt[(r * c + k) * 9 + t]
                };
                p[((r / MR) * cols * 9 + k * 9 + t) * MR + r % MR] = v;
            }
        }
    }
    p
}

/// One example: `res = conv(x, kernel)` on the grid's interior rows, where
/// `xp` is `x` on the padded grid (`cols` planes), `wpk` the packed kernel
/// and `res` of [`Grid::result_len`]; [`Grid::unpack`] or
/// [`Grid::result_row`] read the `rows x h x w` values out of it.
pub fn conv_example(g: &Grid, xp: &[f32], cols: usize, wpk: &[f32], rows: usize, res: &mut [f32]) {
    let packed = rows.div_ceil(MR) * cols * 9 * MR;
    assert!(available() && xp.len() >= g.len(cols) && wpk.len() >= packed);
    assert!(res.len() >= g.result_len(rows));
    let taps = g.taps();
    for b in 0..rows.div_ceil(MR) {
        for r in (0..g.qfwd).step_by(NR) {
            // SAFETY: AVX-512F is present (asserted); the reads stay inside
            // `xp` by the guard (r + NR <= qfwd < q + NR, taps within one
            // row of the interior), the packed kernel holds `cols * 9 * MR`
            // values per block, and the block's result rows fit in `res`.
            unsafe {
                conv_block::<9, { NR / 16 }>(
                    xp.as_ptr().add(g.start() + r),
                    cols,
                    g.plane,
                    &taps,
                    wpk.as_ptr().add(b * cols * 9 * MR),
                    res.as_mut_ptr().add(b * MR * g.qfwd + r),
                    g.qfwd,
                );
            }
        }
    }
}

/// `out[m][0..16 NV] = sum over c, t of w[c][t][m] * x[c*plane + taps[t] + 0..16 NV]`
/// for the [`MR`] rows of one block: the micro-kernel of the direct
/// convolution (nine taps, `NV = NR / 16`) and of the Winograd products
/// (one tap; narrower at the end of a chunk).
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn conv_block<const T: usize, const NV: usize>(
    x: *const f32,
    cols: usize,
    plane: usize,
    taps: &[isize; T],
    mut w: *const f32,
    out: *mut f32,
    stride: usize,
) {
    let mut acc = [[_mm512_setzero_ps(); NV]; MR];
    for c in 0..cols {
        let base = x.add(c * plane);
        for &t in taps {
            let b = base.offset(t);
            // A plain loop: a closure (array::from_fn) would not inherit
            // this function's target features and stays out of line.
            let mut bv = [_mm512_setzero_ps(); NV];
            for (v, bv) in bv.iter_mut().enumerate() {
                *bv = _mm512_loadu_ps(b.add(16 * v));
            }
            for (m, a) in acc.iter_mut().enumerate() {
                let wv = _mm512_set1_ps(*w.add(m));
                for v in 0..NV {
                    a[v] = _mm512_fmadd_ps(wv, bv[v], a[v]);
                }
            }
            w = w.add(MR);
        }
    }
    for (m, a) in acc.iter().enumerate() {
        let o = out.add(m * stride);
        for (v, &av) in a.iter().enumerate() {
            _mm512_storeu_ps(o.add(16 * v), av);
        }
    }
}

/// Writes `dy` (`o x h x w`) transposed onto the grid's interior positions:
/// `dyt[r][o]`, rows padded to whole [`OB`] blocks. Junk columns and padded
/// channels must already be zero (buffers are zeroed once and reused).
pub fn transpose_grad(g: &Grid, dy: &[f32], o: usize, dyt: &mut [f32]) {
    let opad = o.div_ceil(OB) * OB;
    let (h, w) = (g.h, g.w);
    for i in 0..h {
        for j in 0..w {
            let row = &mut dyt[(i * g.pw + j + 1) * opad..][..o];
            for (k, v) in row.iter_mut().enumerate() {
                *v = dy[(k * h + i) * w + j];
            }
        }
    }
}

/// One example's kernel gradient, added to `dwt` (`[c][tap][opad]`):
/// `dwt[c][t][o] += sum_r dyt[r][o] * xp[c][r + tap t]`.
pub fn dw_example(g: &Grid, dyt: &[f32], o: usize, xp: &[f32], c: usize, dwt: &mut [f32]) {
    let opad = o.div_ceil(OB) * OB;
    assert!(available() && dyt.len() >= g.q * opad && xp.len() >= g.len(c));
    assert!(dwt.len() >= c * 9 * opad);
    let taps = g.taps();
    for ci in 0..c {
        for b in 0..opad / OB {
            // SAFETY: AVX-512F is present; `dyt` holds q rows of opad, the
            // tap reads of plane `ci` stay inside `xp` (one row of border),
            // and `dwt` holds the nine rows of `ci`.
            unsafe {
                dw_block(
                    dyt.as_ptr().add(b * OB),
                    opad,
                    g.q,
                    xp.as_ptr().add(g.start() + ci * g.plane),
                    &taps,
                    dwt.as_mut_ptr().add(ci * 9 * opad + b * OB),
                    opad,
                );
            }
        }
    }
}

/// `out[t][0..32] += sum over r < q of dyt[r * stride + 0..32] * x[taps[t] + r]`
/// for the `T` rows `t`: the kernel gradient's micro-kernel (nine taps of
/// one input channel here; eight input channels of one Winograd position
/// in [`super::winograd::grad`]).
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn dw_block<const T: usize>(
    dyt: *const f32,
    stride: usize,
    q: usize,
    x: *const f32,
    taps: &[isize; T],
    out: *mut f32,
    out_stride: usize,
) {
    let mut acc = [[_mm512_setzero_ps(); 2]; T];
    let xs: [*const f32; T] = std::array::from_fn(|t| x.offset(taps[t]));
    for r in 0..q {
        let a0 = _mm512_loadu_ps(dyt.add(r * stride));
        let a1 = _mm512_loadu_ps(dyt.add(r * stride + 16));
        for (t, acc) in acc.iter_mut().enumerate() {
            let b = _mm512_set1_ps(*xs[t].add(r));
            acc[0] = _mm512_fmadd_ps(a0, b, acc[0]);
            acc[1] = _mm512_fmadd_ps(a1, b, acc[1]);
        }
    }
    for (t, a) in acc.iter().enumerate() {
        let o = out.add(t * out_stride);
        _mm512_storeu_ps(o, _mm512_add_ps(_mm512_loadu_ps(o), a[0]));
        _mm512_storeu_ps(o.add(16), _mm512_add_ps(_mm512_loadu_ps(o.add(16)), a[1]));
    }
}
