//! Build script: with the `cuda` feature, compiles the fused coupling kernels
//! (`src/exec/kernels/fused_coupling.cu`) to PTX with nvcc into `$OUT_DIR/fused_coupling.ptx`,
//! which `src/exec/fused_cuda.rs` embeds. Without the feature it does nothing.
//!
//! nvcc: `$NVCC`, else `$CUDA_ROOT/bin/nvcc` / `$CUDA_PATH/bin/nvcc`, else `nvcc` on `PATH`
//! (`../shared/gpu/build-cuda.sh` puts it there). Target: `compute_$CUDA_COMPUTE_CAP`
//! (default 80; PTX is JIT-compiled by the driver for the GPU it runs on, so an older
//! target runs on newer GPUs).

use std::path::PathBuf;
use std::process::Command;

const KERNELS: &str = "src/exec/kernels/fused_coupling.cu";

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed={KERNELS}");
    println!("cargo:rerun-if-env-changed=CARGO_FEATURE_CUDA");
    if std::env::var_os("CARGO_FEATURE_CUDA").is_none() {
        return;
    }
    for var in [
        "NVCC",
        "CUDA_ROOT",
        "CUDA_PATH",
        "CUDA_COMPUTE_CAP",
        "NVCC_FLAGS",
    ] {
        println!("cargo:rerun-if-env-changed={var}");
    }
    let nvcc = std::env::var_os("NVCC")
        .map(PathBuf::from)
        .or_else(|| {
            ["CUDA_ROOT", "CUDA_PATH"]
                .iter()
                .filter_map(std::env::var_os)
                .map(|root| PathBuf::from(root).join("bin").join("nvcc"))
                .find(|p| p.exists())
        })
        .unwrap_or_else(|| PathBuf::from("nvcc"));
    let cap: String = std::env::var("CUDA_COMPUTE_CAP")
        .ok()
        .map(|c| c.trim().replace('.', ""))
        .filter(|c| !c.is_empty() && c.chars().all(|ch| ch.is_ascii_digit()))
        .unwrap_or_else(|| "80".to_string());
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR")).join("fused_coupling.ptx");
    let mut cmd = Command::new(&nvcc);
    cmd.arg("--ptx")
        .arg(format!("--gpu-architecture=compute_{cap}"))
        .arg("-O3")
        .arg("-std=c++17")
        .arg(KERNELS)
        .arg("-o")
        .arg(&out);
    if let Ok(flags) = std::env::var("NVCC_FLAGS") {
        cmd.args(flags.split_whitespace());
    }
    let status = cmd.status().unwrap_or_else(|e| {
        panic!(
            "feature `cuda`: cannot run nvcc ({}): {e}; put nvcc on PATH or set NVCC / CUDA_ROOT \
             (../shared/gpu/build-cuda.sh does)",
            nvcc.display()
        )
    });
    if !status.success() {
        panic!("feature `cuda`: nvcc failed on {KERNELS} ({status})");
    }
}
