#!/usr/bin/env bash
# Serving, lamina vs mlx_lm.server (mlx-lm 0.32.2), side by side in one run: the same
# model (SmolLM2-135M-Instruct, exported from the embedded GGUF and quantized to MLX
# 4-bit, group 32, by mlx_lm.convert), the same MLX 0.32.2 and OpenBLAS; 1, 4 and 16
# concurrent greedy chat streams of up to 64 tokens driven by the official `openai`
# client. Prints time to first token, tokens/s per stream and in total, peak RSS of each
# server, the ratios, and whether greedy answers are the same before and after the load.
#
#   bash scripts/bench_serve.sh            (SERVERS=lamina for lamina's side alone)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/prereqs.sh
cargo build --release --example serve --example bench_generate
env_dir=target/mlx-env
venv=$env_dir/bench-venv
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c "import mlx_lm, openai" 2>/dev/null; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check mlx==0.32.2 mlx-cpu==0.32.2 mlx-lm==0.32.2 openai
fi
f32=$env_dir/smollm2-135m-f32
[ -f "$f32/model.safetensors" ] || ./target/release/examples/bench_generate --dtype f32 --export "$f32"
model=$env_dir/smollm2-135m-mlx-4bit
# transformers' strict config classes refuse explicit nulls (`"hidden_act": null`).
"$venv/bin/python" - "$f32/config.json" <<'PY'
import json, sys
config = json.load(open(sys.argv[1]))
json.dump({k: v for k, v in config.items() if v is not None}, open(sys.argv[1], "w"), indent=2)
PY
[ -f "$model/model.safetensors" ] || "$venv/bin/python" -m mlx_lm convert --hf-path "$f32" --mlx-path "$model" -q --q-bits 4 --q-group-size 32
openblas=$(ldconfig -p | awk '/libopenblas\.so\.0 /{print $NF; exit}')
log=$(mktemp)
source scripts/bench_serve_lib.sh

servers=${SERVERS:-lamina mlx-lm}
if [[ " $servers " == *" lamina "* ]]; then
  ./target/release/examples/serve --model "$model" --port 8181 --served-model-name default 2>/dev/null &
  bench_server $! 8181 lamina "$venv/bin/python"
fi
if [[ " $servers " == *" mlx-lm "* ]]; then
  LD_PRELOAD="$openblas" "$venv/bin/python" -m mlx_lm server --model "$model" --port 8182 2>/dev/null &
  bench_server $! 8182 mlx-lm "$venv/bin/python" --model "$model"
fi

[[ " $servers " == *" lamina "* && " $servers " == *" mlx-lm "* ]] || { rm -f "$log"; exit 0; }
python3 scripts/bench_serve.py --summarize "$log"
rm -f "$log"
