#!/usr/bin/env bash
# The README's test command, which CI runs too: prerequisites, then every test of every
# crate (unit, integration, doc tests), offline; then the starter project as a user builds
# it.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/prereqs.sh
cargo test --workspace "$@"
# The kernels at every instruction-set tier this machine can run below its own (each
# tier's file is tested by forcing it), and with one and three threads.
for isa in portable avx2 avx512; do
  LAMINA_ISA=$isa cargo test -q -p lamina-kernels "$@"
done
LAMINA_THREADS=1 cargo test -q -p lamina-kernels "$@"
LAMINA_THREADS=3 cargo test -q -p lamina-kernels "$@"
bash scripts/check_template.sh
