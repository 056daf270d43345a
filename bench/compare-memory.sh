#!/usr/bin/env bash
# Peak memory of `fedstac build`, main's binary against this checkout's, on
# the same synthetic archives, cold builds back to back (so both see the same
# machine load), then a rebuild of each with nothing changed (warm). Also
# says whether the two sites are byte-identical after each.
#   bench/compare-memory.sh                  10k and 100k extra datasets, one pair of runs each
#   SIZES="10000" RUNS=3 bench/compare-memory.sh
#   MAIN_REV=abc123 bench/compare-memory.sh  another baseline than `main`
#   MAIN_BIN=/path/fedstac BRANCH_BIN=/path/fedstac bench/compare-memory.sh   prebuilt binaries
#   INDEX_SIZES="1000000 10000000" bench/compare-memory.sh
#       also the search index writer alone (index/examples/bench-index.rs, a
#       synthetic CMIP6 catalogue, no netCDF files) at these numbers of items;
#       MAIN_INDEX_BIN / BRANCH_INDEX_BIN for prebuilt bench-index binaries
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
MAIN_BIN_GIVEN=${MAIN_BIN:-}
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
index_sizes=${INDEX_SIZES:-}
if [[ -n $index_sizes ]]; then
  if [[ -z ${BRANCH_INDEX_BIN:-} ]]; then
    cargo build --release --locked --quiet -p fedstac-index --features write --example bench-index
    BRANCH_INDEX_BIN=$target/release/examples/bench-index
  fi
  if [[ -z ${MAIN_INDEX_BIN:-} ]]; then
    # main-src is this run's checkout of main only when MAIN_BIN was not given.
    [[ -z ${MAIN_BIN_GIVEN:-} ]] || { echo "compare-memory: INDEX_SIZES needs MAIN_INDEX_BIN when MAIN_BIN is given" >&2; exit 2; }
    (cd "$cmp/main-src" && CARGO_TARGET_DIR=$target/compare-main cargo build --release --locked --quiet -p fedstac-index --features write --example bench-index)
    MAIN_INDEX_BIN=$target/compare-main/release/examples/bench-index
  fi
  cp "$BRANCH_INDEX_BIN" "$cmp/bench-index-branch"
  cp "$MAIN_INDEX_BIN" "$cmp/bench-index-main"
fi

# Peak RSS (MiB) and wall seconds of the last run, from /usr/bin/time -v.
peak_and_seconds() {
  awk -F': ' '/Maximum resident set size/ {kb=$2} /Elapsed \(wall clock\)/ {t=$2}
              END {n=split(t, p, ":"); s=0; for (i=1; i<=n; i++) s=s*60+p[i]; printf "%.1f %.1f\n", kb/1024, s}' "$cmp/time.log"
}

# "yes" if two trees are byte-identical, else "no (<the file listing the differences>)".
identical() { # dir dir diff-file
  if diff -r -q "$1" "$2" >"$3"; then echo yes; else echo "no ($3)"; fi
}

# Runs a command under /usr/bin/time -v (its logs shown if it fails); prints "peak_mib seconds".
timed() { # command...
  /usr/bin/time -v "$@" >"$cmp/build.log" 2>"$cmp/time.log" || { cat "$cmp/build.log" "$cmp/time.log" >&2; exit 1; }
  peak_and_seconds
}

# One cold build (empty cache and output).
cold() { # binary config site
  rm -rf "$3" "$cmp/cache"
  timed "$1" build -c "$2" --output "$3" --cache "$cmp/cache"
}

# A rebuild of `site` with the cache kept.
warm() { # binary config site
  timed "$1" build -c "$2" --output "$3" --cache "$cmp/cache"
}

echo "Measured $(date -u '+%Y-%m-%d %H:%M') UTC on $(nproc) cores; load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
echo
echo "| files | run | main peak RSS | branch peak RSS | main s | branch s | sites identical | main warm peak RSS | branch warm peak RSS | identical after warm |"
echo "| ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: | --- |"
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
    same=$(identical "$cmp/site-main" "$cmp/site-branch" "$cmp/diff-$n.txt")
    # Rebuilds with nothing changed (the header cache is the branch's: same entries).
    read -r main_warm _ < <(warm "$cmp/fedstac-main" "$config" "$cmp/site-main")
    read -r branch_warm _ < <(warm "$cmp/fedstac-branch" "$config" "$cmp/site-branch")
    same_warm=$(identical "$cmp/site-main" "$cmp/site-branch" "$cmp/diff-warm-$n.txt")
    echo "| $files | $r | $main_mib MiB | $branch_mib MiB | $main_s | $branch_s | $same | $main_warm MiB | $branch_warm MiB | $same_warm |"
  done
done
rm -rf "$cmp/site-main" "$cmp/site-branch" "$cmp/cache"

# The index writer alone.
index_run() { # binary items dir
  rm -rf "$3"
  timed "$1" "$2" "$3"
}
if [[ -n $index_sizes ]]; then
  echo
  echo "Search index writer alone (bench-index), $(date -u '+%H:%M') UTC, load average $(cut -d' ' -f1-3 /proc/loadavg):"
  echo
  echo "| items | run | main peak RSS | branch peak RSS | main s | branch s | indexes identical |"
  echo "| ---: | ---: | ---: | ---: | ---: | ---: | --- |"
  for n in $index_sizes; do
    for r in $(seq "$runs"); do
      read -r main_mib main_s < <(index_run "$cmp/bench-index-main" "$n" "$cmp/index-main")
      read -r branch_mib branch_s < <(index_run "$cmp/bench-index-branch" "$n" "$cmp/index-branch")
      same=$(identical "$cmp/index-main" "$cmp/index-branch" "$cmp/diff-index-$n.txt")
      echo "| $n | $r | $main_mib MiB | $branch_mib MiB | $main_s | $branch_s | $same |"
    done
  done
  rm -rf "$cmp/index-main" "$cmp/index-branch"
fi
echo
echo "Load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
