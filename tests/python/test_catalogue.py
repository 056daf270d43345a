"""Catalogues written by the fedstac binary, checked by independent tools:
stac-validator (core + cmip6/file/alternate-assets schemas, offline) and a
full pystac walk. Builds the real corpus in both site layouts."""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

import stac_check

REPO = Path(__file__).resolve().parents[2]
FEDSTAC = os.environ.get("FEDSTAC_BIN", str(REPO / "target" / "debug" / "fedstac"))
FACTS = stac_check.SHARED / "corpus" / "FACTS.json"


def build(config: Path, out: Path) -> Path:
    site = out / "site"
    subprocess.run(
        [FEDSTAC, "--quiet", "build", "-c", str(config), "--output", str(site), "--cache", str(out / "cache")],
        check=True,
    )
    return site


def dkrz_config(out: Path) -> Path:
    """DKRZ's layout: /pool/data/CMIP6/data/CMIP6 is a symlink to the CMIP6
    tree (shared/ stores that link as a plain file, so it is made here), and
    CORDEX sits beside it under the second recipe."""
    corpus = stac_check.SHARED / "corpus" / "netcdf" / "mini-esgf-data" / "test_data"
    cmip6_root = out / "pool" / "data" / "CMIP6" / "data"
    cmip6_root.mkdir(parents=True)
    (cmip6_root / "CMIP6").symlink_to(corpus / "badc" / "cmip6" / "data" / "CMIP6")
    config = out / "dkrz.yaml"
    config.write_text(f"""
site: {{name: dkrz, title: DKRZ corpus}}
roots:
  - {{path: "{cmip6_root}", recipe: cmip6, data_url: "https://esgf3.dkrz.de/thredds/fileServer/cmip6/"}}
  - {{path: "{corpus / 'pool' / 'data' / 'CORDEX' / 'data'}", recipe: cordex, data_url: "https://esgf3.dkrz.de/thredds/fileServer/cordex/"}}
cv_dir: "{stac_check.SHARED / 'corpus' / 'cv' / 'CMIP6_CVs'}"
""")
    return config


@pytest.fixture(scope="module")
def ceda(tmp_path_factory) -> Path:
    return build(REPO / "config" / "corpus-ceda.yaml", tmp_path_factory.mktemp("ceda"))


@pytest.fixture(scope="module")
def dkrz(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dkrz")
    return build(dkrz_config(out), out)


@pytest.fixture(scope="module")
def ceda_kerchunk(tmp_path_factory) -> Path:
    """The CEDA corpus site with Kerchunk sidecars: their item assets must validate too."""
    out = tmp_path_factory.mktemp("ceda-kerchunk")
    text = (REPO / "config" / "corpus-ceda.yaml").read_text().replace("../../shared", str(stac_check.SHARED))
    text = text.replace("    data_url: https://data.ceda.ac.uk/badc/cmip6/data/\n",
                        "    data_url: https://data.ceda.ac.uk/badc/cmip6/data/\n    kerchunk: {urls: relative}\n")
    assert "kerchunk" in text
    config = out / "ceda.yaml"
    config.write_text(text)
    return build(config, out)


def cmip6_dataset_dirs() -> set[str]:
    facts = json.loads(FACTS.read_text())
    return {f["path"].rsplit("/", 1)[0] for f in facts if "/badc/cmip6/" in f["path"]}


@pytest.mark.parametrize("site_name", ["ceda", "dkrz", "ceda_kerchunk"])
def test_every_document_validates_offline(site_name, request):
    site = request.getfixturevalue(site_name)
    failures = stac_check.validate_tree(site)
    assert not failures, "\n".join(map(str, failures[:20]))


def test_pystac_walks_every_item(ceda):
    ids = stac_check.pystac_item_ids(ceda)
    # One item per CMIP6 dataset version directory of the corpus.
    assert len(ids) == len(cmip6_dataset_dirs()) == 62
    assert all(i.startswith("CMIP6.") for i in ids)


def test_both_layouts_give_the_same_cmip6_items(ceda, dkrz):
    dkrz_ids = stac_check.pystac_item_ids(dkrz)
    ceda_ids = stac_check.pystac_item_ids(ceda)
    assert ceda_ids == {i for i in dkrz_ids if i.startswith("CMIP6.")}
    assert any(i.startswith("cordex.output.") for i in dkrz_ids)


def test_validator_rejects_a_tampered_item(ceda, tmp_path):
    # The cross-check must be able to fail on fedstac's own output.
    item = next(ceda.rglob("CMIP6.CMIP.*.json"))
    doc = json.loads(item.read_text())
    doc["properties"]["cmip6:frequency"] = "fortnightly"
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps(doc))
    assert stac_check.validate_file(broken)


def test_kerchunk_assets_are_in_every_item(ceda_kerchunk):
    items = [json.loads(p.read_text()) for p in ceda_kerchunk.rglob("CMIP6.*.json")]
    items = [i for i in items if i.get("type") == "Feature"]
    assert len(items) == 62
    for item in items:
        refs = {k: a for k, a in item["assets"].items() if "kerchunk" in a.get("roles", [])}
        assert refs, item["id"]
        for a in refs.values():
            assert a["protocol"] == "kerchunk" and a["roles"] == ["references", "kerchunk"]
            assert (ceda_kerchunk / "kerchunk" / item["id"]).is_dir()
