//! Stage 9, infer: using a trained flow's exact density and exact inverse.
//! [`latent`]: encode, decode, interpolate; [`score`]: per-example bits per
//! dimension and the importance-weighted bound; [`complete`]: filling in the
//! missing part of an input (MAP or posterior samples); [`input`]: the files
//! these read. The CLI (`flowc complete|encode|decode|interpolate|score`) is
//! a thin layer over them.
//!
//! Images enter as 8-bit values `v` and are seen by the flow as `x` in
//! `[0, 1)`: at the centre of their bin, `x = (v + 1/2) / 256`, where a
//! function is deterministic (encode, interpolate, complete), and with the
//! dequantization noise of training, `x = (v + u) / 256`, where it scores.
//! Values leave as `v = floor(256 x)`, so that `decode(encode(v)) = v`.
//!
//! ```
//! use candle_core::{DType, Device, Tensor};
//! use candle_nn::{VarBuilder, VarMap};
//! let plan = flowc::compile("flow f { input vector(2) net m = mlp(hidden = 8, layers = 1) \
//!     coupling affine(mask = alternate(even), net = m) coupling affine(mask = alternate(odd), net = m) }").unwrap();
//! let vm = VarMap::new();
//! let flow = flowc::exec::Flow::new(&plan, VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu), &Device::Cpu)?;
//! let x = Tensor::new(&[[0.5f32, -1.0], [2.0, 0.25]], &Device::Cpu)?;
//! let (z, logdet) = flowc::infer::latent::encode(&flow, &x)?;
//! let back = flowc::infer::latent::decode(&flow, &z)?;
//! # Ok::<(), candle_core::Error>(())
//! ```

pub mod complete;
pub mod input;
pub mod latent;
pub mod score;
