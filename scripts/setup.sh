#!/usr/bin/env bash
# Installs what fedstac needs on a Debian machine, idempotently and quietly:
#   scripts/setup.sh          build + demo needs (netCDF/HDF5 libraries, pkg-config, python3)
#   scripts/setup.sh --test   also the Python cross-check tools in .venv (and .venv-kerchunk)
set -euo pipefail
cd "$(dirname "$0")/.."

want_test=0
[[ "${1:-}" == "--test" ]] && want_test=1

# nginx: the federation tests and bench serve two sites on loopback ports (started by the tests, never as a service).
packages=(libnetcdf-dev libhdf5-dev netcdf-bin pkg-config python3 python3-venv util-linux nginx curl)
# Client-side search: the browser tests drive Debian's Chromium (playwright-core from npm) against nginx.
((want_test)) && packages+=(chromium chromium-driver nginx)
((want_test)) && ! command -v npm >/dev/null && packages+=(nodejs npm)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}" >&2
  sudo_cmd=""; [[ $(id -u) -ne 0 ]] && sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq "${missing[@]}" >/dev/null
fi

command -v cargo >/dev/null || { echo "setup: cargo not found; install Rust with rustup first" >&2; exit 1; }

if ((want_test)); then
  # Rebuild the venv only when the pinned requirements change.
  stamp=.venv/.requirements.sha256
  sum=$(sha256sum tests/python/requirements.txt | cut -d' ' -f1)
  if [[ ! -x .venv/bin/python || "$(cat "$stamp" 2>/dev/null)" != "$sum" ]]; then
    echo "setup: creating .venv with the Python cross-check tools" >&2
    rm -rf .venv
    python3 -m venv .venv
    .venv/bin/pip install -q --disable-pip-version-check -r tests/python/requirements.txt
    echo "$sum" > "$stamp"
  fi
  # Kerchunk cross-checks (tests/python/test_kerchunk.py): xarray, zarr 3, kerchunk, h5py, netCDF4 and
  # fsspec's HTTP stack pin versions that clash with stac-validator's, so they live in their own venv.
  stamp=.venv-kerchunk/.requirements.sha256
  sum=$(sha256sum tests/python/requirements-kerchunk.txt | cut -d' ' -f1)
  if [[ ! -x .venv-kerchunk/bin/python || "$(cat "$stamp" 2>/dev/null)" != "$sum" ]]; then
    echo "setup: creating .venv-kerchunk with the Kerchunk cross-check tools" >&2
    rm -rf .venv-kerchunk
    python3 -m venv .venv-kerchunk
    .venv-kerchunk/bin/pip install -q --disable-pip-version-check -r tests/python/requirements-kerchunk.txt
    echo "$sum" > "$stamp"
  fi
fi

# --- Client-side search viewer (viewer/, Leptos CSR built with trunk): wasm32 target, trunk, and a
# wasm-bindgen-cli equal to Cargo.lock's wasm-bindgen. Slow the first time (trunk ~11 min, wasm-bindgen ~4 min).
rustup target list --installed 2>/dev/null | grep -qx wasm32-unknown-unknown || {
  echo "setup: adding the wasm32-unknown-unknown target" >&2
  rustup target add wasm32-unknown-unknown >/dev/null
}
command -v trunk >/dev/null || {
  echo "setup: installing trunk 0.21 (about 11 minutes)" >&2
  cargo install trunk --version '~0.21' --locked --quiet
}
wasm_bindgen=$(sed -n '/^name = "wasm-bindgen"$/{n;s/^version = "\(.*\)"$/\1/p;}' Cargo.lock)
[[ "$(wasm-bindgen --version 2>/dev/null)" == "wasm-bindgen $wasm_bindgen" ]] || {
  echo "setup: installing wasm-bindgen-cli $wasm_bindgen (about 4 minutes)" >&2
  cargo install wasm-bindgen-cli --version "$wasm_bindgen" --force --quiet
}
if ((want_test)); then
  # playwright-core for the browser tests (tests/browser), reinstalled when its lock changes.
  stamp=tests/browser/node_modules/.lock.sha256
  sum=$(sha256sum tests/browser/package-lock.json | cut -d' ' -f1)
  if [[ "$(cat "$stamp" 2>/dev/null)" != "$sum" ]]; then
    echo "setup: installing the browser-test packages (npm ci)" >&2
    (cd tests/browser && npm ci --no-audit --no-fund --silent)
    echo "$sum" > "$stamp"
  fi
fi

# --- Publishing tests: a real OAuth2 server (npm oidc-provider, tests/oauth), reinstalled when its lock changes.
if ((want_test)); then
  stamp=tests/oauth/node_modules/.lock.sha256
  sum=$(sha256sum tests/oauth/package-lock.json | cut -d' ' -f1)
  if [[ "$(cat "$stamp" 2>/dev/null)" != "$sum" ]]; then
    echo "setup: installing the OAuth2 test server (npm ci in tests/oauth)" >&2
    (cd tests/oauth && npm ci --no-audit --no-fund --silent)
    echo "$sum" > "$stamp"
  fi
fi
