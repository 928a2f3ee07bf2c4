//! One 3x3 "same" convolution of a batch, with the algorithm chosen for
//! its sizes: Winograd F(2x2, 3x3) ([`super::winograd`]) where both channel
//! counts are wide enough for its products to run at the micro-kernel's
//! speed, the direct kernels ([`super::direct`]) elsewhere (the narrow
//! input and output convolutions of a conditioner). Callers supply what
//! happens to the input on its way in ([`Pre`]) and to each result row on
//! its way out: that is where the fused conditioner puts its batch norms,
//! ReLUs, biases and residual adds.

use std::ops::Range;

use super::direct::{self, Grid};
use super::winograd::{self, Tiles};
use crate::exec::scratch::{self, Buf};

/// Channels (in and out) from which Winograd pays. Measured on
/// realnvp_small (2 threads, AVX-512): at 32 channels its transforms (four
/// times the input's size written and read back) cost what its products
/// save; at 64 the train step gains about 5%.
const WINOGRAD_MIN_CHANNELS: usize = 48;

/// What a convolution's input goes through first.
#[derive(Clone, Copy)]
pub enum Pre<'a> {
    Identity,
    /// `relu(x * a[c] + b[c])`.
    AffineRelu(&'a [f32], &'a [f32]),
}

enum Kernel {
    Direct { g: Grid, wpk: Vec<f32> },
    Winograd { t: Tiles, upk: Vec<f32> },
}

/// Where result rows are: row `i` of channel `c` starts at `c*cs + i*rs + base`.
#[derive(Clone, Copy)]
pub struct Rows {
    cs: usize,
    rs: usize,
    base: usize,
}

impl Rows {
    pub fn at(&self, c: usize, i: usize) -> usize {
        c * self.cs + i * self.rs + self.base
    }
}

/// A 3x3 convolution of `cin` to `cout` channels on `h x w` maps, its
/// kernel packed for the chosen algorithm.
pub struct Conv3x3 {
    h: usize,
    w: usize,
    cin: usize,
    cout: usize,
    kernel: Kernel,
}

impl Conv3x3 {
    /// `kernel` is `[o][c][3][3]`; with `transpose`, the convolution is that
    /// of the input gradient (`cin = o`, `cout = c`, taps flipped).
    pub fn new(h: usize, w: usize, kernel: &[f32], o: usize, c: usize, transpose: bool) -> Self {
        let (cin, cout) = if transpose { (o, c) } else { (c, o) };
        let kernel = if cin >= WINOGRAD_MIN_CHANNELS && cout >= WINOGRAD_MIN_CHANNELS {
            Kernel::Winograd {
                t: Tiles::new(h, w),
                upk: winograd::pack_filters(kernel, o, c, transpose),
            }
        } else {
            Kernel::Direct {
                g: Grid::new(h, w),
                wpk: direct::pack_kernel(kernel, o, c, transpose),
            }
        };
        Conv3x3 {
            h,
            w,
            cin,
            cout,
            kernel,
        }
    }

    /// Convolves the examples `range` of `input` (NCHW, `cin` planes each)
    /// after `pre`, a chunk at a time; `each(e, res, rows)` gets example
    /// `e`'s result, whose row `i` of channel `c` is `res[rows.at(c, i)..][..w]`.
    pub fn run(
        &self,
        input: &[f32],
        range: Range<usize>,
        pre: Pre,
        mut each: impl FnMut(usize, &[f32], Rows),
    ) {
        let (cin, hw) = (self.cin, self.h * self.w);
        let example = |e: usize| &input[e * cin * hw..][..cin * hw];
        match &self.kernel {
            Kernel::Direct { g, wpk } => {
                let mut xp = direct::padded(g, cin);
                let mut res = scratch::any(g.result_len(self.cout));
                let rows = Rows {
                    cs: g.result_row(1, 0) - g.result_row(0, 0),
                    rs: g.result_row(0, 1) - g.result_row(0, 0),
                    base: g.result_row(0, 0),
                };
                for e in range {
                    pad(example(e), cin, self.h, self.w, pre, &mut xp, |c, i| {
                        g.interior_row(c, i)
                    });
                    direct::conv_example(g, &xp, cin, wpk, self.cout, &mut res);
                    each(e, &res, rows);
                }
            }
            Kernel::Winograd { t, upk } => {
                let (per, _) = t.chunk();
                let plen = t.padded_len(cin);
                let rlen = t.result_len(self.cout);
                let mut xp = winograd_padded(t, cin, per);
                let (vlen, mlen) = t.scratch_len(cin, self.cout);
                let (mut v, mut m) = (scratch::any(vlen), scratch::any(mlen));
                let mut res = scratch::any(per * rlen);
                let rows = Rows {
                    cs: t.result_row(1, 0),
                    rs: t.result_row(0, 1),
                    base: 0,
                };
                let mut start = range.start;
                while start < range.end {
                    let k = per.min(range.end - start);
                    for j in 0..k {
                        let dst = &mut xp[j * plen..][..plen];
                        pad(example(start + j), cin, self.h, self.w, pre, dst, |c, i| {
                            t.interior_row(c, i)
                        });
                    }
                    winograd::conv_chunk(t, k, &xp, cin, upk, self.cout, &mut v, &mut m, &mut res);
                    for j in 0..k {
                        each(start + j, &res[j * rlen..][..rlen], rows);
                    }
                    start += k;
                }
            }
        }
    }
}

/// Copies one example's planes through `pre` onto the direct path's padded grid.
pub fn pad_grid(g: &Grid, x: &[f32], planes: usize, pre: Pre, xp: &mut [f32]) {
    pad(x, planes, g.h, g.w, pre, xp, |c, i| g.interior_row(c, i));
}

/// `per` padded Winograd inputs of `planes` planes (borders zero).
fn winograd_padded(t: &Tiles, planes: usize, per: usize) -> Buf {
    let len = per * t.padded_len(planes);
    scratch::take(("winograd-padded", [t.h, t.w, planes * per]), len)
}

/// Copies one example's planes through `pre` into the interior rows of a
/// padded buffer (`row(c, i)` says where row `i` of plane `c` starts).
fn pad(
    x: &[f32],
    planes: usize,
    h: usize,
    w: usize,
    pre: Pre,
    dst: &mut [f32],
    row: impl Fn(usize, usize) -> usize,
) {
    for c in 0..planes {
        for i in 0..h {
            let src = &x[(c * h + i) * w..][..w];
            let out = &mut dst[row(c, i)..][..w];
            match pre {
                Pre::Identity => out.copy_from_slice(src),
                Pre::AffineRelu(a, b) => {
                    for (d, &s) in out.iter_mut().zip(src) {
                        *d = (s * a[c] + b[c]).max(0.0);
                    }
                }
            }
        }
    }
}
