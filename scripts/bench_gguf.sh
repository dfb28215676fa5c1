#!/usr/bin/env bash
# GGUF generation, lamina vs llama.cpp, side by side in one run: the same file (default:
# the embedded SmolLM2-135M-Instruct Q4_1 GGUF), 2 threads each, a 256-token prompt and 128
# decoded tokens, runs alternating. lamina runs as stored (4-bit, its CPU kernel) and with
# the weights dequantized to f32. Each run is its own process, so peak RSS is the whole
# process's (model load included).
#
#   bash scripts/bench_gguf.sh [ROUNDS] [MODEL.gguf]
#
# llama.cpp is its own `llama-bench` (-p 256 -n 128 -t 2), built once for this CPU
# (AVX-512 without AMX) by scripts/llama_cpp.sh: about 10 minutes on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3}
bash scripts/prereqs.sh
cargo build --release --example bench_generate
model=${2:-$(find target/mlx-env -name 'SmolLM2-135M-Instruct.Q4_1.gguf' | head -1)}
source scripts/llama_cpp.sh
llama_cpp native
log=$(mktemp)
peak() { /usr/bin/time -f "peak_rss_kb=%M" "$@" 2>&1; }
# llama-bench's rates as bench_generate prints them, and its peak RSS.
llama_bench() {
  local json rss
  json=$(mktemp) rss=$(mktemp)
  /usr/bin/time -f "peak_rss_kb=%M" -o "$rss" \
    "$llama_bin/llama-bench" -m "$model" -p 256 -n 128 -t 2 -r 1 -o json >"$json" 2>/dev/null
  python3 - "$json" <<'PY'
import json, sys
runs = json.load(open(sys.argv[1]))
rate = lambda p, g: next(r["avg_ts"] for r in runs if r["n_prompt"] == p and r["n_gen"] == g)
print(f"prefill_tps={rate(256, 0):.2f} decode_tps={rate(0, 128):.2f}")
PY
  cat "$rss"
  rm -f "$json" "$rss"
}
for round in $(seq "$rounds"); do
  peak ./target/release/examples/bench_generate --model "$model" --runs 1 | sed 's/^/q4 /' | tee -a "$log"
  llama_bench | sed 's/^/cpp /' | tee -a "$log"
  peak ./target/release/examples/bench_generate --model "$model" --dtype f32 --runs 1 | sed 's/^/f32 /' | tee -a "$log"
done
python3 - "$log" <<'PY'
import re, statistics, sys
rows = {}
for line in open(sys.argv[1]):
    tag, rest = line.split(" ", 1)
    m = re.search(r"prefill_tps=([\d.]+) decode_tps=([\d.]+)", rest)
    if m:
        rows.setdefault(tag, {}).setdefault("prefill", []).append(float(m[1]))
        rows[tag].setdefault("decode", []).append(float(m[2]))
    m = re.search(r"peak_rss_kb=(\d+)", rest)
    if m:
        rows.setdefault(tag, {}).setdefault("rss", []).append(int(m[1]) / 1024)
names = {"q4": "lamina 4-bit", "cpp": "llama.cpp", "f32": "lamina f32"}
med = {t: {k: statistics.median(v) for k, v in d.items()} for t, d in rows.items()}
for t, d in med.items():
    print(f"median {names[t]}: prefill {d['prefill']:.1f} tok/s, decode {d['decode']:.1f} tok/s, peak RSS {d['rss']:.0f} MiB")
for t in ("q4", "f32"):
    print(f"ratio {names[t]}/llama.cpp: prefill {med[t]['prefill'] / med['cpp']['prefill']:.2f}, "
          f"decode {med[t]['decode'] / med['cpp']['decode']:.2f}, peak RSS {med[t]['rss'] / med['cpp']['rss']:.2f}")
PY
rm -f "$log"
