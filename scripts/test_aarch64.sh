#!/usr/bin/env bash
# lamina on aarch64 without an ARM machine: workspace crates (by default lamina-kernels,
# with mlx-sys/mlx-c and mlx-rs under it) cross-built for aarch64-unknown-linux-gnu
# against the official aarch64 `mlx-cpu` wheel and Debian's arm64 OpenBLAS, and their
# tests run under qemu-aarch64 (user-mode emulation).
#
#   bash scripts/test_aarch64.sh [CARGO TEST ARGS...]
#
# Default: `--release -p lamina-kernels --tests --no-fail-fast -- --skip
# model_shapes_match_mlx` (optimised, because the tests compare against MLX's own CPU
# products, slow under emulation; the one skipped runs SmolLM2's full-size products through
# MLX's reference and did not finish in 18 minutes here; pass arguments to run it; no
# doctests: their binaries do not find the BLAS shim under the emulator). Last result
# (Dec 7 2026): every other lamina-kernels test passes at the `neon_dotprod` tier (qemu's
# `-cpu max` has the byte dot products), its products with x rounded to 8 bits included, and
# at the `neon` tier (`LAMINA_ISA=neon bash scripts/test_aarch64.sh`: the variable is passed on).
#
# The host's toolchain cannot target aarch64 (rustup fetches nothing here; Debian 12's
# rustc is too old for validator's rust-version 1.88), so the build runs in a Debian sid
# chroot (target/aarch64/sid, made once with debootstrap: the host's glibc stays as it is)
# that has rustc 1.97 with libstd-rust-dev:arm64, the aarch64 GCC cross compilers, clang
# (bindgen), libopenblas-dev:arm64 and qemu-user. The wheel is unpacked once into
# target/aarch64/mlx-cpu and given to mlx-sys as MLX_DIR. Needs root (chroot, bind mount).
set -euo pipefail
cd "$(dirname "$0")/.."
root=target/aarch64/sid
mlx=target/aarch64/mlx-cpu
args=("$@")
[ ${#args[@]} -gt 0 ] || args=(--release -p lamina-kernels --tests --no-fail-fast -- --skip model_shapes_match_mlx)

if [ ! -x "$root/usr/bin/aarch64-linux-gnu-g++" ] || [ ! -x "$root/usr/bin/qemu-aarch64" ]; then
  source scripts/apt_need.sh
  apt_need debootstrap:debootstrap
  mkdir -p "$root"
  [ -x "$root/usr/bin/apt-get" ] ||
    debootstrap --variant=minbase --include=ca-certificates sid "$(realpath "$root")" http://deb.debian.org/debian
  # The mirror's sid Release files may be past their Valid-Until; the packages are signed.
  echo 'Acquire::Check-Valid-Until "false";' >"$root/etc/apt/apt.conf.d/99no-valid-until"
  chroot "$root" dpkg --add-architecture arm64
  chroot "$root" env DEBIAN_FRONTEND=noninteractive bash -c 'apt-get update -q &&
    apt-get install -y -q --no-install-recommends rustc cargo libstd-rust-dev:arm64 \
      gcc-aarch64-linux-gnu g++-aarch64-linux-gnu libc6-dev:arm64 libopenblas-dev:arm64 \
      qemu-user cmake make clang libclang-dev pkg-config'
fi

if [ ! -f "$mlx/mlx/lib/libmlx.so" ]; then
  wheels=$(mktemp -d)
  pip download --quiet --no-deps --only-binary=:all: --platform manylinux_2_35_aarch64 \
    --python-version 3.11 mlx-cpu==0.32.2 -d "$wheels"
  mkdir -p "$mlx"
  python3 -m zipfile -e "$wheels"/mlx_cpu-0.32.2-*.whl "$mlx"
  rm -rf "$wheels"
fi

# The workspace inside the chroot at /work, unmounted however this ends.
mkdir -p "$root/work"
mountpoint -q "$root/work" || mount --bind . "$root/work"
mountpoint -q "$root/proc" || mount -t proc proc "$root/proc"
trap 'umount "$root/work" "$root/proc" 2>/dev/null || true' EXIT

# The host's CA certificates (a machine behind an intercepting proxy trusts its CA there).
cp /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/host-ca.crt"
llvm=$(ls -d "$root"/usr/lib/llvm-*/lib | tail -1)
# `-cpu max`: the wheel's libmlx uses instructions beyond qemu's default CPU model (SIGILL).
chroot "$root" env -i PATH=/usr/bin:/bin HOME=/root \
  CARGO_HTTP_CAINFO=/etc/ssl/certs/host-ca.crt SSL_CERT_FILE=/etc/ssl/certs/host-ca.crt \
  CARGO_HOME=/work/target/aarch64/cargo-home CARGO_TARGET_DIR=/work/target/aarch64/build \
  CC_aarch64_unknown_linux_gnu=aarch64-linux-gnu-gcc CXX_aarch64_unknown_linux_gnu=aarch64-linux-gnu-g++ \
  CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc \
  CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER="qemu-aarch64 -cpu max -L /" \
  LIBCLANG_PATH="${llvm#"$root"}" MLX_DIR=/work/$mlx/mlx LAMINA_THREADS=2 ${LAMINA_ISA:+LAMINA_ISA=$LAMINA_ISA} \
  bash -c "cd /work && cargo test --target aarch64-unknown-linux-gnu ${args[*]}"
