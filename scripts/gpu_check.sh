#!/usr/bin/env bash
# Device check of the fused coupling CUDA kernels: the one command to run on the GPU machine.
#
# 1. Build, on any machine (no GPU needed), from the project root:
#        ../shared/gpu/build-cuda.sh --release --features cuda --example cuda_check --bin flowc
#        scripts/gpu_check.sh --pack     # both binaries -> target/gpu-bins.tar.xz (~15 MB)
#    (the two binaries are ~50 MB each, mostly candle's PTX, too big to carry together
#    uncompressed; with CARGO_TARGET_DIR elsewhere, set it here too.)
# 2. On the device machine (device tool: command "bash scripts/gpu_check.sh",
#    carry ["target/gpu-bins.tar.xz"], or carry ["target/release/examples/cuda_check"] alone):
#        scripts/gpu_check.sh
#    a. prints the GPU;
#    b. runs examples/cuda_check: the CUDA fused ops vs the CPU fused ops and vs the CUDA
#       reference chain (values and gradients, all masks, affine/additive, f32/f64), then
#       forward+backward timings at batch 64;
#    c. if flowc is there and has `--device`: a CUDA round trip through the CLI on a toy data
#       set (train 200 steps on CUDA, eval on CUDA and on the CPU, which should agree, sample).
# Exit status: 0 when all ran and passed; otherwise cuda_check's (1 a FAIL, 2 no CUDA device,
# 124 timeout), 127 if cuda_check is missing, 3 if only the CLI round trip failed.
set -uo pipefail
cd "$(dirname "$0")/.."
tdir=${CARGO_TARGET_DIR:-target}
archive=$tdir/gpu-bins.tar.xz
if [ "${1:-}" = "--pack" ]; then
  tar -C "$tdir/release" -cf - examples/cuda_check $( [ -x "$tdir/release/flowc" ] && echo flowc ) \
    | xz -T0 -3 > "$archive" && ls -la "$archive"
  exit $?
fi
if [ -f "$archive" ]; then
  mkdir -p "$tdir/release" && xz -dc "$archive" | tar -C "$tdir/release" -xf - || exit 127
fi
bin=${CUDA_CHECK_BIN:-$tdir/release/examples/cuda_check}
flowc=${FLOWC_BIN:-$tdir/release/flowc}
if [ ! -x "$bin" ]; then
  echo "gpu_check: $bin not found; build it with ../shared/gpu/build-cuda.sh --release --features cuda --example cuda_check" >&2
  exit 127
fi
# CUDA runtime libraries from the pip nvidia packages (see ../shared/gpu/build-cuda.sh).
nvlibs=$(python3 - <<'PY' 2>/dev/null
import os
try:
    import nvidia
except ImportError:
    raise SystemExit(0)
dirs = []
for p in nvidia.__path__:
    for d in sorted(os.listdir(p)):
        lib = os.path.join(p, d, "lib")
        if os.path.isdir(lib):
            dirs.append(lib)
print(":".join(dirs))
PY
)
if [ -n "$nvlibs" ]; then
  export LD_LIBRARY_PATH=$nvlibs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
else
  echo "gpu_check: no pip nvidia packages found; relying on the system's CUDA libraries" >&2
fi
nvidia-smi --query-gpu=name,compute_cap,driver_version,memory.total --format=csv,noheader 2>/dev/null || true
echo "gpu_check: libraries not found:"; ldd "$bin" | grep "not found" || echo "  none"

echo "== cuda_check"
timeout "${CUDA_CHECK_TIMEOUT:-300}" "$bin"
rc=$?
echo "gpu_check: cuda_check exited with $rc"

cli_rc=0
if [ -x "$flowc" ] && "$flowc" train --help 2>/dev/null | grep -q -- "--device"; then
  echo "== flowc round trip on CUDA (toy:two-moons)"
  run=$(mktemp -d)/run
  timeout 180 "$flowc" train flows/two_moons.flow --data toy:two-moons --steps 200 \
      --device cuda --out "$run" --eval-every 100 --eval-examples 1000 2>&1 | tail -n 4 \
    && echo "-- eval on cuda:" && timeout 60 "$flowc" eval "$run" --data toy:two-moons --device cuda \
    && echo "-- eval on cpu (should match):" && timeout 60 "$flowc" eval "$run" --data toy:two-moons --device cpu \
    && timeout 60 "$flowc" sample "$run" -n 16 --device cuda -o "$run/samples.csv" \
    || cli_rc=$?
  echo "gpu_check: flowc round trip exited with $cli_rc"
else
  echo "gpu_check: no flowc with --device at $flowc; CLI round trip skipped"
fi
[ "$rc" -ne 0 ] && exit "$rc"
[ "$cli_rc" -ne 0 ] && exit 3
exit 0
