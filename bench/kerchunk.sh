#!/usr/bin/env bash
# Kerchunk benchmark: references for every netCDF file of ../shared's corpus
# and the combines of its multi-file datasets, by fedstac (release build of
# the code `fedstac build` runs for its sidecars) next to Python kerchunk
# (SingleHdf5ToZarr, NetCDF3ToZarr, MultiZarrToZarr) in the same run, each
# result checked with tests/python/test_kerchunk.py's cross-checks. Figures go
# to bench/README.md (between the KERCHUNK markers) and bench/out/kerchunk/.
#   bench/kerchunk.sh
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --test
cargo build --release --locked --quiet -p fedstac --example kerchunk_refs
target=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
out=$(pwd)/bench/out/kerchunk
rm -rf "$out"; mkdir -p "$out"
.venv-kerchunk/bin/python bench/kerchunk_bench.py "$target/release/examples/kerchunk_refs" "$out"
