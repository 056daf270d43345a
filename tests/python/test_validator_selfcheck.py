"""Self-checks of the STAC harness: it passes a real ESGF item, fails broken ones,
and crawls a small hand-made catalogue. Needs no Rust build, only ../shared."""
import copy
import json
import socket
from pathlib import Path

import pytest

import stac_check

ESGF_ITEM = (stac_check.SHARED / "corpus/stac/stac-extensions-cmip6/items/"
             "esgf-west_CMIP6.ScenarioMIP.IPSL.IPSL-CM6A-LR.ssp119.r4i1p1f1.CFmon.clcalipso.gr.v20191122_ext-v3.0.2.json")
NC_ASSET = "clcalipso_CFmon_IPSL-CM6A-LR_ssp119_r4i1p1f1_gr_201501-210012.nc"


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Any socket use fails the test: proves validation is offline."""
    def refuse(*args, **kwargs):
        raise AssertionError("network access attempted")
    monkeypatch.setattr(socket, "socket", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def esgf() -> dict:
    return json.loads(ESGF_ITEM.read_text())


def write(path: Path, doc: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=1))
    return path


def test_real_esgf_item_passes_core_and_extensions():
    assert stac_check.validate_file(ESGF_ITEM) == []


def _del(key):
    return lambda d: d.pop(key)


BREAKAGES = {
    # name: (mutation, text expected in the error, schema that must catch it)
    "missing id": (_del("id"), "'id' is a required property", "item-spec/json-schema/item.json"),
    "file:size as string": (
        lambda d: d["assets"][NC_ASSET].update({"file:size": "1691149215"}),
        "is not of type 'integer'", "file/v2.1.0"),
    "bad cmip6 frequency enum": (
        lambda d: d["properties"].update({"cmip6:frequency": "fortnightly"}),
        "is not one of", "cmip6/v3.0.2"),
    "bad cmip6 activity enum": (
        lambda d: d["properties"].update({"cmip6:activity_id": ["NotAMIP"]}),
        "is not one of", "cmip6/v3.0.2"),
    "missing cite-as link (cmip6)": (
        lambda d: d.update(links=[l for l in d["links"] if l["rel"] != "cite-as"]),
        "", "cmip6/v3.0.2"),
    "bad geometry type": (lambda d: d["geometry"].update(type="Blob"), "", "item.json"),
    "bad file:checksum": (
        lambda d: d["assets"][NC_ASSET].update({"file:checksum": "NOT-HEX"}),
        "does not match", "file/v2.1.0"),
    "cmip6 item without alternate-assets extension": (
        lambda d: d["stac_extensions"].remove("https://stac-extensions.github.io/alternate-assets/v1.2.0/schema.json"),
        "", "cmip6/v3.0.2"),
    "impossible created date-time": (
        lambda d: d["properties"].update(created="2015-13-45T99:99:99Z"),
        "is not a 'date-time'", "item.json"),
    "asset updated not a date-time": (
        lambda d: d["assets"]["globus"].update(updated="yesterday Z"),
        "is not a 'date-time'", "item.json"),
    "extension without local schema": (
        lambda d: d["stac_extensions"].append("https://stac-extensions.github.io/eo/v2.0.0/schema.json"),
        "offline: no local copy", "eo/v2.0.0"),
}


@pytest.mark.parametrize("name", BREAKAGES)
def test_broken_item_fails(tmp_path, name):
    mutate, text, schema = BREAKAGES[name]
    doc = esgf()
    mutate(doc)
    errors = stac_check.validate_file(write(tmp_path / "item.json", doc))
    assert len(errors) == 1, errors
    assert text in errors[0] and schema in errors[0], errors[0]


def test_known_gap_alternate_assets_ignores_item_asset_fields(tmp_path):
    # alternate-assets v1.2.0 puts `alternate:name` under assets.properties, i.e.
    # it checks an asset *named* "alternate:name", not the field on each asset.
    # So for Items it cannot catch a bad per-asset value; this pins that down.
    doc = esgf()
    doc["assets"]["globus"]["alternate:name"] = ""
    assert stac_check.validate_file(write(tmp_path / "item.json", doc)) == []


def test_broken_catalog_extension_is_checked(tmp_path):
    # stac-validator's default mode skips Catalog extensions; ours must not.
    cat = {"type": "Catalog", "stac_version": "1.1.0", "id": "c", "description": "d",
           "stac_extensions": ["https://stac-extensions.github.io/file/v2.1.0/schema.json"],
           "links": [{"rel": "self", "href": "./catalog.json", "file:size": -1}]}
    errors = stac_check.validate_file(write(tmp_path / "catalog.json", cat))
    assert errors and "file/v2.1.0" in errors[0]


def link(rel, href):
    return {"rel": rel, "href": href, "type": "application/json"}


@pytest.fixture
def site(tmp_path) -> Path:
    """catalog.json -> CMIP6/collection.json -> ScenarioMIP/catalog.json -> 2 items."""
    write(tmp_path / "catalog.json", {
        "type": "Catalog", "stac_version": "1.1.0", "id": "root", "description": "root",
        "links": [link("root", "./catalog.json"), link("child", "./CMIP6/collection.json")]})
    write(tmp_path / "CMIP6/collection.json", {
        "type": "Collection", "stac_version": "1.1.0", "id": "CMIP6", "description": "CMIP6",
        "license": "CC-BY-4.0",
        # one summary of each STAC kind: list, range, and JSON schema (which
        # makes the collection schema $ref the draft-07 metaschema)
        "summaries": {"cmip6:frequency": ["mon"], "file:size": {"minimum": 0, "maximum": 9},
                      "cmip6:variable_id": {"type": "string"}},
        "extent": {"spatial": {"bbox": [[-180, -90, 180, 90]]},
                   "temporal": {"interval": [["2015-01-01T00:00:00Z", None]]}},
        "links": [link("root", "../catalog.json"), link("parent", "../catalog.json"),
                  link("child", "ScenarioMIP/catalog.json")]})
    sub = {"type": "Catalog", "stac_version": "1.1.0", "id": "ScenarioMIP", "description": "sub",
           "links": [link("root", "../../catalog.json"), link("parent", "../collection.json")]}
    for n in (1, 2):
        item = esgf()
        item["id"] = item["id"].replace("r4i1p1f1", f"r{n}i1p1f1")
        item["links"] = [link("root", "../../../catalog.json"), link("parent", "../catalog.json"),
                         link("collection", "../../collection.json"), esgf()["links"][-1]]
        write(tmp_path / f"CMIP6/ScenarioMIP/items/{n}.json", item)
        sub["links"].append(link("item", f"./items/{n}.json"))
    write(tmp_path / "CMIP6/ScenarioMIP/catalog.json", sub)
    return tmp_path


def test_valid_tree_passes_and_pystac_agrees(site):
    assert stac_check.validate_tree(site) == []
    failures, n_items = stac_check.check_site(site)
    assert failures == [] and n_items == 2
    assert stac_check.pystac_item_ids(site) == {esgf()["id"].replace("r4i1", f"r{n}i1") for n in (1, 2)}
    assert stac_check.main([str(site)]) == 0


def test_tree_with_broken_item_fails(site, capsys):
    p = site / "CMIP6/ScenarioMIP/items/2.json"
    doc = json.loads(p.read_text())
    doc["properties"]["cmip6:frequency"] = "fortnightly"
    write(p, doc)
    failures = stac_check.validate_tree(site)
    assert [Path(f.path).name for f in failures] == ["2.json"]
    assert stac_check.main([str(site)]) == 1
    assert "FAIL" in capsys.readouterr().out


def test_tree_with_missing_child_and_absolute_href_fails(site):
    p = site / "CMIP6/ScenarioMIP/catalog.json"
    doc = json.loads(p.read_text())
    doc["links"] += [link("item", "./items/gone.json"), link("child", "https://example.org/x.json")]
    write(p, doc)
    messages = " | ".join(f.message for f in stac_check.validate_tree(site))
    assert "cannot read JSON" in messages and "not relative" in messages
    failures, _ = stac_check.check_site(site)
    assert any("pystac" in f.message for f in failures)  # pystac trips on the missing item too
