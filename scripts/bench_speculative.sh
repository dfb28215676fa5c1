#!/usr/bin/env bash
# Speculative decoding, measured where it should win: SmolLM2-135M-Instruct in f32 (the
# embedded GGUF dequantized; decoding is bound by reading 540 MB of weights a token) on a
# "repeat this paragraph with one word changed" prompt, greedy, 80 new tokens at most:
# plain decoding, prompt lookup (n-grams up to 3, 5 drafts a round) and the same model's
# Q4_1 GGUF as a draft model (3 drafts a round). Runs alternate; prints each run, the
# medians, the ratios to plain decoding and the drafts' acceptance.
#
#   bash scripts/bench_speculative.sh [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3}
bash scripts/prereqs.sh
cargo build --release --example generate
model=$(find target/mlx-env -name 'SmolLM2-135M-Instruct.Q4_1.gguf' | head -1)
prompt="Repeat this paragraph exactly, changing only the word blue to red: The sky over the harbor was blue \
that morning, and the fishermen pulled their boats onto the sand while the gulls circled overhead. Nobody \
spoke much; the water was calm and the air smelled of salt and diesel."
log=$(mktemp)
for round in $(seq "$rounds"); do
  for mode in plain lookup draft; do
    case $mode in
      plain) flags=() ;;
      lookup) flags=(--prompt-lookup 3 --num-draft-tokens 5) ;;
      draft) flags=(--draft-model "$model" --num-draft-tokens 3) ;;
    esac
    ./target/release/examples/generate --model "$model" --dtype f32 --prompt "$prompt" --max-new-tokens 80 \
      --json "${flags[@]}" | sed "s/^/$mode /" | tee -a "$log" | cut -c1-120
  done
done
python3 - "$log" <<'PY'
import json, statistics, sys
runs = {}
for line in open(sys.argv[1]):
    mode, _, body = line.partition(" ")
    runs.setdefault(mode, []).append(json.loads(body))
texts = {m: {r["text"] for r in rs} for m, rs in runs.items()}
same = all(t == texts["plain"] for t in texts.values())
plain = statistics.median(r["generation_tokens_per_s"] for r in runs["plain"])
for mode, rs in runs.items():
    tps = statistics.median(r["generation_tokens_per_s"] for r in rs)
    drafted = sum(r["draft_tokens"] for r in rs)
    accepted = sum(r["accepted_draft_tokens"] for r in rs)
    rate = f", {100 * accepted / drafted:.0f}% of drafts accepted" if drafted else ""
    print(f"{mode:>6}: median {tps:.1f} tok/s, {tps / plain:.2f}x plain{rate}; peak {max(r['peak_memory_bytes'] for r in rs) / 1e6:.0f} MB")
print("same text as plain decoding:", same)
PY
