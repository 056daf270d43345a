#!/usr/bin/env bash
# Publishing benchmark (fedstac receive / publish / the transaction endpoint).
#  - Site: the sample archive plus N tiny datasets (`fedstac sample --extra-datasets N`),
#    built with --no-checksums; a real OAuth2 server (npm oidc-provider, tests/oauth)
#    and `fedstac receive` on loopback ports.
#  - Publish: the whole site into an empty receiver, again unchanged, and a delta
#    (1% of the datasets removed and 1% added, then rebuilt): seconds and bytes.
#  - Transactions: bulk POSTs (FeatureCollections of B items) of K new items, into a
#    receiver holding the small demo site and into the one holding the N-item site.
# Figures go to bench/README.md (between the PUBLISH markers) and bench/out/publish/results.md.
#   bench/publish.sh                    N=100000, K=20000, B=5000 (into the big site: one batch of K)
#   ITEMS=10000 TX_ITEMS=5000 bench/publish.sh
#   ONLY=transactions bench/publish.sh  only the transaction rows: the N-item receiver starts from a
#                                       hard-linked copy of the built site instead of a publish, and only
#                                       those rows of the README block are replaced
#   SKIP_SETUP=1                        skip scripts/setup.sh (when it ran already)
#   FEDSTAC=/path/to/fedstac            that binary instead of building this tree's (before/after comparisons)
set -euo pipefail
cd "$(dirname "$0")/.."
only=${ONLY:-}
[[ -z "$only" || "$only" == transactions ]] || { echo "ONLY must be transactions" >&2; exit 2; }
[[ -n "${SKIP_SETUP:-}" ]] || scripts/setup.sh --test >/dev/null
if [[ -n "${FEDSTAC:-}" ]]; then
  fedstac=$FEDSTAC
else
  cargo build --release --locked --quiet -p fedstac
  target=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
  fedstac=$target/release/fedstac
fi
items=${ITEMS:-100000}
tx_items=${TX_ITEMS:-20000}
batch=${BATCH:-5000}
out=$(pwd)/bench/out/publish
mkdir -p "$out"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
# Background servers (some started in subshells) are listed in a file and stopped on exit.
: >"$out/pids"
cleanup() { while read -r p; do kill "$p" 2>/dev/null || true; done <"$out/pids"; }
trap cleanup EXIT

# The site (kept between runs for the same N: writing and building it is the slow part).
if [[ "$(cat "$out/site.stamp" 2>/dev/null)" != "$items" ]]; then
  echo "== site: sample archive + $items datasets" >&2
  rm -rf "$out/archive" "$out/site" "$out/cache"
  "$fedstac" --quiet sample "$out/archive" --extra-datasets "$items"
  echo "$items" >"$out/site.stamp"
fi
cat >"$out/site.yaml" <<EOF
site: {name: bench, title: Publishing benchmark}
roots: [{path: "$out/archive/ceda/badc/cmip6/data", recipe: cmip6, data_url: "https://data.bench.example/cmip6/"}]
output: "$out/site"
cache: "$out/cache"
checksums: false
EOF
"$fedstac" --quiet build -c "$out/site.yaml"
n_items=$(find "$out/site/CMIP6" -name 'CMIP6.*.json' -printf x | wc -c)

# The OAuth2 server.
oport=$(free_port)
rm -f "$out/oidc-keys.json"
cat >"$out/oidc.json" <<EOF
{"clients": [{"client_id": "bench-admin", "client_secret": "bench-admin-secret", "scope": "stac:write stac:publish"},
             {"client_id": "partner", "client_secret": "partner-secret", "scope": "stac:write"}],
 "keys": "$out/oidc-keys.json"}
EOF
node tests/oauth/server.mjs "$oport" "$out/oidc.json" >"$out/oidc.log" 2>&1 </dev/null & echo $! >>"$out/pids"
until curl -sf "http://127.0.0.1:$oport/.well-known/openid-configuration" >/dev/null; do sleep 0.2; done
printf 'bench-admin-secret' >"$out/admin.secret"
cat >"$out/admin.yaml" <<EOF
issuer: http://127.0.0.1:$oport
client_id: bench-admin
client_secret_file: $out/admin.secret
scope: "stac:write stac:publish"
resource: "urn:fedstac:bench"
EOF
rm -f "$out/publisher.key" "$out/publisher.key.pub"
"$fedstac" keygen "$out/publisher.key" >/dev/null

# receiver <name> <site dir>: starts one, prints its port.
receiver() {
  local name=$1 dir=$2 port; port=$(free_port)
  rm -rf "$out/state-$name"
  cat >"$out/receiver-$name.yaml" <<EOF
listen: 127.0.0.1:$port
site_dir: $dir
state_dir: $out/state-$name
site: {name: bench, title: Publishing benchmark}
max_body_bytes: 1073741824
auth: {issuer: "http://127.0.0.1:$oport", audience: "urn:fedstac:bench"}
grants:
  - {client: bench-admin, admin: true}
  - {client: partner, node: partner, hosts: [data.partner.example], replicas: true, own_datasets: true}
publishers:
  - {key_id: bench, public_key_file: $out/publisher.key.pub, client: bench-admin}
EOF
  # Debug lines of the apply: each phase's seconds (bench/README.md reads them).
  RUST_LOG=${RUST_LOG:-info,fedstac::publish=debug,fedstac::output=debug} \
    "$fedstac" receive -c "$out/receiver-$name.yaml" >/dev/null 2>"$out/receiver-$name.log" & echo $! >>"$out/pids"
  until (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null; do sleep 0.1; done
  echo "$port"
}
# ready <name>: waits until the receiver has readied its site (it logs `ready:`;
# writes would wait in its queue meanwhile, timed as theirs), then flushes the
# page cache's dirty data (the site's copy, the spare tree) so that a row does
# not pay for what came before it in its `syncfs`.
ready() {
  until grep -q 'ready:' "$out/receiver-$1.log"; do
    grep -q 'readying the site' "$out/receiver-$1.log" && break
    sleep 0.2
  done
  sync
}
publish() { # <port> → the JSON report
  "$fedstac" publish --no-build --json -c "$out/site.yaml" --receiver "http://127.0.0.1:$1/" --auth "$out/admin.yaml" --key "$out/publisher.key" --key-id bench
}
field() { python3 -c "import json,sys; r=json.load(open('$1')); print(r$2)"; }

if [[ "$only" == transactions ]]; then
# The receiver holding the N-item site starts after the growing-site row (below),
# so that its start (reading every item, linking a spare tree) does not share the cores with that row.
rm -rf "$out/web"
else
echo "== publish $n_items items into an empty receiver" >&2
rm -rf "$out/web"; mkdir -p "$out/web"
wport=$(receiver web "$out/web/site")
publish "$wport" >"$out/publish-full.json"
publish "$wport" >"$out/publish-unchanged.json"
echo "== delta: 1% of the datasets removed, 1% added" >&2
ndelta=$(( items / 100 ))
python3 - "$out/archive/ceda/badc/cmip6/data" "$ndelta" <<'PY'
import os, sys
root, n = sys.argv[1], int(sys.argv[2])
# Version directories of the extra datasets (one file each), in a fixed order.
dirs = sorted({d for d, _, files in os.walk(root) for f in files if f.endswith(".nc")})
victims = dirs[len(dirs) // 2 : len(dirs) // 2 + n]
for d in victims:
    # Moved to a new version (the old item goes, a new one comes): one removal and one addition each.
    # A rerun moves the same datasets on to the next version.
    parent, version = os.path.split(d)
    new = "v%08d" % (int(version[1:]) + 1) if version.startswith("v2099") else "v20990101"
    os.rename(d, os.path.join(parent, new))
print(len(victims), file=sys.stderr)
PY
t0=$(date +%s.%N)
"$fedstac" --quiet build -c "$out/site.yaml"
t1=$(date +%s.%N)
build_delta=$(python3 -c "print(f'{$t1-$t0:.2f}')")
publish "$wport" >"$out/publish-delta.json"
fi

echo "== transactions: $tx_items items in bulk POSTs of $batch" >&2
# A template item of the site, its hrefs moved to the partner's host.
template=$(find "$out/site/CMIP6" -name 'CMIP6.*.json' -print -quit)
token() { curl -sf -u partner:partner-secret -d grant_type=client_credentials -d scope=stac:write -d resource=urn:fedstac:bench "http://127.0.0.1:$oport/token" | python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])'; }
bulk() { # <port> <label> <batch> → items/s line
  TOKEN=$(token) python3 - "$template" "http://127.0.0.1:$1" "$tx_items" "$3" "$2" <<'PY'
import json, os, sys, time, urllib.request
template, base, total, batch, label = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
t = json.load(open(template))
t["links"] = []
for a in t["assets"].values():
    a["href"] = a["href"].replace("data.bench.example", "data.partner.example")
parts = t["id"].split(".")
def item(n):
    v = json.loads(json.dumps(t))
    member = f"r{n + 1}i1p1f9"
    v["id"] = ".".join(parts[:5] + [member] + parts[6:])
    v["properties"]["cmip6:member_id"] = member
    return v
# Every request body is made before the clock starts: the client's JSON is not the receiver's time.
bodies = [json.dumps({"type": "FeatureCollection", "features": [item(n) for n in range(b, min(total, b + batch))]}).encode() for b in range(0, total, batch)]
times = []
start = time.time()
for body in bodies:
    req = urllib.request.Request(f"{base}/collections/CMIP6/items", data=body, method="POST",
                                 headers={"Authorization": "Bearer " + os.environ["TOKEN"], "Content-Type": "application/json"})
    t0 = time.time()
    with urllib.request.urlopen(req, timeout=3600) as r:
        assert r.status == 201, r.status
    times.append(time.time() - t0)
total_s = time.time() - start
print(json.dumps({"label": label, "items": total, "batch": batch, "seconds": round(total_s, 2), "items_per_s": round(total / total_s), "first_batch_s": round(times[0], 2), "last_batch_s": round(times[-1], 2)}))
PY
}
rm -rf "$out/small"; mkdir -p "$out/small"
sport=$(receiver small "$out/small/site")
spid=$(tail -n 1 "$out/pids")
ready small
bulk "$sport" "into an empty site" "$batch" >"$out/tx-small.json"
# Stopped before the next row (its old trees are removed in the background meanwhile).
kill "$spid" 2>/dev/null || true
while kill -0 "$spid" 2>/dev/null; do sleep 0.1; done
if [[ "$only" == transactions ]]; then
  echo "== a receiver holding the $n_items-item site (a hard-linked copy of the build)" >&2
  mkdir -p "$out/web"
  cp -al "$out/site" "$out/web/site"
  wport=$(receiver web "$out/web/site")
fi
ready web
# Into the big site: each apply regenerates the pages of every item, so the batch is what counts.
bulk "$wport" "into the $n_items-item site" "$tx_items" >"$out/tx-large.json"

# Results.
{
  echo "Measured $(date -u +%F) on $(nproc) cores, $(uname -m); fedstac release build, oidc-provider $(node -p 'require("./tests/oauth/node_modules/oidc-provider/package.json").version'), Node $(node --version); one receiver at a time, all on loopback."
  echo
  if [[ "$only" != transactions ]]; then
  echo "| publish run | files in site | files sent | files removed | upload bytes | seconds |"
  echo "| --- | ---: | ---: | ---: | ---: | ---: |"
  for run in full unchanged delta; do
    f=$out/publish-$run.json
    echo "| $run ($n_items items) | $(field "$f" '["files"]') | $(field "$f" '["uploaded"]') | $(field "$f" '["removed"]') | $(field "$f" '["upload_bytes"]') | $(python3 -c "import json; print(f'{json.load(open(\"$f\"))[\"seconds\"]:.2f}')") |"
  done
  echo
  echo "The delta: $ndelta datasets moved to a new version (one item removed and one added each); rebuilding the site took ${build_delta} s before publishing."
  echo
  fi
  echo "| transactions (bulk POST, FeatureCollection) | items | batch | seconds | items/s | first batch s | last batch s |"
  echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"
  for f in "$out/tx-small.json" "$out/tx-large.json"; do
    python3 -c "import json; r=json.load(open('$f')); print(f\"| {r['label']} | {r['items']} | {r['batch']} | {r['seconds']} | {r['items_per_s']:,} | {r['first_batch_s']} | {r['last_batch_s']} |\")"
  done
} >"$out/results.md"
cat "$out/results.md"
python3 - bench/README.md "$out/results.md" "$only" <<'PY'
import sys
readme, results, only = sys.argv[1], open(sys.argv[2]).read(), sys.argv[3]
text = open(readme).read()
start, end = "<!-- PUBLISH:START -->", "<!-- PUBLISH:END -->"
if start in text:
    if only == "transactions":
        # Only the transaction rows (and the date line) change; the publish rows stay as measured.
        block = text[text.index(start) + len(start) : text.index(end)].split("\n")
        new = results.split("\n")
        rows = {l.split("|")[1].strip(): l for l in new if l.startswith("| into ")}
        block = [rows.get(l.split("|")[1].strip(), l) if l.startswith("| into ") else l for l in block]
        block = [new[0] + " (transaction rows; publish rows as measured before)" if l.startswith("Measured ") else l for l in block]
        text = text[: text.index(start) + len(start)] + "\n".join(block) + text[text.index(end):]
    else:
        text = text[: text.index(start) + len(start)] + "\n" + results + text[text.index(end):]
    open(readme, "w").write(text)
PY
