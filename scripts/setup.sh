#!/usr/bin/env bash
# Installs what fedstac needs on a Debian machine, idempotently and quietly:
#   scripts/setup.sh          build + demo needs (netCDF/HDF5 libraries, pkg-config, python3)
#   scripts/setup.sh --test   also the Python cross-check tools in .venv
set -euo pipefail
cd "$(dirname "$0")/.."

want_test=0
[[ "${1:-}" == "--test" ]] && want_test=1

packages=(libnetcdf-dev libhdf5-dev netcdf-bin pkg-config python3 python3-venv util-linux)
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
fi
