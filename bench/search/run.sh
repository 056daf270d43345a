#!/usr/bin/env bash
# Client-side search at scale: synthetic CMIP6 catalogues (index only, written by the
# fedstac-index `bench-index` example), the fixed queries of queries.txt measured
# natively (bytes/requests the engine needs) and in headless Chromium against nginx
# (cold cache per query: bytes on the wire, requests, time to first results).
# Figures go to bench/out/search/results.md and bench/README.md between the SEARCH markers.
#   bench/search/run.sh                       100k, 1M and 10M items
#   SIZES="100000" bench/search/run.sh        other sizes
#   FGB_MAX=1000000 (default): larger sizes skip items.fgb (timed separately at FGB_MAX)
#   REUSE=1: keep an index already built at a size (bench/out/search/s<n>/index), measure only
#   Run it alone: flock /work/cpu.lock bench/search/run.sh (a shared machine's load shows in the times)
set -euo pipefail
cd "$(dirname "$0")/../.."
scripts/setup.sh --test
cargo build --release --locked --quiet -p fedstac-index --features write --example bench-index --bin fedstac-search
target=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
scripts/build-viewer.sh "$target/viewer-release" --release
out=bench/out/search
mkdir -p "$out"
sizes=${SIZES:-"100000 1000000 10000000"}
fgb_max=${FGB_MAX:-1000000}

for n in $sizes; do
  dir=$out/s$n
  if [[ -n "${REUSE:-}" && -f "$dir/build.json" && -f "$dir/index/index.json" ]]; then
    echo "== index: $n items (reused)" >&2
  else
    rm -rf "$dir"; mkdir -p "$dir"
    flags=(); ((n > fgb_max)) && flags=(--no-fgb)
    echo "== index: $n items ${flags[*]:-}" >&2
    "$target/release/examples/bench-index" "$n" "$dir/index" "${flags[@]}" >"$dir/build.json"
    cat "$dir/build.json" >&2
  fi
  cp -r "$target/viewer-release/." "$dir/"
  : >"$dir/native.jsonl"
  while IFS=$'\t' read -r name qs; do
    [[ -z "$name" || "$name" == \#* ]] && continue
    "$target/release/fedstac-search" "$dir/index" "$qs" | python3 -c "import json,sys; d=json.load(sys.stdin); print(json.dumps({'name': '''$name''', 'total': d['total'], 'bytes': d['bytes'], 'requests': d['requests'], 'exact': d['exact'], 'counted': len(d['counts'])}))" >>"$dir/native.jsonl"
  done < bench/search/queries.txt
done

# nginx on a free loopback port, gzip for the viewer's own files (index .bin files are DEFLATE already):
# precompressed by scripts/build-viewer.sh (gzip_static), JSON compressed per request.
tmp=$(mktemp -d); chmod 755 "$tmp"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
mkdir -p "$tmp/logs" "$tmp/t"
cat >"$tmp/nginx.conf" <<CONF
worker_processes 2;
pid $tmp/nginx.pid;
error_log $tmp/logs/error.log;
events { worker_connections 512; }
http {
  include /etc/nginx/mime.types;
  access_log off;
  client_body_temp_path $tmp/t/b; proxy_temp_path $tmp/t/p; fastcgi_temp_path $tmp/t/f; uwsgi_temp_path $tmp/t/u; scgi_temp_path $tmp/t/s;
  gzip on; gzip_comp_level 6; gzip_types application/wasm application/javascript text/css application/json; gzip_static on;
  server { listen 127.0.0.1:$port; root $(cd "$out" && pwd); }
}
CONF
/usr/sbin/nginx -p "$tmp" -e "$tmp/logs/error.log" -c "$tmp/nginx.conf" -g 'daemon off;' &
nginx_pid=$!
trap 'kill $nginx_pid 2>/dev/null; rm -rf "$tmp"' EXIT
for _ in $(seq 50); do curl -sf "http://127.0.0.1:$port/" -o /dev/null 2>/dev/null && break; python3 -c 'import time; time.sleep(0.1)'; done
for n in $sizes; do
  echo "== browser: $n items" >&2
  before=$(cut -d' ' -f1-3 /proc/loadavg)
  node bench/search/browser.mjs "http://127.0.0.1:$port/s$n/" bench/search/queries.txt >"$out/s$n/browser.jsonl"
  echo "$before before, $(cut -d' ' -f1-3 /proc/loadavg) after" >"$out/s$n/loadavg.txt"
done

python3 bench/search/report.py $sizes >"$out/results.md"
python3 - "$out/results.md" <<'PY'
import pathlib, sys
readme = pathlib.Path("bench/README.md")
text = readme.read_text()
start, end = "<!-- SEARCH:START -->", "<!-- SEARCH:END -->"
head, rest = text.split(start, 1)
_, tail = rest.split(end, 1)
readme.write_text(head + start + "\n" + pathlib.Path(sys.argv[1]).read_text() + end + tail)
PY
cat "$out/results.md"
