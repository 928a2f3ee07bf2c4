//! The run folder's checkpoint: parameters, batch-norm statistics and Adam
//! moments in one safetensors file whose header also carries the training
//! state as JSON. One file, written to a temporary name, fsynced and renamed
//! over the old one: a crash or a kill mid-save leaves the previous
//! checkpoint whole. `state.json` is a readable copy of the header state.
//! The header also carries a CRC-32 of the state and every tensor (name,
//! dtype, shape, bytes): a flipped byte is reported, never loaded.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use candle_core::safetensors::Load;
use candle_core::{Device, Tensor};
use safetensors::tensor::View;

use super::packed;
use serde::{Deserialize, Serialize};

pub const CHECKPOINT: &str = "checkpoint.safetensors";
pub const STATE: &str = "state.json";
/// The header's `format`; version 1 had no checksum.
const FORMAT: &str = "flowc-checkpoint-2";

/// What the checksum covers of one tensor.
struct TensorBytes {
    dtype: String,
    shape: Vec<usize>,
    data: Vec<u8>,
}

impl TensorBytes {
    fn of(t: &impl View) -> TensorBytes {
        TensorBytes {
            dtype: format!("{:?}", t.dtype()),
            shape: t.shape().to_vec(),
            data: t.data().into_owned(),
        }
    }
}

/// CRC-32 of the state text and of every tensor in name order, hex.
fn checksum<'a>(state: &str, tensors: impl IntoIterator<Item = (&'a str, TensorBytes)>) -> String {
    let mut sorted: Vec<(&str, TensorBytes)> = tensors.into_iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(b.0));
    let mut h = crc32fast::Hasher::new();
    h.update(state.as_bytes());
    for (name, t) in &sorted {
        h.update(name.as_bytes());
        h.update(t.dtype.as_bytes());
        for d in &t.shape {
            h.update(&(*d as u64).to_le_bytes());
        }
        h.update(&t.data);
    }
    format!("{:08x}", h.finalize())
}

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
    /// Cosine learning-rate decay over `steps` steps (checkpoints from
    /// before these were recorded read as no decay).
    #[serde(default)]
    pub cosine: bool,
    /// The run's total steps, which the cosine schedule depends on.
    #[serde(default)]
    pub steps: Option<u64>,
    /// The `--test` file of an `npy:` data set, if one was given.
    #[serde(default)]
    pub test_data: Option<String>,
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
    let written = (|| {
        let mut f = File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if let Err(e) = written {
        // A full disk must not stay full of our half-written file.
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
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
    meta.insert("format".to_string(), FORMAT.to_string());
    let views = tensors
        .iter()
        .map(|(n, t)| (n.as_str(), TensorBytes::of(t)));
    meta.insert("checksum".to_string(), checksum(&meta["state"], views));
    let cannot = |e: safetensors::SafeTensorError| format!("cannot serialize the checkpoint: {e}");
    let bytes = if tensors.len() > packed::MAX_NAMED {
        meta.insert("layout".to_string(), "packed".to_string());
        let (data, index) = packed::pack(tensors);
        let pair = [
            (packed::DATA, packed::bytes_view(&data)?),
            (packed::INDEX, packed::bytes_view(&index)?),
        ];
        safetensors::serialize(pair, Some(meta)).map_err(cannot)?
    } else {
        let named = tensors.iter().map(|(n, t)| (n.as_str(), t));
        safetensors::serialize(named, Some(meta)).map_err(cannot)?
    };
    let path = dir.join(CHECKPOINT);
    write_atomic(&path, &bytes).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    let readable = serde_json::to_string_pretty(state).expect("plain data");
    write_atomic(&dir.join(STATE), readable.as_bytes())
        .map_err(|e| format!("cannot write {}: {e}", dir.join(STATE).display()))
}

/// What a checkpoint's safetensors header (`__metadata__`) holds of ours.
struct Header {
    state: TrainState,
    state_text: String,
    /// Absent in version 1 checkpoints.
    checksum: Option<String>,
    /// The layout of [`packed`], for flows with very many tensors.
    packed: bool,
}

fn parse_header(header: &[u8], path: &Path) -> Result<Header, String> {
    let corrupt = |why: String| format!("{} is not a flowc checkpoint ({why})", path.display());
    let header: serde_json::Value =
        serde_json::from_slice(header).map_err(|e| corrupt(e.to_string()))?;
    let meta = &header["__metadata__"];
    let state_text = meta["state"]
        .as_str()
        .ok_or_else(|| corrupt("no training state in its header".into()))?;
    let state = serde_json::from_str(state_text).map_err(|e| corrupt(e.to_string()))?;
    let checksum = meta["checksum"].as_str().map(str::to_string);
    if checksum.is_none() && meta["format"].as_str() != Some("flowc-checkpoint-1") {
        return Err(corrupt("no checksum in its header".into()));
    }
    Ok(Header {
        state,
        state_text: state_text.to_string(),
        checksum,
        packed: meta["layout"].as_str() == Some("packed"),
    })
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
    parse_header(&header, &path).map(|h| h.state)
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
    let header = parse_header(&bytes[range], &path)?;
    let corrupt = |e: String| format!("{} is not a flowc checkpoint ({e})", path.display());
    let st = safetensors::SafeTensors::deserialize(&bytes).map_err(|e| corrupt(e.to_string()))?;
    let views = match header.packed {
        true => packed::unpack(&st).map_err(corrupt)?,
        false => st.tensors(),
    };
    if let Some(want) = &header.checksum {
        let found = checksum(
            &header.state_text,
            views.iter().map(|(n, v)| (n.as_str(), TensorBytes::of(v))),
        );
        if &found != want {
            return Err(format!(
                "{} is damaged: its checksum is {found}, its header says {want}; it was not loaded (an earlier copy of the run, if you have one, is intact)",
                path.display()
            ));
        }
    }
    let tensors = views
        .into_iter()
        .map(|(n, v)| Ok((n, v.load(device).map_err(|e| corrupt(e.to_string()))?)))
        .collect::<Result<_, String>>()?;
    Ok((tensors, header.state))
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
            cosine: false,
            steps: Some(10),
            test_data: None,
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

    #[test]
    fn a_flipped_byte_anywhere_is_reported_not_loaded() {
        let dir = tempfile::tempdir().unwrap();
        let t = Tensor::arange(0f32, 64., &Device::Cpu).unwrap();
        save(dir.path(), &[("w".into(), t)], &state(3)).unwrap();
        let path = dir.path().join(CHECKPOINT);
        let good = fs::read(&path).unwrap();
        let header_end = 8 + u64::from_le_bytes(good[..8].try_into().unwrap()) as usize;
        // One byte of the tensor data, then one byte of the state in the header.
        let seed = good.windows(4).position(|w| w == b"seed").unwrap();
        let state_at = seed + good[seed..].iter().position(|&b| b == b'7').unwrap();
        for at in [header_end + 13, state_at] {
            let mut bad = good.clone();
            bad[at] ^= if at == state_at { 0x01 } else { 0x40 };
            fs::write(&path, &bad).unwrap();
            let err = load(dir.path(), &Device::Cpu).unwrap_err();
            assert!(
                err.contains("damaged") || err.contains("not a flowc checkpoint"),
                "byte {at}: {err}"
            );
        }
        fs::write(&path, &good).unwrap();
        assert_eq!(load(dir.path(), &Device::Cpu).unwrap().1, state(3));
    }

    #[test]
    fn a_packed_checkpoint_loads_what_was_saved_and_checks_its_sum() {
        let dir = tempfile::tempdir().unwrap();
        let tensors: Vec<(String, Tensor)> = (0..packed::MAX_NAMED + 3)
            .map(|i| {
                let t = Tensor::new(&[i as f32, -(i as f32), 0.5], &Device::Cpu).unwrap();
                (format!("layer{i}.w"), t)
            })
            .collect();
        save(dir.path(), &tensors, &state(2)).unwrap();
        let (loaded, s) = load(dir.path(), &Device::Cpu).unwrap();
        assert_eq!((loaded.len(), s), (tensors.len(), state(2)));
        for (name, t) in [&tensors[0], &tensors[77_777], tensors.last().unwrap()] {
            assert_eq!(
                loaded[name].to_vec1::<f32>().unwrap(),
                t.to_vec1::<f32>().unwrap()
            );
        }
        let path = dir.path().join(CHECKPOINT);
        let mut bytes = fs::read(&path).unwrap();
        // The data tensor comes first (names sort before `...index`).
        let at = 8 + u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize + 5;
        bytes[at] ^= 0x10;
        fs::write(&path, &bytes).unwrap();
        assert!(load(dir.path(), &Device::Cpu)
            .unwrap_err()
            .contains("damaged"));
    }

    #[test]
    fn a_failed_write_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        // Renaming over a folder fails after the temporary file was written.
        let target = dir.path().join("taken");
        fs::create_dir(&target).unwrap();
        fs::write(target.join("x"), b"x").unwrap();
        assert!(write_atomic(&target, b"bytes").is_err());
        let left: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left, vec![std::ffi::OsString::from("taken")]);
    }
}
