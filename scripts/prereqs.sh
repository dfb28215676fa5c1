#!/usr/bin/env bash
# Installs the Debian packages lamina's build needs, only those missing: cmake (builds
# mlx-c), libclang-dev (bindgen), libopenblas-dev (BLAS for MLX on the CPU) and
# python3-venv (installs the pinned MLX wheel). Idempotent; quiet when nothing is missing.
set -euo pipefail

need=()
command -v cmake >/dev/null 2>&1 || need+=(cmake)
dpkg -s libclang-dev >/dev/null 2>&1 || need+=(libclang-dev)
dpkg -s libopenblas-dev >/dev/null 2>&1 || need+=(libopenblas-dev)
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || need+=(python3-venv)
command -v c++ >/dev/null 2>&1 || need+=(g++)

if [ ${#need[@]} -gt 0 ]; then
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "lamina needs: ${need[*]} (Debian package names); install them and retry" >&2
    exit 1
  fi
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "installing ${need[*]}" >&2
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
command -v cargo >/dev/null 2>&1 || {
  echo "lamina needs a Rust toolchain (cargo): see https://rustup.rs" >&2
  exit 1
}
