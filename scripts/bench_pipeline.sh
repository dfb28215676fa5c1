#!/usr/bin/env bash
# Pipeline-parallel generation against one process, on this machine: the embedded
# SmolLM2-135M (as stored, Q4_1, and dequantized with --dtype f32), one process and then
# 2 and 3 local ranks started by the launch example, the same greedy 64-token answer.
# Prints per run and rank: the layers held, MLX's peak memory, the process's peak RSS,
# and (rank 0) prefill and decode tok/s. Ranks on one machine share its cores, so the
# speeds measure the pipeline's overhead, not a speed-up; the memory is what each
# machine of a multi-host run would hold.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --example generate --example launch >/dev/null 2>&1 ||
    cargo build --release --example generate --example launch
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT
G=target/release/examples/generate
PROMPT="Write a short poem about the sea."
for dtype in "" f32; do
    flag=${dtype:+--dtype $dtype}
    name=${dtype:-q4_1}
    # shellcheck disable=SC2086
    /usr/bin/time -f "RSS %M" "$G" $flag --max-new-tokens 64 --prompt "$PROMPT" > /dev/null 2> "$OUT/$name-1.log"
    for n in 2 3; do
        # shellcheck disable=SC2086
        target/release/examples/launch -n "$n" /usr/bin/time -f "RSS %M" "$G" $flag --max-new-tokens 64 \
            --prompt "$PROMPT" > "$OUT/$name-$n.out" 2> "$OUT/$name-$n.log"
    done
done
python3 - "$OUT" <<'PY'
import re, sys
out = sys.argv[1]
print(f"{'weights':<8}{'ranks':>6}{'rank':>6}{'layers':>10}{'MLX peak MB':>13}{'RSS MB':>8}{'prefill tok/s':>15}{'decode tok/s':>14}")
for name in ["q4_1", "f32"]:
    for n in [1, 2, 3]:
        text = open(f"{out}/{name}-{n}.log").read()
        speed = re.search(r"prompt tokens at ([0-9.]+) tok/s; \d+ generated at ([0-9.]+) tok/s; peak memory ([0-9.]+) MB", text)
        if n == 1:
            rss = int(re.search(r"RSS (\d+)", text).group(1)) / 1024
            print(f"{name:<8}{1:>6}{0:>6}{'all':>10}{float(speed.group(3)):>13.1f}{rss:>8.0f}{float(speed.group(1)):>15.1f}{float(speed.group(2)):>14.1f}")
            continue
        for rank in range(n):
            m = re.search(rf"\[{rank}\] \[rank {rank}: layers (\d+)\.\.(\d+); peak memory ([0-9.]+) MB\]", text)
            rss = int(re.search(rf"\[{rank}\] RSS (\d+)", text).group(1)) / 1024
            pre = dec = ""
            if rank == 0:
                pre, dec = f"{float(speed.group(1)):.1f}", f"{float(speed.group(2)):.1f}"
            print(f"{name:<8}{n:>6}{rank:>6}{m.group(1) + '..' + m.group(2):>10}{float(m.group(3)):>13.1f}{rss:>8.0f}{pre:>15}{dec:>14}")
PY
