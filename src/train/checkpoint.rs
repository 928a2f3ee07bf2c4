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

/// Loads a checkpoint: its tensors and its state.
pub fn load(dir: &Path, device: &Device) -> Result<(HashMap<String, Tensor>, TrainState), String> {
    let path = dir.join(CHECKPOINT);
    let bytes = fs::read(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let corrupt = |why: String| format!("{} is not a flowc checkpoint ({why})", path.display());
    let (_, header) =
        safetensors::SafeTensors::read_metadata(&bytes).map_err(|e| corrupt(e.to_string()))?;
    let state = header
        .metadata()
        .as_ref()
        .and_then(|m| m.get("state"))
        .ok_or_else(|| corrupt("no training state in its header".into()))?;
    let state: TrainState = serde_json::from_str(state).map_err(|e| corrupt(e.to_string()))?;
    let tensors = candle_core::safetensors::load_buffer(&bytes, device)
        .map_err(|e| corrupt(e.to_string()))?;
    Ok((tensors, state))
}
