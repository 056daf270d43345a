"""The search index answers like STAC API Item Search with CQL2.

Sites built by the fedstac binary are searched with `fedstac-search` (the
same engine and the same steps as the viewer, over the index files) and the
answers are compared with an evaluation written here from the CQL2 and STAC
API texts, over the item JSON files themselves: `=`, `in`, `a_overlaps` (for
the list-valued cmip6:activity_id and cmip6:realm), `and`, `t_intersects`
(what the `datetime` parameter means for items with start/end datetimes) and
`s_intersects` (what `bbox` means). Free text is not CQL2; it is checked
against its documented rule (every term prefixes a word of the id, title,
variable long name or standard name). Live counts are checked too: a facet's
count for a value is the number of items matching the query without that
facet's own filter, plus `facet = value`.
"""
from __future__ import annotations

import json
import os
import random
import re
import subprocess
import urllib.parse
from datetime import datetime, timezone
from pathlib import Path

import pytest

import stac_check
from test_catalogue import dkrz_config

REPO = Path(__file__).resolve().parents[2]
FEDSTAC = os.environ.get("FEDSTAC_BIN", str(REPO / "target" / "debug" / "fedstac"))
SEARCH = str(Path(FEDSTAC).with_name("fedstac-search"))

# URL facet name → (STAC property, list-valued per the cmip6 extension schema).
FACETS = {
    "activity": ("cmip6:activity_id", True),
    "institution": ("cmip6:institution_id", False),
    "source": ("cmip6:source_id", False),
    "experiment": ("cmip6:experiment_id", False),
    "member": ("cmip6:member_id", False),
    "table": ("cmip6:table_id", False),
    "variable": ("cmip6:variable_id", False),
    "grid": ("cmip6:grid_label", False),
    "frequency": ("cmip6:frequency", False),
    "realm": ("cmip6:realm", True),
    "resolution": ("cmip6:nominal_resolution", False),
    "latest": ("latest", False),
}


# ---------------------------------------------------------------- CQL2 ----

def parse_instant(s: str) -> datetime:
    return datetime.fromisoformat(s.replace("Z", "+00:00"))


def cql2_filter(q: dict) -> dict:
    """CQL2-JSON of a viewer query (what a STAC API client would send)."""
    args = []
    for name, values in q.get("facets", {}).items():
        prop, is_list = FACETS[name]
        if name == "latest":
            values = [v == "true" for v in values]
        if is_list:
            args.append({"op": "a_overlaps", "args": [{"property": prop}, values]})
        elif len(values) == 1:
            args.append({"op": "=", "args": [{"property": prop}, values[0]]})
        else:
            args.append({"op": "in", "args": [{"property": prop}, values]})
    if q.get("from") or q.get("to"):
        start = f"{q['from']}T00:00:00Z" if q.get("from") else ".."
        end = f"{q['to']}T23:59:59Z" if q.get("to") else ".."
        args.append({"op": "t_intersects", "args": [{"property": "datetime"}, {"interval": [start, end]}]})
    if q.get("bbox"):
        args.append({"op": "s_intersects", "args": [{"property": "geometry"}, {"bbox": q["bbox"]}]})
    return {"op": "and", "args": args} if args else {"op": "and", "args": []}


def prop_value(item: dict, prop: str):
    if prop == "geometry":
        return item["geometry"]
    return item["properties"].get(prop)


def envelopes(geometry: dict):
    polys = geometry["coordinates"] if geometry["type"] == "MultiPolygon" else [geometry["coordinates"]]
    for poly in polys:
        xs = [p[0] for ring in poly for p in ring]
        ys = [p[1] for ring in poly for p in ring]
        yield min(xs), min(ys), max(xs), max(ys)


def bbox_parts(b):
    w, s, e, n = b
    return [(w, s, e, n)] if w <= e else [(w, s, 180.0, n), (-180.0, s, e, n)]


def evaluate(expr: dict, item: dict) -> bool:
    op, args = expr["op"], expr["args"]
    if op == "and":
        return all(evaluate(a, item) for a in args)
    if op in ("=", "in", "a_overlaps"):
        value = prop_value(item, args[0]["property"])
        if value is None:
            return False
        if op == "=":
            return value == args[1]
        if op == "in":
            return value in args[1]
        return isinstance(value, list) and any(v in args[1] for v in value)
    if op == "t_intersects":
        p = item["properties"]
        start = parse_instant(p.get("start_datetime") or p["datetime"])
        end = parse_instant(p.get("end_datetime") or p["datetime"])
        lo, hi = args[1]["interval"]
        return (hi == ".." or start <= parse_instant(hi)) and (lo == ".." or end >= parse_instant(lo))
    if op == "s_intersects":
        qb = args[1]["bbox"]
        return any(
            w <= qe and e >= qw and s <= qn and n >= qs
            for (w, s, e, n) in envelopes(item["geometry"])
            for (qw, qs, qe, qn) in bbox_parts(qb)
        )
    raise ValueError(f"unsupported CQL2 op {op}")


def words(text: str) -> list[str]:
    return [w.lower() for w in re.findall(r"[^\W_]+", text or "")]


def text_match(item: dict, text: str) -> bool:
    p = item["properties"]
    fields = [item["id"], p.get("title"), p.get("cmip6:variable_long_name"), p.get("cmip6:variable_cf_standard_name")]
    vocab = {w for f in fields for w in words(f)}
    return all(any(v.startswith(t) for v in vocab) for t in words(text))


def matches(item: dict, q: dict) -> bool:
    return evaluate(cql2_filter(q), item) and text_match(item, q.get("text", ""))


def facet_values(item: dict, name: str) -> list[str]:
    v = item["properties"].get(FACETS[name][0])
    if v is None:
        return []
    vals = v if isinstance(v, list) else [v]
    return [json.dumps(x) if isinstance(x, bool) else str(x) for x in vals]


# ------------------------------------------------------------- helpers ----

def items_of(site: Path) -> list[dict]:
    out = []
    for p in site.rglob("*.json"):
        if p.parent.name == "index" or "/index/" in str(p):
            continue
        doc = json.loads(p.read_text())
        if doc.get("type") == "Feature":
            out.append(doc)
    return out


def query_string(q: dict) -> str:
    pairs = []
    if q.get("text"):
        pairs.append(("q", q["text"]))
    for name, values in q.get("facets", {}).items():
        pairs += [(f"f.{name}", v) for v in values]
    if q.get("from"):
        pairs.append(("from", q["from"]))
    if q.get("to"):
        pairs.append(("to", q["to"]))
    if q.get("bbox"):
        pairs.append(("bbox", ",".join(str(x) for x in q["bbox"])))
    return urllib.parse.urlencode(pairs)


def engine(site: Path, q: dict, *flags: str) -> dict:
    out = subprocess.run([SEARCH, str(site / "index"), query_string(q), "--all", *flags], check=True, capture_output=True, text=True)
    return json.loads(out.stdout)


def check(site: Path, items: list[dict], q: dict):
    # Both ways the engine evaluates a facet filter: from its posting list, and
    # (large postings, narrow other filters) from the facet codes of the blocks.
    full = None
    for flags in [(), ("--defer-bytes=0",)]:
        got = engine(site, q, *flags)
        check_one(site, items, q, got)
        full = full or got
    # As the viewer reads it (no --all): common words' segmented postings only as
    # far as the page needs; the page is the same, the total exact or a lower bound.
    got = json.loads(subprocess.run([SEARCH, str(site / "index"), query_string(q)], check=True, capture_output=True, text=True).stdout)
    assert got["page"] == full["page"], q
    if got["exact"]:
        assert got["total"] == full["total"], q
    else:
        assert len(got["page"]) <= got["total"] < full["total"], q


def check_one(site: Path, items: list[dict], q: dict, got: dict):
    want = sorted(i["id"] for i in items if matches(i, q))
    assert sorted(got["all"]) == want, (q, got["total"], len(want))
    assert got["exact"] and got["total"] == len(want)
    assert got["page"] == got["all"][:20]
    # Live counts: query minus the facet's own filter, plus facet = value.
    for name in FACETS:
        if name not in got["counts"]:
            continue  # too broad to count (not at these sizes)
        rest = dict(q, facets={k: v for k, v in q.get("facets", {}).items() if k != name})
        expected: dict[str, int] = {}
        for i in items:
            if matches(i, rest):
                for v in set(facet_values(i, name)):
                    expected[v] = expected.get(v, 0) + 1
        assert got["counts"][name] == expected, (q, name)


def random_queries(items: list[dict], n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    values = {name: sorted({v for i in items for v in facet_values(i, name)}) for name in FACETS}
    vocab = sorted({w for i in items for w in words(i["id"]) + words(i["properties"].get("cmip6:variable_long_name"))})
    out = []
    for _ in range(n):
        q: dict = {"facets": {}}
        for name in rng.sample(sorted(FACETS), rng.choice([0, 1, 1, 2, 2, 3])):
            if values[name]:
                picked = rng.sample(values[name], min(len(values[name]), rng.choice([1, 1, 2])))
                if rng.random() < 0.1:
                    picked.append("no-such-value")
                q["facets"][name] = picked
        if rng.random() < 0.3 and vocab:
            w = rng.choice(vocab)
            q["text"] = w[: rng.randint(1, len(w))]
        if rng.random() < 0.4:
            y0 = rng.randint(1840, 2110)
            q["from"] = f"{y0}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"
            if rng.random() < 0.8:
                q["to"] = f"{y0 + rng.randint(0, 40)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"
            if rng.random() < 0.2:
                del q["from"]
        if rng.random() < 0.3:
            w = rng.randint(-180, 170)
            s = rng.randint(-90, 80)
            q["bbox"] = [w, s, rng.randint(w, 180), rng.randint(s, 90)]
            if rng.random() < 0.2:
                q["bbox"] = [170, -10, -170, 10]  # across the antimeridian
        out.append(q)
    return out


FIXED = [
    {},
    {"facets": {"variable": ["tas"]}},
    {"facets": {"variable": ["tas", "pr"]}},
    {"facets": {"variable": ["tas"], "experiment": ["historical", "ssp245"]}},
    {"facets": {"activity": ["CMIP"]}},
    {"facets": {"realm": ["atmos", "ocean"]}},
    {"facets": {"latest": ["true"]}},
    {"facets": {"latest": ["false"], "source": ["HadGEM3-GC31-LL"]}},
    {"text": "air temperature"},
    {"text": "CMIP6.ScenarioMIP.MOHC"},
    {"text": "sea surface"},
    {"from": "2015-01-01", "to": "2015-12-31"},
    {"from": "2100-01-01"},
    {"to": "1850-01-01"},
    {"from": "2014-12-31", "to": "2014-12-31"},
    {"bbox": [-10, 40, 10, 50]},
    {"bbox": [100, 86, 120, 90]},
    {"bbox": [170, -10, -170, 10]},
    {"facets": {"variable": ["tas"]}, "from": "2000-01-01", "to": "2020-12-31", "bbox": [0, 0, 10, 10], "text": "near"},
]


# ------------------------------------------------------------ fixtures ----

def build(config: Path, out: Path) -> Path:
    site = out / "site"
    subprocess.run([FEDSTAC, "--quiet", "build", "-c", str(config), "--output", str(site), "--cache", str(out / "cache")], check=True)
    return site


@pytest.fixture(scope="module")
def sample(tmp_path_factory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("sample")
    subprocess.run([FEDSTAC, "--quiet", "sample", str(out / "archive")], check=True)
    sites = {}
    for name, root in [("ceda", "ceda/badc/cmip6/data"), ("dkrz", "dkrz/pool/data/CMIP6/data")]:
        config = out / f"{name}.yaml"
        config.write_text(f"site: {{name: {name}, title: {name}}}\nroots: [{{path: \"{out / 'archive' / root}\", recipe: cmip6, data_url: \"https://example.org/\"}}]\n")
        sites[name] = build(config, out / name)
    return sites


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> dict[str, Path]:
    ceda = build(REPO / "config" / "corpus-ceda.yaml", tmp_path_factory.mktemp("ceda"))
    out = tmp_path_factory.mktemp("dkrz")
    return {"ceda": ceda, "dkrz": build(dkrz_config(out), out)}


# --------------------------------------------------------------- tests ----

def test_evaluator_knows_the_sample():
    # The reference evaluation itself, on hand-made items.
    item = {"id": "a", "geometry": {"type": "Polygon", "coordinates": [[[-10, 35], [40, 35], [40, 70], [-10, 70], [-10, 35]]]},
            "properties": {"start_datetime": "2015-01-01T00:00:00Z", "end_datetime": "2016-01-01T00:00:00Z", "cmip6:realm": ["atmos"], "latest": True}}
    assert matches(item, {"bbox": [40, 70, 50, 80]})  # touching counts
    assert not matches(item, {"bbox": [41, 0, 50, 80]})
    assert matches(item, {"from": "2016-01-01"}) and not matches(item, {"from": "2016-01-02"})
    assert matches(item, {"facets": {"realm": ["ocean", "atmos"]}, "to": "2015-01-01"})
    assert matches(item, {"facets": {"latest": ["true"]}}) and not matches(item, {"facets": {"latest": ["false"]}})


@pytest.mark.parametrize("name", ["ceda", "dkrz"])
def test_sample_sites_fixed_queries(sample, name):
    items = items_of(sample[name])
    assert len(items) >= 10
    for q in FIXED:
        check(sample[name], items, q)


@pytest.mark.parametrize("name", ["ceda", "dkrz"])
def test_sample_sites_random_queries(sample, name):
    items = items_of(sample[name])
    for q in random_queries(items, 150, seed=len(name)):
        check(sample[name], items, q)


@pytest.mark.parametrize("name", ["ceda", "dkrz"])
def test_corpus_sites(corpus, name):
    items = items_of(corpus[name])
    assert len(items) >= 62
    for q in FIXED + random_queries(items, 150, seed=11):
        check(corpus[name], items, q)


def test_index_files_are_in_the_manifest(sample):
    manifest = json.loads((sample["ceda"] / "fedstac-manifest.json").read_text())["files"]
    index_files = [p.relative_to(sample["ceda"]).as_posix() for p in (sample["ceda"] / "index").rglob("*") if p.is_file()]
    assert "index/index.json" in index_files and "index/items.fgb" in index_files
    assert all(f in manifest for f in index_files)


def test_flatgeobuf_header(sample):
    # FlatGeobuf magic, then a size-prefixed header; GDAL reads the rest.
    data = (sample["ceda"] / "index" / "items.fgb").read_bytes()
    assert data[:3] == b"fgb" and data[3] == 3
    n_items = len(items_of(sample["ceda"]))
    assert n_items == json.loads((sample["ceda"] / "index" / "index.json").read_text())["items"]
