//! `folder:PATH`, `celeba` and `imagenet32`/`imagenet64` on files made here.
//!
//! Pixel values after crop and resize are checked against hand computations:
//! a crop to the size it already has (the resize is then a copy), constant
//! images (any normalized filter keeps them), and a linear ramp shrunk 2:1 by
//! the triangle filter (support 2 input pixels each side of the output
//! centre: weights 1/4, 3/4, 3/4, 1/4, so interior values are the ramp at the
//! centre; at an edge the weights inside the image are renormalized).

use std::io::Write;
use std::path::Path;

use image::{GrayImage, ImageBuffer, Luma, Rgb, RgbImage};

use crate::data::images::{center_box, fit_image};
use crate::data::{load_with, DataError, Examples, LoadOptions, Resize};

fn opts(target: [usize; 3], resize: Resize) -> LoadOptions {
    LoadOptions {
        target: Some(target),
        resize,
        strict_images: false,
        stream: false,
    }
}

fn load_folder(
    root: &Path,
    test: Option<&Path>,
    o: &LoadOptions,
) -> Result<crate::data::Dataset, DataError> {
    let spec = format!("folder:{}", root.display());
    load_with(&spec, Path::new("/nonexistent"), false, test, 7, o)
}

fn pixels(e: &Examples) -> &[u8] {
    match e {
        Examples::Images { data, .. } => data,
        Examples::Vectors { .. } => panic!("expected images"),
    }
}

fn grey(w: u32, h: u32, f: impl Fn(u32, u32) -> u8) -> GrayImage {
    ImageBuffer::from_fn(w, h, |x, y| Luma([f(x, y)]))
}

fn rgb(w: u32, h: u32, f: impl Fn(u32, u32) -> [u8; 3]) -> RgbImage {
    ImageBuffer::from_fn(w, h, |x, y| Rgb(f(x, y)))
}

fn write_png_grey(path: &Path, img: &GrayImage) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    img.save(path).unwrap();
}

fn write_png_rgb(path: &Path, img: &RgbImage) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    img.save(path).unwrap();
}

fn write_jpeg_rgb(path: &Path, img: &RgbImage) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let mut f = std::fs::File::create(path).unwrap();
    let mut enc = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut f, 95);
    enc.encode_image(img).unwrap();
}

#[test]
fn center_box_is_the_largest_centered_box_of_the_aspect() {
    assert_eq!(center_box(6, 4, 4, 4), (1, 0, 4, 4));
    assert_eq!(center_box(4, 6, 4, 4), (0, 1, 4, 4));
    assert_eq!(center_box(178, 218, 1, 1), (0, 20, 178, 178));
    assert_eq!(center_box(8, 8, 4, 2), (0, 2, 8, 4));
    assert_eq!(center_box(5, 5, 5, 5), (0, 0, 5, 5));
}

#[test]
fn crop_to_its_own_size_is_exactly_the_middle_columns() {
    let img = rgb(6, 4, |x, y| {
        [(10 * x + y) as u8, (100 + x) as u8, (200 + y) as u8]
    });
    let out = fit_image(
        &image::DynamicImage::ImageRgb8(img),
        None,
        [3, 4, 4],
        Resize::Crop,
    );
    for y in 0..4u32 {
        for x in 0..4u32 {
            let (sx, i) = (x + 1, (y * 4 + x) as usize);
            assert_eq!(out[i], (10 * sx + y) as u8);
            assert_eq!(out[16 + i], (100 + sx) as u8);
            assert_eq!(out[32 + i], (200 + y) as u8);
        }
    }
}

#[test]
fn a_ramp_shrunk_two_to_one_has_the_hand_computed_values() {
    // 16 x 4, v = 10 x + 5, to 8 x 2 (stretch): output column i is centred on
    // input x = 2i + 0.5.
    let img = grey(16, 4, |x, _| (10 * x + 5) as u8);
    let out = fit_image(
        &image::DynamicImage::ImageLuma8(img),
        None,
        [1, 2, 8],
        Resize::Stretch,
    );
    let mut want = [0u8; 8];
    for (i, w) in want.iter_mut().enumerate() {
        let centre = 2.0 * i as f64 + 0.5;
        let (mut num, mut den) = (0.0, 0.0);
        for j in 0..16 {
            let t = 1.0 - ((j as f64 - centre) / 2.0).abs();
            if t > 0.0 {
                num += t * (10 * j + 5) as f64;
                den += t;
            }
        }
        *w = (num / den).round() as u8;
    }
    // The interior is the ramp itself; the edges renormalize.
    assert_eq!(&want[1..7], &[30, 50, 70, 90, 110, 130]);
    assert_eq!((want[0], want[7]), (12, 148));
    assert_eq!(&out[..8], &want[..]);
    assert_eq!(&out[8..], &want[..]);
}

#[test]
fn pad_centres_the_image_on_black() {
    let img = grey(8, 4, |_, _| 200);
    let out = fit_image(
        &image::DynamicImage::ImageLuma8(img),
        None,
        [1, 4, 4],
        Resize::Pad,
    );
    #[rustfmt::skip]
    let want = [
        0, 0, 0, 0,
        200, 200, 200, 200,
        200, 200, 200, 200,
        0, 0, 0, 0,
    ];
    assert_eq!(out, want);
}

#[test]
fn grey_becomes_rgb_and_rgb_grey() {
    let g = grey(4, 4, |_, _| 77);
    let out = fit_image(
        &image::DynamicImage::ImageLuma8(g),
        None,
        [3, 2, 2],
        Resize::Crop,
    );
    assert_eq!(out, vec![77; 12]);
    let c = rgb(4, 4, |_, _| [90, 90, 90]);
    let out = fit_image(
        &image::DynamicImage::ImageRgb8(c),
        None,
        [1, 2, 2],
        Resize::Crop,
    );
    assert_eq!(out, vec![90; 4]);
}

/// root/cat/a.png, root/cat/deep/b.jpg, root/dog/c.png (+ a text file),
/// test/cat/t.png, test/dog/u.jpg.
fn class_folders(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let root = dir.join("train");
    let test = dir.join("test");
    write_png_rgb(&root.join("cat/a.png"), &rgb(8, 6, |_, _| [10, 20, 30]));
    write_jpeg_rgb(
        &root.join("cat/deep/b.jpg"),
        &rgb(8, 8, |_, _| [120, 120, 120]),
    );
    write_png_grey(&root.join("dog/c.png"), &grey(4, 4, |_, _| 250));
    std::fs::write(root.join("dog/notes.txt"), "not an image").unwrap();
    write_png_rgb(&test.join("cat/t.png"), &rgb(4, 4, |_, _| [1, 2, 3]));
    write_jpeg_rgb(&test.join("dog/u.JPEG"), &rgb(4, 4, |_, _| [60, 60, 60]));
    (root, test)
}

#[test]
fn nested_class_folders_with_png_and_jpeg() {
    let dir = tempfile::tempdir().unwrap();
    let (root, test) = class_folders(dir.path());
    let ds = load_folder(&root, Some(&test), &opts([3, 4, 4], Resize::Crop)).unwrap();
    assert_eq!(ds.train.shape(), vec![3, 3, 4, 4]);
    assert_eq!(ds.test.shape(), vec![2, 3, 4, 4]);
    let labels = ds.labels.unwrap();
    assert_eq!(labels.classes, vec!["cat", "dog"]);
    assert_eq!(labels.train, vec![0, 0, 1]);
    assert_eq!(labels.test, vec![0, 1]);
    let px = pixels(&ds.train);
    // a.png (constant): exact, per channel.
    assert!(px[..16].iter().all(|&v| v == 10));
    assert!(px[16..32].iter().all(|&v| v == 20));
    assert!(px[32..48].iter().all(|&v| v == 30));
    // b.jpg: a constant grey JPEG decodes within a level or two.
    assert!(
        px[48..96].iter().all(|&v| v.abs_diff(120) <= 2),
        "{:?}",
        &px[48..96]
    );
    // c.png: grey replicated into the three channels.
    assert!(px[96..144].iter().all(|&v| v == 250));
    // `folder:` in front of the test folder is accepted too.
    let t = std::path::PathBuf::from(format!("folder:{}", test.display()));
    let again = load_folder(&root, Some(&t), &opts([3, 4, 4], Resize::Crop)).unwrap();
    assert_eq!(again.test, ds.test);
}

#[cfg(unix)]
#[test]
fn a_link_back_up_the_tree_is_read_once() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    write_png_grey(&root.join("a/x.png"), &grey(2, 2, |_, _| 9));
    std::os::unix::fs::symlink(&root, root.join("a/loop")).unwrap();
    let ds = load_folder(&root, None, &opts([1, 2, 2], Resize::Crop));
    // One image: too few to split, and not an endless walk.
    assert!(
        matches!(ds, Err(DataError::TooFewToSplit { n: 1, .. })),
        "{ds:?}"
    );
}

#[test]
fn without_a_test_folder_the_split_is_90_10_by_the_seed() {
    let dir = tempfile::tempdir().unwrap();
    for i in 0..20u8 {
        write_png_grey(
            &dir.path().join(format!("{i:02}.png")),
            &grey(2, 2, |_, _| i),
        );
    }
    let o = opts([1, 2, 2], Resize::Crop);
    let ds = load_folder(dir.path(), None, &o).unwrap();
    assert_eq!((ds.train.len(), ds.test.len()), (18, 2));
    let (train_idx, test_idx) = crate::data::split_indices(20, 7);
    let firsts = |e: &Examples| {
        pixels(e)
            .chunks(4)
            .map(|c| c[0] as usize)
            .collect::<Vec<_>>()
    };
    assert_eq!(firsts(&ds.train), train_idx);
    assert_eq!(firsts(&ds.test), test_idx);
    let labels = ds.labels.unwrap();
    assert!(labels.classes.is_empty());
    assert_eq!(load_folder(dir.path(), None, &o).unwrap().train, ds.train);
}

#[test]
fn a_corrupt_jpeg_is_skipped_with_a_count_or_stops_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let (root, test) = class_folders(dir.path());
    let bad = root.join("dog/broken.jpg");
    let mut f = std::fs::File::create(&bad).unwrap();
    f.write_all(&[
        0xff, 0xd8, 0xff, 0xe0, 0, 16, b'J', b'F', b'I', b'F', 0, 1, 2, 3,
    ])
    .unwrap();
    drop(f);
    let ds = load_folder(&root, Some(&test), &opts([3, 4, 4], Resize::Crop)).unwrap();
    assert_eq!(ds.train.len(), 3);
    assert_eq!(ds.labels.unwrap().train, vec![0, 0, 1]);
    assert!(ds.source.contains("1 skipped"), "{}", ds.source);
    let strict = LoadOptions {
        strict_images: true,
        ..opts([3, 4, 4], Resize::Crop)
    };
    let err = load_folder(&root, Some(&test), &strict).unwrap_err();
    assert!(
        matches!(&err, DataError::BadImage { path, .. } if *path == bad),
        "{err}"
    );
    assert!(err.to_string().contains("broken.jpg"), "{err}");
}

#[test]
fn empty_and_imageless_folders_and_bad_targets_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty");
    std::fs::create_dir_all(empty.join("sub")).unwrap();
    std::fs::write(empty.join("sub/readme.txt"), "x").unwrap();
    let o = opts([3, 4, 4], Resize::Crop);
    let err = load_folder(&empty, None, &o).unwrap_err();
    assert!(matches!(err, DataError::NoImages { .. }), "{err}");
    assert!(err.to_string().contains("holds no images"), "{err}");
    let err = load_folder(&dir.path().join("absent"), None, &o).unwrap_err();
    assert!(matches!(err, DataError::NotAFolder { .. }), "{err}");

    let (root, _) = class_folders(dir.path());
    // A flow of 2 channels (neither grey nor RGB).
    let err = load_folder(&root, None, &opts([2, 4, 4], Resize::Crop)).unwrap_err();
    assert!(matches!(err, DataError::ImageTarget { c: 2, .. }), "{err}");
    let no_target = LoadOptions::default();
    let err = load_folder(&root, None, &no_target).unwrap_err();
    assert!(matches!(err, DataError::NeedsTarget { .. }), "{err}");
    // Images beside class folders.
    write_png_grey(&root.join("loose.png"), &grey(2, 2, |_, _| 0));
    let err = load_folder(&root, None, &o).unwrap_err();
    assert!(
        matches!(
            err,
            DataError::LooseImages {
                count: 1,
                classes: 2,
                ..
            }
        ),
        "{err}"
    );
    // A folder whose only image does not decode.
    let dead = dir.path().join("dead");
    std::fs::create_dir_all(&dead).unwrap();
    std::fs::write(dead.join("a.png"), b"not a png").unwrap();
    std::fs::write(dead.join("b.png"), b"not a png").unwrap();
    let err = load_folder(&dead, None, &o).unwrap_err();
    assert!(matches!(err, DataError::NoneDecoded { .. }), "{err}");
    // A test folder with a class the training folder lacks.
    let other = dir.path().join("other");
    write_png_grey(&other.join("bird/x.png"), &grey(2, 2, |_, _| 0));
    std::fs::remove_file(root.join("loose.png")).unwrap();
    let err = load_folder(&root, Some(&other), &o).unwrap_err();
    assert!(matches!(err, DataError::UnknownClass { .. }), "{err}");
}

/// A 178x218 aligned "face": 200 inside the 148x148 central box, 0 outside.
fn celeba_face(k: u8) -> RgbImage {
    rgb(178, 218, |x, y| {
        let inside = (15..163).contains(&x) && (35..183).contains(&y);
        if inside {
            [200, 100 + k, 50]
        } else {
            [0, 0, 0]
        }
    })
}

#[test]
fn celeba_takes_the_148_central_crop_and_the_partition_file() {
    let dir = tempfile::tempdir().unwrap();
    let imgs = dir.path().join("img_align_celeba");
    for k in 1..=6u8 {
        write_png_rgb(&imgs.join(format!("{k:06}.png")), &celeba_face(k));
    }
    let part: String = [0, 0, 0, 1, 2, 2]
        .iter()
        .enumerate()
        .map(|(i, p)| format!("{:06}.png {p}\n", i + 1))
        .collect();
    std::fs::write(dir.path().join("list_eval_partition.txt"), part).unwrap();
    let o = opts([3, 4, 4], Resize::Crop);
    let ds = load_with("celeba", dir.path(), false, None, 0, &o).unwrap();
    assert_eq!((ds.train.len(), ds.test.len()), (3, 2));
    // Every output pixel averages only the central box: exact.
    let px = pixels(&ds.train);
    for (i, k) in [1u8, 2, 3].iter().enumerate() {
        let one = &px[i * 48..(i + 1) * 48];
        assert!(one[..16].iter().all(|&v| v == 200));
        assert!(one[16..32].iter().all(|&v| v == 100 + k));
        assert!(one[32..].iter().all(|&v| v == 50));
    }
    let test_px = pixels(&ds.test);
    assert!(test_px[16..32].iter().all(|&v| v == 105));
    assert!(test_px[64..80].iter().all(|&v| v == 106));
    assert!(ds.source.contains("partition"), "{}", ds.source);

    // A partition naming an image that is not there.
    std::fs::write(dir.path().join("list_eval_partition.txt"), "000009.png 0\n").unwrap();
    let err = load_with("celeba", dir.path(), false, None, 0, &o).unwrap_err();
    assert!(
        matches!(err, DataError::PartitionMissing { count: 1, .. }),
        "{err}"
    );
    std::fs::write(dir.path().join("list_eval_partition.txt"), "000001.png 7\n").unwrap();
    let err = load_with("celeba", dir.path(), false, None, 0, &o).unwrap_err();
    assert!(
        matches!(err, DataError::BadPartition { line: 1, .. }),
        "{err}"
    );

    // Without it: the 90/10 split by the seed (6 images: 5 / 1).
    std::fs::remove_file(dir.path().join("list_eval_partition.txt")).unwrap();
    let ds = load_with("celeba", dir.path(), false, None, 3, &o).unwrap();
    assert_eq!((ds.train.len(), ds.test.len()), (5, 1));
    let (_, test_idx) = crate::data::split_indices(6, 3);
    assert_eq!(pixels(&ds.test)[16], 101 + test_idx[0] as u8);

    let err = load_with("celeba", &dir.path().join("nowhere"), false, None, 0, &o).unwrap_err();
    assert!(matches!(err, DataError::NotFound(_)), "{err}");
}

/// An `.npz` holding `data.npy` (n x 3 s s, pixel value per image `base + i`
/// and position) and `labels.npy` (`<i8`, 1-based), the data member deflated.
fn npz(n: usize, side: usize, base: usize, labels: &[i64]) -> (Vec<u8>, Vec<u8>) {
    let row = 3 * side * side;
    let data: Vec<u8> = (0..n * row)
        .map(|k| ((base * 7 + k * 13) % 251) as u8)
        .collect();
    let label_bytes: Vec<u8> = labels.iter().flat_map(|l| l.to_le_bytes()).collect();
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let deflated = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated);
    let stored =
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    w.start_file("data.npy", deflated).unwrap();
    w.write_all(&super::util::npy("|u1", &[n, row], &data))
        .unwrap();
    w.start_file("labels.npy", stored).unwrap();
    w.write_all(&super::util::npy("<i8", &[n], &label_bytes))
        .unwrap();
    w.start_file("mean.npy", stored).unwrap();
    w.write_all(&super::util::npy("|u1", &[row], &vec![0; row]))
        .unwrap();
    (w.finish().unwrap().into_inner(), data)
}

fn imagenet32(data_dir: &Path) -> Result<crate::data::Dataset, DataError> {
    load_with(
        "imagenet32",
        data_dir,
        false,
        None,
        0,
        &LoadOptions::default(),
    )
}

#[test]
fn imagenet32_reads_the_ten_npz_batches_and_val_data() {
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("imagenet32");
    std::fs::create_dir_all(&folder).unwrap();
    let mut want_train = Vec::new();
    let mut want_labels = Vec::new();
    for b in 1..=10usize {
        let labels = [b as i64, 1000];
        let (bytes, data) = npz(2, 32, b, &labels);
        std::fs::write(folder.join(format!("train_data_batch_{b}.npz")), bytes).unwrap();
        want_train.extend(data);
        want_labels.extend([b as u32 - 1, 999]);
    }
    let (bytes, want_test) = npz(3, 32, 99, &[5, 6, 7]);
    std::fs::write(folder.join("val_data.npz"), bytes).unwrap();
    let ds = imagenet32(dir.path()).unwrap();
    assert_eq!(ds.train.shape(), vec![20, 3, 32, 32]);
    assert_eq!(ds.test.shape(), vec![3, 3, 32, 32]);
    // Rows are planar RGB, row-major: (N, 3072) is (N, 3, 32, 32) as it is.
    assert_eq!(pixels(&ds.train), &want_train[..]);
    assert_eq!(pixels(&ds.test), &want_test[..]);
    let labels = ds.labels.unwrap();
    assert_eq!(labels.train, want_labels);
    assert_eq!(labels.test, vec![4, 5, 6]);

    // A 64x64 row in a 32x32 folder, a label 0, a missing batch.
    let (bytes, _) = npz(1, 64, 0, &[1]);
    std::fs::write(folder.join("val_data.npz"), bytes).unwrap();
    let err = imagenet32(dir.path()).unwrap_err();
    assert!(matches!(err, DataError::NpyNdim { .. }), "{err}");
    let (bytes, _) = npz(1, 32, 0, &[0]);
    std::fs::write(folder.join("val_data.npz"), bytes).unwrap();
    let err = imagenet32(dir.path()).unwrap_err();
    assert!(err.to_string().contains("1-based"), "{err}");
    std::fs::write(folder.join("val_data.npz"), b"PK not a zip").unwrap();
    let err = imagenet32(dir.path()).unwrap_err();
    assert!(matches!(err, DataError::Archive { .. }), "{err}");
    std::fs::remove_file(folder.join("train_data_batch_4.npz")).unwrap();
    let err = imagenet32(dir.path()).unwrap_err();
    assert!(matches!(err, DataError::NotFound(_)), "{err}");
    assert!(err.to_string().contains("train_data_batch_4.npz"), "{err}");
}

#[test]
fn int_labels_of_every_width_and_order() {
    use crate::data::npy::parse_int_array;
    let p = Path::new("labels.npy");
    let b = super::util::npy("<i2", &[2], &[0xff, 0xff, 5, 0]);
    assert_eq!(parse_int_array(&b, p).unwrap(), (vec![2], vec![-1, 5]));
    let b = super::util::npy(">u4", &[1], &[0, 0, 1, 2]);
    assert_eq!(parse_int_array(&b, p).unwrap(), (vec![1], vec![258]));
    let b = super::util::npy("|u1", &[1], &[200]);
    assert_eq!(parse_int_array(&b, p).unwrap(), (vec![1], vec![200]));
    let b = super::util::npy("<f4", &[1], &[0; 4]);
    assert!(matches!(
        parse_int_array(&b, p),
        Err(DataError::NpyDtype { .. })
    ));
}
