#!/usr/bin/env bash
# Benchmark peer: run CEDA's stac-generator 2.0.1 (PyPI `stac-generator`) on every .nc file
# under <cmip6_root_dir>, item per dataset version, JSON files in <out_dir>/items.
#   usage: bench/stac_generator.sh <cmip6_root_dir> <out_dir>
# Prints: stac-generator files=<N> items=<M> seconds=<S> files_per_s=<X>
# The venv (bench/.venv, gitignored) is created on first use; that time is not measured.
# 2.0.1 because 2.0.3 needs Python >= 3.12 and this machine has 3.11.
set -euo pipefail

root=${1:?usage: $0 <cmip6_root_dir> <out_dir>}
out=${2:?usage: $0 <cmip6_root_dir> <out_dir>}
here=$(cd "$(dirname "$0")" && pwd)
cfg=$here/stac-generator
venv=${STAC_GENERATOR_VENV:-$here/.venv}
py=${PYTHON:-python3}

# --- venv (idempotent, quiet; pinned by constraints.txt = pip freeze of a working install)
if ! "$venv/bin/stac_generator" --help >/dev/null 2>&1; then
  "$py" -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check \
    -c "$cfg/constraints.txt" 'stac-generator==2.0.1' >&2
fi

root=$(cd "$root" && pwd)
mkdir -p "$out"
out=$(cd "$out" && pwd)
rm -rf "$out/items" "$out/failed"
mkdir -p "$out/items" "$out/failed"
sed -e "s#@OUT@#$out#g" -e "s#@RECIPES@#$cfg/recipes#g" "$cfg/conf.yaml.in" >"$out/conf.yaml"

# Keep stdout for the result line: the generator's own output (tqdm, warnings) goes to a log.
log=$out/run.log
t0=$(date +%s.%N)
# File list in the timed region (it is part of the scan). Only *.nc: .md5 / .tmp are skipped.
# -L follows symlinked dirs, like a walk of the DKRZ-layout tree would need.
find -L "$root" -type f -name '*.nc' -print0 | sort -z |
  "$venv/bin/python" -c 'import sys, json
for i, p in enumerate(filter(None, sys.stdin.buffer.read().split(b"\0"))):
    print(json.dumps({"uri": p.decode(), "fid": f"file{i:06d}"}))' >"$out/files.jsonl"
# Stock run = the `stac_generator` console script. It spends most of its time in
# pkg_resources: every extraction method is re-instantiated per file through
# EntryPoint.load(), which re-resolves the whole dependency tree each time.
# SG_NO_REQUIRE=1 measures the same run with EntryPoint.load(require=False) (a diagnostic
# of what the extraction itself costs; not what a user of 2.0.1 gets).
run=("$venv/bin/stac_generator" -c "$out/conf.yaml")
[ "${SG_NO_REQUIRE:-0}" = 1 ] && { echo "stac-generator: SG_NO_REQUIRE=1 (patched entry-point load)" >&2
  run=("$venv/bin/python" -c 'import sys, pkg_resources as pr
load = pr.EntryPoint.load; pr.EntryPoint.load = lambda self, *a, **k: load(self, require=False)
from stac_generator.scripts.stac_generator import main; main()' -c "$out/conf.yaml"); }
PYTHONWARNINGS=ignore "${run[@]}" >"$log" 2>&1 || {
  echo "stac-generator: run failed, see $log" >&2; tail -20 "$log" >&2; exit 1; }
t1=$(date +%s.%N)

listed=$(wc -l <"$out/files.jsonl")
failed=$(find "$out/failed" -name '*.json' | wc -l)
items=$(find "$out/items" -name '*.json' | wc -l)
# Every listed file must be an asset of exactly one item (checks the glob aggregation too).
assets=$("$venv/bin/python" -c 'import json, sys, glob
print(sum(len(json.load(open(f))["assets"]) for f in glob.glob(sys.argv[1] + "/*.json")))' "$out/items")
files=$((listed - failed))

if [ "$files" -le 0 ] || [ "$items" -le 0 ]; then
  echo "stac-generator: processed no files (listed=$listed failed=$failed items=$items), see $log" >&2
  exit 1
fi
[ "$failed" -eq 0 ] || echo "stac-generator: $failed file(s) failed, tracebacks in $out/failed/" >&2
[ "$assets" -eq "$listed" ] || echo "stac-generator: WARNING assets=$assets != listed files=$listed" >&2

awk -v f="$files" -v m="$items" -v a="$t0" -v b="$t1" 'BEGIN {
  s = b - a; printf "stac-generator files=%d items=%d seconds=%.3f files_per_s=%.1f\n", f, m, s, f / s }'
