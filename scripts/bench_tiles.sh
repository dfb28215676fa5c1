#!/usr/bin/env bash
# The prompt tiles of GGUF's block formats on one core (crates/lamina-kernels/ports/
# bench_tiles.cpp: the tier this machine picks, no MLX runtime), for each format given (by
# default the K-quants and IQ4_XS at 2048 x 2048 against 256 rows of x, and Q5_0 at Gemma 3's
# k = 640). `LAMINA_ISA` caps the tier as it does for lamina.
#
#   bash scripts/bench_tiles.sh [FORMAT [N K ROWS [REPEATS]]]
set -euo pipefail
cd "$(dirname "$0")/.."

include=$(find target/mlx-env -path '*/mlx/include' -type d 2>/dev/null | head -1)
if [ -z "$include" ]; then
  cargo build -q -p mlx-sys
  include=$(find target/mlx-env -path '*/mlx/include' -type d | head -1)
fi
k=crates/lamina-kernels
mkdir -p target/bench-tiles
g++ -std=c++20 -O3 -fopenmp-simd -isystem "$include" -o target/bench-tiles/bench_tiles "$k/ports/bench_tiles.cpp" \
  "$k"/cpp/{portable,blocks,avx2,avx2_int8,avx2_attention,avx2_blocks,avx2_small_blocks,avx512,avx512_vbmi,avx512_vnni_int8,avx512_vnni_blocks,avx512_vnni_small_blocks,neon,neon_int8,neon_dotprod,dispatch}.cpp
if [ $# -gt 0 ]; then
  target/bench-tiles/bench_tiles "$@"
else
  for format in q4_k q5_k q6_k q3_k q2_k iq4_xs; do target/bench-tiles/bench_tiles "$format"; done
  target/bench-tiles/bench_tiles q5_0 2048 640 256
fi
