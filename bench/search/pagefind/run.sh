#!/usr/bin/env bash
# Pagefind over the same synthetic items as bench/search/run.sh (100k by default):
# one HTML page per item, `pagefind` indexes them, the facet and text queries of
# queries.txt are measured in headless Chromium like the viewer (Pagefind has no
# time or bbox filter). Output: bench/out/search/pagefind/{build.json,browser.jsonl}.
set -euo pipefail
cd "$(dirname "$0")/../../.."
n=${N:-100000}
out=bench/out/search/pagefind
rm -rf "$out"; mkdir -p "$out"
cargo build --release --locked --quiet -p fedstac-index --features write --example bench-index
target=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
"$target/release/examples/bench-index" "$n" "$out/fedstac-index" --no-fgb --dump="$out/items.jsonl" >/dev/null
python3 bench/search/pagefind/pages.py "$out/items.jsonl" "$out/site"
(cd bench/search/pagefind && npm install --no-audit --no-fund --silent)
start=$(date +%s.%N)
bench/search/pagefind/node_modules/.bin/pagefind --site "$out/site" --output-subdir pagefind >"$out/pagefind.log" 2>&1
secs=$(python3 -c "print(f'{$(date +%s.%N) - $start:.1f}')")
bytes=$(du -sb --apparent-size "$out/site/pagefind" | cut -f1)
files=$(find "$out/site/pagefind" -type f | wc -l)
echo "{\"items\": $n, \"seconds\": $secs, \"index_bytes\": $bytes, \"index_files\": $files}" | tee "$out/build.json"

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
  gzip on; gzip_comp_level 6; gzip_types application/wasm application/javascript text/css application/json;
  server { listen 127.0.0.1:$port; root $(cd "$out/site" && pwd); }
}
CONF
/usr/sbin/nginx -p "$tmp" -e "$tmp/logs/error.log" -c "$tmp/nginx.conf" -g 'daemon off;' &
nginx_pid=$!
trap 'kill $nginx_pid 2>/dev/null; rm -rf "$tmp"' EXIT
for _ in $(seq 50); do curl -sf "http://127.0.0.1:$port/search.html" -o /dev/null 2>/dev/null && break; python3 -c 'import time; time.sleep(0.1)'; done
node bench/search/pagefind/browser.mjs "http://127.0.0.1:$port/" bench/search/queries.txt | tee "$out/browser.jsonl"
