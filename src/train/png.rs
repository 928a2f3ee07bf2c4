//! PNG output: sample grids and 2-D density plots.

use std::path::Path;

use candle_core::{DType, Tensor};

/// The 8-bit value of a pixel in [0,1): the inverse of the dequantization
/// `x = (v + u) / 256`.
pub fn pixel(x: f32) -> u8 {
    (x * 256.0).floor().clamp(0.0, 255.0) as u8
}

/// A grid of `n` images (C = 1 or 3) with `cols` columns and a 2-pixel gap,
/// filled one image at a time.
pub struct Grid {
    img: image::RgbImage,
    cols: usize,
    c: usize,
    h: usize,
    w: usize,
}

const GAP: usize = 2;

impl Grid {
    pub fn new(n: usize, c: usize, h: usize, w: usize) -> Grid {
        let cols = ((n as f64).sqrt().ceil() as usize).max(1);
        Self::with_cols(n, cols, c, h, w)
    }

    pub fn with_cols(n: usize, cols: usize, c: usize, h: usize, w: usize) -> Grid {
        let rows = n.div_ceil(cols);
        let (gw, gh) = (cols * (w + GAP) + GAP, rows * (h + GAP) + GAP);
        Grid {
            img: image::RgbImage::new(gw as u32, gh as u32),
            cols,
            c,
            h,
            w,
        }
    }

    /// Image `k` from its C*H*W 8-bit values.
    pub fn put(&mut self, k: usize, pixels: &[u8]) {
        let (c, h, w) = (self.c, self.h, self.w);
        let (ox, oy) = (
            GAP + (k % self.cols) * (w + GAP),
            GAP + (k / self.cols) * (h + GAP),
        );
        for y in 0..h {
            for x in 0..w {
                let px = |ch: usize| pixels[((if c == 3 { ch } else { 0 }) * h + y) * w + x];
                let rgb = image::Rgb([px(0), px(1), px(2)]);
                self.img.put_pixel((ox + x) as u32, (oy + y) as u32, rgb);
            }
        }
    }

    pub fn encode(&self) -> Result<Vec<u8>, String> {
        encode(&self.img)
    }
}

/// PNG bytes of an image.
fn encode(img: &image::RgbImage) -> Result<Vec<u8>, String> {
    let mut bytes = std::io::Cursor::new(Vec::new());
    img.write_to(&mut bytes, image::ImageFormat::Png)
        .map_err(|e| format!("cannot encode a PNG: {e}"))?;
    Ok(bytes.into_inner())
}

/// Saves a batch of images in [0,1) (N, C, H, W; C = 1 or 3) as a grid with
/// `cols` columns, atomically.
pub fn save_grid(images: &Tensor, cols: usize, path: &Path) -> Result<(), String> {
    let (n, c, h, w) = images.dims4().map_err(|e| e.to_string())?;
    let v: Vec<f32> = images
        .to_dtype(DType::F32)
        .and_then(|t| t.flatten_all())
        .and_then(|t| t.to_vec1())
        .map_err(|e| e.to_string())?;
    let mut grid = Grid::with_cols(n, cols.max(1), c, h, w);
    let pixels: Vec<u8> = v.iter().map(|&x| pixel(x)).collect();
    for (k, image) in pixels.chunks(c * h * w).enumerate() {
        grid.put(k, image);
    }
    super::checkpoint::write_atomic(path, &grid.encode()?)
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// PNG bytes of a 2-D histogram of `points` (a scatter plot that stays
/// readable at any count), over the square that holds them.
pub fn scatter(points: &[[f64; 2]]) -> Result<Vec<u8>, String> {
    let size = 400;
    let extent = points
        .iter()
        .flat_map(|p| [p[0].abs(), p[1].abs()])
        .filter(|v| v.is_finite())
        .fold(1e-6f64, f64::max)
        * 1.05;
    let mut img = image::RgbImage::new(size as u32, size as u32);
    histogram(&mut img, 0, size, points, -extent, extent);
    encode(&img)
}

/// Draws the 2-D histogram of `points` over `[lo, hi]^2` at column `x0` of `img`.
fn histogram(
    img: &mut image::RgbImage,
    x0: usize,
    size: usize,
    points: &[[f64; 2]],
    lo: f64,
    hi: f64,
) {
    let mut hist = vec![0f64; size * size];
    for p in points {
        let gx = ((p[0] - lo) / (hi - lo) * size as f64) as isize;
        let gy = ((hi - p[1]) / (hi - lo) * size as f64) as isize;
        if (0..size as isize).contains(&gx) && (0..size as isize).contains(&gy) {
            hist[gy as usize * size + gx as usize] += 1.0;
        }
    }
    let hmax = hist.iter().cloned().fold(1.0, f64::max);
    for (i, &v) in hist.iter().enumerate() {
        img.put_pixel(
            (x0 + i % size) as u32,
            (i / size) as u32,
            heat((v / hmax).sqrt()),
        );
    }
}

/// A heat map of `values` (row-major, `size` x `size`, larger = brighter) beside
/// a 2-D histogram of `points` over the same square `[lo, hi]^2`.
pub fn save_density(
    values: &[f64],
    size: usize,
    points: &[[f64; 2]],
    lo: f64,
    hi: f64,
    path: &Path,
) -> Result<(), String> {
    let mut img = image::RgbImage::new((2 * size + 4) as u32, size as u32);
    let max = values.iter().cloned().fold(f64::MIN, f64::max).max(1e-12);
    for (i, &v) in values.iter().enumerate() {
        let t = (v / max).clamp(0.0, 1.0);
        img.put_pixel((i % size) as u32, (i / size) as u32, heat(t));
    }
    histogram(&mut img, size + 4, size, points, lo, hi);
    super::checkpoint::write_atomic(path, &encode(&img)?)
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// Black -> red -> yellow -> white.
fn heat(t: f64) -> image::Rgb<u8> {
    let c = |x: f64| (x.clamp(0.0, 1.0) * 255.0) as u8;
    image::Rgb([c(3.0 * t), c(3.0 * t - 1.0), c(3.0 * t - 2.0)])
}
