#!/usr/bin/env bash
# The README's main command: prerequisites, then lamina's main job.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/prereqs.sh
cargo run --release --example smoke -- "$@"
