#!/usr/bin/env bash
# Copies a binary built against lamina into a folder together with the libraries it loads
# at run time, so that the folder can be moved, installed or shipped:
#
#   bash scripts/bundle.sh target/release/app [dist/app]
#
#   dist/app/app                          the binary (its rpath starts with $ORIGIN/lib and
#                                         $ORIGIN/lib/mlx/lib: lamina-build puts them there)
#   dist/app/lib/libmlx_blas_shim.so      lamina's BLAS shim (Linux)
#   dist/app/lib/mlx/lib/libmlx.so        MLX, from the wheel the build used
#   dist/app/lib/mlx_cpu.libs/            the wheel's own libraries (libmlx's $ORIGIN/../../mlx_cpu.libs)
#
# What the target machine still needs: glibc and libstdc++ (every Debian has them) and
# OpenBLAS (`apt-get install libopenblas0`), which MLX's f32 matmuls run on.
set -euo pipefail
binary=${1:?usage: bundle.sh BINARY [OUT_DIR]}
out=${2:-dist/$(basename "$binary")}
[ -x "$binary" ] || { echo "bundle.sh: $binary is not an executable" >&2; exit 1; }

# Where the binary's libmlx and shim are now: the loader tells.
resolved=$(env -u LD_LIBRARY_PATH ldd "$binary")
path_of() { echo "$resolved" | awk -v lib="$1" '$1 == lib { print $3 }'; }
libmlx=$(path_of libmlx.so)
shim=$(path_of libmlx_blas_shim.so)
[ -n "$libmlx" ] && [ -f "$libmlx" ] || { echo "bundle.sh: $binary does not load libmlx.so (was it built with lamina-build?)" >&2; exit 1; }
wheel=$(cd "$(dirname "$libmlx")/../.." && pwd)

rm -rf "$out"
mkdir -p "$out/lib/mlx/lib"
cp "$binary" "$out/"
cp -L "$libmlx" "$out/lib/mlx/lib/"
if [ -n "$shim" ]; then cp -L "$shim" "$out/lib/"; fi
for libs in "$wheel"/mlx_*.libs; do
  [ -d "$libs" ] && cp -rL "$libs" "$out/lib/"
done
echo "$out"
