//! `metrics.jsonl`, one JSON line per step, kept in agreement with the
//! checkpoint: a fresh run starts it empty, a resumed run first cuts it back
//! to the checkpoint's step (a killed run may have logged steps past its last
//! checkpoint, and a kill may have left half a line), and each line is
//! written whole or not at all (a failed write is cut off again).

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::checkpoint::write_atomic;
use super::TrainError;

pub const METRICS: &str = "metrics.jsonl";

/// One line of `metrics.jsonl`.
#[derive(Serialize)]
pub struct Metric {
    pub step: u64,
    pub train_bits_per_dim: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub test_bits_per_dim: Option<f64>,
    pub images_per_s: f64,
}

/// The open log and its length in whole lines.
pub struct MetricsLog {
    file: File,
    len: u64,
    path: PathBuf,
}

impl MetricsLog {
    /// An empty log for a fresh run (replacing one a failed run left).
    pub fn fresh(dir: &Path) -> Result<MetricsLog, TrainError> {
        Self::open(dir, "")
    }

    /// The log of a resumed run, holding only steps up to `step`.
    pub fn resume(dir: &Path, step: u64) -> Result<MetricsLog, TrainError> {
        let path = dir.join(METRICS);
        let old = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => {
                return Err(TrainError::Io(format!(
                    "cannot read {}: {e}",
                    path.display()
                )))
            }
        };
        Self::open(dir, &lines_up_to(&old, step))
    }

    fn open(dir: &Path, contents: &str) -> Result<MetricsLog, TrainError> {
        let path = dir.join(METRICS);
        let io =
            |e: std::io::Error| TrainError::Io(format!("cannot write {}: {e}", path.display()));
        write_atomic(&path, contents.as_bytes()).map_err(io)?;
        let file = OpenOptions::new().append(true).open(&path).map_err(io)?;
        Ok(MetricsLog {
            file,
            len: contents.len() as u64,
            path,
        })
    }

    /// Appends one line, whole or not at all.
    pub fn append(&mut self, m: &Metric) -> Result<(), TrainError> {
        let mut line = serde_json::to_string(m).expect("plain data");
        line.push('\n');
        match self.file.write_all(line.as_bytes()) {
            Ok(()) => {
                self.len += line.len() as u64;
                Ok(())
            }
            Err(e) => {
                let _ = self.file.set_len(self.len);
                Err(TrainError::Io(format!(
                    "cannot write {}: {e}",
                    self.path.display()
                )))
            }
        }
    }
}

/// The whole lines of `text` whose step is at most `step`, in order.
fn lines_up_to(text: &str, step: u64) -> String {
    let mut out = String::new();
    // A last line without its newline was cut off by a kill: dropped.
    let whole = match text.rfind('\n') {
        Some(end) => &text[..=end],
        None => "",
    };
    for line in whole.lines() {
        let at = serde_json::from_str::<serde_json::Value>(line)
            .ok()
            .and_then(|v| v["step"].as_u64());
        if at.is_some_and(|s| s <= step) {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metric(step: u64) -> Metric {
        Metric {
            step,
            train_bits_per_dim: 1.5,
            test_bits_per_dim: None,
            images_per_s: 10.0,
        }
    }

    fn steps(dir: &Path) -> Vec<u64> {
        std::fs::read_to_string(dir.join(METRICS))
            .unwrap()
            .lines()
            .map(|l| {
                serde_json::from_str::<serde_json::Value>(l).unwrap()["step"]
                    .as_u64()
                    .unwrap()
            })
            .collect()
    }

    #[test]
    fn resume_cuts_back_to_the_checkpoint_and_drops_a_half_line() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = MetricsLog::fresh(dir.path()).unwrap();
        for s in 1..=7 {
            log.append(&metric(s)).unwrap();
        }
        drop(log);
        let path = dir.path().join(METRICS);
        let mut text = std::fs::read_to_string(&path).unwrap();
        text.push_str("{\"step\": 8, \"train_bi");
        std::fs::write(&path, text).unwrap();
        let mut log = MetricsLog::resume(dir.path(), 5).unwrap();
        assert_eq!(steps(dir.path()), vec![1, 2, 3, 4, 5]);
        log.append(&metric(6)).unwrap();
        assert_eq!(steps(dir.path()), vec![1, 2, 3, 4, 5, 6]);
        // A fresh run never appends to what an older run left.
        MetricsLog::fresh(dir.path()).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "");
    }
}
