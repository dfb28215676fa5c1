#!/usr/bin/env bash
# Decoding while the CPU is shared, lamina vs llama.cpp, side by side in one run: each on
# the same GGUF file (default: the embedded SmolLM2-135M-Instruct Q4_1), 2 threads, a
# 64-token prompt and 128 decoded tokens, first idle, then beside two `nice -n 19` busy
# loops (one per core of this machine), runs alternating. Reports each one's loaded decode
# speed as a ratio of its idle speed.
#
#   bash scripts/bench_contention.sh [ROUNDS] [MODEL.gguf]
#
# llama.cpp comes from llama-cpp-python, installed once into target/mlx-env/llama-venv
# (scripts/gguf_peers.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3}
source scripts/gguf_peers.sh "${2:-}"
log=$(mktemp)
busy=()
start_load() { for _ in 1 2; do nice -n 19 sh -c 'while :; do :; done' & busy+=($!); done; }
stop_load() { kill "${busy[@]}" 2>/dev/null || true; wait "${busy[@]}" 2>/dev/null || true; busy=(); }
trap stop_load EXIT
lamina() { ./target/release/examples/bench_generate --model "$model" --prompt-len 64 --gen-len 128 --runs 1; }
cpp() { "$venv/bin/python" scripts/bench_gguf.py "$model" --prompt-len 64 --gen-len 128 --runs 1; }
for round in $(seq "$rounds"); do
  lamina | sed 's/^/idle /' | tee -a "$log"
  cpp | sed 's/^/idle /' | tee -a "$log"
  start_load
  lamina | sed 's/^/loaded /' | tee -a "$log"
  cpp | sed 's/^/loaded /' | tee -a "$log"
  stop_load
done
python3 - "$log" <<'PY'
import re, statistics, sys
rows = {}
for line in open(sys.argv[1]):
    m = re.match(r"(\w+) (lamina|llama\.cpp) .*decode_tps=([\d.]+)", line)
    if m:
        rows.setdefault((m[2], m[1]), []).append(float(m[3]))
for who in ("lamina", "llama.cpp"):
    idle, loaded = statistics.median(rows[(who, "idle")]), statistics.median(rows[(who, "loaded")])
    print(f"median {who}: decode idle {idle:.1f} tok/s, beside two busy loops {loaded:.1f} tok/s "
          f"({loaded / idle:.2f}x idle)")
PY
rm -f "$log"
