#!/usr/bin/env bash
# Decoding speed with and without a JSON schema, on the embedded SmolLM2-135M (Q4_1 GGUF):
# the same prompt, greedy, runs alternating; prints each run, the medians and the ratio.
# The schema asks for a list of 12 people, so the constrained answer is as long as the
# free one (96 new tokens each).
#
#   bash scripts/bench_structured.sh [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-5}
bash scripts/prereqs.sh
cargo build --release --example generate
model=$(find target/mlx-env -name 'SmolLM2-135M-Instruct.Q4_1.gguf' | head -1)
schema='{"type":"array","minItems":12,"maxItems":12,"items":{"type":"object","additionalProperties":false,
"required":["name","age","city"],"properties":{"name":{"type":"string"},"age":{"type":"integer"},"city":{"type":"string"}}}}'
prompt="List twelve people with their name, age and city, as JSON."
log=$(mktemp)
for round in $(seq "$rounds"); do
  for mode in free schema; do
    flags=()
    [ "$mode" = schema ] && flags=(--json-schema "$schema")
    ./target/release/examples/generate --model "$model" --prompt "$prompt" --max-new-tokens 96 \
      --json "${flags[@]}" | sed "s/^/$mode /" | tee -a "$log" | cut -c1-160
  done
done
python3 - "$log" <<'PY'
import json, statistics, sys
runs = {"free": [], "schema": []}
for line in open(sys.argv[1]):
    mode, _, body = line.partition(" ")
    out = json.loads(body)
    runs[mode].append((out["generation_tokens_per_s"], len(out["tokens"])))
med = {m: statistics.median(t for t, _ in r) for m, r in runs.items()}
for m, r in runs.items():
    print(f"{m:>6}: median {med[m]:.1f} tok/s over {[n for _, n in r]} tokens")
print(f"schema / free: {med['schema'] / med['free']:.2f}x")
PY
