#!/usr/bin/env bash
# The README's test command, which CI runs too: prerequisites, then every test of every
# crate (unit, integration, doc tests), offline; then the starter project as a user builds
# it.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/prereqs.sh
cargo test --workspace "$@"
# The kernels at every instruction-set tier below this machine's own (each tier's file is
# tested by forcing it; the run above tested the machine's own, and forcing a tier it lacks
# would only repeat that run), and with one and three threads.
flags=$(grep -m1 '^flags' /proc/cpuinfo 2>/dev/null || true)
has() { for flag in "$@"; do grep -qw "$flag" <<<"$flags" || return 1; done; }
below=(portable)
if has avx512f avx512dq avx512bw avx512vl; then below+=(avx2); fi
if has avx512f avx512dq avx512bw avx512vl avx512vbmi; then below+=(avx512); fi
for isa in "${below[@]}"; do
  LAMINA_ISA=$isa cargo test -q -p lamina-kernels "$@"
done
LAMINA_THREADS=1 cargo test -q -p lamina-kernels "$@"
LAMINA_THREADS=3 cargo test -q -p lamina-kernels "$@"
bash scripts/check_template.sh
