#!/usr/bin/env bash
# GGUF generation, lamina vs llama.cpp, side by side in one run: the same file (default:
# the embedded SmolLM2-135M-Instruct Q4_1 GGUF), 2 threads each, a 256-token prompt and 128
# decoded tokens, runs alternating. lamina runs as stored (4-bit, its CPU kernel) and with
# the weights dequantized to f32. Each run is its own process, so peak RSS is the whole
# process's (model load included).
#
#   bash scripts/bench_gguf.sh [ROUNDS] [MODEL.gguf] [--no-f32]
#
# `--no-f32` leaves out the f32 runs (a 1.7B model dequantized takes 7 GB and minutes).
# llama.cpp is its own `llama-bench` (`-p 256`, then `-n 128` at depth 256: decoding after
# the prompt, as lamina's; 2 threads), built once for this CPU (AVX-512 without AMX where
# the CPU has it) by scripts/llama_cpp.sh: about 10 minutes on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3}
bash scripts/prereqs.sh
cargo build --release --example bench_generate
model=${2:-$(find target/mlx-env -name 'SmolLM2-135M-Instruct.Q4_1.gguf' | head -1)}
f32=${3:-}
source scripts/llama_cpp.sh
llama_cpp native
log=$(mktemp)
peak() { /usr/bin/time -f "peak_rss_kb=%M" "$@" 2>&1; }
for round in $(seq "$rounds"); do
  peak ./target/release/examples/bench_generate --model "$model" --runs 1 | sed 's/^/q4 /' | tee -a "$log"
  llama_bench_rates "$model" | sed 's/^/cpp /' | tee -a "$log"
  if [ "$f32" != --no-f32 ]; then
    peak ./target/release/examples/bench_generate --model "$model" --dtype f32 --runs 1 | sed 's/^/f32 /' | tee -a "$log"
  fi
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
for t in (t for t in ("q4", "f32") if t in med):
    print(f"ratio {names[t]}/llama.cpp: prefill {med[t]['prefill'] / med['cpp']['prefill']:.2f}, "
          f"decode {med[t]['decode'] / med['cpp']['decode']:.2f}, peak RSS {med[t]['rss'] / med['cpp']['rss']:.2f}")
PY
rm -f "$log"
