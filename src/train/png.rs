//! PNG output: sample grids and 2-D density plots.

use std::path::Path;

use candle_core::{DType, Tensor};

/// Saves a batch of images in [0,1) (N, C, H, W; C = 1 or 3) as a grid with
/// `cols` columns and a 2-pixel gap.
pub fn save_grid(images: &Tensor, cols: usize, path: &Path) -> Result<(), String> {
    let (n, c, h, w) = images.dims4().map_err(|e| e.to_string())?;
    let v: Vec<f32> = images
        .to_dtype(DType::F32)
        .and_then(|t| t.flatten_all())
        .and_then(|t| t.to_vec1())
        .map_err(|e| e.to_string())?;
    let rows = n.div_ceil(cols);
    let gap = 2;
    let (gw, gh) = (cols * (w + gap) + gap, rows * (h + gap) + gap);
    let mut img = image::RgbImage::new(gw as u32, gh as u32);
    for k in 0..n {
        let (ox, oy) = (gap + (k % cols) * (w + gap), gap + (k / cols) * (h + gap));
        for y in 0..h {
            for x in 0..w {
                let px = |ch: usize| {
                    let ch = if c == 3 { ch } else { 0 };
                    (v[((k * c + ch) * h + y) * w + x].clamp(0.0, 1.0) * 255.0).round() as u8
                };
                img.put_pixel(
                    (ox + x) as u32,
                    (oy + y) as u32,
                    image::Rgb([px(0), px(1), px(2)]),
                );
            }
        }
    }
    img.save(path)
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
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
            (size + 4 + i % size) as u32,
            (i / size) as u32,
            heat((v / hmax).sqrt()),
        );
    }
    img.save(path)
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// Black -> red -> yellow -> white.
fn heat(t: f64) -> image::Rgb<u8> {
    let c = |x: f64| (x.clamp(0.0, 1.0) * 255.0) as u8;
    image::Rgb([c(3.0 * t), c(3.0 * t - 1.0), c(3.0 * t - 2.0)])
}
