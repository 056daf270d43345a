#!/usr/bin/env bash
# stac-fastapi-static over the same synthetic 100k items as the Pagefind run
# (needs bench/out/search/pagefind/items.jsonl from bench/search/pagefind/run.sh).
set -euo pipefail
cd "$(dirname "$0")/../../.."
scripts/setup.sh --test   # .venv: measure.py reuses the CQL2 of tests/python/test_search_index.py
out=bench/out/search/static-api
mkdir -p "$out"
venv=bench/search/.venv-static
[[ -x $venv/bin/python ]] || { python3 -m venv "$venv"; "$venv/bin/pip" install -q --disable-pip-version-check -r bench/search/static-api/requirements.txt; }
rm -rf "$out/catalog"
python3 bench/search/static-api/catalog.py bench/out/search/pagefind/items.jsonl "$out/catalog"
.venv/bin/python bench/search/static-api/measure.py "$(pwd)/$venv/bin/python" "$(cd "$out/catalog" && pwd)/catalog.json" bench/search/queries.txt | tee "$out/results.jsonl"
