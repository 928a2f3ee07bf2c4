//! Where the commands write: stdout (a closed pipe ends the command quietly,
//! as `head` expects of Unix tools), and output files, which are written
//! under a temporary name and renamed into place, so that a failure or a
//! kill never leaves half a file, and which never replace a run's own files.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

/// Writes `text` to stdout. A reader that went away (`| head`) is not an
/// error; any other failure is.
pub fn stdout(text: &str) -> Result<(), String> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(format!("cannot write to stdout: {e}"))
        }
        _ => Ok(()),
    }
}

/// The files of a run folder that no output may replace.
pub const RUN_FILES: [&str; 6] = [
    "model.flow",
    crate::train::checkpoint::CHECKPOINT,
    crate::train::checkpoint::STATE,
    crate::train::metrics::METRICS,
    "samples.png",
    crate::train::LOCK,
];

/// Refuses `path` when it names one of `run`'s own files (through any
/// spelling of the folder: relative, absolute, symlinked).
pub fn refuse_run_file(path: &Path, run: &Path) -> Result<(), String> {
    let name = path.file_name().map(|n| n.to_string_lossy().to_string());
    let parent = match path.parent() {
        Some(p) if p.as_os_str().is_empty() => Path::new("."),
        Some(p) => p,
        None => return Ok(()),
    };
    let same_dir = match (std::fs::canonicalize(parent), std::fs::canonicalize(run)) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    };
    match name {
        Some(n) if same_dir && RUN_FILES.contains(&n.as_str()) => Err(format!(
            "-o {}: that is {}'s own {n}; write the output elsewhere",
            path.display(),
            run.display()
        )),
        _ => Ok(()),
    }
}

/// An output file being written: renamed into place by [`OutFile::commit`],
/// removed if dropped before.
pub struct OutFile {
    tmp: PathBuf,
    path: PathBuf,
    file: Option<BufWriter<File>>,
}

impl OutFile {
    pub fn create(path: &Path) -> Result<OutFile, String> {
        let name = path
            .file_name()
            .ok_or_else(|| format!("-o {}: not a file name", path.display()))?;
        let tmp = path.with_file_name(format!(".{}.tmp", name.to_string_lossy()));
        let file =
            File::create(&tmp).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        Ok(OutFile {
            tmp,
            path: path.to_path_buf(),
            file: Some(BufWriter::new(file)),
        })
    }

    pub fn writer(&mut self) -> &mut BufWriter<File> {
        self.file.as_mut().expect("open until committed")
    }

    pub fn commit(mut self) -> Result<(), String> {
        let cannot = |e: std::io::Error| format!("cannot write {}: {e}", self.path.display());
        let file = self.file.take().expect("open until committed");
        file.into_inner()
            .map_err(|e| e.into_error())
            .and_then(|f| f.sync_all())
            .map_err(cannot)?;
        std::fs::rename(&self.tmp, &self.path).map_err(cannot)
    }
}

impl Drop for OutFile {
    fn drop(&mut self) {
        if self.file.is_some() {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_files_are_refused_under_any_spelling_and_others_allowed() {
        let dir = tempfile::tempdir().unwrap();
        let run = dir.path().join("run");
        std::fs::create_dir(&run).unwrap();
        let dotted = run.join(".").join("checkpoint.safetensors");
        assert!(refuse_run_file(&dotted, &run)
            .unwrap_err()
            .contains("own checkpoint.safetensors"));
        assert!(refuse_run_file(&run.join("model.flow"), &dir.path().join("run/../run")).is_err());
        refuse_run_file(&run.join("more.png"), &run).unwrap();
        refuse_run_file(&dir.path().join("model.flow"), &run).unwrap();
    }

    #[test]
    fn an_uncommitted_file_leaves_nothing_and_a_committed_one_replaces_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.csv");
        std::fs::write(&path, "old").unwrap();
        let mut f = OutFile::create(&path).unwrap();
        f.writer().write_all(b"half").unwrap();
        drop(f);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "old");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        let mut f = OutFile::create(&path).unwrap();
        f.writer().write_all(b"new").unwrap();
        f.commit().unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "new");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
