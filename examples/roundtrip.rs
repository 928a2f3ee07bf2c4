//! Compiles a .flow file, runs a batch forward, inverts it, and prints the
//! reconstruction error and the log-determinant.
//!
//!     cargo run --release --example roundtrip -- flows/realnvp_mnist.flow

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "flows/realnvp_mnist.flow".into());
    let source = std::fs::read_to_string(&path)?;
    let plan = match flowc::compile(&source) {
        Ok(plan) => plan,
        Err(diags) => {
            eprint!("{}", flowc::diag::render(&diags, &path, &source, false));
            std::process::exit(1);
        }
    };
    let device = Device::Cpu;
    let vm = VarMap::new();
    let flow = flowc::exec::Flow::new(
        &plan,
        VarBuilder::from_varmap(&vm, DType::F32, &device),
        &device,
    )?;
    let mut dims = vec![8usize];
    dims.extend(plan.input.dims().iter().map(|&d| d as usize));
    let x = if plan.input.is_image() {
        Tensor::rand(0f32, 1., dims, &device)?
    } else {
        Tensor::randn(0f32, 1., dims, &device)?
    };
    let (latents, logdet) = flow.forward(&x, true)?;
    let back = flow.inverse(&latents)?;
    let err: f32 = (back - &x)?.abs()?.flatten_all()?.max(0)?.to_scalar()?;
    println!(
        "flow {}: {} parameters, latents {:?}",
        plan.flow,
        plan.parameter_count(),
        plan.latent_shapes()
            .iter()
            .map(|s| s.to_string())
            .collect::<Vec<_>>()
    );
    println!("max |inverse(forward(x)) - x| = {err:.3e}");
    println!("log|det J| per example: {:?}", logdet.to_vec1::<f32>()?);
    Ok(())
}
