#!/usr/bin/env bash
# Side-by-side throughput of flowc (`flowc bench`) and the PyTorch reference
# (../shared/peers/realnvp_torch.py) on the benchmark flows of ../shared/bench/,
# on this machine, in one go, alternating the two sides: ROUNDS rounds, each
# running flowc then PyTorch on every flow. Prints examples (images) per
# second for density, sample and one training step (medians over the rounds),
# peak RSS, and the ratio flowc / pytorch (> 1: flowc is faster).
#
# Usage: scripts/bench_peer.sh [small] [fashion] [moons] [cifar10]
#   (default: small fashion moons)
# Environment:
#   THREADS=2             threads for both sides (flowc --threads, torch --threads,
#                         OMP/MKL_NUM_THREADS)
#   ROUNDS=3              alternating rounds; the table takes each rate's median
#   ITERS=5               timed runs per measurement on both sides (image flows)
#   ITERS_MOONS=100       the same for moons (a step takes milliseconds)
#   FLOWC_SHARED=../shared  where bench/ and peers/ are
# Run it alone on the machine: on 2 cores any other load skews both sides, and
# PyTorch's OpenMP threads collapse under contention (the table shows the load).
set -euo pipefail

cd "$(dirname "$0")/.."
THREADS=${THREADS:-2}
ROUNDS=${ROUNDS:-3}
ITERS=${ITERS:-5}
ITERS_MOONS=${ITERS_MOONS:-100}
SHARED=${FLOWC_SHARED:-../shared}
TARGET=${CARGO_TARGET_DIR:-target}
export OMP_NUM_THREADS=$THREADS MKL_NUM_THREADS=$THREADS

if [ $# -gt 0 ]; then FLOWS=("$@"); else FLOWS=(small fashion moons); fi
flow_name() { case $1 in moons) echo moons ;; *) echo "realnvp_$1" ;; esac; }
batch_of() { case $1 in moons) echo 512 ;; *) echo 64 ;; esac; }
iters_of() { case $1 in moons) echo "$ITERS_MOONS" ;; *) echo "$ITERS" ;; esac; }
for f in "${FLOWS[@]}"; do
    case $f in small | fashion | moons | cifar10) ;; *) echo "unknown flow '$f' (small, fashion, moons, cifar10)" >&2; exit 2 ;; esac
    [ -f "$SHARED/bench/$(flow_name "$f").flow" ] || { echo "missing $SHARED/bench/$(flow_name "$f").flow" >&2; exit 2; }
done
PEER=$SHARED/peers/realnvp_torch.py
[ -f "$PEER" ] || { echo "missing $PEER" >&2; exit 2; }
if ! python3 -c 'import torch' 2>/dev/null; then
    echo "== torch not found: pip install torch numpy" >&2
    python3 -m pip install torch numpy >&2
fi

echo "== building flowc" >&2
cargo build --release >&2
FLOWC=$TARGET/release/flowc
OUTDIR=$TARGET/bench_peer
mkdir -p "$OUTDIR"
rm -f "$OUTDIR"/*.jsonl
load1() { cut -d' ' -f1 /proc/loadavg; }
LOAD_BEFORE=$(load1)

for round in $(seq "$ROUNDS"); do
    for f in "${FLOWS[@]}"; do
        name=$(flow_name "$f")
        batch=$(batch_of "$f")
        iters=$(iters_of "$f")
        echo "== round $round: flowc $name, batch $batch" >&2
        "$FLOWC" bench "$SHARED/bench/$name.flow" --batch "$batch" --iters "$iters" \
            --threads "$THREADS" --format json | tee -a "$OUTDIR/flowc-$f.jsonl" >&2
        echo "== round $round: pytorch $f, batch $batch" >&2
        python3 "$PEER" --flow "$f" --batch "$batch" --steps "$iters" --threads "$THREADS" \
            | tail -n 1 | tee -a "$OUTDIR/peer-$f.jsonl" >&2
    done
done

echo
echo "examples/s (medians of $ROUNDS alternating rounds) on $(nproc) cpus, $THREADS threads each side," \
    "$(python3 -c 'import torch; print("torch", torch.__version__)'), load $LOAD_BEFORE before, $(load1) after"
python3 - "$OUTDIR" "${FLOWS[@]}" <<'EOF'
import json, statistics, sys
out, flows = sys.argv[1], sys.argv[2:]
fmt = "| {:<16} | {:>5} | {:<10} | {:>10} | {:>10} | {:>8} |"
print(fmt.format("flow", "batch", "what", "flowc/s", "pytorch/s", "ratio"))
print("|" + "|".join("-" * (w + 2) for w in (16, 5, 10, 10, 10, 8)) + "|")
for f in flows:
    ours = [json.loads(l) for l in open(f"{out}/flowc-{f}.jsonl")]
    peer = [json.loads(l) for l in open(f"{out}/peer-{f}.jsonl")]
    med = lambda runs, k: statistics.median(r[k] for r in runs)
    for what in ("density", "sample", "train"):
        a, b = med(ours, f"{what}_per_s"), med(peer, f"{what}_per_s")
        print(fmt.format(ours[0]["flow"], ours[0]["batch"], what, f"{a:.4g}", f"{b:.4g}", f"{a / b:.2f}"))
    a, b = med(ours, "peak_rss_mib"), med(peer, "peak_rss_mib")
    print(fmt.format(ours[0]["flow"], ours[0]["batch"], "peak RSS", f"{a:.0f} MiB", f"{b:.0f} MiB", f"{a / b:.2f}"))
EOF
echo "(runs in $OUTDIR/{flowc,peer}-*.jsonl)"
