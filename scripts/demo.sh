#!/usr/bin/env bash
# The README's main command: prerequisites, then lamina's main job: a chat answer from
# the embedded default model (SmolLM2-135M-Instruct, installed by the build), offline.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/prereqs.sh
cargo run --release --example generate -- "$@"
