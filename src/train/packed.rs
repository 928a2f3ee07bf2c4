//! The packed layout of a checkpoint, for flows with more tensors than a
//! safetensors header can name: it caps its header at 100 MB, about a
//! million entries, and a flow near the language's limit of 100,000 layers
//! has about 400,000 parameter tensors, three times that with Adam's
//! moments. Packed, the file holds two byte tensors: every tensor's bytes
//! one after another, and a JSON index of names, dtypes, shapes and
//! offsets. Checkpoints with fewer tensors keep one named tensor each, the
//! layout every safetensors reader understands.

use candle_core::Tensor;
use safetensors::tensor::{Dtype, TensorView, View};
use serde::{Deserialize, Serialize};

/// Above this many tensors a checkpoint is packed.
pub const MAX_NAMED: usize = 100_000;
pub const DATA: &str = "flowc.packed.data";
pub const INDEX: &str = "flowc.packed.index";

#[derive(Serialize, Deserialize)]
struct Entry {
    name: String,
    dtype: Dtype,
    shape: Vec<usize>,
    /// Byte range in the data tensor.
    start: usize,
    end: usize,
}

/// The two byte buffers of the packed layout: (data, index).
pub fn pack(tensors: &[(String, Tensor)]) -> (Vec<u8>, Vec<u8>) {
    let mut data = Vec::new();
    let mut index = Vec::with_capacity(tensors.len());
    for (name, t) in tensors {
        let start = data.len();
        data.extend_from_slice(&View::data(t));
        index.push(Entry {
            name: name.clone(),
            dtype: View::dtype(t),
            shape: View::shape(t).to_vec(),
            start,
            end: data.len(),
        });
    }
    let index = serde_json::to_vec(&index).expect("plain data");
    (data, index)
}

/// A byte buffer as a safetensors tensor.
pub fn bytes_view(b: &[u8]) -> Result<TensorView<'_>, String> {
    TensorView::new(Dtype::U8, vec![b.len()], b)
        .map_err(|e| format!("cannot serialize the checkpoint: {e}"))
}

/// The tensors of a packed file, as views into its data tensor.
pub fn unpack<'a>(
    st: &safetensors::SafeTensors<'a>,
) -> Result<Vec<(String, TensorView<'a>)>, String> {
    let bytes = |name: &str| {
        st.tensor(name)
            .map(|v| v.data())
            .map_err(|e| format!("no `{name}` in a packed checkpoint ({e})"))
    };
    let (data, index) = (bytes(DATA)?, bytes(INDEX)?);
    let index: Vec<Entry> =
        serde_json::from_slice(index).map_err(|e| format!("a bad packed index ({e})"))?;
    index
        .into_iter()
        .map(|e| {
            let slice = data
                .get(e.start..e.end)
                .ok_or_else(|| format!("`{}` lies outside the packed data", e.name))?;
            let view = TensorView::new(e.dtype, e.shape, slice)
                .map_err(|err| format!("`{}`: {err}", e.name))?;
            Ok((e.name, view))
        })
        .collect()
}
