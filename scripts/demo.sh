#!/usr/bin/env bash
# The demo: installs what is missing, builds fedstac, writes the synthetic
# sample archive, builds both sites' catalogues and serves them on localhost.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
port=8000   # the demo configs' data_url names this port

cargo build --release --locked --quiet -p fedstac
fedstac=target/release/fedstac
[[ -n "${CARGO_TARGET_DIR:-}" ]] && fedstac="$CARGO_TARGET_DIR/release/fedstac"

$fedstac sample site/archive
$fedstac build -c config/demo-ceda.yaml
$fedstac build -c config/demo-dkrz.yaml

# Client-side search: the viewer at the site root (http://localhost:8000/), searching
# each site's index (site/<name>/index/); sites.json lists the sites to choose from.
target=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
scripts/build-viewer.sh "$target/viewer-release" --release
cp -r "$target/viewer-release/." site/
cat > site/sites.json <<'JSON'
[{"name": "ceda", "title": "CEDA CMIP6 (demo)", "href": "ceda/"},
 {"name": "dkrz", "title": "DKRZ CMIP6 (demo)", "href": "dkrz/"}]
JSON

# nginx (setup.sh installs it): Kerchunk readers fetch byte ranges, which python's http.server ignores.
if nginx_bin=$(command -v nginx || ls /usr/sbin/nginx 2>/dev/null); then
  ng=$(pwd)/.fedstac-cache/demo-nginx
  mkdir -p "$ng"
  user=""; [[ $(id -u) -eq 0 ]] && user="user root;"
  cat >"$ng/nginx.conf" <<NGINX
worker_processes 1;
pid $ng/nginx.pid;
error_log $ng/error.log warn;
$user
events { worker_connections 256; }
http {
  include /etc/nginx/mime.types;
  types { application/json json; }
  access_log off;
  client_body_temp_path $ng/body; proxy_temp_path $ng/proxy; fastcgi_temp_path $ng/fastcgi; uwsgi_temp_path $ng/uwsgi; scgi_temp_path $ng/scgi;
  server { listen 127.0.0.1:$port; root $(pwd)/site; index index.html catalog.html; }
}
NGINX
  "$nginx_bin" -p "$ng" -c "$ng/nginx.conf" -e "$ng/error.log" -g 'daemon off;' &
else
  python3 -m http.server "$port" --bind 127.0.0.1 --directory site >/dev/null 2>&1 &
fi
server=$!
trap 'kill $server 2>/dev/null' EXIT INT TERM
for _ in $(seq 50); do curl -fsS -o /dev/null "http://localhost:$port/ceda/catalog.json" 2>/dev/null && break; sleep 0.1; done

# Federation: each site harvests the other's served catalogue and rebuilds, so a dataset
# held only at CEDA is found at DKRZ with CEDA's URLs, and one held at both lists both copies.
$fedstac harvest -c config/demo-ceda.yaml
$fedstac harvest -c config/demo-dkrz.yaml
$fedstac build -c config/demo-ceda.yaml
$fedstac build -c config/demo-dkrz.yaml
$fedstac diff site/ceda site/dkrz && echo "demo: both sites answer with the same datasets"

echo
echo "fedstac demo: http://localhost:$port/ (search)  catalogues: /ceda/catalog.html /dkrz/catalog.html   (Ctrl-C to stop)"
wait $server
