#!/usr/bin/env bash
# Runs every instruction-set tier's kernels against the portable tier on their own
# functions (crates/lamina-kernels/ports/tier_check.cpp; no MLX runtime): the x86 tiers
# natively, and the NEON tiers (neon, neon_dotprod: qemu's CPU has the byte dot products)
# cross-compiled for aarch64 with GCC and with clang (static) and run under qemu-aarch64.
# Installs g++-aarch64-linux-gnu, clang and qemu-user when missing.
set -euo pipefail
cd "$(dirname "$0")/.."

source scripts/apt_need.sh
apt_need aarch64-linux-gnu-g++:g++-aarch64-linux-gnu clang++:clang qemu-aarch64:qemu-user

include=$(find target/mlx-env -path '*/mlx/include' -type d 2>/dev/null | head -1)
if [ -z "$include" ]; then
  cargo build -q -p mlx-sys
  include=$(find target/mlx-env -path '*/mlx/include' -type d | head -1)
fi
k=crates/lamina-kernels
sources=("$k/ports/tier_check.cpp" "$k"/cpp/{portable,blocks,avx2,avx2_int8,avx2_attention,avx2_blocks,avx2_small_blocks,avx512,avx512_vbmi,avx512_vnni_int8,avx512_vnni_blocks,avx512_vnni_small_blocks,neon,neon_int8,neon_dotprod,dispatch}.cpp)
out=target/tier-check
mkdir -p "$out"
flags=(-std=c++20 -O2 -fopenmp-simd -isystem "$include")

g++ "${flags[@]}" -o "$out/x86_64" "${sources[@]}"
env -u LAMINA_ISA "$out/x86_64"
aarch64-linux-gnu-g++ -static "${flags[@]}" -o "$out/aarch64" "${sources[@]}"
qemu-aarch64 "$out/aarch64"
# A CPU without the byte dot products: the dispatch picks `neon`.
without=$(qemu-aarch64 -cpu cortex-a57 "$out/aarch64")
echo "$without"
grep -q "^machine tier: neon$" <<<"$without"
clang++ --target=aarch64-linux-gnu -static "${flags[@]}" -o "$out/aarch64-clang" "${sources[@]}"
qemu-aarch64 "$out/aarch64-clang"
