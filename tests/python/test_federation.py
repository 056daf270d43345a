"""Federated catalogues checked by independent tools: two corpus sites (CEDA
layout; DKRZ layout with CORDEX) and a static catalogue of the corpus's real
partner items (ESGF-West, CEDA, piddiplatsch payloads) are served over HTTP;
each site harvests the others with the fedstac binary and rebuilds. The merged
sites must validate offline (stac-validator, pystac) and list the same items."""
from __future__ import annotations

import functools
import http.server
import json
import subprocess
import threading
from pathlib import Path

import pytest

import stac_check
from test_catalogue import FEDSTAC, REPO, dkrz_config

STAC = stac_check.SHARED / "corpus" / "stac"


def partner_catalogue(root: Path) -> int:
    """The corpus's real partner items as a static catalogue; returns how many."""
    items = root / "items"
    items.mkdir(parents=True)
    links = [{"rel": "root", "href": "./catalog.json"}]
    files = sorted(p for p in STAC.rglob("*.json") if "schema" not in p.parts and "SYNTHETIC" not in p.name)
    for i, f in enumerate(files):
        doc = json.loads(f.read_text())
        item = doc["data"]["payload"]["item"] if "data" in doc else doc
        name = f"{i:02}-{f.name}"
        (items / name).write_text(json.dumps(item))
        links.append({"rel": "item", "href": f"./items/{name}"})
    catalog = {"type": "Catalog", "stac_version": "1.1.0", "id": "esgf-corpus", "description": "corpus partner items", "links": links}
    (root / "catalog.json").write_text(json.dumps(catalog))
    return len(files)


class Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # keep pytest output clean
        pass


@pytest.fixture(scope="module")
def federation(tmp_path_factory):
    www = tmp_path_factory.mktemp("www")
    partner_catalogue(www / "esgf")
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(www)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    out = tmp_path_factory.mktemp("fed")
    partners = {
        "ceda": [("dkrz", f"{base}/dkrz/catalog.json"), ("esgf", f"{base}/esgf/catalog.json")],
        "dkrz": [("ceda", f"{base}/ceda/catalog.json"), ("esgf", f"{base}/esgf/catalog.json")],
    }
    configs = {}
    corpus_ceda = (REPO / "config" / "corpus-ceda.yaml").read_text()
    configs["ceda"] = out / "ceda.yaml"
    configs["ceda"].write_text(
        corpus_ceda.replace("../../shared", str(stac_check.SHARED)).replace("output: ../site/corpus-ceda", f"output: {www / 'ceda'}").replace(
            "cache: ../.fedstac-cache/corpus-ceda", f"cache: {out / 'cache-ceda'}"
        )
    )
    dkrz_dir = out / "dkrz"
    dkrz_dir.mkdir()
    configs["dkrz"] = dkrz_config(dkrz_dir)
    configs["dkrz"].write_text(configs["dkrz"].read_text() + f"output: {www / 'dkrz'}\ncache: {out / 'cache-dkrz'}\n")
    for name, config in configs.items():
        text = config.read_text() + "partners:\n" + "".join(f"  - {{name: {n}, url: \"{u}\"}}\n" for n, u in partners[name])
        config.write_text(text)
    run = lambda *args, ok=(0,): _run(list(args), ok)
    for config in configs.values():
        run("build", "-c", str(config))
    for config in configs.values():
        # 2: harvested, but the corpus's two invalid payloads were refused (listed in the report).
        run("harvest", "-c", str(config), ok=(2,))
    for config in configs.values():
        run("build", "-c", str(config))
    yield {"ceda": www / "ceda", "dkrz": www / "dkrz", "base": base, "out": out}
    server.shutdown()


def _run(args: list[str], ok: tuple[int, ...]) -> subprocess.CompletedProcess:
    done = subprocess.run([FEDSTAC, "--quiet", *args], capture_output=True, text=True)
    assert done.returncode in ok, f"fedstac {' '.join(args)} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
    return done


@pytest.mark.parametrize("site_name", ["ceda", "dkrz"])
def test_merged_sites_validate_offline(federation, site_name):
    failures, n_items = stac_check.check_site(federation[site_name])
    assert not failures, "\n".join(map(str, failures[:20]))
    assert n_items > 62


def test_both_sites_list_the_same_items(federation):
    ceda = stac_check.pystac_item_ids(federation["ceda"])
    dkrz = stac_check.pystac_item_ids(federation["dkrz"])
    assert ceda == dkrz
    assert any(i.startswith("cordex.") for i in ceda), "CEDA shows DKRZ's CORDEX datasets"
    assert "CMIP6.ScenarioMIP.IPSL.IPSL-CM6A-LR.ssp119.r4i1p1f1.CFmon.clcalipso.gr.v20191122" in ceda
    assert not any("baresoilFrac" in i for i in ceda), "an invalid payload got through"


def test_fedstac_diff_agrees(federation):
    done = _run(["diff", f"{federation['base']}/ceda/", str(federation["dkrz"])], ok=(0,))
    assert done.returncode == 0


def test_held_at_is_on_every_item(federation):
    import pystac

    cat = pystac.Catalog.from_file(str(federation["ceda"] / "catalog.json"))
    for item in cat.get_items(recursive=True):
        held = item.properties.get("fedstac:held_at")
        assert held, item.id
        if item.id.startswith("cordex."):
            assert held == ["dkrz"], item.id
