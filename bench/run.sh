#!/usr/bin/env bash
# Generator benchmarks, peers measured in the same run; figures go to
# bench/README.md (between the RESULTS markers) and bench/out/results.md.
#   bench/run.sh            corpus vs stac-generator, synthetic trees of 1k, 10k, 100k files
#   SIZES="1000 10000" bench/run.sh    other synthetic sizes
#   ONLY=growth bench/run.sh           only the synthetic trees (the growth table); the corpus figures stay
set -euo pipefail
cd "$(dirname "$0")/.."
only=${ONLY:-}
[[ -z $only || $only == growth ]] || { echo "ONLY=$only: unknown (growth)" >&2; exit 2; }
[[ $only == growth ]] || scripts/setup.sh
cargo build --release --locked --quiet -p fedstac
target=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
fedstac=$target/release/fedstac
out=bench/out
mkdir -p "$out"
corpus=$(cd ../shared/corpus/netcdf/mini-esgf-data/test_data/badc/cmip6/data && pwd)
sizes=${SIZES:-"1000 10000 100000"}
runs=3

# Runs one cold build (empty cache, empty output) and prints "seconds files items peak_mib".
cold_build() { # config extra-args...
  local config=$1; shift
  rm -rf "$out/site" "$out/cache"
  "$fedstac" build -c "$config" --output "$out/site" --cache "$out/cache" "$@" >"$out/build.log" 2>&1
  awk '/^fedstac build:/ {s=$(NF)} /files used/ {f=$3} /^  items/ {i=$2} /peak memory/ {m=$3}
       END {sub("s$","",s); print s, f, i, m}' "$out/build.log"
}
warm_build() { # config extra-args... (cache and output kept from the previous run); prints "seconds peak_mib"
  local config=$1; shift
  "$fedstac" build -c "$config" --output "$out/site" --cache "$out/cache" "$@" >"$out/build.log" 2>&1
  awk '/^fedstac build:/ {s=$(NF)} /peak memory/ {m=$3} END {sub("s$","",s); print s, m}' "$out/build.log"
}
median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

rate() { python3 -c "print(f'{$1/$2:,.0f}')"; }
if [[ $only != growth ]]; then
config=$out/corpus.yaml
cat >"$config" <<EOF
site: {name: bench, title: bench}
roots: [{path: "$corpus", recipe: cmip6, data_url: "https://example.org/"}]
EOF

echo "== corpus: fedstac (median of $runs cold builds)" >&2
for mode in checksums no-checksums; do
  args=(); [[ $mode == no-checksums ]] && args=(--no-checksums)
  : >"$out/times"
  for _ in $(seq $runs); do cold_build "$config" "${args[@]}" >>"$out/times"; done
  read -r secs files items peak < <(awk '{print $1, $2, $3, $4}' "$out/times" | sort -g | sed -n "$(((runs + 1) / 2))p")
  printf -v "fs_${mode//-/_}" '%s %s %s %s' "$secs" "$files" "$items" "$peak"
done
read -r f_secs f_files f_items f_peak <<<"$fs_no_checksums"
read -r c_secs _ _ c_peak <<<"$fs_checksums"
read -r warm _ < <(warm_build "$config" --no-checksums)

echo "== corpus: stac-generator 2.0.1 (median of $runs)" >&2
: >"$out/sg_times"
for _ in $(seq $runs); do
  line=$(bench/stac_generator.sh "$corpus" "$out/stac-generator")
  echo "$line" >&2
  echo "$line" | sed -E 's/.*files=([0-9]+) items=([0-9]+) seconds=([0-9.]+).*/\3 \1 \2/' >>"$out/sg_times"
done
read -r sg_secs sg_files sg_items < <(sort -g "$out/sg_times" | sed -n "$(((runs + 1) / 2))p")

ratio() { python3 -c "print(f'{($1/$2)/($3/$4):.0f}')"; }

{
  echo "Measured $(date -u +%Y-%m-%d) on $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB, $(uname -m); fedstac release build."
  echo
  echo "### Real corpus: 132 CMIP6 files, CEDA layout (median of $runs cold runs)"
  echo
  echo "| tool | files | items | seconds | files/s | items/s | peak memory |"
  echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"
  echo "| fedstac build --no-checksums | $f_files | $f_items | $f_secs | $(rate "$f_files" "$f_secs") | $(rate "$f_items" "$f_secs") | ${f_peak} MiB |"
  echo "| fedstac build (SHA-256 of every file) | $f_files | $f_items | $c_secs | $(rate "$f_files" "$c_secs") | $(rate "$f_items" "$c_secs") | ${c_peak} MiB |"
  echo "| fedstac build, warm (nothing changed) | $f_files | $f_items | $warm | $(rate "$f_files" "$warm") | $(rate "$f_items" "$warm") | |"
  echo "| stac-generator 2.0.1 | $sg_files | $sg_items | $sg_secs | $(rate "$sg_files" "$sg_secs") | $(rate "$sg_items" "$sg_secs") | |"
  echo
  echo "fedstac (no checksums, like stac-generator) is **$(ratio "$f_files" "$f_secs" "$sg_files" "$sg_secs")×** stac-generator's files/s (goal ≥ 20×)."
  echo
  echo "### Synthetic archives (tiny netCDF-3 files, one per dataset; cold build with checksums)"
  echo
  echo "| files | items | seconds | files/s | items/s | peak memory | warm rebuild s | warm peak memory |"
  echo "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
} >"$out/results.md"
else
  # The growth table alone: the corpus part of the RESULTS block is kept as it is.
  python3 - "$out/results.md" "$(date -u +%Y-%m-%d) on $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB, $(uname -m)" <<'EOF'
import pathlib, sys
text = pathlib.Path("bench/README.md").read_text()
block = text.split("<!-- RESULTS:START -->\n", 1)[1].split("<!-- RESULTS:END -->", 1)[0]
head = block.split("### Synthetic archives", 1)[0]
pathlib.Path(sys.argv[1]).write_text(
    head
    + "### Synthetic archives (tiny netCDF-3 files, one per dataset; cold build with checksums)\n\n"
    + f"Re-measured alone (`ONLY=growth`) {sys.argv[2]}; fedstac release build.\n\n"
    + "| files | items | seconds | files/s | items/s | peak memory | warm rebuild s | warm peak memory |\n"
    + "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n"
)
EOF
fi

for n in $sizes; do
  echo "== synthetic: $n extra datasets" >&2
  tree=$out/synthetic-$n
  [[ -f "$tree/.complete" ]] || { rm -rf "$tree"; "$fedstac" -q sample "$tree" --extra-datasets "$n"; touch "$tree/.complete"; }
  sconfig=$out/synthetic-$n.yaml
  cat >"$sconfig" <<EOF
site: {name: bench, title: bench}
roots: [{path: "$(cd "$tree/ceda/badc/cmip6/data" && pwd)", recipe: cmip6, data_url: "https://example.org/"}]
EOF
  read -r secs files items peak < <(cold_build "$sconfig")
  read -r warm warm_peak < <(warm_build "$sconfig")
  echo "| $files | $items | $secs | $(rate "$files" "$secs") | $(rate "$items" "$secs") | ${peak} MiB | $warm | ${warm_peak} MiB |" >>"$out/results.md"
done
rm -rf "$out/site" "$out/cache"

# Replace the figures between the markers in bench/README.md.
python3 - "$out/results.md" <<'EOF'
import pathlib, sys
readme = pathlib.Path("bench/README.md")
text = readme.read_text()
start, end = "<!-- RESULTS:START -->", "<!-- RESULTS:END -->"
head, rest = text.split(start, 1)
_, tail = rest.split(end, 1)
readme.write_text(head + start + "\n" + pathlib.Path(sys.argv[1]).read_text() + end + tail)
EOF
cat "$out/results.md"
