#!/usr/bin/env bash
# frugal vs llama.cpp on the same GGUF files: llama-bench and `frugal bench` run back to back
# for each model and thread count (same -p/-n/-r), then a table of tokens/s and their ratios.
#
#   tools/bench_vs_llamacpp.sh [-p 512] [-n 128] [-r 3] [-t 1,2] [-d 0] MODEL.gguf [MODEL.gguf ...]
#
# Environment: LLAMA_BENCH (default /work/llamacpp/build/bin/llama-bench; build it from the
# llama-cpp-python sdist's vendor/llama.cpp with `cmake -B BUILD -DGGML_NATIVE=ON` (native SIMD,
# OpenMP: llama.cpp's best on this CPU) and `cmake --build BUILD --target llama-bench`), FRUGAL (default target/release/frugal, or
# $CARGO_TARGET_DIR/release/frugal), OUT (folder for the raw JSON, default a temp folder).
# Benchmark models with real shapes: tools/make_bench_models.py.
#
# llama-bench's tests and frugal's are the same: ppP prefills P random tokens into an empty
# cache as one batch; tgN decodes N single tokens from an empty cache; one warm-up run each.
# With -d D both first fill the cache with D tokens (untimed) and test from there.
# Before the models, `frugal bench --memory` measures read bandwidth at each thread count (the
# header line); each frugal run reports its tg weight traffic as a fraction of the bandwidth
# it measures right before and after each of its tg repetitions (the machine's drifts over
# minutes), over the steady repetitions (both measurements within 10%; column "steady").
# llama-bench is bracketed the same way, by `frugal bench --memory` at its thread count before
# and after it: column "llama BW%" is its tg tokens/s times frugal's active bytes per token
# against the mean of the two, and "llama GB/s" shows both (a run whose two measurements differ
# by more than 10% straddled a change of the machine's state: its ratio compares unlike runs).
set -euo pipefail

P=512 N=128 R=3 THREADS=2 D=0
while getopts "p:n:r:t:d:" opt; do
    case $opt in
        d) D=$OPTARG ;;
        p) P=$OPTARG ;;
        n) N=$OPTARG ;;
        r) R=$OPTARG ;;
        t) THREADS=$OPTARG ;;
        *) sed -n '2,6p' "$0"; exit 2 ;;
    esac
done
shift $((OPTIND - 1))
if [ $# -eq 0 ]; then
    sed -n '2,6p' "$0"
    exit 2
fi

ROOT=$(cd "$(dirname "$0")/.." && pwd)
LLAMA_BENCH=${LLAMA_BENCH:-/work/llamacpp/build/bin/llama-bench}
FRUGAL=${FRUGAL:-${CARGO_TARGET_DIR:-$ROOT/target}/release/frugal}
OUT=${OUT:-$(mktemp -d)}
mkdir -p "$OUT"
for exe in "$LLAMA_BENCH" "$FRUGAL"; do
    [ -x "$exe" ] || { echo "not found: $exe" >&2; exit 1; }
done
# llama-bench loads libllama/libggml from its own folder.
export LD_LIBRARY_PATH="$(dirname "$LLAMA_BENCH")${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"

MAX_T=$(echo "$THREADS" | tr ',' '\n' | sort -n | tail -1)
echo "memory bandwidth (1..$MAX_T threads) -> $OUT/memory.json" >&2
"$FRUGAL" bench --memory --threads "$MAX_T" --json > "$OUT/memory.json"

for model in "$@"; do
    name=$(basename "$model" .gguf)
    for t in ${THREADS//,/ }; do
        echo "$name, $t threads: llama-bench" >&2
        "$FRUGAL" bench --memory --threads "$t" --json > "$OUT/$name.t$t.llama.before.json"
        "$LLAMA_BENCH" -m "$model" -p "$P" -n "$N" -r "$R" -t "$t" -d "$D" -o json > "$OUT/$name.t$t.llama.json"
        "$FRUGAL" bench --memory --threads "$t" --json > "$OUT/$name.t$t.llama.after.json"
        echo "$name, $t threads: frugal bench" >&2
        "$FRUGAL" bench --model "$model" -p "$P" -n "$N" -r "$R" -d "$D" --threads "$t" --json \
            > "$OUT/$name.t$t.frugal.json"
    done
done

python3 - "$OUT" "$THREADS" "$D" "$@" <<'EOF'
import json, os, sys
out, threads, models = sys.argv[1], sys.argv[2].split(","), sys.argv[4:]
mem = json.load(open(os.path.join(out, "memory.json")))
print("read bandwidth: " + ", ".join(f"{r['threads']} thr {r['best_gbs']:.2f} GB/s" for r in mem["read"]))
print(f"{'model':28} {'thr':>3} {'test':>14} {'llama.cpp t/s':>16} {'frugal t/s':>16} {'ratio':>6} "
      f"{'frugal BW%':>10} {'of GB/s':>8} {'steady':>6} {'llama BW%':>9} {'llama GB/s':>12}")
def probe(path, t):
    # The t-thread row of a `frugal bench --memory --json` (best of its passes).
    return next(r["best_gbs"] for r in json.load(open(path))["read"] if r["threads"] == int(t))
for m in models:
    name = os.path.basename(m)[:-5] if m.endswith(".gguf") else os.path.basename(m)
    for t in threads:
        llama = json.load(open(os.path.join(out, f"{name}.t{t}.llama.json")))
        frugal = json.load(open(os.path.join(out, f"{name}.t{t}.frugal.json")))
        around = [probe(os.path.join(out, f"{name}.t{t}.llama.{w}.json"), t) for w in ("before", "after")]
        for test in frugal["tests"]:
            # "tg128", or "tg128 @ d4096" with a depth.
            kind, n = test["test"][:2], int(test["test"][2:].split(" @ ")[0])
            ref = next(r for r in llama
                       if (r["n_prompt"], r["n_gen"]) == ((n, 0) if kind == "pp" else (0, n))
                       and r.get("n_depth", 0) == int(sys.argv[3]))
            frac = frugal["bandwidth_fraction"] if kind == "tg" else None
            # The bandwidth frugal measured around each steady tg repetition (mean), and how
            # many repetitions were steady (bandwidth before and after within 10%).
            bw = frugal["memory_read_gbs"] if kind == "tg" else None
            steady = (f"{frugal['steady_repetitions']}/{len(test['samples'])}"
                      if kind == "tg" and "steady_repetitions" in frugal else "")
            llama_frac = (ref["avg_ts"] * frugal["active"]["per_token"] / 1e9 / (sum(around) / 2)
                          if kind == "tg" else None)
            llama_bw = f"{around[0]:.1f}–{around[1]:.1f}" if kind == "tg" else ""
            print(f"{name:28} {t:>3} {test['test']:>14} "
                  f"{ref['avg_ts']:>9.2f} ± {ref['stddev_ts']:<5.2f}"
                  f"{test['mean']:>9.2f} ± {test['sd']:<5.2f}"
                  f"{test['mean'] / ref['avg_ts']:>6.2f} "
                  f"{'' if frac is None else f'{100 * frac:>9.0f}%'}"
                  f"{'' if bw is None else f'{bw:>9.2f}'}"
                  f"{steady:>7}"
                  f"{'' if llama_frac is None else f'{100 * llama_frac:>9.0f}%'}"
                  f"{llama_bw:>13}")
    print(f"{'':28} active bytes/token {frugal['active']['per_token'] / 1e9:.3f} GB, "
          f"weights {frugal['weight_bytes'] / 1e9:.2f} GB")
EOF
echo "raw JSON: $OUT" >&2
