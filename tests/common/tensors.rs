//! Measuring tensors in the numeric tests.

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use flowc::exec::Flow;

/// max |t| over all elements.
pub fn max_abs(t: &Tensor) -> f32 {
    t.abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar()
        .unwrap()
}

/// max |a - b| over all elements.
pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    max_abs(&(a - b).unwrap())
}

/// `n` random inputs of `flow`'s shape: images in [0.05, 0.95] (past its
/// dequantization), vectors standard normal.
pub fn input(flow: &Flow, n: usize, dtype: DType) -> Tensor {
    let shape = flow.plan().input;
    let mut dims = vec![n];
    dims.extend(shape.dims().iter().map(|&d| d as usize));
    let t = if shape.is_image() {
        Tensor::rand(0.05f32, 0.95, dims, &Device::Cpu).unwrap()
    } else {
        Tensor::randn(0f32, 1., dims, &Device::Cpu).unwrap()
    };
    t.to_dtype(dtype).unwrap()
}

/// `source` compiled and built on the CPU, its parameters initialized as
/// `flowc train` does (seed 7): a fresh flow.
pub fn build(source: &str, dtype: DType) -> (Flow, VarMap) {
    let plan = flowc::compile(source).expect("compiles");
    let vm = VarMap::new();
    let vb = VarBuilder::from_varmap(&vm, dtype, &Device::Cpu);
    let flow = Flow::new(&plan, vb, &Device::Cpu).unwrap();
    flowc::train::init_params(&vm, &plan, 7).unwrap();
    (flow, vm)
}
