//! One 3x3 "same" convolution of a batch, with the algorithm chosen for
//! its sizes: Winograd F(4x4, 3x3) ([`super::winograd`]) where both channel
//! counts are wide enough for its products to pay for its transforms, the
//! direct kernels ([`super::direct`]) elsewhere (the narrowest input and
//! output convolutions of a conditioner); [`KernelGrad`] takes the kernel
//! gradient by the same choice. Callers supply what
//! happens to the input on its way in ([`Pre`]) and to each result row on
//! its way out: that is where the fused conditioner puts its batch norms,
//! ReLUs, biases and residual adds.

use std::ops::Range;

use super::direct::{self, Grid};
use super::winograd::{self, Tiles};
use crate::exec::rows::{self, Plane};
use crate::exec::scratch::{self, Buf};

/// How a 3x3 convolution is computed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Algorithm {
    /// [`super::direct`]: nine taps read in place, 9 products per output.
    Direct,
    /// [`super::winograd`] F(4x4, 3x3): 2.25 products per output.
    Winograd,
}

impl Algorithm {
    /// The algorithm for these sizes, unless `FLOWC_CONV` (`direct`,
    /// `winograd`) forces one, for measuring one against the other.
    pub fn choose(cin: usize, cout: usize) -> Algorithm {
        static FORCED: std::sync::OnceLock<Option<Algorithm>> = std::sync::OnceLock::new();
        let forced = FORCED.get_or_init(|| match std::env::var("FLOWC_CONV").as_deref() {
            Ok("direct") => Some(Algorithm::Direct),
            Ok("winograd") => Some(Algorithm::Winograd),
            _ => None,
        });
        forced.unwrap_or_else(|| Algorithm::for_sizes(cin, cout))
    }

    /// By sizes, measured with `cargo bench --bench kernels -- algorithm`
    /// (one thread, AVX-512, direct-equivalent GFLOP/s, Winograd against
    /// direct): Winograd from 8 channels in and out, on maps of any size:
    /// 32->32 at 32x32 165-207 against 123-148, 64->64 at 16x16 265-290
    /// against 95-149, 12->32 166 against 95, 64->12 116 against 93, and on
    /// maps smaller than a tile too (64->64 at 3x3: 40 against 32; 128->128
    /// at 2x2: 29 against 15). Below 8 channels its transforms cost more
    /// than its products save (3->32: 43 against 123; 32->6: 47 against 62).
    /// (F(2x2, 3x3), which the project had before, was slower than F(4x4)
    /// on every one of these shapes and was removed.)
    fn for_sizes(cin: usize, cout: usize) -> Algorithm {
        if cin.min(cout) >= 8 {
            Algorithm::Winograd
        } else {
            Algorithm::Direct
        }
    }
}

/// What a convolution's input goes through first.
#[derive(Clone, Copy)]
pub enum Pre<'a> {
    Identity,
    /// `relu(x * a[c] + b[c])`.
    AffineRelu(&'a [f32], &'a [f32]),
}

enum Kernel {
    Direct { g: Grid, wpk: Vec<f32> },
    Winograd { t: Tiles, upk: Buf },
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
    /// Channel `c`'s `h` rows of `w` values.
    pub fn plane(&self, c: usize, h: usize, w: usize) -> Plane {
        Plane {
            at: self.at(c, 0),
            pitch: self.rs,
            h,
            w,
        }
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
        Conv3x3::with(Algorithm::choose(cin, cout), h, w, kernel, o, c, transpose)
    }

    /// As [`Conv3x3::new`], by the given algorithm.
    pub fn with(
        algorithm: Algorithm,
        h: usize,
        w: usize,
        kernel: &[f32],
        o: usize,
        c: usize,
        transpose: bool,
    ) -> Self {
        let (cin, cout) = if transpose { (o, c) } else { (c, o) };
        let kernel = match algorithm {
            Algorithm::Direct => Kernel::Direct {
                g: Grid::new(h, w),
                wpk: direct::pack_kernel(kernel, o, c, transpose),
            },
            Algorithm::Winograd => {
                // Pooled: a fresh buffer of this size is faulted in page by
                // page, every step, for every layer.
                let t = winograd::Tiles::new(h, w, cin, cout);
                let mut upk = scratch::take(("winograd-filters", [cin, cout, 0]), t.packed_len());
                winograd::pack_filters(kernel, o, c, transpose, &mut upk);
                Kernel::Winograd { t, upk }
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
        each: impl FnMut(usize, &[f32], Rows),
    ) {
        match &self.kernel {
            Kernel::Direct { g, wpk } => self.run_direct(g, wpk, input, range, pre, each),
            Kernel::Winograd { t, upk } => self.run_winograd(t, upk, input, range, pre, each),
        }
    }

    /// Example `e` of `input`.
    fn example<'a>(&self, input: &'a [f32], e: usize) -> &'a [f32] {
        let per = self.cin * self.h * self.w;
        &input[e * per..][..per]
    }

    fn run_direct(
        &self,
        g: &Grid,
        wpk: &[f32],
        input: &[f32],
        range: Range<usize>,
        pre: Pre,
        mut each: impl FnMut(usize, &[f32], Rows),
    ) {
        let cin = self.cin;
        let mut xp = direct::padded(g, cin);
        let mut res = scratch::any(g.result_len(self.cout));
        let rows = Rows {
            cs: g.result_row(1, 0) - g.result_row(0, 0),
            rs: g.result_row(0, 1) - g.result_row(0, 0),
            base: g.result_row(0, 0),
        };
        for e in range {
            pad(
                self.example(input, e),
                cin,
                self.h,
                self.w,
                pre,
                &mut xp,
                |c, i| g.interior_row(c, i),
            );
            direct::conv_example(g, &xp, cin, wpk, self.cout, &mut res);
            each(e, &res, rows);
        }
    }

    fn run_winograd(
        &self,
        t: &Tiles,
        upk: &[f32],
        input: &[f32],
        range: Range<usize>,
        pre: Pre,
        mut each: impl FnMut(usize, &[f32], Rows),
    ) {
        let cin = self.cin;
        let mut xp = scratch::take(("winograd-padded", [t.h, t.w, cin]), t.padded_len());
        let (vlen, mlen) = t.scratch_len();
        let (mut v, mut m) = (scratch::any(vlen), scratch::any(mlen));
        let mut res = scratch::any(t.result_len());
        let rows = Rows {
            cs: t.result_row(1, 0),
            rs: t.result_row(0, 1),
            base: 0,
        };
        let mut start = range.start;
        while start < range.end {
            let k = t.chunk().min(range.end - start);
            for j in 0..k {
                pad(
                    self.example(input, start + j),
                    cin,
                    self.h,
                    self.w,
                    pre,
                    &mut xp,
                    |c, i| t.interior_row(c, i),
                );
                winograd::transform_input(t, j, &xp, &mut v);
            }
            winograd::multiply(t, k, upk, &v, &mut m);
            for j in 0..k {
                winograd::transform_output(t, j, &m, &mut res);
                each(start + j, &res, rows);
            }
            start += k;
        }
    }
}

/// The kernel gradient of a 3x3 convolution of `cin` to `cout` channels on
/// `h x w` maps, `y = conv(pre(x))`, by the algorithm its forward uses:
/// Winograd's transformed products ([`winograd::grad`]) or the direct
/// kernel's outer products. Threads each sum their examples into a part
/// ([`KernelGrad::part`]), added into `[cout][cin][3][3]` in a fixed order
/// ([`KernelGrad::add_parts`]).
pub enum KernelGrad {
    Direct { g: Grid, cin: usize, cout: usize },
    Winograd { t: Tiles },
}

impl KernelGrad {
    pub fn new(h: usize, w: usize, cin: usize, cout: usize) -> Self {
        KernelGrad::with(Algorithm::choose(cin, cout), h, w, cin, cout)
    }

    /// As [`KernelGrad::new`], by the given algorithm.
    pub fn with(algorithm: Algorithm, h: usize, w: usize, cin: usize, cout: usize) -> Self {
        match algorithm {
            Algorithm::Direct => KernelGrad::Direct {
                g: Grid::new(h, w),
                cin,
                cout,
            },
            Algorithm::Winograd => KernelGrad::Winograd {
                t: Tiles::new(h, w, cin, cout),
            },
        }
    }

    /// The gradient's part from examples `range` of `input` (`cin` planes
    /// each, through `pre`) and `gy` (`cout` planes each).
    pub fn part(&self, input: &[f32], pre: Pre, gy: &[f32], range: Range<usize>) -> Vec<f32> {
        match self {
            KernelGrad::Direct { g, cin, cout } => {
                let (per_in, per_out) = (cin * g.h * g.w, cout * g.h * g.w);
                let mut xp = direct::padded(g, *cin);
                let mut gt = direct::transposed(g, *cout);
                let mut dwt = vec![0f32; cin * 9 * cout.div_ceil(32) * 32];
                for e in range {
                    pad_grid(g, &input[e * per_in..][..per_in], *cin, pre, &mut xp);
                    direct::transpose_grad(g, &gy[e * per_out..][..per_out], *cout, &mut gt);
                    direct::dw_example(g, &gt, *cout, &xp, *cin, &mut dwt);
                }
                dwt
            }
            KernelGrad::Winograd { t } => winograd_part(t, input, pre, gy, range),
        }
    }

    /// Adds the parts of [`KernelGrad::part`], in order, to `dk`
    /// (`[cout][cin][3][3]`).
    pub fn add_parts(&self, parts: &[Vec<f32>], dk: &mut [f32]) {
        match self {
            KernelGrad::Direct { cin, cout, .. } => {
                // A direct part is `[cin][tap][opad]`.
                let (rows, opad) = (cin * 9, cout.div_ceil(32) * 32);
                for (o, dko) in dk.chunks_exact_mut(rows).take(*cout).enumerate() {
                    for (r, v) in dko.iter_mut().enumerate() {
                        for part in parts {
                            *v += part[r * opad + o];
                        }
                    }
                }
            }
            KernelGrad::Winograd { t } => winograd::grad::add_kernel_grad(t, parts, dk),
        }
    }
}

/// [`KernelGrad::part`] by Winograd: chunk by chunk, the inputs'
/// transforms and the output gradients', then their products.
fn winograd_part(t: &Tiles, input: &[f32], pre: Pre, gy: &[f32], range: Range<usize>) -> Vec<f32> {
    use winograd::grad;
    let (cin, cout, hw) = (t.cols(), t.rows(), t.h * t.w);
    let mut xp = scratch::take(("winograd-padded", [t.h, t.w, cin]), t.padded_len());
    let key = ("winograd-grad-positions", [t.h, t.w, cout]);
    let mut dyt = scratch::take(key, t.grad_positions_len());
    let (mut v, mut dm) = (
        scratch::any(t.scratch_len().0),
        scratch::any(t.grad_scratch_len()),
    );
    let mut du = vec![0f32; t.du_len()];
    let mut start = range.start;
    while start < range.end {
        let k = t.chunk().min(range.end - start);
        for j in 0..k {
            let e = start + j;
            let x = &input[e * cin * hw..][..cin * hw];
            pad(x, cin, t.h, t.w, pre, &mut xp, |c, i| t.interior_row(c, i));
            winograd::transform_input(t, j, &xp, &mut v);
            grad::transpose_grad(t, &gy[e * cout * hw..][..cout * hw], &mut dyt);
            grad::transform_grad(t, j, &dyt, &mut dm);
        }
        grad::accumulate(t, k, &dm, &v, &mut du);
        start += k;
    }
    du
}

/// Copies one example's planes through `pre` onto the direct path's padded grid.
pub fn pad_grid(g: &Grid, x: &[f32], planes: usize, pre: Pre, xp: &mut [f32]) {
    pad(x, planes, g.h, g.w, pre, xp, |c, i| g.interior_row(c, i));
}

/// Copies one example's planes through `pre` into the interior rows of a
/// padded buffer (`row(c, i)` says where row `i` of plane `c` starts; rows
/// of a plane are evenly spaced).
fn pad(
    x: &[f32],
    planes: usize,
    h: usize,
    w: usize,
    pre: Pre,
    dst: &mut [f32],
    row: impl Fn(usize, usize) -> usize,
) {
    let pitch = if h > 1 { row(0, 1) - row(0, 0) } else { w };
    for c in 0..planes {
        let src = &x[c * h * w..][..h * w];
        let to = Plane {
            at: row(c, 0),
            pitch,
            h,
            w,
        };
        match pre {
            Pre::Identity => {
                for i in 0..h {
                    dst[to.at + i * pitch..][..w].copy_from_slice(&src[i * w..][..w]);
                }
            }
            Pre::AffineRelu(a, b) => rows::affine_relu(src, a[c], b[c], dst, to),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `relu(x a + b)` (when `pre`) convolved with `kernel` (`[o][c][3][3]`,
    /// transposed when asked) in f64, and the sum of the products' sizes
    /// at each output: the scale of its rounding error.
    fn reference(
        x: &[f32],
        (n, cin, cout, h, w): (usize, usize, usize, usize, usize),
        kernel: &[f32],
        transpose: bool,
        pre: Option<(&[f32], &[f32])>,
    ) -> (Vec<f64>, Vec<f64>) {
        let (mut y, mut size) = (vec![0f64; n * cout * h * w], vec![0f64; n * cout * h * w]);
        let tap = |o: usize, c: usize, dy: usize, dx: usize| -> f64 {
            f64::from(if transpose {
                kernel[(c * cout + o) * 9 + (2 - dy) * 3 + (2 - dx)]
            } else {
                kernel[(o * cin + c) * 9 + dy * 3 + dx]
            })
        };
        for e in 0..n {
            for o in 0..cout {
                for i in 0..h {
                    for j in 0..w {
                        let at = ((e * cout + o) * h + i) * w + j;
                        for c in 0..cin {
                            for dy in 0..3 {
                                for dx in 0..3 {
                                    let (yi, xj) = ((i + dy) as isize - 1, (j + dx) as isize - 1);
                                    if yi < 0 || xj < 0 || yi >= h as isize || xj >= w as isize {
                                        continue;
                                    }
                                    let v = x[((e * cin + c) * h + yi as usize) * w + xj as usize];
                                    let v = match pre {
                                        Some((a, b)) => (v * a[c] + b[c]).max(0.0),
                                        None => v,
                                    };
                                    let p = f64::from(v) * tap(o, c, dy, dx);
                                    y[at] += p;
                                    size[at] += p.abs();
                                }
                            }
                        }
                    }
                }
            }
        }
        (y, size)
    }

    /// Every algorithm against an f64 convolution, forward and transposed,
    /// with and without the input's affine + ReLU, on awkward sizes: maps
    /// not a multiple of the tiles, one tile, more than 16 tiles a row,
    /// channel counts off the vector and block widths, chunks of one and of
    /// many examples. Bound: a multiple of the sum of the products' sizes,
    /// 1e-6 for the direct path (rounding of the sums), 2e-5 for Winograd
    /// F(4x4, 3x3), whose transforms scale by up to 8 and 1/24 (its worst
    /// here is about 7e-6, the direct path's about 3e-7).
    /// Uniform values in [-1, 1) from a xorshift generator seeded with `seed`.
    fn uniform_from(mut seed: u64) -> impl FnMut() -> f32 {
        move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
        }
    }

    #[test]
    fn algorithms_match_an_f64_convolution() {
        if !direct::available() {
            eprintln!("no AVX-512 here: the kernels are not used, nothing to compare");
            return;
        }
        let mut worst = [0f64; 2];
        for dims in [
            (1usize, 16usize, 16usize, 4usize, 4usize),
            (3, 17, 20, 7, 5),
            (2, 32, 33, 14, 14),
            (5, 16, 70, 9, 13),
            (2, 64, 48, 16, 16),
            (1, 20, 18, 5, 70),
            (40, 24, 16, 4, 8),
            // 15 tiles an example: a chunk's columns are not whole vectors
            // unless rounded up again.
            (7, 16, 16, 12, 20),
            // Tile rows of 8 and of 4 tiles, and an example of 8 tiles:
            // half a group of 16.
            (2, 24, 16, 32, 32),
            (3, 16, 20, 5, 16),
            (2, 3, 5, 1, 1),
        ] {
            let (n, cin, cout, h, w) = dims;
            let mut uniform =
                uniform_from(0x9e3779b97f4a7c15u64 ^ (n * 131 + cin * 17 + h * w) as u64);
            let x: Vec<f32> = (0..n * cin * h * w).map(|_| uniform() * 3.0).collect();
            let kernel: Vec<f32> = (0..cin * cout * 9).map(|_| uniform()).collect();
            let a: Vec<f32> = (0..cin).map(|_| uniform() + 1.5).collect();
            let b: Vec<f32> = (0..cin).map(|_| uniform()).collect();
            for transpose in [false, true] {
                for affine in [false, true] {
                    let pre = affine.then_some((a.as_slice(), b.as_slice()));
                    let (want, size) = reference(&x, dims, &kernel, transpose, pre);
                    let (o, c) = if transpose { (cin, cout) } else { (cout, cin) };
                    for (k, alg) in [Algorithm::Direct, Algorithm::Winograd]
                        .into_iter()
                        .enumerate()
                    {
                        let conv = Conv3x3::with(alg, h, w, &kernel, o, c, transpose);
                        let pre = match pre {
                            Some((a, b)) => Pre::AffineRelu(a, b),
                            None => Pre::Identity,
                        };
                        let mut seen = 0;
                        conv.run(&x, 0..n, pre, |e, res, rows| {
                            seen += 1;
                            for oc in 0..cout {
                                for i in 0..h {
                                    for j in 0..w {
                                        let at = ((e * cout + oc) * h + i) * w + j;
                                        let err = (f64::from(res[rows.at(oc, i) + j]) - want[at]).abs();
                                        let bound = if alg == Algorithm::Winograd { 2e-5 } else { 1e-6 };
                                        let rel = err / size[at].max(1e-30);
                                        worst[k] = worst[k].max(rel);
                                        assert!(
                                            err <= bound * size[at] + 1e-30,
                                            "{alg:?} {dims:?} transpose {transpose} affine {affine} at ({e}, {oc}, {i}, {j}): {err} against {}",
                                            size[at]
                                        );
                                    }
                                }
                            }
                        });
                        assert_eq!(seen, n, "{alg:?} {dims:?}: every example's result once");
                    }
                }
            }
        }
        eprintln!("worst error relative to the products' sizes (direct, Winograd): {worst:?}");
    }

    /// Both algorithms' kernel gradients against an f64 sum
    /// `dk[o][c][dy][dx] = sum over e, i, j of gy[e][o][i][j] pre(x)[e][c][i+dy-1][j+dx-1]`,
    /// each summed in two parts (two threads' examples), on awkward sizes:
    /// channel counts off the 8- and 32-wide blocks, maps off the 4x4
    /// tiles, rows past 16 columns, a 1x1 map, several examples a chunk.
    #[test]
    fn kernel_gradients_match_an_f64_sum() {
        if !direct::available() {
            eprintln!("no AVX-512 here: the kernels are not used, nothing to compare");
            return;
        }
        let mut worst = [0f64; 2];
        for dims in [
            (1usize, 8usize, 8usize, 4usize, 4usize),
            (3, 17, 20, 7, 5),
            (2, 32, 33, 14, 14),
            (4, 9, 70, 9, 13),
            (2, 64, 48, 16, 16),
            (1, 20, 18, 5, 35),
            (40, 24, 16, 4, 8),
            (3, 12, 8, 1, 1),
        ] {
            let (n, cin, cout, h, w) = dims;
            let mut uniform =
                uniform_from(0x2545f4914f6cdd1du64 ^ (n * 131 + cin * 17 + h * w) as u64);
            let x: Vec<f32> = (0..n * cin * h * w).map(|_| uniform() * 3.0).collect();
            let gy: Vec<f32> = (0..n * cout * h * w).map(|_| uniform()).collect();
            let a: Vec<f32> = (0..cin).map(|_| uniform() + 1.5).collect();
            let b: Vec<f32> = (0..cin).map(|_| uniform()).collect();
            for affine in [false, true] {
                let act = |v: f32, c: usize| {
                    if affine {
                        (v * a[c] + b[c]).max(0.0)
                    } else {
                        v
                    }
                };
                let (mut want, mut size) = (vec![0f64; cout * cin * 9], vec![0f64; cout * cin * 9]);
                for e in 0..n {
                    for (o, c, t) in (0..cout)
                        .flat_map(|o| (0..cin).flat_map(move |c| (0..9).map(move |t| (o, c, t))))
                    {
                        let (dy, dx) = (t / 3, t % 3);
                        for i in 0..h {
                            for j in 0..w {
                                let (yi, xj) = ((i + dy) as isize - 1, (j + dx) as isize - 1);
                                if yi < 0 || xj < 0 || yi >= h as isize || xj >= w as isize {
                                    continue;
                                }
                                let v =
                                    act(x[((e * cin + c) * h + yi as usize) * w + xj as usize], c);
                                let p =
                                    f64::from(v) * f64::from(gy[((e * cout + o) * h + i) * w + j]);
                                want[(o * cin + c) * 9 + t] += p;
                                size[(o * cin + c) * 9 + t] += p.abs();
                            }
                        }
                    }
                }
                let pre = if affine {
                    Pre::AffineRelu(&a, &b)
                } else {
                    Pre::Identity
                };
                for (k, alg) in [Algorithm::Direct, Algorithm::Winograd]
                    .into_iter()
                    .enumerate()
                {
                    let kg = KernelGrad::with(alg, h, w, cin, cout);
                    let mut dk = vec![0f32; cout * cin * 9];
                    let parts: Vec<_> = [0..n / 2, n / 2..n]
                        .into_iter()
                        .map(|r| kg.part(&x, pre, &gy, r))
                        .collect();
                    kg.add_parts(&parts, &mut dk);
                    let bound = if alg == Algorithm::Winograd {
                        5e-5
                    } else {
                        1e-6
                    };
                    for (at, (&got, &want)) in dk.iter().zip(&want).enumerate() {
                        let err = (f64::from(got) - want).abs();
                        worst[k] = worst[k].max(err / size[at].max(1e-30));
                        assert!(
                            err <= bound * size[at] + 1e-30,
                            "{alg:?} {dims:?} affine {affine} at {at}: {got} against {want} (size {})",
                            size[at]
                        );
                    }
                }
            }
        }
        eprintln!("worst error relative to the products' sizes (direct, Winograd): {worst:?}");
    }
}
