//! The run folder's checkpoint: parameters, batch-norm statistics and Adam
//! moments in one safetensors file whose header also carries the training
//! state as JSON. One file, written to a temporary name, fsynced and renamed
//! over the old one: a crash or a kill mid-save leaves the previous
//! checkpoint whole. `state.json` is a readable copy of the header state.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};

pub const CHECKPOINT: &str = "checkpoint.safetensors";
pub const STATE: &str = "state.json";

/// Where a run stands: enough to continue it exactly.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct TrainState {
    /// Steps completed.
    pub step: u64,
    pub seed: u64,
    pub batch: usize,
    pub lr: f64,
    pub l2: f64,
    pub clip: f64,
    pub flip: bool,
    /// The data set as given to `--data`, and the examples seen so far.
    pub data: String,
    pub examples_seen: u64,
    /// Hash of the flow's source: a checkpoint belongs to one flow.
    pub flow_hash: String,
    /// Adam's step count.
    pub adam_t: u64,
    /// The last test bits/dim measured, if any.
    pub test_bits_per_dim: Option<f64>,
}

/// FNV-1a of the source text, hex: cheap, stable across platforms.
pub fn flow_hash(source: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in source.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

/// Writes `bytes` to `path` atomically: temporary file, fsync, rename, fsync of the folder.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp: PathBuf = dir.join(format!(
        ".{}.tmp",
        path.file_name().unwrap().to_string_lossy()
    ));
    {
        let mut f = File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    fs::rename(&tmp, path)?;
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Saves tensors and state into the run folder.
pub fn save(dir: &Path, tensors: &[(String, Tensor)], state: &TrainState) -> Result<(), String> {
    let mut meta = HashMap::new();
    meta.insert(
        "state".to_string(),
        serde_json::to_string(state).expect("plain data"),
    );
    meta.insert("format".to_string(), "flowc-checkpoint-1".to_string());
    let data: Vec<(&str, &Tensor)> = tensors.iter().map(|(n, t)| (n.as_str(), t)).collect();
    let bytes = safetensors::serialize(data, Some(meta))
        .map_err(|e| format!("cannot serialize the checkpoint: {e}"))?;
    let path = dir.join(CHECKPOINT);
    write_atomic(&path, &bytes).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    let readable = serde_json::to_string_pretty(state).expect("plain data");
    write_atomic(&dir.join(STATE), readable.as_bytes())
        .map_err(|e| format!("cannot write {}: {e}", dir.join(STATE).display()))
}

/// The training state in a checkpoint's safetensors header (`__metadata__.state`).
fn parse_state(header: &[u8], path: &Path) -> Result<TrainState, String> {
    let corrupt = |why: String| format!("{} is not a flowc checkpoint ({why})", path.display());
    let header: serde_json::Value =
        serde_json::from_slice(header).map_err(|e| corrupt(e.to_string()))?;
    let state = header["__metadata__"]["state"]
        .as_str()
        .ok_or_else(|| corrupt("no training state in its header".into()))?;
    serde_json::from_str(state).map_err(|e| corrupt(e.to_string()))
}

/// The header of a safetensors file: 8 bytes of little-endian length, then JSON.
fn header_range(len: usize, first8: &[u8]) -> Option<std::ops::Range<usize>> {
    let n = u64::from_le_bytes(first8.get(..8)?.try_into().ok()?) as usize;
    (n <= len.saturating_sub(8)).then_some(8..8 + n)
}

/// Only the state of a checkpoint, reading its header and not its tensors.
pub fn read_state(dir: &Path) -> Result<TrainState, String> {
    use std::io::Read;
    let path = dir.join(CHECKPOINT);
    let cannot = |e: std::io::Error| format!("cannot read {}: {e}", path.display());
    let mut f = File::open(&path).map_err(cannot)?;
    let len = f.metadata().map_err(cannot)?.len() as usize;
    let mut first8 = [0u8; 8];
    f.read_exact(&mut first8).map_err(cannot)?;
    let range = header_range(len, &first8).ok_or_else(|| {
        format!(
            "{} is not a flowc checkpoint (bad header length)",
            path.display()
        )
    })?;
    let mut header = vec![0u8; range.len()];
    f.read_exact(&mut header).map_err(cannot)?;
    parse_state(&header, &path)
}

/// Loads a checkpoint: its tensors and its state.
pub fn load(dir: &Path, device: &Device) -> Result<(HashMap<String, Tensor>, TrainState), String> {
    let path = dir.join(CHECKPOINT);
    let bytes = fs::read(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let range = header_range(bytes.len(), &bytes).ok_or_else(|| {
        format!(
            "{} is not a flowc checkpoint (bad header length)",
            path.display()
        )
    })?;
    let state = parse_state(&bytes[range], &path)?;
    let tensors = candle_core::safetensors::load_buffer(&bytes, device)
        .map_err(|e| format!("{} is not a flowc checkpoint ({e})", path.display()))?;
    Ok((tensors, state))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(step: u64) -> TrainState {
        TrainState {
            step,
            seed: 7,
            batch: 4,
            lr: 1e-3,
            l2: 0.0,
            clip: 0.0,
            flip: false,
            data: "toy:two-moons".into(),
            examples_seen: 4 * step,
            flow_hash: flow_hash("flow f {}"),
            adam_t: step,
            test_bits_per_dim: None,
        }
    }

    #[test]
    fn header_state_matches_the_full_load_and_bad_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let t = Tensor::arange(0f32, 6., &Device::Cpu).unwrap();
        save(dir.path(), &[("w".into(), t)], &state(3)).unwrap();
        let (tensors, full) = load(dir.path(), &Device::Cpu).unwrap();
        assert_eq!(full, state(3));
        assert_eq!(read_state(dir.path()).unwrap(), state(3));
        assert_eq!(
            tensors["w"].to_vec1::<f32>().unwrap(),
            vec![0., 1., 2., 3., 4., 5.]
        );
        // A second save replaces the first whole.
        save(dir.path(), &[], &state(4)).unwrap();
        assert_eq!(read_state(dir.path()).unwrap().step, 4);
        // Truncated and garbage files: a message, not a panic.
        let path = dir.path().join(CHECKPOINT);
        let bytes = fs::read(&path).unwrap();
        fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
        assert!(read_state(dir.path())
            .unwrap_err()
            .contains("not a flowc checkpoint"));
        fs::write(&path, b"\xff\xff\xff\xff\xff\xff\xff\x7f{}").unwrap();
        assert!(load(dir.path(), &Device::Cpu)
            .unwrap_err()
            .contains("not a flowc checkpoint"));
    }
}
