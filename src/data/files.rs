//! Reading files, gzip detection, and looking for a set of files in folders.

use std::io::Read;
use std::path::{Path, PathBuf};

use flate2::read::MultiGzDecoder;

use super::DataError;

/// The two magic bytes every gzip stream starts with.
pub(crate) const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// The bytes after a header must be exactly what the header promises, and
/// not nothing: `what` says what the header promised, for the message.
pub(crate) fn check_payload(
    path: &Path,
    what: String,
    expected: u64,
    found: u64,
) -> Result<(), DataError> {
    let path = path.to_path_buf();
    if found < expected {
        return Err(DataError::Truncated {
            path,
            what,
            expected,
            found,
        });
    }
    if found > expected {
        return Err(DataError::TrailingBytes {
            path,
            what,
            expected,
            found,
        });
    }
    if expected == 0 {
        return Err(DataError::Empty { path, what });
    }
    Ok(())
}

/// Reads a whole file.
pub(crate) fn read_file(path: &Path) -> Result<Vec<u8>, DataError> {
    std::fs::read(path).map_err(|e| DataError::io(path, e))
}

/// Reads a whole file, decompressing it when it starts with the gzip magic
/// bytes (whatever its name).
pub(crate) fn read_maybe_gzip(path: &Path) -> Result<Vec<u8>, DataError> {
    let raw = read_file(path)?;
    gunzip_if_gzip(raw, path)
}

/// Decompresses `raw` when it starts with the gzip magic bytes; else returns it.
pub(crate) fn gunzip_if_gzip(raw: Vec<u8>, path: &Path) -> Result<Vec<u8>, DataError> {
    if !raw.starts_with(&GZIP_MAGIC) {
        return Ok(raw);
    }
    let mut out = Vec::with_capacity(raw.len().saturating_mul(2));
    MultiGzDecoder::new(raw.as_slice())
        .read_to_end(&mut out)
        .map_err(|source| DataError::Gzip {
            path: path.to_path_buf(),
            source,
        })?;
    Ok(out)
}

/// The outcome of looking for several files, each under one of a few
/// alternative names, in a list of folders.
pub(crate) enum Lookup {
    /// The first folder holding all of them, and the path found for each.
    Found(Vec<PathBuf>),
    /// Not found: folders that held some but not all (folder, names missing).
    Missing(Vec<(PathBuf, Vec<String>)>),
}

/// Looks for `wanted` files, each given as a list of alternative names, in
/// `dirs` (in order); returns the first folder that holds every one.
pub(crate) fn find_all(dirs: &[PathBuf], wanted: &[Vec<String>]) -> Lookup {
    let mut incomplete = Vec::new();
    for dir in dirs {
        let mut found = Vec::new();
        let mut missing = Vec::new();
        for names in wanted {
            match names.iter().map(|n| dir.join(n)).find(|p| p.is_file()) {
                Some(p) => found.push(p),
                None => missing.push(names.join(" or ")),
            }
        }
        if missing.is_empty() {
            return Lookup::Found(found);
        }
        if !found.is_empty() {
            incomplete.push((dir.clone(), missing));
        }
    }
    Lookup::Missing(incomplete)
}

/// Removes repeated folders, keeping the first of each.
pub(crate) fn dedup_dirs(dirs: Vec<PathBuf>) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = Vec::new();
    for d in dirs {
        if !out.contains(&d) {
            out.push(d);
        }
    }
    out
}
