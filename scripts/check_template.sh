#!/usr/bin/env bash
# templates/app, built as a user builds it (its own workspace, lamina by path), must run as
# built: its binary directly — no cargo, no LD_LIBRARY_PATH — and from a bundle made by
# scripts/bundle.sh. Both must answer the default question.
set -euo pipefail
cd "$(dirname "$0")/.."
# Same dependency versions as lamina's own build, so that nothing is compiled twice.
cp Cargo.lock templates/app/Cargo.lock
cargo build --quiet --manifest-path templates/app/Cargo.toml --target-dir target
answer() {
  local out
  out=$(env -u LD_LIBRARY_PATH "$1" 2>/dev/null)
  echo "$1: $out"
  grep -q "Paris" <<<"$out" || { echo "check_template: $1 did not answer" >&2; exit 1; }
}
answer target/debug/app
bundle="$(mktemp -d)/app"
bash scripts/bundle.sh target/debug/app "$bundle" >/dev/null
# (ldd's output is kept whole: `grep -q` in a pipe would cut it short under pipefail.)
resolved=$(env -u LD_LIBRARY_PATH ldd "$bundle/app")
grep -q "$bundle/lib/mlx/lib/libmlx.so" <<<"$resolved" || {
  echo "check_template: the bundled binary does not load its own libmlx" >&2
  exit 1
}
answer "$bundle/app"
rm -rf "$(dirname "$bundle")"
