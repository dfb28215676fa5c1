#!/usr/bin/env bash
# The ~1.7B row of the GGUF benchmarks: a SmolLM2-1.7B-shaped file (random F16 weights,
# the embedded file's tokenizer; scripts/make_large_gguf.py, gguf-py) quantized to Q4_K_M
# by llama.cpp's own llama-quantize (made once into target/mlx-env: ~1 GB, a few minutes),
# then lamina against llama-bench on it as scripts/bench_gguf.sh runs them (prefill of 256
# tokens, 128 decoded after it, peak RSS; no f32 runs).
#
#   bash scripts/bench_large.sh [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/prereqs.sh
source scripts/llama_cpp.sh
llama_cpp native
large=target/mlx-env/smollm2-1.7b-shaped-q4_k_m.gguf
if [ ! -f "$large" ]; then
  venv=target/mlx-env/gguf-venv
  if ! "$venv/bin/python" -c "import gguf, numpy" 2>/dev/null; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check gguf numpy
  fi
  f16=target/mlx-env/smollm2-1.7b-shaped-f16.gguf
  "$venv/bin/python" scripts/make_large_gguf.py "$(find target/mlx-env -name 'SmolLM2-135M-Instruct.Q4_1.gguf' | head -1)" "$f16"
  LD_LIBRARY_PATH=$llama_bin "$llama_bin/llama-quantize" "$f16" "$large.part" Q4_K_M 2 >/dev/null 2>&1
  mv "$large.part" "$large"
  rm -f "$f16"
fi
bash scripts/bench_gguf.sh "${1:-1}" "$large" --no-f32
