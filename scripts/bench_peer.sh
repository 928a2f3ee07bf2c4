#!/usr/bin/env bash
# Side-by-side throughput of flowc (candle, CPU) and the PyTorch reference
# (../shared/peers/realnvp_torch.py) on the benchmark flows of ../shared/bench/,
# on this machine, in one go. Prints examples (images) per second for density,
# sample and one training step, and the ratio flowc / pytorch (> 1: flowc is
# faster).
#
# Usage: scripts/bench_peer.sh [small] [fashion] [moons] [cifar10]
#   (default: small fashion moons; cifar10 also when FLOWC_BENCH_CIFAR=1)
# Environment:
#   THREADS=2             threads for both sides (RAYON/OMP/MKL_NUM_THREADS, --threads)
#   PEER_STEPS=5          timed steps per measurement on the PyTorch side (image flows)
#   PEER_STEPS_MOONS=100  the same for moons (a step takes milliseconds: 5 are too few)
#   PEER_RUNS=3           PyTorch runs per flow; the table takes each rate's median
#   FLOWC_SHARED=../shared  where bench/ and peers/ are
#   CARGO_TARGET_DIR      as for cargo (criterion results are read from it)
# flowc's side is `cargo bench --bench flows` (benches/flows.rs); its numbers are
# criterion's median time per iteration (10 samples), read from
# <target>/criterion/<flow>/<what>/<batch>/new/estimates.json. Medians on both
# sides, because a burst of other work on a small machine skews a mean.
# The batch sizes below must match those of benches/flows.rs.
set -euo pipefail

cd "$(dirname "$0")/.."
THREADS=${THREADS:-2}
PEER_STEPS=${PEER_STEPS:-5}
PEER_STEPS_MOONS=${PEER_STEPS_MOONS:-100}
PEER_RUNS=${PEER_RUNS:-3}
SHARED=${FLOWC_SHARED:-../shared}
TARGET=${CARGO_TARGET_DIR:-target}
export RAYON_NUM_THREADS=$THREADS OMP_NUM_THREADS=$THREADS MKL_NUM_THREADS=$THREADS
export FLOWC_BENCH_DIR=$SHARED/bench

if [ $# -gt 0 ]; then
    FLOWS=("$@")
else
    FLOWS=(small fashion moons)
    if [ "${FLOWC_BENCH_CIFAR:-0}" = 1 ]; then FLOWS+=(cifar10); fi
fi
# Benches of benches/flows.rs skip cifar10 unless this is set.
for f in "${FLOWS[@]}"; do [ "$f" = cifar10 ] && export FLOWC_BENCH_CIFAR=1; done

flow_name() { case $1 in moons) echo moons ;; *) echo "realnvp_$1" ;; esac; }
batch_of() { case $1 in moons) echo 512 ;; *) echo 64 ;; esac; }
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

if ! grep -A2 '^\[\[bench\]\]' Cargo.toml | grep -q '^name = "flows"'; then
    echo 'Cargo.toml lacks the bench target: add [[bench]] name = "flows" harness = false' >&2
    exit 2
fi
echo "== building benches/flows.rs" >&2
cargo bench --bench flows --no-run >&2

OUTDIR=$TARGET/bench_peer
mkdir -p "$OUTDIR"
RESULTS=$OUTDIR/results.tsv
printf 'flow\tbatch\twhat\tflowc_per_s\tpytorch_per_s\tratio\tload_before\tload_after\n' >"$RESULTS"
# Other work on the machine skews the comparison (PyTorch's OpenMP threads
# suffer most from oversubscription): the table shows the 1-minute load average.
load1() { cut -d' ' -f1 /proc/loadavg; }
if python3 -c "import sys; sys.exit(0 if float('$(load1)') > $(nproc) - $THREADS + 1 else 1)"; then
    echo "WARNING: load average $(load1) on $(nproc) cpus: other work will skew the numbers" >&2
fi

for f in "${FLOWS[@]}"; do
    name=$(flow_name "$f")
    batch=$(batch_of "$f")
    load_before=$(load1)
    marker=$OUTDIR/.start-$name
    touch "$marker"
    sleep 1 # so that fresh results are strictly newer than the marker
    echo "== flowc: $name, batch $batch" >&2
    cargo bench --bench flows -- "^$name/" >&2
    echo "== pytorch: $f, batch $batch" >&2
    : >"$OUTDIR/peer-$f.json"
    steps=$PEER_STEPS
    [ "$f" = moons ] && steps=$PEER_STEPS_MOONS
    for _ in $(seq "$PEER_RUNS"); do
        line=$(python3 "$PEER" --flow "$f" --batch "$batch" --steps "$steps" --threads "$THREADS" | tail -n 1)
        echo "$line" >>"$OUTDIR/peer-$f.json"
        echo "$line" >&2
    done
    # The median of each rate over the runs.
    peer_json=$(python3 -c '
import json, statistics, sys
runs = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
print(json.dumps({k: statistics.median(r[k] for r in runs) for k in ("density_per_s", "sample_per_s", "train_per_s")}))
' "$OUTDIR/peer-$f.json")
    python3 - "$TARGET/criterion/$name" "$batch" "$marker" "$name" "$peer_json" "$load_before" "$(load1)" >>"$RESULTS" <<'EOF'
import json, os, sys
root, batch, marker, name, peer = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], json.loads(sys.argv[5])
loads = sys.argv[6] + "\t" + sys.argv[7]
since = os.path.getmtime(marker)
for what in ("density", "sample", "train"):
    path = os.path.join(root, what, str(batch), "new", "estimates.json")
    flowc = float("nan")
    if os.path.exists(path) and os.path.getmtime(path) > since:
        ns = json.load(open(path))["median"]["point_estimate"]
        flowc = batch * 1e9 / ns
    else:
        print(f"no fresh criterion result at {path}", file=sys.stderr)
    torch = float(peer.get(f"{what}_per_s", "nan"))
    ratio = flowc / torch if torch > 0 else float("nan")
    print(f"{name}\t{batch}\t{what}\t{flowc:.6g}\t{torch:.6g}\t{ratio:.4g}\t{loads}")
EOF
    rm -f "$marker"
done

echo
echo "examples/s (medians) on $(nproc) cpus, $THREADS threads each side ($(python3 -c 'import torch; print("torch", torch.__version__)'))"
python3 - "$RESULTS" <<'EOF'
import csv, sys
rows = list(csv.DictReader(open(sys.argv[1]), delimiter="\t"))
fmt = "{:<16} {:>5}  {:<8} {:>12} {:>12} {:>14}  {}"
print(fmt.format("flow", "batch", "what", "flowc/s", "pytorch/s", "flowc/pytorch", "load (before-after)"))
for r in rows:
    print(fmt.format(r["flow"], r["batch"], r["what"], "%.4g" % float(r["flowc_per_s"]),
                     "%.4g" % float(r["pytorch_per_s"]), "%.3f" % float(r["ratio"]),
                     r["load_before"] + "-" + r["load_after"]))
EOF
echo "(table also in $RESULTS; peer JSON in $OUTDIR/peer-*.json)"
