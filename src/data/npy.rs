//! NumPy `.npy` files (format versions 1.0, 2.0 and 3.0).
//!
//! Layout: the magic `\x93NUMPY`, a major and a minor version byte, the
//! header length (u16 little-endian for 1.x, u32 little-endian for 2.x and
//! 3.x), then the header: a Python dict literal such as
//! `{'descr': '<f4', 'fortran_order': False, 'shape': (1000, 2), }`
//! (Latin-1 for 1.x/2.x, UTF-8 for 3.x), then the raw array data.
//!
//! Taken: `|u1` (uint8) with 4 dimensions (N, C, H, W) as images, and `<f4`
//! or `<f8` (also `>f4`, `>f8`, `=f4`, `=f8`) with 2 dimensions (N, D) as
//! vectors (float64 is rounded to float32). C order only. Floats must be finite.

use std::path::Path;

use super::{DataError, Examples};

/// The six bytes every `.npy` file starts with.
pub const NPY_MAGIC: &[u8; 6] = b"\x93NUMPY";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Dtype {
    U8,
    F32 { big_endian: bool },
    F64 { big_endian: bool },
}

impl Dtype {
    fn parse(descr: &str) -> Option<Dtype> {
        let native_big = cfg!(target_endian = "big");
        Some(match descr {
            "|u1" | "<u1" | ">u1" | "=u1" => Dtype::U8,
            "<f4" => Dtype::F32 { big_endian: false },
            ">f4" => Dtype::F32 { big_endian: true },
            "=f4" => Dtype::F32 {
                big_endian: native_big,
            },
            "<f8" => Dtype::F64 { big_endian: false },
            ">f8" => Dtype::F64 { big_endian: true },
            "=f8" => Dtype::F64 {
                big_endian: native_big,
            },
            _ => return None,
        })
    }

    fn size(self) -> u64 {
        match self {
            Dtype::U8 => 1,
            Dtype::F32 { .. } => 4,
            Dtype::F64 { .. } => 8,
        }
    }
}

/// A parsed `.npy` header.
#[derive(Debug, PartialEq)]
struct Header {
    descr: String,
    fortran_order: bool,
    shape: Vec<u64>,
}

/// A value in the header dict.
#[derive(Debug, PartialEq)]
enum Value {
    Str(String),
    Bool(bool),
    Tuple(Vec<u64>),
    Other(String),
}

/// A tiny parser for the header dict literal.
struct DictParser<'a> {
    s: &'a [u8],
    i: usize,
}

impl<'a> DictParser<'a> {
    fn ws(&mut self) {
        while self.i < self.s.len() && self.s[self.i].is_ascii_whitespace() {
            self.i += 1;
        }
    }

    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn expect(&mut self, c: u8) -> Result<(), String> {
        self.ws();
        match self.peek() {
            Some(x) if x == c => {
                self.i += 1;
                Ok(())
            }
            Some(x) => Err(format!(
                "expected `{}` at byte {} of the header, found `{}`",
                c as char,
                self.i,
                x.escape_ascii()
            )),
            None => Err(format!(
                "expected `{}` at byte {}, found the end of the header",
                c as char, self.i
            )),
        }
    }

    fn string(&mut self) -> Result<String, String> {
        self.ws();
        let q = match self.peek() {
            Some(q @ (b'\'' | b'"')) => q,
            _ => return Err(format!("expected a quoted string at byte {}", self.i)),
        };
        self.i += 1;
        let start = self.i;
        while self.i < self.s.len() && self.s[self.i] != q {
            if self.s[self.i] == b'\\' {
                return Err("escapes in header strings are not supported".to_string());
            }
            self.i += 1;
        }
        if self.i >= self.s.len() {
            return Err("unterminated string in the header".to_string());
        }
        let text = String::from_utf8_lossy(&self.s[start..self.i]).into_owned();
        self.i += 1;
        Ok(text)
    }

    fn int(&mut self) -> Result<u64, String> {
        self.ws();
        let start = self.i;
        while self.i < self.s.len() && self.s[self.i].is_ascii_digit() {
            self.i += 1;
        }
        if start == self.i {
            return Err(format!("expected a non-negative integer at byte {start}"));
        }
        let digits = std::str::from_utf8(&self.s[start..self.i]).unwrap_or("");
        let v = digits
            .parse::<u64>()
            .map_err(|_| format!("dimension {digits} is too large"))?;
        // Python 2 wrote longs as `3L`.
        if self.peek() == Some(b'L') {
            self.i += 1;
        }
        Ok(v)
    }

    fn value(&mut self) -> Result<Value, String> {
        self.ws();
        match self.peek() {
            Some(b'\'' | b'"') => Ok(Value::Str(self.string()?)),
            Some(b'(') => {
                self.i += 1;
                let mut dims = Vec::new();
                loop {
                    self.ws();
                    if self.peek() == Some(b')') {
                        self.i += 1;
                        break;
                    }
                    dims.push(self.int()?);
                    self.ws();
                    match self.peek() {
                        Some(b',') => self.i += 1,
                        Some(b')') => {}
                        _ => {
                            return Err(format!(
                                "expected `,` or `)` in the shape at byte {}",
                                self.i
                            ))
                        }
                    }
                }
                Ok(Value::Tuple(dims))
            }
            _ => {
                let start = self.i;
                while self.i < self.s.len() && !matches!(self.s[self.i], b',' | b'}') {
                    // A nested list or dict (structured dtypes) is kept as text.
                    if matches!(self.s[self.i], b'[' | b'{' | b'(') {
                        let (open, close) = match self.s[self.i] {
                            b'[' => (b'[', b']'),
                            b'{' => (b'{', b'}'),
                            _ => (b'(', b')'),
                        };
                        let mut depth = 0usize;
                        while self.i < self.s.len() {
                            if self.s[self.i] == open {
                                depth += 1;
                            } else if self.s[self.i] == close {
                                depth -= 1;
                                if depth == 0 {
                                    break;
                                }
                            }
                            self.i += 1;
                        }
                    }
                    self.i += 1;
                }
                let end = self.i.min(self.s.len());
                let text = String::from_utf8_lossy(&self.s[start..end])
                    .trim()
                    .to_string();
                Ok(match text.as_str() {
                    "True" => Value::Bool(true),
                    "False" => Value::Bool(false),
                    _ => Value::Other(text),
                })
            }
        }
    }

    fn dict(&mut self) -> Result<Vec<(String, Value)>, String> {
        self.expect(b'{')?;
        let mut items = Vec::new();
        loop {
            self.ws();
            if self.peek() == Some(b'}') {
                self.i += 1;
                break;
            }
            let key = self.string()?;
            self.expect(b':')?;
            let v = self.value()?;
            items.push((key, v));
            self.ws();
            match self.peek() {
                Some(b',') => self.i += 1,
                Some(b'}') => {}
                _ => return Err(format!("expected `,` or `}}` at byte {}", self.i)),
            }
        }
        self.ws();
        if self.i != self.s.len() {
            return Err(format!("unexpected text after the dict at byte {}", self.i));
        }
        Ok(items)
    }
}

fn parse_header(text: &[u8]) -> Result<Header, String> {
    let items = DictParser { s: text, i: 0 }.dict()?;
    let mut descr = None;
    let mut fortran = None;
    let mut shape = None;
    for (k, v) in items {
        match (k.as_str(), v) {
            ("descr", Value::Str(s)) => descr = Some(s),
            ("descr", Value::Other(s)) => descr = Some(s),
            ("fortran_order", Value::Bool(b)) => fortran = Some(b),
            ("shape", Value::Tuple(t)) => shape = Some(t),
            ("descr" | "fortran_order" | "shape", v) => {
                return Err(format!("key '{k}' has an unexpected value {v:?}"))
            }
            _ => {} // extra keys are ignored
        }
    }
    let missing: Vec<&str> = [
        ("'descr'", descr.is_none()),
        ("'fortran_order'", fortran.is_none()),
        ("'shape'", shape.is_none()),
    ]
    .iter()
    .filter(|(_, m)| *m)
    .map(|(k, _)| *k)
    .collect();
    if !missing.is_empty() {
        return Err(format!(
            "the header lacks the key(s) {}",
            missing.join(", ")
        ));
    }
    Ok(Header {
        descr: descr.unwrap_or_default(),
        fortran_order: fortran.unwrap_or_default(),
        shape: shape.unwrap_or_default(),
    })
}

/// The header of a `.npy` file and where its data starts; `bytes` need
/// only hold the file's beginning up to there.
fn header_of(bytes: &[u8], path: &Path) -> Result<(Header, usize), DataError> {
    let header_err = |reason: String| DataError::NpyHeader {
        path: path.to_path_buf(),
        reason,
    };
    if bytes.len() < 8 || &bytes[..6] != NPY_MAGIC {
        let n = bytes.len().min(6);
        return Err(DataError::BadMagic {
            path: path.to_path_buf(),
            found: hex(&bytes[..n]),
            expected: hex(NPY_MAGIC),
            format: "NumPy .npy file: \\x93NUMPY".to_string(),
        });
    }
    let (major, minor) = (bytes[6], bytes[7]);
    let (len_bytes, header_start) = match major {
        1 => (2, 10),
        2 | 3 => (4, 12),
        _ => {
            return Err(header_err(format!(
                "format version {major}.{minor}, expected 1.0, 2.0 or 3.0"
            )))
        }
    };
    if bytes.len() < header_start {
        return Err(DataError::TooShort {
            path: path.to_path_buf(),
            what: format!("a .npy {major}.{minor} preamble"),
            needed: header_start as u64,
            found: bytes.len() as u64,
        });
    }
    let header_len = if len_bytes == 2 {
        u64::from(u16::from_le_bytes([bytes[8], bytes[9]]))
    } else {
        u64::from(u32::from_le_bytes([
            bytes[8], bytes[9], bytes[10], bytes[11],
        ]))
    };
    let data_start = header_start as u64 + header_len;
    if (bytes.len() as u64) < data_start {
        return Err(DataError::TooShort {
            path: path.to_path_buf(),
            what: format!("the {header_len}-byte .npy header its preamble announces"),
            needed: data_start,
            found: bytes.len() as u64,
        });
    }
    let data_start = data_start as usize;
    let header_bytes = &bytes[header_start..data_start];
    if major == 3 && std::str::from_utf8(header_bytes).is_err() {
        return Err(header_err("a 3.0 header must be UTF-8".to_string()));
    }
    let header = parse_header(header_bytes).map_err(header_err)?;
    Ok((header, data_start))
}

/// Parses a whole `.npy` file's bytes into `Examples`; `path` names it in errors.
/// The header, dtype and payload of a `.npy` file, after `check` (the
/// caller's rule for the header) and the checks every file gets.
fn parse_parts<'a>(
    bytes: &'a [u8],
    path: &Path,
    check: impl Fn(&Header, Dtype) -> Result<(), DataError>,
) -> Result<(Header, Dtype, &'a [u8]), DataError> {
    parse_parts_with(
        bytes,
        path,
        |d| Dtype::parse(d).map(|t| (t, t.size())),
        check,
    )
}

/// As [`parse_parts`], with the element types taken given by `dtype_of`
/// (a `descr` to its type and size in bytes, `None` if not taken).
fn parse_parts_with<'a, D: Copy>(
    bytes: &'a [u8],
    path: &Path,
    dtype_of: impl Fn(&str) -> Option<(D, u64)>,
    check: impl Fn(&Header, D) -> Result<(), DataError>,
) -> Result<(Header, D, &'a [u8]), DataError> {
    let (header, data_start) = header_of(bytes, path)?;
    let (dtype, size) = dtype_of(&header.descr).ok_or_else(|| DataError::NpyDtype {
        found: format!("'{}'", header.descr),
        path: path.to_path_buf(),
    })?;
    check(&header, dtype)?;
    if header.fortran_order && header.shape.iter().filter(|&&d| d > 1).count() > 1 {
        // (numpy marks 1-D-like arrays either way; only a real 2-D layout differs)
        return Err(DataError::NpyFortranOrder {
            path: path.to_path_buf(),
        });
    }
    let what = format!(
        "the .npy header says shape {:?} of '{}' ({} bytes each)",
        header.shape, header.descr, size
    );
    let count = header
        .shape
        .iter()
        .try_fold(1u64, |acc, &d| acc.checked_mul(d));
    let expected = count.and_then(|c| c.checked_mul(size)).unwrap_or(u64::MAX);
    let found = (bytes.len() - data_start) as u64;
    super::files::check_payload(path, what, expected, found)?;
    Ok((header, dtype, &bytes[data_start..]))
}

/// Parses a `.npy` file of examples: uint8 (N, C, H, W) or float (N, D).
pub(crate) fn parse_npy(bytes: &[u8], path: &Path) -> Result<Examples, DataError> {
    let layout = |header: &Header, dtype: Dtype| -> Result<(), DataError> {
        let ndim_err = |expected: &str| DataError::NpyNdim {
            path: path.to_path_buf(),
            dtype: format!("'{}'", header.descr),
            shape: header.shape.clone(),
            expected: expected.to_string(),
        };
        match dtype {
            Dtype::U8 if header.shape.len() != 4 => {
                return Err(ndim_err("4 dims (N, C, H, W) for uint8 images"))
            }
            Dtype::F32 { .. } | Dtype::F64 { .. } if header.shape.len() != 2 => {
                return Err(ndim_err("2 dims (N, D) for float vectors"))
            }
            _ => {}
        }
        Ok(())
    };
    let (header, dtype, data) = parse_parts(bytes, path, layout)?;
    let s = &header.shape;
    // `expected` equals the in-memory data length, so every dim fits in usize.
    let dim = |i: usize| s[i] as usize;
    Ok(match dtype {
        Dtype::U8 => Examples::Images {
            data: data.to_vec(),
            n: dim(0),
            c: dim(1),
            h: dim(2),
            w: dim(3),
        },
        Dtype::F32 { big_endian } => {
            let v: Vec<f32> = data
                .chunks_exact(4)
                .map(|b| {
                    let a = [b[0], b[1], b[2], b[3]];
                    if big_endian {
                        f32::from_be_bytes(a)
                    } else {
                        f32::from_le_bytes(a)
                    }
                })
                .collect();
            check_finite(v.iter().map(|&x| f64::from(x)), path)?;
            Examples::Vectors {
                data: v,
                n: dim(0),
                d: dim(1),
            }
        }
        Dtype::F64 { big_endian } => {
            let v64: Vec<f64> = data
                .chunks_exact(8)
                .map(|b| {
                    let a = [b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]];
                    if big_endian {
                        f64::from_be_bytes(a)
                    } else {
                        f64::from_le_bytes(a)
                    }
                })
                .collect();
            check_finite(v64.iter().copied(), path)?;
            // Finite f64 beyond f32's range would round to infinity.
            check_finite(v64.iter().map(|&x| f64::from(x as f32)), path)?;
            Examples::Vectors {
                data: v64.iter().map(|&x| x as f32).collect(),
                n: dim(0),
                d: dim(1),
            }
        }
    })
}

/// The shape and values of a `.npy` file of any number of dims (masks),
/// as f64.
pub fn read_npy_values(path: &Path) -> Result<(Vec<u64>, Vec<f64>), DataError> {
    let bytes = super::files::read_file(path)?;
    let (header, dtype, data) = parse_parts(&bytes, path, |_, _| Ok(()))?;
    let values = match dtype {
        Dtype::U8 => data.iter().map(|&v| f64::from(v)).collect(),
        Dtype::F32 { big_endian } => data
            .chunks_exact(4)
            .map(|b| {
                let a = [b[0], b[1], b[2], b[3]];
                f64::from(if big_endian {
                    f32::from_be_bytes(a)
                } else {
                    f32::from_le_bytes(a)
                })
            })
            .collect(),
        Dtype::F64 { big_endian } => data
            .chunks_exact(8)
            .map(|b| {
                let a = [b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]];
                if big_endian {
                    f64::from_be_bytes(a)
                } else {
                    f64::from_le_bytes(a)
                }
            })
            .collect(),
    };
    Ok((header.shape, values))
}

fn check_finite(values: impl Iterator<Item = f64>, path: &Path) -> Result<(), DataError> {
    for (index, value) in values.enumerate() {
        if !value.is_finite() {
            return Err(DataError::NonFinite {
                path: path.to_path_buf(),
                index,
                value,
            });
        }
    }
    Ok(())
}

fn hex(b: &[u8]) -> String {
    if b.is_empty() {
        return "nothing (empty file)".to_string();
    }
    b.iter()
        .map(|x| format!("{x:02x}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// A uint8 array of any number of dims (a member of an `.npz` file): its
/// shape and bytes, C order.
pub(crate) fn parse_u8_array<'a>(
    bytes: &'a [u8],
    path: &Path,
) -> Result<(Vec<u64>, &'a [u8]), DataError> {
    let only_u8 = |d: &str| (Dtype::parse(d) == Some(Dtype::U8)).then_some(((), 1));
    let (header, (), data) = parse_parts_with(bytes, path, only_u8, |_, _| Ok(()))?;
    Ok((header.shape, data))
}

/// The shape and data offset of a uint8 array from the beginning of its
/// `.npy` file (the rest need not be read yet).
pub(crate) fn u8_header(prefix: &[u8], path: &Path) -> Result<(Vec<u64>, usize), DataError> {
    let (header, data_start) = header_of(prefix, path)?;
    if Dtype::parse(&header.descr) != Some(Dtype::U8) {
        return Err(DataError::NpyDtype {
            found: format!("'{}'", header.descr),
            path: path.to_path_buf(),
        });
    }
    if header.fortran_order && header.shape.iter().filter(|&&d| d > 1).count() > 1 {
        return Err(DataError::NpyFortranOrder {
            path: path.to_path_buf(),
        });
    }
    Ok((header.shape, data_start))
}

/// An integer array of any number of dims (labels): its shape and values.
/// Taken: signed and unsigned integers of 1, 2, 4 or 8 bytes, either byte order.
pub(crate) fn parse_int_array(
    bytes: &[u8],
    path: &Path,
) -> Result<(Vec<u64>, Vec<i64>), DataError> {
    // (size, signed, big-endian)
    let int_of = |d: &str| -> Option<((u64, bool, bool), u64)> {
        let b = d.as_bytes();
        if b.len() != 3 {
            return None;
        }
        let big = match b[0] {
            b'<' | b'|' => false,
            b'>' => true,
            b'=' => cfg!(target_endian = "big"),
            _ => return None,
        };
        let signed = match b[1] {
            b'i' => true,
            b'u' => false,
            _ => return None,
        };
        let size = match b[2] {
            b'1' => 1,
            b'2' => 2,
            b'4' => 4,
            b'8' => 8,
            _ => return None,
        };
        Some(((size, signed, big), size))
    };
    let (header, (size, signed, big), data) = parse_parts_with(bytes, path, int_of, |_, _| Ok(()))?;
    let values = data
        .chunks_exact(size as usize)
        .map(|c| {
            let mut v = [0u8; 8];
            if big {
                v[8 - c.len()..].copy_from_slice(c);
                v.reverse();
            } else {
                v[..c.len()].copy_from_slice(c);
            }
            let u = u64::from_le_bytes(v);
            if signed && size < 8 && u >> (size * 8 - 1) & 1 == 1 {
                (u | (!0u64 << (size * 8))) as i64
            } else {
                u as i64
            }
        })
        .collect();
    Ok((header.shape, values))
}

/// Reads a `.npy` file into `Examples`.
pub fn read_npy(path: &Path) -> Result<Examples, DataError> {
    let bytes = super::files::read_file(path)?;
    parse_npy(&bytes, path)
}

/// The header of a `.npy` 1.0 file of `shape` and dtype `descr` (`<f4`,
/// `|u1`), padded so that the data starts at a multiple of 64 bytes: the
/// data follows it, C order. Used by the outputs of `sample`, `encode`, ...
pub fn npy_header(descr: &str, shape: &[usize]) -> Vec<u8> {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    let shape_text = if shape.len() == 1 {
        format!("({},)", dims[0])
    } else {
        format!("({})", dims.join(", "))
    };
    let mut header =
        format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape_text}, }}");
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut out = NPY_MAGIC.to_vec();
    out.extend_from_slice(&[1, 0]);
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    out
}

/// A whole `.npy` file's bytes (used by the tests to make data).
#[cfg(test)]
pub(crate) fn npy_bytes(descr: &str, shape: &[usize], data: &[u8]) -> Vec<u8> {
    let mut out = npy_header(descr, shape);
    out.extend_from_slice(data);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_dict_forms() {
        let h = parse_header(b"{'descr': '<f4', 'fortran_order': False, 'shape': (3, 4), }  \n")
            .unwrap();
        assert_eq!(
            h,
            Header {
                descr: "<f4".into(),
                fortran_order: false,
                shape: vec![3, 4]
            }
        );
        let h = parse_header(b"{\"shape\": (7L,), \"fortran_order\": True, \"descr\": \"|u1\"}")
            .unwrap();
        assert_eq!(h.shape, vec![7]);
        assert!(h.fortran_order);
        let h = parse_header(
            b"{'descr': [('x', '<f4'), ('y', '<i8')], 'fortran_order': False, 'shape': ()}",
        )
        .unwrap();
        assert_eq!(h.descr, "[('x', '<f4'), ('y', '<i8')]");
        assert!(h.shape.is_empty());
        assert!(parse_header(b"{'descr': '<f4', 'shape': (3,)}").is_err());
        assert!(parse_header(b"{'descr': '<f4'").is_err());
        assert!(parse_header(b"").is_err());
    }

    #[test]
    fn dtypes() {
        assert_eq!(Dtype::parse("|u1"), Some(Dtype::U8));
        assert_eq!(Dtype::parse("<f4"), Some(Dtype::F32 { big_endian: false }));
        assert_eq!(Dtype::parse(">f8"), Some(Dtype::F64 { big_endian: true }));
        assert_eq!(Dtype::parse("|f4"), None);
        assert_eq!(Dtype::parse("<i4"), None);
        assert_eq!(Dtype::parse("<f2"), None);
        assert_eq!(Dtype::parse("é"), None);
    }
}
