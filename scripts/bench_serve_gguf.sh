#!/usr/bin/env bash
# Serving a GGUF file, lamina vs llama.cpp's own `llama-server`, side by side in one run:
# the same file (default: the embedded SmolLM2-135M-Instruct Q4_1), 2 threads each,
# llama-server with continuous batching and 16 slots (`-np 16 -cb`, as lamina's
# `--max-batch 16`); 1, 4 and 16 concurrent greedy chat streams of up to 64 tokens driven
# by the official `openai` client (scripts/bench_serve.py). Prints time to first token,
# tokens/s per stream and in total, peak RSS of each server, the ratios, and whether
# greedy answers are the same before and after the load.
#
#   bash scripts/bench_serve_gguf.sh [MODEL.gguf]
#
# llama-server is built once for this CPU (AVX-512 without AMX where the CPU has it) from
# the llama.cpp sources llama-cpp-python vendors (scripts/llama_cpp.sh: ~10 minutes).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/prereqs.sh
cargo build -q --release --example serve
model=${1:-$(find target/mlx-env -name 'SmolLM2-135M-Instruct.Q4_1.gguf' | head -1)}
source scripts/llama_cpp.sh
llama_cpp native
venv=target/mlx-env/serve-venv
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c "import openai" 2>/dev/null; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check openai
fi
log=$(mktemp)
source scripts/bench_serve_lib.sh

./target/release/examples/serve --model "$model" --port 8183 --max-batch 16 --served-model-name default 2>/dev/null &
bench_server $! 8183 lamina "$venv/bin/python"
# 16 slots of 1024 tokens each (a chat here is under 100).
"$llama_bin/llama-server" -m "$model" --port 8184 -t 2 -np 16 -cb -c 16384 --alias default >/dev/null 2>&1 &
bench_server $! 8184 llama-server "$venv/bin/python"

"$venv/bin/python" scripts/bench_serve.py --summarize "$log"
rm -f "$log"
