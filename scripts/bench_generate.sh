#!/usr/bin/env bash
# Generation speed, lamina vs mlx-lm 0.32.2, side by side in one run: the same model
# (SmolLM2-135M-Instruct, the embedded GGUF dequantized to f32), the same MLX 0.32.2
# library, OpenBLAS in effect for both; prompt processing (256 tokens) and decoding
# (128 tokens), runs alternating. Prints each run, the medians and the ratios.
#
#   bash scripts/bench_generate.sh [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-5}
bash scripts/prereqs.sh
cargo build --release --example bench_generate
env_dir=target/mlx-env
venv=$env_dir/bench-venv
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c "import mlx_lm" 2>/dev/null; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check mlx==0.32.2 mlx-cpu==0.32.2 mlx-lm==0.32.2
fi
model=$env_dir/smollm2-135m-f32
[ -f "$model/model.safetensors" ] || ./target/release/examples/bench_generate --dtype f32 --export "$model"
openblas=$(ldconfig -p | awk '/libopenblas\.so\.0 /{print $NF; exit}')
shim=$(ls -t target/release/build/mlx-sys-*/out/blas-shim/libmlx_blas_shim.so | head -1)
log=$(mktemp)
for round in $(seq "$rounds"); do
  ./target/release/examples/bench_generate --model "$model" --runs 1 | tee -a "$log"
  # mlx-lm as shipped, with OpenBLAS in effect (the wheel's reference BLAS otherwise).
  LD_PRELOAD="$openblas" "$venv/bin/python" scripts/bench_generate.py "$model" --runs 1 | tee -a "$log"
  # mlx-lm with lamina's BLAS shim too: what is left is the difference in the Python/Rust side.
  LD_PRELOAD="$shim:$openblas" "$venv/bin/python" scripts/bench_generate.py "$model" --runs 1 \
    | sed 's/^mlx-lm /mlx-lm+shim /' | tee -a "$log"
done
python3 - "$log" <<'PY'
import re, statistics, sys
rows = {k: {"prefill": [], "decode": []} for k in ("lamina", "mlx-lm", "mlx-lm+shim")}
for line in open(sys.argv[1]):
    m = re.match(r"(lamina|mlx-lm\+shim|mlx-lm) prefill_tps=([\d.]+) decode_tps=([\d.]+)", line)
    if m:
        rows[m[1]]["prefill"].append(float(m[2])); rows[m[1]]["decode"].append(float(m[3]))
med = {k: {m: statistics.median(v) for m, v in d.items()} for k, d in rows.items()}
for k in med:
    print(f"median {k}: prefill {med[k]['prefill']:.1f} tok/s, decode {med[k]['decode']:.2f} tok/s")
for other in ("mlx-lm", "mlx-lm+shim"):
    print(f"ratio lamina/{other}: prefill {med['lamina']['prefill'] / med[other]['prefill']:.3f}, "
          f"decode {med['lamina']['decode'] / med[other]['decode']:.3f}")
PY
rm -f "$log"
