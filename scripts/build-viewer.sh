#!/usr/bin/env bash
# Builds the search viewer (viewer/, Leptos CSR) with trunk into a directory:
#   scripts/build-viewer.sh <dist> [--release]
# --release: size-optimised wasm (the `wasm-release` cargo profile), as the demo serves it.
# The wasm, JS and CSS also get precompressed .gz siblings (gzip -9 -n) for servers
# that serve them as they are (nginx `gzip_static on`) instead of compressing per request.
# Needs what scripts/setup.sh installs (wasm32 target, trunk, wasm-bindgen-cli).
set -euo pipefail
cd "$(dirname "$0")/.."
dist=$(mkdir -p "$1" && cd "$1" && pwd)
args=(--offline --dist "$dist")
[[ "${2:-}" == "--release" ]] && args+=(--release --cargo-profile wasm-release)
cd viewer
trunk build "${args[@]}" >"$dist/../viewer-build.log" 2>&1 || { cat "$dist/../viewer-build.log" >&2; exit 1; }
for f in "$dist"/*.wasm "$dist"/*.js "$dist"/*.css; do
  if [[ -f "$f" ]]; then gzip -9 -n -k -f "$f"; fi
done
