#!/usr/bin/env bash
# Thread scaling of flowc: `flowc bench --threads 1` and `--threads 2` on the
# benchmark flows of ../shared/bench/, in alternating pairs (1 then 2), so
# that both sides of a pair see the same state of the machine. Prints, per
# flow and measurement, the medians of each side and the median of the
# pairs' ratios (2-thread rate / 1-thread rate): once from each run's
# median rate, once from each run's fastest run (`*_best_per_s`: other
# load on a shared host only slows a run, and a 2-thread run, which needs
# both CPUs at once, more often than a 1-thread run).
#
# Usage: scripts/bench_threads.sh [small] [fashion] [moons] [cifar10]
#   (default: small fashion)
# Environment:
#   PAIRS=6               alternating pairs
#   ITERS=20              timed runs per measurement (`flowc bench --iters`):
#                         a 2-thread run needs both CPUs at once and suffers
#                         more from other load than a 1-thread run; the median
#                         of more runs is less moved by it
#   FLOWC_SHARED=../shared  where bench/ is
# Run it alone on the machine.
set -euo pipefail

cd "$(dirname "$0")/.."
PAIRS=${PAIRS:-6}
ITERS=${ITERS:-20}
SHARED=${FLOWC_SHARED:-../shared}
TARGET=${CARGO_TARGET_DIR:-target}
if [ $# -gt 0 ]; then FLOWS=("$@"); else FLOWS=(small fashion); fi
flow_name() { case $1 in moons) echo moons ;; *) echo "realnvp_$1" ;; esac; }
batch_of() { case $1 in moons) echo 512 ;; *) echo 64 ;; esac; }
for f in "${FLOWS[@]}"; do
    case $f in small | fashion | moons | cifar10) ;; *) echo "unknown flow '$f' (small, fashion, moons, cifar10)" >&2; exit 2 ;; esac
    [ -f "$SHARED/bench/$(flow_name "$f").flow" ] || { echo "missing $SHARED/bench/$(flow_name "$f").flow" >&2; exit 2; }
done

echo "== building flowc" >&2
cargo build --release >&2
FLOWC=$TARGET/release/flowc
OUT=$TARGET/bench_threads.jsonl
: >"$OUT"
LOAD_BEFORE=$(cut -d' ' -f1 /proc/loadavg)
for pair in $(seq "$PAIRS"); do
    for f in "${FLOWS[@]}"; do
        for t in 1 2; do
            echo "== pair $pair: $(flow_name "$f"), $t thread(s)" >&2
            "$FLOWC" bench "$SHARED/bench/$(flow_name "$f").flow" --batch "$(batch_of "$f")" \
                --iters "$ITERS" --threads "$t" --format json | tee -a "$OUT" >&2
        done
    done
done

echo
echo "examples/s, $PAIRS alternating pairs, --iters $ITERS, $(nproc) cpus," \
    "load $LOAD_BEFORE before, $(cut -d' ' -f1 /proc/loadavg) after"
python3 - "$OUT" <<'EOF'
import json, statistics, sys
runs = [json.loads(l) for l in open(sys.argv[1])]
fmt = "| {:<16} | {:<10} | {:>10} | {:>10} | {:>8} | {} |"
flows = list(dict.fromkeys(r["flow"] for r in runs))
for stat, suffix in (("median", "_per_s"), ("fastest", "_best_per_s")):
    print(f"\nFrom each bench's {stat} run:")
    print(fmt.format("flow", "what", "1 thread", "2 threads", "ratio", "pairs"))
    print("|" + "|".join("-" * (w + 2) for w in (16, 10, 10, 10, 8, 5)) + "|")
    for flow in flows:
        one = [r for r in runs if r["flow"] == flow and r["threads"] == 1]
        two = [r for r in runs if r["flow"] == flow and r["threads"] == 2]
        for what in ("density", "sample", "train"):
            key = what + suffix
            pairs = [b[key] / a[key] for a, b in zip(one, two)]
            print(fmt.format(flow, what, f"{statistics.median(r[key] for r in one):.1f}",
                             f"{statistics.median(r[key] for r in two):.1f}",
                             f"{statistics.median(pairs):.2f}x",
                             " ".join(f"{p:.2f}" for p in pairs)))
EOF
