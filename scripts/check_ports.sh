#!/usr/bin/env bash
# Compiles every C++ file of lamina-kernels for the targets this machine cannot run:
# aarch64 Linux with GCC (Debian's cross compiler) and with clang, and x86-64 with clang
# (the compiler of macOS and of many Linux builds), against the MLX wheel's headers. A
# file that only builds on x86 with GCC breaks every Mac and aarch64 build. Installs the
# compilers when missing (Debian: g++-aarch64-linux-gnu, clang). A few seconds per file.
set -euo pipefail
cd "$(dirname "$0")/.."

source scripts/apt_need.sh
apt_need aarch64-linux-gnu-g++:g++-aarch64-linux-gnu clang++:clang

include=$(find target/mlx-env -path '*/mlx/include' -type d 2>/dev/null | head -1)
if [ -z "$include" ]; then
  cargo build -q -p mlx-sys
  include=$(find target/mlx-env -path '*/mlx/include' -type d | head -1)
fi

flags=(-std=c++20 -O2 -Wall -Wextra -Werror -Wno-unused-parameter -Wno-psabi -fopenmp-simd -isystem "$include" -c -o /dev/null)
compilers=(
  "aarch64 GCC|aarch64-linux-gnu-g++|-Wno-maybe-uninitialized -Wno-uninitialized"
  "aarch64 clang|clang++|--target=aarch64-linux-gnu -Wno-unknown-warning-option"
  "x86-64 clang|clang++|--target=x86_64-linux-gnu"
  "x86-64 GCC|g++|-Wno-maybe-uninitialized -Wno-uninitialized"
)
failed=0
for entry in "${compilers[@]}"; do
  IFS='|' read -r name compiler extra <<<"$entry"
  for file in crates/lamina-kernels/cpp/*.cpp; do
    # shellcheck disable=SC2086
    if ! "$compiler" $extra "${flags[@]}" "$file" 2>/tmp/lamina-port.err; then
      echo "FAILED: $name: $file" >&2
      head -20 /tmp/lamina-port.err >&2
      failed=1
    fi
  done
  echo "ports: $name compiles every kernel file"
done
exit $failed
