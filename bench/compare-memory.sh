#!/usr/bin/env bash
# Peak memory of `fedstac build`, main's binary against this checkout's, on
# the same synthetic archives, cold builds back to back (so both see the same
# machine load). Also says whether the two sites are byte-identical.
#   bench/compare-memory.sh                  10k and 100k extra datasets, one pair of runs each
#   SIZES="10000" RUNS=3 bench/compare-memory.sh
#   MAIN_REV=abc123 bench/compare-memory.sh  another baseline than `main`
#   MAIN_BIN=/path/fedstac BRANCH_BIN=/path/fedstac bench/compare-memory.sh   prebuilt binaries
# On a shared machine run it under the CPU lock: flock /work/cpu.lock bench/compare-memory.sh
# Trees are shared with bench/run.sh (bench/out/synthetic-N); sites go to bench/out/compare.
set -euo pipefail
cd "$(dirname "$0")/.."
sizes=${SIZES:-"10000 100000"}
runs=${RUNS:-1}
out=bench/out
cmp=$out/compare
mkdir -p "$cmp"
[[ -x /usr/bin/time ]] || { echo "compare-memory: /usr/bin/time is missing (apt-get install time)" >&2; exit 1; }

target=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
# Copies of the binaries: a rebuild during the run must not change what is measured.
if [[ -z ${BRANCH_BIN:-} ]]; then
  cargo build --release --locked --quiet -p fedstac
  BRANCH_BIN=$target/release/fedstac
fi
cp "$BRANCH_BIN" "$cmp/fedstac-branch"
if [[ -z ${MAIN_BIN:-} ]]; then
  rev=${MAIN_REV:-main}
  src=$cmp/main-src
  rm -rf "$src" && mkdir -p "$src"
  git archive "$rev" | tar -x -C "$src"
  # Its own target directory beside this one: the two checkouts would rebuild each other's crates.
  (cd "$src" && CARGO_TARGET_DIR=$target/compare-main cargo build --release --locked --quiet -p fedstac)
  MAIN_BIN=$target/compare-main/release/fedstac
  echo "main: $(git rev-parse --short "$rev")" >&2
fi
cp "$MAIN_BIN" "$cmp/fedstac-main"

# One cold build (empty cache and output); prints "peak_mib seconds".
cold() { # binary config site
  local bin=$1 config=$2 site=$3
  rm -rf "$site" "$cmp/cache"
  /usr/bin/time -v "$bin" build -c "$config" --output "$site" --cache "$cmp/cache" >"$cmp/build.log" 2>"$cmp/time.log" \
    || { cat "$cmp/build.log" "$cmp/time.log" >&2; exit 1; }
  awk -F': ' '/Maximum resident set size/ {kb=$2} /Elapsed \(wall clock\)/ {t=$2}
              END {n=split(t, p, ":"); s=0; for (i=1; i<=n; i++) s=s*60+p[i]; printf "%.1f %.1f\n", kb/1024, s}' "$cmp/time.log"
}

echo "Measured $(date -u '+%Y-%m-%d %H:%M') UTC on $(nproc) cores; load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
echo
echo "| files | run | main peak RSS | branch peak RSS | main s | branch s | sites identical |"
echo "| ---: | ---: | ---: | ---: | ---: | ---: | --- |"
for n in $sizes; do
  tree=$out/synthetic-$n
  [[ -f "$tree/.complete" ]] || { rm -rf "$tree"; "$cmp/fedstac-branch" -q sample "$tree" --extra-datasets "$n"; touch "$tree/.complete"; }
  config=$cmp/synthetic-$n.yaml
  cat >"$config" <<EOF
site: {name: bench, title: bench}
roots: [{path: "$(cd "$tree/ceda/badc/cmip6/data" && pwd)", recipe: cmip6, data_url: "https://example.org/"}]
EOF
  files=$(find "$tree/ceda/badc/cmip6/data" -name '*.nc' | wc -l)
  for r in $(seq "$runs"); do
    read -r main_mib main_s < <(cold "$cmp/fedstac-main" "$config" "$cmp/site-main")
    read -r branch_mib branch_s < <(cold "$cmp/fedstac-branch" "$config" "$cmp/site-branch")
    same=yes
    diff -r -q "$cmp/site-main" "$cmp/site-branch" >"$cmp/diff-$n.txt" || same="no (bench/out/compare/diff-$n.txt)"
    echo "| $files | $r | $main_mib MiB | $branch_mib MiB | $main_s | $branch_s | $same |"
  done
done
rm -rf "$cmp/site-main" "$cmp/site-branch" "$cmp/cache"
echo
echo "Load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
