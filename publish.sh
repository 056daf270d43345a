#!/usr/bin/env bash
# Signed publishing: builds the site, signs the delta against what the
# receiver holds with the publisher's ed25519 key, and uploads it.
#   ./publish.sh --config config/site.yaml --receiver https://stac.example.org/ \
#                --auth publisher-client.yaml --key publisher.key --key-id <id>
# The OAuth2 client secret comes from the file named in the client config or
# from FEDSTAC_CLIENT_SECRET, never from the command line. FEDSTAC_BIN picks
# the binary (default: `fedstac` on PATH, else a release build of this checkout).
set -euo pipefail
bin=${FEDSTAC_BIN:-}
if [[ -z "$bin" ]]; then
  if command -v fedstac >/dev/null; then
    bin=fedstac
  else
    here="$(cd "$(dirname "$0")" && pwd)"
    (cd "$here" && cargo build --release --quiet --locked -p fedstac)
    bin="$(cd "$here" && cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')/release/fedstac"
  fi
fi
exec "$bin" publish "$@"
