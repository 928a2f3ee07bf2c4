//! `.npy` files written by the tests.

use super::util::*;
use crate::data::{load, read_npy, split_indices, DataError, Examples};

/// (N, D) = (30, 2) vectors whose first coordinate is the row index.
fn vectors_30() -> Vec<f32> {
    (0..30).flat_map(|i| [i as f32, -0.5 * i as f32]).collect()
}

fn vec_data(e: &Examples) -> &[f32] {
    match e {
        Examples::Vectors { data, .. } => data,
        Examples::Images { .. } => panic!("expected vectors"),
    }
}

#[test]
fn f32_vectors_load_and_split_90_10_by_seed() {
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path().join("v.npy");
    std::fs::write(&p, npy("<f4", &[30, 2], &f32_bytes(&vectors_30()))).unwrap();
    let spec = format!("npy:{}", p.display());
    let a = load(&spec, tmp.path(), None, 7).unwrap();
    assert_eq!(a.name, spec);
    assert_eq!(a.train.shape(), vec![27, 2]);
    assert_eq!(a.test.shape(), vec![3, 2]);
    // Deterministic for a seed.
    assert_eq!(a, load(&spec, tmp.path(), None, 7).unwrap());
    // A partition of the rows, each row intact, in file order.
    let mut rows: Vec<usize> = vec_data(&a.train)
        .chunks(2)
        .chain(vec_data(&a.test).chunks(2))
        .map(|r| {
            assert_eq!(r[1], -0.5 * r[0]);
            r[0] as usize
        })
        .collect();
    let train_rows = &rows[..27];
    assert!(train_rows.windows(2).all(|w| w[0] < w[1]));
    rows.sort_unstable();
    assert_eq!(rows, (0..30).collect::<Vec<_>>());
    // Another seed, another split.
    let b = load(&spec, tmp.path(), None, 8).unwrap();
    assert_ne!(a.test, b.test);
}

#[test]
fn uint8_images_load() {
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path().join("img.npy");
    let (n, c, h, w) = (20, 3, 2, 4);
    let pixels: Vec<u8> = (0..n * c * h * w).map(|i| (i % 251) as u8).collect();
    std::fs::write(&p, npy("|u1", &[n, c, h, w], &pixels)).unwrap();
    let all = read_npy(&p).unwrap();
    assert_eq!(
        all,
        Examples::Images {
            data: pixels.clone(),
            n,
            c,
            h,
            w
        }
    );
    let ds = load(&format!("npy:{}", p.display()), tmp.path(), None, 1).unwrap();
    assert_eq!(ds.train.shape(), vec![18, 3, 2, 4]);
    assert_eq!(ds.test.shape(), vec![2, 3, 2, 4]);
    let (train_idx, test_idx) = split_indices(n, 1);
    assert_eq!(ds.test, all.select(&test_idx));
    assert_eq!(ds.train, all.select(&train_idx));
}

#[test]
fn f64_big_endian_and_v2_v3_headers() {
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path().join("d.npy");
    let vals = [1.5f64, -2.25, 3.0, 1e-3];
    let le: Vec<u8> = vals.iter().flat_map(|x| x.to_le_bytes()).collect();
    std::fs::write(&p, npy("<f8", &[2, 2], &le)).unwrap();
    assert_eq!(
        read_npy(&p).unwrap(),
        Examples::Vectors {
            data: vec![1.5, -2.25, 3.0, 1e-3],
            n: 2,
            d: 2
        }
    );
    let be: Vec<u8> = vals
        .iter()
        .flat_map(|x| (*x as f32).to_be_bytes())
        .collect();
    std::fs::write(&p, npy(">f4", &[4, 1], &be)).unwrap();
    assert_eq!(vec_data(&read_npy(&p).unwrap()), &[1.5, -2.25, 3.0, 1e-3]);
    // Version 2.0 and 3.0: a 4-byte header length.
    for major in [2u8, 3] {
        let header = "{'descr': '<f4', 'fortran_order': False, 'shape': (1, 2), }\n";
        let mut bytes = b"\x93NUMPY".to_vec();
        bytes.extend_from_slice(&[major, 0]);
        bytes.extend_from_slice(&(header.len() as u32).to_le_bytes());
        bytes.extend_from_slice(header.as_bytes());
        bytes.extend_from_slice(&f32_bytes(&[4.0, 5.0]));
        std::fs::write(&p, &bytes).unwrap();
        assert_eq!(vec_data(&read_npy(&p).unwrap()), &[4.0, 5.0]);
    }
}

#[test]
fn separate_test_file() {
    let tmp = tempfile::tempdir().unwrap();
    let tr = tmp.path().join("train.npy");
    let te = tmp.path().join("test.npy");
    std::fs::write(&tr, npy("<f4", &[30, 2], &f32_bytes(&vectors_30()))).unwrap();
    std::fs::write(&te, npy("<f4", &[2, 2], &f32_bytes(&[9.0, 8.0, 7.0, 6.0]))).unwrap();
    let ds = load(&format!("npy:{}", tr.display()), tmp.path(), Some(&te), 0).unwrap();
    assert_eq!(vec_data(&ds.train), vectors_30().as_slice());
    assert_eq!(vec_data(&ds.test), &[9.0, 8.0, 7.0, 6.0]);

    std::fs::write(&te, npy("<f4", &[2, 3], &f32_bytes(&[0.0; 6]))).unwrap();
    let err = load(&format!("npy:{}", tr.display()), tmp.path(), Some(&te), 0).unwrap_err();
    assert!(matches!(&err, DataError::ShapeMismatch { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains("f32 2") && msg.contains("f32 3") && msg.contains("test.npy"),
        "{msg}"
    );
}

#[test]
fn malformed_npy_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path().join("bad.npy");
    let check = |bytes: Vec<u8>, ok: &dyn Fn(&DataError) -> bool, words: &[&str]| {
        std::fs::write(&p, &bytes).unwrap();
        let err = read_npy(&p).unwrap_err();
        assert!(ok(&err), "{err:?}");
        let msg = err.to_string();
        assert!(msg.contains(&p.display().to_string()), "{msg}");
        for w in words {
            assert!(msg.contains(w), "{msg} lacks {w}");
        }
    };
    check(
        b"PK\x03\x04 a zip, not npy".to_vec(),
        &|e| matches!(e, DataError::BadMagic { .. }),
        &["50 4b 03 04", "93 4e 55 4d 50 59"],
    );
    check(
        npy("<i4", &[2, 2], &[0; 16]),
        &|e| matches!(e, DataError::NpyDtype { .. }),
        &["'<i4'", "'|u1'", "'<f4'"],
    );
    check(
        npy("|u1", &[2, 28, 28], &[0; 2 * 784]),
        &|e| matches!(e, DataError::NpyNdim { .. }),
        &["[2, 28, 28]", "3 dims", "4 dims (N, C, H, W)"],
    );
    check(
        npy("<f4", &[6], &[0; 24]),
        &|e| matches!(e, DataError::NpyNdim { .. }),
        &["[6]", "2 dims (N, D)"],
    );
    check(
        npy("<f4", &[10, 3], &[0; 100]),
        &|e| {
            matches!(
                e,
                DataError::Truncated {
                    expected: 120,
                    found: 100,
                    ..
                }
            )
        },
        &["[10, 3]", "120", "100"],
    );
    check(
        npy("<f4", &[0, 3], &[]),
        &|e| matches!(e, DataError::Empty { .. }),
        &["no examples"],
    );
    check(
        npy("<f4", &[1, 2], &f32_bytes(&[1.0, f32::NAN])),
        &|e| matches!(e, DataError::NonFinite { index: 1, .. }),
        &["element 1 is NaN"],
    );
    check(
        npy("<f8", &[1, 1], &1e300f64.to_le_bytes()),
        &|e| matches!(e, DataError::NonFinite { .. }),
        &["inf"],
    );
}

#[test]
fn fortran_order_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path().join("f.npy");
    let mut bytes = npy("<f4", &[2, 2], &f32_bytes(&[1.0, 2.0, 3.0, 4.0]));
    let at = bytes.windows(5).position(|w| w == b"False").unwrap();
    bytes[at..at + 5].copy_from_slice(b"True "); // same length keeps the layout
    std::fs::write(&p, &bytes).unwrap();
    let err = read_npy(&p).unwrap_err();
    assert!(matches!(&err, DataError::NpyFortranOrder { .. }), "{err:?}");
    assert!(err.to_string().contains("Fortran order"), "{err}");
}

#[test]
fn too_few_to_split() {
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path().join("one.npy");
    std::fs::write(&p, npy("<f4", &[1, 2], &f32_bytes(&[1.0, 2.0]))).unwrap();
    let err = load(&format!("npy:{}", p.display()), tmp.path(), None, 0).unwrap_err();
    assert!(
        matches!(&err, DataError::TooFewToSplit { n: 1, .. }),
        "{err:?}"
    );
}

#[test]
fn split_sizes() {
    for (n, t) in [
        (2, 1),
        (9, 1),
        (10, 1),
        (15, 2),
        (20, 2),
        (100, 10),
        (60_000, 6_000),
    ] {
        let (train, test) = split_indices(n, 3);
        assert_eq!(test.len(), t, "n = {n}");
        assert_eq!(train.len() + test.len(), n);
    }
}

#[test]
fn files_written_by_numpy_itself_load() {
    use super::numpy_fixtures as f;
    use crate::data::npy::parse_npy;
    let p = std::path::Path::new("numpy.npy");
    let img = parse_npy(f::U8_2X1X2X3, p).unwrap();
    assert_eq!(
        img,
        Examples::Images {
            data: (0..12).map(|i| i * 20).collect(),
            n: 2,
            c: 1,
            h: 2,
            w: 3
        }
    );
    assert_eq!(
        vec_data(&parse_npy(f::F4_3X2, p).unwrap()),
        &[0.5, -1.0, 2.25, 3.0, -4.5, 1e-3]
    );
    let e = parse_npy(f::F8_2X2, p).unwrap();
    assert_eq!(e.shape(), vec![2, 2]);
    assert_eq!(vec_data(&e), &[(1.0f64 / 3.0) as f32, -2.0, 1e10, -1e-10]);
    assert_eq!(vec_data(&parse_npy(f::F4_V2, p).unwrap()), &[1.0, 2.0, 3.0]);
    assert_eq!(parse_npy(f::F4_V3, p).unwrap().shape(), vec![2, 1]);
    assert!(matches!(
        parse_npy(f::F4_FORTRAN, p),
        Err(DataError::NpyFortranOrder { .. })
    ));
    let err = parse_npy(f::I8_2X2, p).unwrap_err();
    assert!(
        matches!(&err, DataError::NpyDtype { found, .. } if found == "'<i8'"),
        "{err:?}"
    );
}
