#!/usr/bin/env bash
# Runs every test: Rust unit and integration tests over the real corpus in
# ../shared, then the independent Python cross-checks (stac-validator, pystac)
# on catalogues built by the fedstac binary. Installs what is missing first.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --test

[[ -d ../shared/corpus ]] || { echo "tests: ../shared/corpus is missing (see README)" >&2; exit 1; }

cargo build --workspace --locked --quiet
cargo test --workspace --locked --quiet

FEDSTAC_BIN="$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')/debug/fedstac" \
  .venv/bin/python -m pytest tests/python -q -p no:cacheprovider --ignore=tests/python/test_kerchunk.py

# Kerchunk references and sidecars, in their own venv: xarray/zarr/fsspec over nginx vs netCDF4 and h5py.
kerchunk_target=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
cargo build --locked --quiet -p fedstac --example kerchunk_refs
FEDSTAC_BIN="$kerchunk_target/debug/fedstac" FEDSTAC_KERCHUNK_BIN="$kerchunk_target/debug/examples/kerchunk_refs" \
  .venv-kerchunk/bin/python -m pytest tests/python/test_kerchunk.py -q -p no:cacheprovider

# Client-side search: the viewer (debug build) in headless Chromium against a real nginx.
target=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
scripts/build-viewer.sh "$target/viewer-dist"
cargo build --locked --quiet -p fedstac-index --features write --example bench-index  # a synthetic index with segmented text postings
(cd tests/browser && FEDSTAC_BIN="$target/debug/fedstac" VIEWER_DIST="$target/viewer-dist" node --test --test-concurrency=1 viewer.test.mjs)
