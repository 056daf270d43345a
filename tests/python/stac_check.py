#!/usr/bin/env python3
"""Offline cross-check of a static STAC catalogue written by fedstac.

Usage: python tests/python/stac_check.py <site_dir>

Starting from <site_dir>/catalog.json it follows `child` and `item` links,
validates every catalog/collection/item with stac-validator (core schema plus
every schema in `stac_extensions`) plus a jsonschema pass for date-time
formats, then reopens the tree with pystac and checks that pystac sees the
same number of items. No network is used: every schema URL is mapped to a
local file (see SCHEMA_MAP below and tests/schemas/README.md).
"""
from __future__ import annotations

import functools
import importlib.resources
import json
import os
import re
import sys
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pystac
from jsonschema import FormatChecker
from jsonschema.validators import validator_for
from referencing import Registry, Resource
import stac_validator.utilities as sv_utils
from stac_validator.validate import StacValidate

REPO = Path(__file__).resolve().parents[2]
# Schemas we vendor (not shipped by any PyPI package), laid out as <host>/<path>.
VENDORED = REPO / "tests" / "schemas"
# shared/ sits beside the repo (locally and in CI); overridable for odd layouts.
SHARED = Path(os.environ.get("FEDSTAC_SHARED", REPO.parent / "shared"))
CMIP6_SCHEMAS = SHARED / "corpus" / "stac" / "stac-extensions-cmip6" / "schema"


def _build_schema_map() -> dict[str, str]:
    """Map every schema URL we may meet to a local file."""
    m: dict[str, str] = {}
    # pystac bundles the STAC 1.1.0 core schemas and GeoJSON schemas. Each
    # file's URL is its $id's directory + file name (common.json's $id has a
    # typo upstream, "commonjson", so don't trust the $id's last segment).
    js = importlib.resources.files("pystac.validation.jsonschemas")
    for f in js.joinpath("stac-spec", "v1.1.0").iterdir():
        if f.name.endswith(".json"):
            base = json.loads(f.read_text())["$id"].rsplit("/", 1)[0]
            m[f"{base}/{f.name}"] = str(f)
    for f in js.joinpath("geojson").iterdir():
        if f.name.endswith(".json"):
            m[f"https://geojson.org/schema/{f.name}"] = str(f)
    # Vendored files: tests/schemas/<host>/<path> <-> https://<host>/<path>.
    for p in VENDORED.rglob("*.json"):
        m["https://" + p.relative_to(VENDORED).as_posix()] = str(p)
    # CMIP6 extension schemas are read in place from shared/ (never copied).
    for p in CMIP6_SCHEMAS.glob("v*/schema.json"):
        m[f"https://stac-extensions.github.io/cmip6/{p.parent.name}/schema.json"] = str(p)
    return m


SCHEMA_MAP = _build_schema_map()
_URL_OF = {path: url for url, path in SCHEMA_MAP.items()}
MAX_MESSAGE = 400

# stac-validator fetches any schema URL missing from schema_map with requests.
# Refuse instead, so a run never depends on the network and a missing local
# copy is reported by name. (Its schema cache looks this function up by global
# name at call time, so replacing the module attribute is enough.)
_fetch_local = sv_utils.fetch_and_parse_file


def _fetch_offline_only(path: str, headers: dict | None = None) -> dict:
    if sv_utils.is_url(path):
        raise RuntimeError(f"offline: no local copy of schema {path}")
    return _fetch_local(path, headers)


sv_utils.fetch_and_parse_file = _fetch_offline_only
sv_utils.set_schema_cache_size(128)  # default 16 is fewer than the schemas we use


@dataclass(frozen=True)
class Failure:
    path: str
    message: str

    def __str__(self) -> str:
        return f"FAIL {self.path}: {self.message}"


def _run(path: Path, **mode: bool) -> list[str]:
    v = StacValidate(str(path), schema_map=SCHEMA_MAP, **mode)
    if v.run():
        return []
    msg = v.message[-1] if v.message else {}
    schema = msg.get("failed_schema") or ", ".join(msg.get("schema") or [])
    schema = _URL_OF.get(schema, schema)  # show the schema URL, not our local copy
    text = " ".join(f"{msg.get('error_type')}: {msg.get('error_message')}".split())
    if len(text) > MAX_MESSAGE:  # jsonschema may quote a whole object; keep one short line
        text = text[:MAX_MESSAGE] + "..."
    return [f"{text} [schema: {schema}]"]


# stac-validator checks no "format" keywords, so e.g. "created": "2015-13-45T99:99:99Z"
# would pass. A second jsonschema pass over the same local schemas (each with
# its own draft) checks date-time, the format STAC relies on.
REGISTRY = Registry().with_resources(
    (url, Resource.from_contents(json.loads(Path(p).read_text()))) for url, p in SCHEMA_MAP.items()
).crawl()  # index subschemas once, not on every $ref lookup
FORMATS = FormatChecker(formats=())
RFC3339 = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)$", re.I)


@FORMATS.checks("date-time", raises=ValueError)
def _is_rfc3339(value: object) -> bool:
    if isinstance(value, str):
        if not RFC3339.match(value):
            raise ValueError("not RFC 3339")
        datetime.fromisoformat(value.upper().replace("Z", "+00:00"))  # range check
    return True


@functools.lru_cache(maxsize=None)
def _format_validator(url: str):
    schema = REGISTRY[url].contents
    return validator_for(schema)(schema, registry=REGISTRY, format_checker=FORMATS)


def _format_errors(doc: dict) -> list[str]:
    kind = {"Feature": "item", "Catalog": "catalog", "Collection": "collection"}.get(doc.get("type"))
    core = f"https://schemas.stacspec.org/v{doc.get('stac_version')}/{kind}-spec/json-schema/{kind}.json"
    found: dict[str, str] = {}  # message -> schema URL; the same field may be checked by several schemas
    for url in [core, *doc.get("stac_extensions", [])]:
        if url not in SCHEMA_MAP:
            continue  # unknown schema: the stac-validator pass already reports it
        try:
            for e in _format_validator(url).iter_errors(doc):
                if e.validator == "format":
                    where = " -> ".join(map(str, e.absolute_path))
                    found.setdefault(f"FormatError: {e.message}. Error is in {where}", url)
        except Exception as e:  # e.g. an unresolvable $ref; report, don't crash
            found.setdefault(f"{type(e).__name__}: {e}", url)
    return [f"{msg} [schema: {url}]" for msg, url in found.items()]


def validate_file(path: str | Path) -> list[str]:
    """Validate one STAC JSON file offline; return error messages (empty = valid).

    Core and extensions are run separately because stac-validator's default
    mode skips the extensions of plain Catalogs.
    """
    path = Path(path)
    errors = _run(path, core=True)
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        return errors  # the core run has already reported the unreadable file
    if not isinstance(doc, dict):
        return errors
    if doc.get("stac_extensions"):
        errors += _run(path, extensions=True)
    return errors + _format_errors(doc)


def crawl(site_dir: str | Path) -> tuple[list[Path], list[Path], list[Failure]]:
    """Follow child/item links from catalog.json; return (nodes, items, failures).

    nodes are catalogs/collections (root included), items are item files.
    """
    root = (Path(site_dir) / "catalog.json").resolve()
    nodes: list[Path] = []
    items: list[Path] = []
    failures: list[Failure] = []
    seen = {root}
    queue = [(root, "child")]
    while queue:
        path, rel = queue.pop(0)
        try:
            doc = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            failures.append(Failure(str(path), f"cannot read JSON: {e}"))
            continue
        if not isinstance(doc, dict):
            failures.append(Failure(str(path), "not a JSON object"))
            continue
        (items if rel == "item" else nodes).append(path)
        if rel == "item":
            continue  # items' links point up/out, not further down the tree
        for link in doc.get("links", []):
            if not isinstance(link, dict) or link.get("rel") not in ("child", "item"):
                continue
            href = str(link.get("href", ""))
            if "://" in href or href.startswith("/"):
                failures.append(Failure(str(path), f"{link['rel']} href is not relative: {href}"))
                continue
            target = (path.parent / href).resolve()
            if target not in seen:
                seen.add(target)
                queue.append((target, link["rel"]))
    return nodes, items, failures


def validate_tree(site_dir: str | Path) -> list[Failure]:
    """Crawl the catalogue and validate every file found; return all failures."""
    nodes, items, failures = crawl(site_dir)
    for path in nodes + items:
        failures += [Failure(str(path), m) for m in validate_file(path)]
    return failures


def _pystac_items(site_dir: str | Path) -> list[pystac.Item]:
    cat = pystac.Catalog.from_file(str(Path(site_dir) / "catalog.json"))
    return [item for _, _, found in cat.walk() for item in found]


def pystac_item_ids(site_dir: str | Path) -> set[str]:
    """Ids of all items pystac finds by walking the catalogue."""
    return {item.id for item in _pystac_items(site_dir)}


def check_site(site_dir: str | Path) -> tuple[list[Failure], int]:
    """Everything the CLI checks; returns (failures, number of items crawled)."""
    failures = validate_tree(site_dir)
    _, items, _ = crawl(site_dir)
    try:
        found = _pystac_items(site_dir)
    except Exception as e:  # any pystac load error is a finding, not a crash
        cause = e.__cause__ or e.__context__  # pystac often wraps the useful error
        why = f"{e!r}" + (f" caused by {cause!r}" if cause else "")
        return failures + [Failure(str(site_dir), f"pystac could not walk the catalogue: {why}")], len(items)
    if len(found) != len(items):
        failures.append(Failure(str(site_dir), f"pystac found {len(found)} items, link crawl found {len(items)}"))
    return failures, len(items)


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__.strip().splitlines()[2], file=sys.stderr)
        return 2
    failures, n_items = check_site(argv[0])
    for f in failures:
        print(f)
    status = "FAILED" if failures else "OK"
    print(f"stac_check {status}: {n_items} items crawled, {len(failures)} failures in {argv[0]}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
