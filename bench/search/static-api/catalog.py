"""A static STAC catalogue of the synthetic items (bench-index --dump), laid
out like fedstac's (collection → activity → institution → source →
experiment → items), for stac-fastapi-static.
    python3 catalog.py items.jsonl <dir>"""
import json, os, sys
from collections import defaultdict
from datetime import datetime, timezone

src, root = sys.argv[1], sys.argv[2]
PROPS = {"activity": "cmip6:activity_id", "institution": "cmip6:institution_id", "source": "cmip6:source_id", "experiment": "cmip6:experiment_id",
         "member": "cmip6:member_id", "table": "cmip6:table_id", "variable": "cmip6:variable_id", "grid": "cmip6:grid_label",
         "frequency": "cmip6:frequency", "realm": "cmip6:realm", "resolution": "cmip6:nominal_resolution"}
LISTS = {"activity", "realm"}


def iso(ts):
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ") if ts > -62135596800 else "0001-01-01T00:00:00Z"


def write(path, doc):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump(doc, f)


tree = defaultdict(list)
with open(src) as f:
    for line in f:
        it = json.loads(line)
        fc = it["facets"]
        levels = (fc["activity"][-1], fc["institution"][0], fc["source"][0], fc["experiment"][0])
        w, s, e, n = it["bbox"]
        props = {"datetime": None, "start_datetime": iso(it["start"]), "end_datetime": iso(it["end"]), "title": it["title"],
                 "latest": fc["latest"] == ["true"], "cmip6:variable_long_name": it["text"][0], "cmip6:variable_cf_standard_name": it["text"][1]}
        for k, p in PROPS.items():
            props[p] = fc[k] if k in LISTS else fc[k][0]
        item = {"type": "Feature", "stac_version": "1.1.0", "id": it["id"], "collection": "CMIP6", "bbox": it["bbox"],
                "geometry": {"type": "Polygon", "coordinates": [[[w, s], [e, s], [e, n], [w, n], [w, s]]]},
                "properties": props, "assets": {}, "links": []}
        tree[levels].append(item)

sub = defaultdict(set)
for levels, items in tree.items():
    d = os.path.join(root, "CMIP6", *levels)
    for it in items:
        it["links"] = [{"rel": "parent", "href": "./catalog.json"}, {"rel": "collection", "href": "../" * 4 + "collection.json"},
                       {"rel": "root", "href": "../" * 5 + "catalog.json"}]
        write(os.path.join(d, it["id"] + ".json"), it)
    write(os.path.join(d, "catalog.json"), {"type": "Catalog", "stac_version": "1.1.0", "id": "-".join(levels), "description": "items",
        "links": [{"rel": "item", "href": f"./{it['id']}.json", "type": "application/geo+json"} for it in items] + [{"rel": "parent", "href": "../catalog.json"}, {"rel": "root", "href": "../" * 5 + "catalog.json"}]})
    for i in range(1, 4):
        sub[levels[:i]].add(levels[i])
    sub[()].add(levels[0])
for prefix, children in sub.items():
    if not prefix:
        continue
    d = os.path.join(root, "CMIP6", *prefix)
    write(os.path.join(d, "catalog.json"), {"type": "Catalog", "stac_version": "1.1.0", "id": "-".join(prefix), "description": "level",
        "links": [{"rel": "child", "href": f"./{c}/catalog.json"} for c in sorted(children)] + [{"rel": "parent", "href": "../catalog.json"}, {"rel": "root", "href": "../" * (len(prefix) + 1) + "catalog.json"}]})
write(os.path.join(root, "CMIP6", "collection.json"), {"type": "Collection", "stac_version": "1.1.0", "id": "CMIP6", "description": "synthetic CMIP6", "license": "other",
    "extent": {"spatial": {"bbox": [[-180, -90, 180, 90]]}, "temporal": {"interval": [[None, None]]}},
    "links": [{"rel": "child", "href": f"./{c}/catalog.json"} for c in sorted(sub[()])] + [{"rel": "parent", "href": "../catalog.json"}, {"rel": "root", "href": "../catalog.json"}]})
write(os.path.join(root, "catalog.json"), {"type": "Catalog", "stac_version": "1.1.0", "id": "bench", "description": "synthetic CMIP6",
    "links": [{"rel": "child", "href": "./CMIP6/collection.json"}, {"rel": "root", "href": "./catalog.json"}]})
