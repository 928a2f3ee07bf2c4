//! Folders of PNG and JPEG images (`folder:PATH`, and the files of `celeba`):
//! listing, decoding, and fitting each image to the flow's input shape.
//!
//! * Files: every `.png`, `.jpg` or `.jpeg` (any case) under the folder,
//!   recursively (links followed, each folder once), in sorted path order;
//!   hidden entries (a name starting with `.`) are skipped. JPEG EXIF
//!   orientation is not applied (as PIL's default, which torchvision uses).
//! * Labels, as torchvision's `ImageFolder`: the sorted names of the folder's
//!   immediate subfolders that hold images are the classes, and an image's
//!   label is the index of the subfolder it lies under. Images directly in
//!   the folder (not in a class subfolder) make the folder unlabelled when
//!   there are no class subfolders, and are an error when there are.
//! * Colour: converted to grey (the `image` crate's `to_luma8`, Rec. 709
//!   weights) for a 1-channel flow and to RGB for a 3-channel one (alpha
//!   dropped, grey replicated); other channel counts are refused.
//! * Size ([`Resize`]): `crop` takes the largest centered box of the flow's
//!   aspect ratio and resizes it to the flow's height and width; `pad`
//!   resizes the whole image to fit inside, keeping its aspect ratio, and
//!   centers it on black; `stretch` resizes the whole image to the flow's
//!   size. Resizing uses the triangle (bilinear) filter of
//!   `image::imageops::resize`, whose support widens with the scale factor
//!   when shrinking (so a downscale averages, it does not skip pixels); an
//!   image already of the target size is copied unchanged.
//! * A file that does not decode is skipped, named on stderr with a count,
//!   unless [`LoadOptions::strict_images`] makes it an error.

use std::path::{Path, PathBuf};

use image::imageops::FilterType;
use image::{DynamicImage, GenericImageView};
use rayon::prelude::*;

use super::{DataError, Examples};

/// How an image is fitted to the flow's input height and width.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Resize {
    /// The largest centered box of the target's aspect ratio, resized.
    #[default]
    Crop,
    /// The whole image resized to fit inside, centered on black.
    Pad,
    /// The whole image resized to the target size (aspect ratio not kept).
    Stretch,
}

impl Resize {
    /// `crop`, `pad` or `stretch`.
    pub fn name(self) -> &'static str {
        match self {
            Resize::Crop => "crop",
            Resize::Pad => "pad",
            Resize::Stretch => "stretch",
        }
    }
}

/// The filter every resize uses.
pub const RESIZE_FILTER: FilterType = FilterType::Triangle;

/// How image folders are read: what the flow takes, and what to do with
/// files that do not decode. Ignored by the other data sets.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LoadOptions {
    /// The flow's input `[c, h, w]`: images are converted and resized to it.
    /// Needed by `folder:PATH` and `celeba`.
    pub target: Option<[usize; 3]>,
    /// How images are fitted to the target's height and width.
    pub resize: Resize,
    /// Stop at the first file that does not decode (else skip it, with a count).
    pub strict_images: bool,
    /// Stream `folder:PATH`, `celeba` and `imagenet32`/`64` whatever their
    /// size (else only those whose decoded training split is larger than
    /// [`super::STREAM_ABOVE_BYTES`]). Read by [`super::open_with`] only.
    pub stream: bool,
}

/// Class names and the label of every example of each split.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Labels {
    /// Class names; label `k` is `classes[k]` (empty when the source names none).
    pub classes: Vec<String>,
    /// One label per training example.
    pub train: Vec<u32>,
    /// One label per test example.
    pub test: Vec<u32>,
    /// Where the training and the test labels come from (a file, a folder
    /// or how they were made), for messages.
    pub files: [String; 2],
}

/// Whether `path` names a PNG or JPEG file by its extension.
pub(crate) fn is_image_file(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .map(|e| e.to_ascii_lowercase())
        .is_some_and(|e| matches!(e.as_str(), "png" | "jpg" | "jpeg"))
}

fn hidden(path: &Path) -> bool {
    path.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with('.'))
}

/// The entries of a folder, sorted by name.
fn sorted_entries(dir: &Path) -> Result<Vec<PathBuf>, DataError> {
    let rd = std::fs::read_dir(dir).map_err(|e| DataError::io(dir, e))?;
    let mut out = Vec::new();
    for e in rd {
        let e = e.map_err(|e| DataError::io(dir, e))?;
        let p = e.path();
        if !hidden(&p) {
            out.push(p);
        }
    }
    out.sort();
    Ok(out)
}

/// Every image file under `dir`, recursively, in sorted path order. Links
/// to folders are followed, each folder read once (a link to a folder above
/// it is not a loop).
pub(crate) fn image_files_under(dir: &Path) -> Result<Vec<PathBuf>, DataError> {
    let mut out = Vec::new();
    let mut seen = std::collections::HashSet::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let real = std::fs::canonicalize(&d).map_err(|e| DataError::io(&d, e))?;
        if !seen.insert(real) {
            continue;
        }
        for p in sorted_entries(&d)? {
            if p.is_dir() {
                stack.push(p);
            } else if is_image_file(&p) {
                out.push(p);
            }
        }
    }
    out.sort();
    Ok(out)
}

/// The images of an image folder with their labels (see the module notes).
pub(crate) struct Listing {
    /// Class names (empty: unlabelled).
    pub classes: Vec<String>,
    /// (file, label), in sorted path order.
    pub files: Vec<(PathBuf, u32)>,
}

/// Lists an image folder: its class subfolders and every image under it.
pub(crate) fn list_folder(root: &Path) -> Result<Listing, DataError> {
    if !root.is_dir() {
        return Err(DataError::NotAFolder {
            path: root.to_path_buf(),
        });
    }
    let mut classes = Vec::new();
    let mut files = Vec::new();
    let mut loose = Vec::new();
    for p in sorted_entries(root)? {
        if p.is_dir() {
            let inside = image_files_under(&p)?;
            if !inside.is_empty() {
                let label = classes.len() as u32;
                classes.push(
                    p.file_name()
                        .unwrap_or_default()
                        .to_string_lossy()
                        .into_owned(),
                );
                files.extend(inside.into_iter().map(|f| (f, label)));
            }
        } else if is_image_file(&p) {
            loose.push(p);
        }
    }
    if files.is_empty() && loose.is_empty() {
        return Err(DataError::NoImages {
            path: root.to_path_buf(),
        });
    }
    if !classes.is_empty() && !loose.is_empty() {
        return Err(DataError::LooseImages {
            path: root.to_path_buf(),
            example: loose[0].clone(),
            count: loose.len(),
            classes: classes.len(),
        });
    }
    files.extend(loose.into_iter().map(|f| (f, 0)));
    Ok(Listing { classes, files })
}

/// The channel count of a target, checked: 1 (grey) or 3 (RGB).
pub(crate) fn check_channels(spec: &str, target: [usize; 3]) -> Result<(), DataError> {
    let [c, h, w] = target;
    if !matches!(c, 1 | 3) || h == 0 || w == 0 {
        return Err(DataError::ImageTarget {
            spec: spec.to_string(),
            c,
            h,
            w,
        });
    }
    Ok(())
}

/// The centered box `(x, y, width, height)` of aspect ratio `tw:th` that is
/// as large as fits in a `w x h` image.
pub fn center_box(w: u32, h: u32, tw: u32, th: u32) -> (u32, u32, u32, u32) {
    let (w64, h64, tw64, th64) = (w as u64, h as u64, tw as u64, th as u64);
    if w64 * th64 > h64 * tw64 {
        // wider than the target: keep the height
        let cw = ((h64 * tw64 + th64 / 2) / th64).clamp(1, w64) as u32;
        ((w - cw) / 2, 0, cw, h)
    } else {
        let ch = ((w64 * th64 + tw64 / 2) / tw64).clamp(1, h64) as u32;
        (0, (h - ch) / 2, w, ch)
    }
}

/// Fits one decoded image to `[c, h, w]` by `resize`, after an optional
/// first crop `(x, y, width, height)` (clipped to the image), and returns its
/// pixels planar (C, H, W).
pub fn fit_image(
    img: &DynamicImage,
    first_crop: Option<(u32, u32, u32, u32)>,
    target: [usize; 3],
    resize: Resize,
) -> Vec<u8> {
    let [c, th, tw] = target;
    let (tw, th) = (tw as u32, th as u32);
    let img = match first_crop {
        Some((x, y, w, h)) => {
            let (iw, ih) = img.dimensions();
            let (x, y) = (x.min(iw.saturating_sub(1)), y.min(ih.saturating_sub(1)));
            img.crop_imm(x, y, w.min(iw - x).max(1), h.min(ih - y).max(1))
        }
        None => img.clone(),
    };
    let planes = |buf: &[u8], ch: usize| -> Vec<u8> {
        let n = (tw * th) as usize;
        let mut out = vec![0u8; n * ch];
        for (i, px) in buf.chunks_exact(ch).enumerate() {
            for k in 0..ch {
                out[k * n + i] = px[k];
            }
        }
        out
    };
    macro_rules! fit {
        ($buf:expr, $ch:expr) => {{
            let buf = $buf;
            let (iw, ih) = buf.dimensions();
            let fitted = match resize {
                Resize::Stretch => image::imageops::resize(&buf, tw, th, RESIZE_FILTER),
                Resize::Crop => {
                    let (x, y, w, h) = center_box(iw, ih, tw, th);
                    let part = image::imageops::crop_imm(&buf, x, y, w, h).to_image();
                    image::imageops::resize(&part, tw, th, RESIZE_FILTER)
                }
                Resize::Pad => {
                    let (w64, h64) = (iw as u64, ih as u64);
                    let (nw, nh) = if w64 * th as u64 > h64 * tw as u64 {
                        (
                            tw,
                            ((h64 * tw as u64 + w64 / 2) / w64).clamp(1, th as u64) as u32,
                        )
                    } else {
                        (
                            ((w64 * th as u64 + h64 / 2) / h64).clamp(1, tw as u64) as u32,
                            th,
                        )
                    };
                    let inner = image::imageops::resize(&buf, nw, nh, RESIZE_FILTER);
                    let mut canvas = image::ImageBuffer::new(tw, th);
                    image::imageops::replace(
                        &mut canvas,
                        &inner,
                        ((tw - nw) / 2) as i64,
                        ((th - nh) / 2) as i64,
                    );
                    canvas
                }
            };
            planes(fitted.as_raw(), $ch)
        }};
    }
    if c == 1 {
        fit!(img.to_luma8(), 1)
    } else {
        fit!(img.to_rgb8(), 3)
    }
}

/// A first crop `(x, y, width, height)` for an image of `(width, height)`.
pub(crate) type FirstCrop = fn(u32, u32) -> Option<(u32, u32, u32, u32)>;

/// Reads, decodes and fits one file; why not, in words. A decoder that
/// panics on the file counts as a file that does not decode.
pub(crate) fn decode_one(
    path: &Path,
    first_crop: &(impl Fn(u32, u32) -> Option<(u32, u32, u32, u32)> + Sync),
    target: [usize; 3],
    resize: Resize,
) -> Result<Vec<u8>, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read: {e}"))?;
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let img = image::load_from_memory(&bytes).map_err(|e| e.to_string())?;
        let (w, h) = img.dimensions();
        Ok(fit_image(&img, first_crop(w, h), target, resize))
    }))
    .unwrap_or_else(|p| {
        Err(format!(
            "the decoder failed: {}",
            super::prefetch::panic_text(&p)
        ))
    })
}

/// What decoding a list of files gave.
pub(crate) struct Decoded {
    /// The images that decoded, fitted, (N, C, H, W).
    pub examples: Examples,
    /// The positions (in the list given) of the files that decoded.
    pub kept: Vec<usize>,
    /// Files that did not decode, with why.
    pub skipped: Vec<(PathBuf, String)>,
}

/// Decodes and fits `files` (on rayon's threads, results in list order).
pub(crate) fn decode_files(
    files: &[&Path],
    first_crop: impl Fn(u32, u32) -> Option<(u32, u32, u32, u32)> + Sync,
    target: [usize; 3],
    opts: &LoadOptions,
) -> Result<Decoded, DataError> {
    let results: Vec<Result<Vec<u8>, String>> = files
        .par_iter()
        .map(|p| decode_one(p, &first_crop, target, opts.resize))
        .collect();
    let [c, h, w] = target;
    let mut data = Vec::new();
    let mut kept = Vec::new();
    let mut skipped = Vec::new();
    for (i, r) in results.into_iter().enumerate() {
        match r {
            Ok(px) => {
                data.extend_from_slice(&px);
                kept.push(i);
            }
            Err(reason) if opts.strict_images => {
                return Err(DataError::BadImage {
                    path: files[i].to_path_buf(),
                    reason,
                })
            }
            Err(reason) => skipped.push((files[i].to_path_buf(), reason)),
        }
    }
    Ok(Decoded {
        examples: Examples::Images {
            n: kept.len(),
            data,
            c,
            h,
            w,
        },
        kept,
        skipped,
    })
}

/// Says on stderr which files were skipped (the first few by name) and how many.
pub(crate) fn report_skipped(skipped: &[(PathBuf, String)], of: usize) {
    if skipped.is_empty() {
        return;
    }
    for (p, why) in skipped.iter().take(10) {
        eprintln!("warning: skipped {}: {why}", p.display());
    }
    if skipped.len() > 10 {
        eprintln!("warning: ... and {} more", skipped.len() - 10);
    }
    eprintln!(
        "warning: skipped {} of {of} image files that do not decode (--strict-images stops at the first)",
        skipped.len()
    );
}
