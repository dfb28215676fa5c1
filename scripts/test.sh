#!/usr/bin/env bash
# The README's test command, which CI runs too: prerequisites, then every test of every
# crate (unit, integration, doc tests), offline; then the starter project as a user builds
# it.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/prereqs.sh
cargo test --workspace "$@"
bash scripts/check_template.sh
