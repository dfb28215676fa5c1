#!/usr/bin/env bash
# Half-precision weights on the CPU, side by side in one run: SmolLM2-135M-Instruct (the
# embedded GGUF) saved in f32 and in bf16; lamina on both, and mlx-lm 0.32.2 on the bf16
# folder (same MLX library, OpenBLAS in effect); prompt processing (256 tokens) and
# decoding (128 tokens), runs alternating. Prints each run, the medians and the ratios
# (lamina bf16 against lamina f32 and against mlx-lm bf16).
#
#   bash scripts/bench_half.sh [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3}
bash scripts/prereqs.sh
cargo build --release --example bench_generate
env_dir=target/mlx-env
venv=$env_dir/bench-venv
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c "import mlx_lm" 2>/dev/null; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check mlx==0.32.2 mlx-cpu==0.32.2 mlx-lm==0.32.2
fi
for dtype in f32 bf16; do
  model=$env_dir/smollm2-135m-$dtype
  [ -f "$model/model.safetensors" ] || ./target/release/examples/bench_generate --dtype "$dtype" --export "$model"
done
openblas=$(ldconfig -p | awk '/libopenblas\.so\.0 /{print $NF; exit}')
log=$(mktemp)
for round in $(seq "$rounds"); do
  ./target/release/examples/bench_generate --model "$env_dir/smollm2-135m-f32" --runs 1 \
    | sed 's/^lamina /lamina-f32 /' | tee -a "$log"
  ./target/release/examples/bench_generate --model "$env_dir/smollm2-135m-bf16" --runs 1 \
    | sed 's/^lamina /lamina-bf16 /' | tee -a "$log"
  LD_PRELOAD="$openblas" "$venv/bin/python" scripts/bench_generate.py "$env_dir/smollm2-135m-bf16" --runs 1 \
    | sed 's/^mlx-lm /mlx-lm-bf16 /' | tee -a "$log"
done
python3 - "$log" <<'PY'
import re, statistics, sys
rows = {k: {"prefill": [], "decode": []} for k in ("lamina-f32", "lamina-bf16", "mlx-lm-bf16")}
for line in open(sys.argv[1]):
    m = re.match(r"(lamina-f32|lamina-bf16|mlx-lm-bf16) prefill_tps=([\d.]+) decode_tps=([\d.]+)", line)
    if m:
        rows[m[1]]["prefill"].append(float(m[2])); rows[m[1]]["decode"].append(float(m[3]))
med = {k: {m: statistics.median(v) for m, v in d.items()} for k, d in rows.items()}
for k in med:
    print(f"median {k}: prefill {med[k]['prefill']:.1f} tok/s, decode {med[k]['decode']:.2f} tok/s")
for other in ("lamina-f32", "mlx-lm-bf16"):
    print(f"ratio lamina-bf16/{other}: prefill {med['lamina-bf16']['prefill'] / med[other]['prefill']:.3f}, "
          f"decode {med['lamina-bf16']['decode'] / med[other]['decode']:.3f}")
PY
rm -f "$log"
