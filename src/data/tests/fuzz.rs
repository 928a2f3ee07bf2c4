//! No parser panics on any input: random bytes, and random bytes behind
//! valid prefixes so the deeper paths are reached too.

use std::path::Path;

use proptest::prelude::*;

use super::util::*;
use crate::data::cifar::{parse_batch, read_cifar10_tar_gz};
use crate::data::files::gunzip_if_gzip;
use crate::data::idx::parse_idx3;
use crate::data::npy::parse_npy;
use crate::data::{split_indices, Spec};

fn p() -> &'static Path {
    Path::new("fuzz.bin")
}

/// Runs a parser and renders its error, which must not panic either.
fn render<T>(r: Result<T, crate::data::DataError>) {
    if let Err(e) = r {
        let _ = e.to_string();
        let _ = format!("{e:?}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn idx_random(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        render(parse_idx3(bytes, p()));
    }

    #[test]
    fn idx_valid_magic(n in 0u32..6, h in 0u32..6, w in 0u32..6,
                       big in any::<bool>(),
                       tail in proptest::collection::vec(any::<u8>(), 0..120)) {
        let mut b = 0x0000_0803u32.to_be_bytes().to_vec();
        let n = if big { u32::MAX - n } else { n };
        for d in [n, h, w] { b.extend_from_slice(&d.to_be_bytes()); }
        let len = tail.len() as u64;
        b.extend_from_slice(&tail);
        let r = parse_idx3(b, p());
        let expected = u64::from(n) * u64::from(h) * u64::from(w);
        prop_assert_eq!(r.is_ok(), expected == len && expected > 0);
        if let Ok((data, n2, h2, w2)) = r {
            prop_assert_eq!(data, tail);
            prop_assert_eq!((n2, h2, w2), (n as usize, h as usize, w as usize));
        }
    }

    #[test]
    fn cifar_random(bytes in proptest::collection::vec(any::<u8>(), 0..7000)) {
        let (mut out, mut labels) = (Vec::new(), Vec::new());
        let r = parse_batch(&bytes, p(), &mut out, &mut labels);
        if let Ok(n) = &r {
            prop_assert_eq!(out.len(), n * 3072);
            prop_assert_eq!(labels.len(), *n);
        }
        render(r);
    }

    #[test]
    fn npy_random(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        render(parse_npy(&bytes, p()));
    }

    #[test]
    fn npy_random_header(major in 0u8..5, header in "[ -~]{0,80}",
                         lie in 0u32..200, use_lie in any::<bool>(),
                         tail in proptest::collection::vec(any::<u8>(), 0..64)) {
        let mut b = b"\x93NUMPY".to_vec();
        b.extend_from_slice(&[major, 0]);
        let len = if use_lie { lie } else { header.len() as u32 };
        if major == 1 { b.extend_from_slice(&(len as u16).to_le_bytes()); }
        else { b.extend_from_slice(&len.to_le_bytes()); }
        b.extend_from_slice(header.as_bytes());
        b.extend_from_slice(&tail);
        render(parse_npy(&b, p()));
    }

    #[test]
    fn npy_structured(descr in prop::sample::select(vec!["|u1", "<f4", "<f8", ">f4", "<i8", "|b1", "<f4'", "O"]),
                      shape in proptest::collection::vec(0usize..5, 0..6),
                      fortran in any::<bool>(), extra in 0usize..3, short in 0usize..3,
                      payload in any::<u8>()) {
        let count: usize = shape.iter().product();
        let size = match descr { "|u1" => 1, "<f4" | ">f4" => 4, _ => 8 };
        let mut data = vec![payload & 0x3f; count * size + extra];
        data.truncate((count * size + extra).saturating_sub(short));
        let mut b = npy(descr, &shape, &data);
        if fortran {
            if let Some(at) = b.windows(5).position(|w| w == b"False") {
                b[at..at + 5].copy_from_slice(b"True ");
            }
        }
        let r = parse_npy(&b, p());
        if let Ok(e) = &r {
            let want: Vec<usize> = shape.clone();
            prop_assert_eq!(e.shape(), want);
            prop_assert_eq!(extra, short);
        }
        render(r);
    }

    #[test]
    fn gzip_random(tail in proptest::collection::vec(any::<u8>(), 0..200)) {
        let mut b = vec![0x1f, 0x8b];
        b.extend_from_slice(&tail);
        render(gunzip_if_gzip(b, p()));
    }

    #[test]
    fn tarball_random(bytes in proptest::collection::vec(any::<u8>(), 0..2000), zip in any::<bool>()) {
        let input = if zip { gzip(&bytes) } else { bytes };
        render(read_cifar10_tar_gz(input.as_slice(), p()));
    }

    #[test]
    fn tarball_corrupted(pos in any::<prop::sample::Index>(), val in any::<u8>(), cut in any::<prop::sample::Index>()) {
        // A small valid tarball, then one byte changed inside the gzip stream,
        // or the stream cut short.
        let files: Vec<(&str, Vec<u8>)> = cifar_files().into_iter().map(|(n, b)| (n, b[..3073].to_vec())).collect();
        let mut tgz = cifar_tar_gz(&files);
        let i = pos.index(tgz.len());
        tgz[i] = val;
        render(read_cifar10_tar_gz(tgz.as_slice(), p()));
        let ungz = {
            use std::io::Read;
            let mut v = Vec::new();
            let _ = flate2::read::GzDecoder::new(cifar_tar_gz(&files).as_slice()).read_to_end(&mut v);
            v
        };
        // Corrupt the tar itself (behind valid gzip).
        let mut t = ungz.clone();
        let j = pos.index(t.len());
        t[j] = val;
        render(read_cifar10_tar_gz(gzip(&t).as_slice(), p()));
        let c = cut.index(ungz.len());
        render(read_cifar10_tar_gz(gzip(&ungz[..c]).as_slice(), p()));
    }

    #[test]
    fn spec_any_string(s in "\\PC{0,30}") {
        let _ = Spec::parse(&s).map_err(|e| e.to_string());
    }

    #[test]
    fn split_partitions(n in 0usize..300, seed in any::<u64>()) {
        let (train, test) = split_indices(n, seed);
        let mut all: Vec<usize> = train.iter().chain(&test).copied().collect();
        all.sort_unstable();
        prop_assert_eq!(all, (0..n).collect::<Vec<_>>());
        if n >= 2 {
            prop_assert!(!train.is_empty() && !test.is_empty());
            prop_assert_eq!(test.len(), ((n + 5) / 10).clamp(1, n - 1));
        }
    }
}
