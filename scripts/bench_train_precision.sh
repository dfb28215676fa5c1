#!/usr/bin/env bash
# Mixed precision against f32 on the same fine-tuning run: SmolLM2-135M (the embedded
# model dequantized, as --dtype f32), LoRA on the last 8 blocks, the shipped harbor chat
# dataset with masked prompts, STEPS steps each (default 20), one run after the other.
# Prints, per precision: mean step time, tokens/s, MLX peak memory, the process's peak
# RSS, the final loss, and the largest per-step loss difference against f32.
set -euo pipefail
cd "$(dirname "$0")/.."
STEPS=${STEPS:-20}
cargo build --release --example train_lora >/dev/null 2>&1 || cargo build --release --example train_lora
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT
for p in f32 bf16 f16; do
    /usr/bin/time -f "%M" -o "$OUT/$p.rss" target/release/examples/train_lora --dtype f32 --precision "$p" \
        --data examples/data/harbor --mask-prompt --steps "$STEPS" --eval-every 0 --save-every 0 \
        --out "$OUT/adapters-$p" > "$OUT/$p.log" 2>&1 || { cat "$OUT/$p.log"; exit 1; }
done
python3 - "$OUT" "$STEPS" <<'PY'
import re, sys
out, steps = sys.argv[1], int(sys.argv[2])
def read(p):
    text = open(f"{out}/{p}.log").read()
    losses = [float(m) for m in re.findall(r"^step +\d+  loss ([0-9.NaNinf]+)", text, re.M)]
    tps = [float(m) for m in re.findall(r"^step .* ([0-9.]+) tok/s", text, re.M)]
    peak = float(re.search(r"peak memory ([0-9.]+) MiB", text).group(1))
    rss = int(open(f"{out}/{p}.rss").read().split()[-1]) / 1024
    return losses, tps, peak, rss
base = read("f32")
print(f"{'precision':<10}{'tok/s':>8}{'x f32':>8}{'MLX peak MiB':>14}{'x f32':>8}{'RSS MiB':>9}{'final loss':>12}{'max |dloss|/loss':>18}")
for p in ["f32", "bf16", "f16"]:
    losses, tps, peak, rss = read(p)
    mean = sum(tps[1:]) / max(len(tps) - 1, 1)
    base_mean = sum(base[1][1:]) / max(len(base[1]) - 1, 1)
    drift = max(abs(a - b) / abs(a) for a, b in zip(base[0], losses))
    print(f"{p:<10}{mean:>8.1f}{mean / base_mean:>8.2f}{peak:>14.0f}{peak / base[2]:>8.2f}{rss:>9.0f}{losses[-1]:>12.4f}{drift:>18.3f}")
PY
