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

echo
echo "fedstac demo: http://localhost:$port/   (Ctrl-C to stop)"
exec python3 -m http.server "$port" --bind 127.0.0.1 --directory site
