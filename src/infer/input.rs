//! The files the inference commands read: examples (`.npy`: float `(N, D)`
//! for vector flows, uint8 `(N, C, H, W)` for image flows; or one image as
//! PNG) and masks (`.npy` or PNG of the input's shape or of one example,
//! nonzero = observed; or a built-in region), checked against the flow.

use std::path::Path;

use candle_core::{Device, Tensor};

use crate::data::Examples;
use crate::shape::Shape;
use crate::train::{rng::Rng, TrainError};

/// Reads examples for a flow of input `shape`.
pub fn read_examples(path: &Path, shape: Shape) -> Result<Examples, TrainError> {
    let ex = match extension(path) {
        "png" => read_png(path, shape)?,
        _ => crate::data::read_npy(path).map_err(|e| TrainError::Data(e.to_string()))?,
    };
    check_fits(&ex, shape, path)?;
    Ok(ex)
}

fn extension(path: &Path) -> &str {
    path.extension().and_then(|e| e.to_str()).unwrap_or("")
}

/// Refuses examples that are not of the flow's input shape.
pub fn check_fits(ex: &Examples, shape: Shape, path: &Path) -> Result<(), TrainError> {
    let want: Vec<usize> = shape.dims().iter().map(|&d| d as usize).collect();
    let kind_ok = matches!(
        (ex, shape),
        (Examples::Images { .. }, Shape::Image { .. })
            | (Examples::Vectors { .. }, Shape::Vector { .. })
    );
    if !kind_ok || ex.example_shape() != want {
        let expected = match shape {
            Shape::Image { c, h, w } => format!("uint8 examples of {c}x{h}x{w} (N, {c}, {h}, {w})"),
            Shape::Vector { d } => format!("float examples of {d} values (N, {d})"),
        };
        return Err(TrainError::Data(format!(
            "{}: holds {} examples of {}; this run's flow takes {expected}",
            path.display(),
            ex.len(),
            ex.describe_example()
        )));
    }
    if ex.is_empty() {
        return Err(TrainError::Data(format!(
            "{}: holds no examples",
            path.display()
        )));
    }
    Ok(())
}

/// One image as the flow's input: grey for one channel, RGB for three.
fn read_png(path: &Path, shape: Shape) -> Result<Examples, TrainError> {
    let Shape::Image { c, h, w } = shape else {
        return Err(TrainError::Data(format!(
            "{}: a PNG is an image; this run's flow takes {shape}",
            path.display()
        )));
    };
    let img =
        image::open(path).map_err(|e| TrainError::Data(format!("{}: {e}", path.display())))?;
    if (img.width() as u64, img.height() as u64) != (w, h) {
        return Err(TrainError::Data(format!(
            "{}: a {}x{} image; this run's flow takes {w}x{h} (width x height)",
            path.display(),
            img.width(),
            img.height()
        )));
    }
    let data: Vec<u8> = match c {
        1 => img.to_luma8().into_raw(),
        3 => {
            // Planar C, H, W from interleaved RGB.
            let rgb = img.to_rgb8().into_raw();
            (0..3)
                .flat_map(|ch| rgb.iter().skip(ch).step_by(3).copied().collect::<Vec<_>>())
                .collect()
        }
        _ => {
            return Err(TrainError::Data(format!(
            "{}: PNG input is for 1- or 3-channel flows; this one has {c} channels; give a .npy",
            path.display()
        )))
        }
    };
    Ok(Examples::Images {
        data,
        n: 1,
        c: c as usize,
        h: h as usize,
        w: w as usize,
    })
}

/// Examples as the flow sees them, deterministically: images at the centre
/// of their bins, `(v + 1/2) / 256`; vectors as they are.
pub fn to_tensor(ex: &Examples, device: &Device) -> candle_core::Result<Tensor> {
    match ex {
        Examples::Images { data, n, c, h, w } => {
            let v: Vec<f32> = data.iter().map(|&v| (v as f32 + 0.5) / 256.0).collect();
            Tensor::from_vec(v, (*n, *c, *h, *w), device)
        }
        Examples::Vectors { data, n, d } => Tensor::from_vec(data.clone(), (*n, *d), device),
    }
}

/// Values in the flow's space back to examples: images `floor(256 x)`.
pub fn from_values(values: &[f32], n: usize, shape: Shape) -> Examples {
    match shape {
        Shape::Image { c, h, w } => Examples::Images {
            data: values
                .iter()
                .map(|&x| crate::train::png::pixel(x))
                .collect(),
            n,
            c: c as usize,
            h: h as usize,
            w: w as usize,
        },
        Shape::Vector { d } => Examples::Vectors {
            data: values.to_vec(),
            n,
            d: d as usize,
        },
    }
}

/// Which values of `n` examples are observed (`true`) and which are to be
/// filled in: a built-in region that is missing (`left`, `right`, `top`,
/// `bottom`, `center`: a half, or the middle half of each side; `random:P`:
/// each value missing with probability P), or a file, nonzero = observed, of
/// the input's shape or of one example (then the same for every example).
pub fn read_mask(spec: &str, n: usize, shape: Shape, seed: u64) -> Result<Vec<bool>, TrainError> {
    let size = shape.size() as usize;
    if let Some(one) = builtin(spec, shape, seed, n)? {
        return Ok(one);
    }
    let path = Path::new(spec);
    let values: Vec<bool> = match extension(path) {
        "png" => {
            let img =
                image::open(path).map_err(|e| TrainError::Data(format!("--mask {spec}: {e}")))?;
            let grey = img.to_luma8().into_raw();
            let channels = if let Shape::Image { c, .. } = shape {
                c as usize
            } else {
                1
            };
            let plane: Vec<bool> = grey.iter().map(|&v| v != 0).collect();
            (0..channels).flat_map(|_| plane.iter().copied()).collect()
        }
        _ => {
            let (_, values) = crate::data::read_npy_values(path)
                .map_err(|e| TrainError::Data(format!("--mask: {e}")))?;
            values.iter().map(|&v| v != 0.0).collect()
        }
    };
    match values.len() {
        l if l == size => Ok((0..n).flat_map(|_| values.iter().copied()).collect()),
        l if l == n * size => Ok(values),
        l => Err(TrainError::Data(format!(
            "--mask {spec}: {l} values; expected one example's {size} ({shape}) or all {n} examples' {}",
            n * size
        ))),
    }
}

/// A built-in mask, or None when `spec` names a file.
fn builtin(spec: &str, shape: Shape, seed: u64, n: usize) -> Result<Option<Vec<bool>>, TrainError> {
    let size = shape.size() as usize;
    if let Some(p) = spec.strip_prefix("random:") {
        let p: f64 = p
            .parse()
            .ok()
            .filter(|p: &f64| (0.0..=1.0).contains(p))
            .ok_or_else(|| {
                TrainError::Usage(format!("--mask {spec}: expected random:P with 0 <= P <= 1"))
            })?;
        let mut rng = Rng::keyed(seed, 0x3A5C, 0);
        return Ok(Some((0..n * size).map(|_| rng.uniform() >= p).collect()));
    }
    let region: fn(usize, usize, usize, usize) -> bool = match spec {
        "left" => |_, x, _, w| x < w / 2,
        "right" => |_, x, _, w| x >= w - w / 2,
        "top" => |y, _, h, _| y < h / 2,
        "bottom" => |y, _, h, _| y >= h - h / 2,
        "center" => |y, x, h, w| (h / 4..h - h / 4).contains(&y) && (w / 4..w - w / 4).contains(&x),
        _ => return Ok(None),
    };
    let Shape::Image { c, h, w } = shape else {
        return Err(TrainError::Usage(format!(
            "--mask {spec}: the regions are for images; give random:P or a file for a vector flow"
        )));
    };
    let (c, h, w) = (c as usize, h as usize, w as usize);
    let one: Vec<bool> = (0..c * h * w)
        .map(|i| !region((i / w) % h, i % w, h, w))
        .collect();
    Ok(Some((0..n).flat_map(|_| one.iter().copied()).collect()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_in_regions_mark_the_missing_part() {
        let shape = Shape::Image { c: 1, h: 4, w: 4 };
        let show = |spec: &str| -> String {
            read_mask(spec, 1, shape, 0)
                .unwrap()
                .iter()
                .map(|&o| if o { '.' } else { '#' })
                .collect()
        };
        assert_eq!(show("right"), "..##..##..##..##");
        assert_eq!(show("left"), "##..##..##..##..");
        assert_eq!(show("top"), "########........");
        assert_eq!(show("center"), ".....##..##.....");
        let random = read_mask("random:0.5", 200, shape, 3).unwrap();
        let missing = random.iter().filter(|o| !**o).count() as f64 / random.len() as f64;
        assert!((missing - 0.5).abs() < 0.05, "{missing}");
        assert!(read_mask("random:2", 1, shape, 0).is_err());
        assert!(read_mask("left", 1, Shape::Vector { d: 2 }, 0).is_err());
    }
}
