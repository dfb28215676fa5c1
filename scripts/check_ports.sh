#!/usr/bin/env bash
# Compiles every C++ file of lamina-kernels (its kernels and the ports/ harnesses) for the
# targets this machine cannot run: aarch64 Linux with GCC (Debian's cross compiler) and with
# clang, and x86-64 with clang
# (the compiler of macOS and of many Linux builds), against the MLX wheel's headers. A
# file that only builds on x86 with GCC breaks every Mac and aarch64 build. Installs the
# compilers when missing (Debian: g++-aarch64-linux-gnu, clang). A few seconds per file,
# one file per core at a time.
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
# One compile per core at a time; each failure's messages kept for the report.
errors=$(mktemp -d)
compile() {
  local name=$1 compiler=$2 extra=$3 file=$4
  # shellcheck disable=SC2086
  "$compiler" $extra "${flags[@]}" "$file" 2>"$errors/$name:$(basename "$file")" ||
    echo "$name: $file" >>"$errors/failed"
}
for entry in "${compilers[@]}"; do
  IFS='|' read -r name compiler extra <<<"$entry"
  for file in crates/lamina-kernels/cpp/*.cpp crates/lamina-kernels/ports/*.cpp; do
    compile "$name" "$compiler" "$extra" "$file" &
    while [ "$(jobs -rp | wc -l)" -ge "$(nproc)" ]; do wait -n || true; done
  done
done
wait
failed=0
for entry in "${compilers[@]}"; do
  IFS='|' read -r name _ _ <<<"$entry"
  if grep -q "^$name: " "$errors/failed" 2>/dev/null; then
    grep "^$name: " "$errors/failed" | while read -r line; do
      echo "FAILED: $line" >&2
      head -20 "$errors/$name:$(basename "${line#*: }")" >&2
    done
    failed=1
  else
    echo "ports: $name compiles every kernel file"
  fi
done
rm -rf "$errors"
exit $failed
