#!/usr/bin/env bash
# Harvest benchmark: a partner site of N items (the sample archive plus N tiny
# datasets, built with --no-checksums) served by nginx on a loopback port;
# `fedstac harvest` full and unchanged re-harvest, next to a plain pystac crawl
# of the same catalogue. Bytes are counted by nginx ($bytes_sent: headers and
# bodies) for every client alike. Figures go to bench/README.md (between the
# HARVEST markers) and bench/out/harvest/results.md.
#   bench/harvest.sh                          100,000 items
#   ITEMS=10000 PYSTAC_SECONDS=60 bench/harvest.sh
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --test
# FEDSTAC=<binary> measures that build instead (e.g. one kept aside while the tree changes).
if [[ -z "${FEDSTAC:-}" ]]; then
  cargo build --release --locked --quiet -p fedstac
  target=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
fi
fedstac=${FEDSTAC:-$target/release/fedstac}
items=${ITEMS:-100000}
pystac_seconds=${PYSTAC_SECONDS:-180}
out=$(pwd)/bench/out/harvest
mkdir -p "$out"

# The partner: kept between runs for the same N (writing and building it is the slow part).
if [[ "$(cat "$out/partner.stamp" 2>/dev/null)" != "$items" ]]; then
  echo "== partner site: sample archive + $items datasets" >&2
  rm -rf "$out/archive" "$out/site" "$out/site-cache"
  "$fedstac" --quiet sample "$out/archive" --extra-datasets "$items"
  cat >"$out/partner.yaml" <<EOF
site: {name: partner, title: Harvest benchmark partner}
roots: [{path: "$out/archive/ceda/badc/cmip6/data", recipe: cmip6, data_url: "https://data.example.org/cmip6/"}]
output: "$out/site"
cache: "$out/site-cache"
EOF
  "$fedstac" --quiet build -c "$out/partner.yaml" --no-checksums
  echo "$items" >"$out/partner.stamp"
fi
# Every client is measured with the site in the page cache (a cold first run measures the disk).
find "$out/site" -type f -name '*.json' -print0 | xargs -0 cat >/dev/null
n_items=$(find "$out/site/CMIP6" -name 'CMIP6.*.json' | wc -l)
n_docs=$(find "$out/site" -name '*.json' ! -name 'fedstac-manifest.json' | wc -l)

# nginx on a free loopback port, its own prefix; stopped on exit.
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
ng=$out/nginx
rm -rf "$ng"; mkdir -p "$ng"
user=""; [[ $(id -u) -eq 0 ]] && user="user root;"
cat >"$ng/nginx.conf" <<EOF
worker_processes 1;
pid $ng/nginx.pid;
error_log $ng/error.log warn;
$user
events { worker_connections 1024; }
http {
  types { application/json json; text/html html; }
  default_type application/octet-stream;
  log_format sent '\$bytes_sent';
  access_log $ng/bytes.log sent;
  client_body_temp_path $ng/body; proxy_temp_path $ng/proxy; fastcgi_temp_path $ng/fastcgi; uwsgi_temp_path $ng/uwsgi; scgi_temp_path $ng/scgi;
  keepalive_requests 1000000;
  sendfile on;
  server { listen 127.0.0.1:$port; root $out/site; }
}
EOF
nginx -p "$ng" -c "$ng/nginx.conf" -e "$ng/error.log" -g 'daemon off;' &
nginx_pid=$!
trap 'kill -QUIT $nginx_pid 2>/dev/null || true; wait $nginx_pid 2>/dev/null || true' EXIT
python3 - "$port" <<'EOF'
import socket, sys, time
for _ in range(200):
    try:
        socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=1).close()
        break
    except OSError:
        time.sleep(0.05)
EOF
url="http://127.0.0.1:$port/catalog.json"

# Runs a command, printing "seconds requests bytes" as nginx saw them.
measure() {
  : >"$ng/bytes.log"
  local t0 t1
  t0=$(date +%s.%N)
  "$@" >"$out/last.log" 2>&1
  t1=$(date +%s.%N)
  sleep 0.2 # let nginx flush its log
  awk -v s="$(python3 -c "print(f'{$t1 - $t0:.2f}')")" '{n++; b+=$1} END {printf "%s %d %d\n", s, n, b}' "$ng/bytes.log"
}

# Median of $runs runs (the machine is shared: single runs are noisy).
runs=${RUNS:-3}
median_run() { # cache-dir [harvest flags] -> "seconds requests bytes" of the median full harvest
  local cache=$1; shift
  : >"$out/runs"
  for _ in $(seq "$runs"); do
    rm -rf "$cache"
    measure "$fedstac" --quiet harvest "$url" --name partner --cache "$cache" "$@" >>"$out/runs"
  done
  sort -g "$out/runs" | sed -n "$(((runs + 1) / 2))p"
}

echo "== fedstac harvest: full ($n_items items, median of $runs)" >&2
read -r full_s full_req full_bytes < <(median_run "$out/mirror")
full_items=$(python3 -c "import json; print(json.load(open('$out/mirror/partners/partner/report.json'))['items'])")
echo "== fedstac harvest: unchanged re-harvest" >&2
read -r again_s again_req again_bytes < <(measure "$fedstac" --quiet harvest "$url" --name partner --cache "$out/mirror")
echo "== fedstac harvest --no-bundle: full, one request per document (median of $runs)" >&2
read -r single_s single_req single_bytes < <(median_run "$out/mirror-single" --no-bundle)

echo "== fedstac harvest without the manifest (a plain static catalogue): full, then unchanged" >&2
mv "$out/site/fedstac-manifest.json" "$out/manifest.away"
trap 'mv "$out/manifest.away" "$out/site/fedstac-manifest.json" 2>/dev/null || true; kill -QUIT $nginx_pid 2>/dev/null || true; wait $nginx_pid 2>/dev/null || true' EXIT
read -r plain_s plain_req plain_bytes < <(median_run "$out/mirror-plain")
read -r plain_again_s plain_again_req plain_again_bytes < <(measure "$fedstac" --quiet harvest "$url" --name partner --cache "$out/mirror-plain")
mv "$out/manifest.away" "$out/site/fedstac-manifest.json"

echo "== pystac crawl (at most ${pystac_seconds}s)" >&2
cat >"$out/pystac_crawl.py" <<'EOF'
import sys, time
import pystac
url, limit = sys.argv[1], float(sys.argv[2])
t0 = time.monotonic()
n = 0
for item in pystac.Catalog.from_file(url).get_items(recursive=True):
    n += 1
    if time.monotonic() - t0 > limit:
        break
print(n, time.monotonic() - t0)
EOF
read -r py_s py_req py_bytes < <(measure .venv/bin/python "$out/pystac_crawl.py" "$url" "$pystac_seconds")
read -r py_items py_secs < <(awk '{printf "%d %.2f\n", $1, $2}' "$out/last.log")
py_version=$(.venv/bin/python -c 'import pystac; print(pystac.__version__)')

rate() { python3 -c "print(f'{$1/$2:,.0f}')"; }
pct() { python3 -c "print(f'{100*$1/$2:.3f}')"; }
{
  echo "Measured $(date -u +%Y-%m-%d) on $(nproc) cores, $(uname -m); fedstac release build, nginx $(nginx -v 2>&1 | sed 's|.*/||'), pystac $py_version; one loopback partner with $n_items items ($n_docs STAC documents)."
  echo
  echo "| run | items | seconds | items/s | requests | bytes (nginx) |"
  echo "| --- | ---: | ---: | ---: | ---: | ---: |"
  echo "| fedstac harvest, full: manifest + bundle (median of $runs) | $full_items | $full_s | $(rate "$full_items" "$full_s") | $full_req | $full_bytes |"
  echo "| fedstac harvest --no-bundle, full: a request per document (median of $runs) | $full_items | $single_s | $(rate "$full_items" "$single_s") | $single_req | $single_bytes |"
  echo "| fedstac harvest, unchanged partner | $full_items | $again_s | | $again_req | $again_bytes |"
  echo "| fedstac harvest, full, no manifest (plain static catalogue; median of $runs) | $full_items | $plain_s | $(rate "$full_items" "$plain_s") | $plain_req | $plain_bytes |"
  echo "| fedstac harvest, unchanged, no manifest (a 304 per document) | $full_items | $plain_again_s | | $plain_again_req | $plain_again_bytes |"
  echo "| pystac $py_version crawl (\`get_items(recursive=True)\`) | $py_items | $py_secs | $(rate "$py_items" "$py_secs") | $py_req | $py_bytes |"
  echo
  echo "fedstac's full harvest is **$(python3 -c "print(f'{($full_items/$full_s)/($py_items/$py_secs):.0f}')")×** pystac's items/s (goal ≥ 20×;" \
       "$(python3 -c "print(f'{($full_items/$single_s)/($py_items/$py_secs):.0f}')")× with a request per document, as pystac makes);" \
       "an unchanged re-harvest moves **$(pct "$again_bytes" "$full_bytes")%** of the full harvest's bytes (goal ≤ 1%)" \
       "($(pct "$plain_again_bytes" "$plain_bytes")% without the manifest, where every document costs a conditional request)."
  if [[ "$py_items" -lt "$n_items" ]]; then
    echo "pystac was stopped after ${pystac_seconds}s ($py_items of $n_items items); its rate is over that time."
  fi
} >"$out/results.md"
cat "$out/results.md"

python3 - "$out/results.md" bench/README.md <<'EOF'
import sys, re
results, readme = sys.argv[1], sys.argv[2]
body = open(results).read().strip()
text = open(readme).read()
block = f"<!-- HARVEST:START -->\n{body}\n<!-- HARVEST:END -->"
text = re.sub(r"<!-- HARVEST:START -->.*?<!-- HARVEST:END -->", lambda _: block, text, flags=re.S)
open(readme, "w").write(text)
EOF
