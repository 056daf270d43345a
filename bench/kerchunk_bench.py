"""Kerchunk benchmark (run by bench/kerchunk.sh): references for every netCDF
file of the corpus and combines of every multi-file dataset, by fedstac
(release `kerchunk_refs`, the code `fedstac build` runs) and by Python
kerchunk (SingleHdf5ToZarr, NetCDF3ToZarr, MultiZarrToZarr) in the same run.

Times are per file inside each process (references made and serialised to
JSON; no interpreter or process start-up), combine times are the combine
alone (both sides are handed the per-file references) plus its JSON.
Correctness is judged by the checks of tests/python/test_kerchunk.py: every
variable read through the references with xarray + zarr equals netCDF4's
reading (raw values bitwise, dims, attributes); a combine equals xr.concat of
the files.

    python bench/kerchunk_bench.py KERCHUNK_REFS_BIN OUT_DIR
"""
import json
import os
import statistics
import subprocess
import sys
import time
import warnings
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "python"))
import test_kerchunk as tk  # noqa: E402  (the cross-checks and corpus helpers)

RUNS = 3  # fedstac is timed as the median of RUNS runs; kerchunk once (it is the slow side)


def fedstac_files(refs_bin, files, out):
    runs = []
    for i in range(RUNS):
        d = out / f"fedstac-files-{i}"
        subprocess.run([refs_bin, str(d), *files], check=True)
        runs.append(json.loads((d / "index.json").read_text()))
    seconds = {f: statistics.median(r[k]["seconds"] for r in runs) for k, f in enumerate(files)}
    last = runs[-1]
    d = out / f"fedstac-files-{RUNS - 1}"
    refs = {e["path"]: (e.get("error") or json.loads((d / e["refs"]).read_text())) for e in last}
    return seconds, refs


def kerchunk_file(path):
    """Python kerchunk's references for one file and the seconds they took (or its error)."""
    started = time.perf_counter()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if Path(path).read_bytes()[:3] == b"CDF":
                from kerchunk.netCDF3 import NetCDF3ToZarr
                refs = NetCDF3ToZarr(path).translate()
            else:
                from kerchunk.hdf import SingleHdf5ToZarr
                refs = SingleHdf5ToZarr(path).translate()
            json.dumps(refs)
    except Exception as e:  # noqa: BLE001 - counted
        return f"{type(e).__name__}: {e}", time.perf_counter() - started
    return refs, time.perf_counter() - started


def fedstac_combine(refs_bin, files, out):
    timings = []
    for _ in range(RUNS):
        env = {**os.environ, "RUST_BACKTRACE": "0"}
        done = subprocess.run([refs_bin, "--combine", str(out), *files], capture_output=True, text=True, env=env)
        if done.returncode:
            return " ".join(done.stderr.split()).removeprefix("Error: "), None
        timings.append(json.loads(done.stdout)["combine_seconds"])
    return json.loads(Path(out).read_text()), statistics.median(timings)


def kerchunk_combine(per_file):
    """MultiZarrToZarr along time, as its docs advise: variables without time are identical_dims."""
    from kerchunk.combine import MultiZarrToZarr
    first = per_file[0]
    identical = []
    for key, value in first["refs"].items():
        if key.endswith("/.zattrs") and "/" not in key[: -len("/.zattrs")]:
            dims = json.loads(value).get("_ARRAY_DIMENSIONS", [])
            if "time" not in dims:
                identical.append(key[: -len("/.zattrs")])
    started = time.perf_counter()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            refs = MultiZarrToZarr(per_file, concat_dims=["time"], identical_dims=identical).translate()
            json.dumps(refs)
    except Exception as e:  # noqa: BLE001 - counted
        return f"{type(e).__name__}: {e}", time.perf_counter() - started
    return refs, time.perf_counter() - started


def concat_ok(files, refs):
    """Combined references equal xr.concat of the files (a reference set that cannot be read is wrong)."""
    if isinstance(refs, str):
        return False
    try:
        return not tk.concat_problems(files, refs)
    except Exception:  # noqa: BLE001 - e.g. kerchunk's chunk sizes that do not fit the shape
        return False


def fmt(x):
    return f"{x:.4f}" if x < 1 else f"{x:.2f}"


def main():
    refs_bin, out = sys.argv[1], Path(sys.argv[2])
    out.mkdir(parents=True, exist_ok=True)
    files = tk.FILES
    assert files, "the shared corpus is missing"

    print(f"== per file: {len(files)} corpus files", file=sys.stderr)
    ours_s, ours = fedstac_files(refs_bin, files, out)
    theirs, theirs_s = {}, {}
    for f in files:
        theirs[f], theirs_s[f] = kerchunk_file(f)
    ok_ours = {f for f in files if not isinstance(ours[f], str) and not tk.problems(f, ours[f])}
    ok_theirs = {f for f in files if not isinstance(theirs[f], str) and not tk.problems(f, theirs[f])}
    made_theirs = {f for f in files if not isinstance(theirs[f], str)}
    both = [f for f in files if f in made_theirs and not isinstance(ours[f], str)]
    sum_ours, sum_theirs = sum(ours_s[f] for f in both), sum(theirs_s[f] for f in both)
    ratios = [theirs_s[f] / ours_s[f] for f in both if ours_s[f] > 0]

    print("== combines", file=sys.stderr)
    rows = []
    for (d, var), group in tk.datasets_in_corpus().items():
        name = f"{Path(d).relative_to(tk.CORPUS)} ({var}, {len(group)} files)"
        o, o_s = fedstac_combine(refs_bin, group, out / "combined.json")
        parts = [theirs[f] for f in group]
        if any(isinstance(p, str) for p in parts):
            t, t_s = "no per-file references", None
        else:
            t, t_s = kerchunk_combine(parts)
        overlap = tk.overlapping(group)
        o_ok = concat_ok(group, o)
        t_ok = concat_ok(group, t)
        rows.append({"name": name, "files": len(group), "overlap": overlap, "ours": o_s, "theirs": t_s,
                     "ours_ok": o_ok, "theirs_ok": t_ok,
                     "ours_refused": isinstance(o, str), "theirs_failed": isinstance(t, str),
                     "ours_error": o if isinstance(o, str) else None, "theirs_error": t if isinstance(t, str) else None})
    timed = [r for r in rows if r["ours"] is not None and r["theirs"] is not None]
    c_ours, c_theirs = sum(r["ours"] for r in timed), sum(r["theirs"] for r in timed)

    import kerchunk
    hdf5 = sum(1 for f in files if Path(f).read_bytes()[:4] == b"\x89HDF")
    lines = [
        f"Measured {time.strftime('%Y-%m-%d')} on 2 cores, x86_64; fedstac release build (`kerchunk_refs`, median of {RUNS} runs), "
        f"Python kerchunk {kerchunk.__version__} (one run), Python {sys.version.split()[0]}.",
        "",
        f"### Per file: {len(files)} corpus files ({hdf5} netCDF-4/HDF5, {len(files) - hdf5} netCDF classic)",
        "",
        "| | fedstac | Python kerchunk |",
        "| --- | ---: | ---: |",
        f"| files with references | {sum(not isinstance(ours[f], str) for f in files)} | {len(made_theirs)} |",
        f"| files read exactly as netCDF4 does (values, dims, attributes) | **{len(ok_ours)}** | {len(ok_theirs)} |",
        f"| seconds, the {len(both)} files both made references for | {fmt(sum_ours)} | {fmt(sum_theirs)} |",
        f"| ms per file (mean) | {1000 * sum_ours / len(both):.2f} | {1000 * sum_theirs / len(both):.1f} |",
        "",
        f"fedstac is **{sum_theirs / sum_ours:.0f}×** faster per file over those files (goal ≥ 10×); "
        f"per file the ratio ranges {min(ratios):.0f}×–{max(ratios):.0f}× (median {statistics.median(ratios):.0f}×).",
        "",
        f"### Combine along time: {len(rows)} multi-file datasets of the corpus",
        "",
        "| | fedstac | Python kerchunk (MultiZarrToZarr) |",
        "| --- | ---: | ---: |",
        f"| combined, equal to `xr.concat` of the files | **{sum(r['ours_ok'] for r in rows)}** | {sum(r['theirs_ok'] for r in rows)} |",
        f"| refused with a message (fedstac) / failed (kerchunk) | {sum(r['ours_refused'] for r in rows)} | {sum(r['theirs_failed'] for r in rows)} |",
        f"| combined but wrong | {sum(not r['ours_ok'] and not r['ours_refused'] for r in rows)} | "
        f"{sum(not r['theirs_ok'] and not r['theirs_failed'] for r in rows)} |",
        f"| seconds, the {len(timed)} datasets both combined | {fmt(c_ours)} | {fmt(c_theirs)} |",
        "",
        f"fedstac's combine is **{c_theirs / c_ours:.0f}×** faster (goal ≥ 100×), over the datasets both combined.",
        f"Datasets with overlapping files (a real corpus quirk): {sum(r['overlap'] for r in rows)}; fedstac refuses them, naming the files.",
        "",
        "| dataset | fedstac s | kerchunk s | fedstac | kerchunk |",
        "| --- | ---: | ---: | --- | --- |",
    ]
    for r in rows:
        verdict = lambda ok, bad, err: "equal" if ok else (f"refused: {' '.join(err.split())[:90]}" if bad else "wrong")  # noqa: E731
        lines.append(f"| {r['name']} | {fmt(r['ours']) if r['ours'] is not None else ''} | "
                     f"{fmt(r['theirs']) if r['theirs'] is not None else ''} | "
                     f"{verdict(r['ours_ok'], r['ours_refused'], r['ours_error'] or '')} | "
                     f"{verdict(r['theirs_ok'], r['theirs_failed'], r['theirs_error'] or '')} |")
    text = "\n".join(lines) + "\n"
    (out / "results.md").write_text(text)
    (out / "results.json").write_text(json.dumps({"files": {f: {"ours": ours_s[f], "theirs": theirs_s[f], "ours_ok": f in ok_ours,
                                                               "theirs_ok": f in ok_theirs} for f in files},
                                                  "combines": rows}, indent=1, default=str))
    print(text)
    readme = REPO / "bench" / "README.md"
    body = readme.read_text()
    start, end = "<!-- KERCHUNK:START -->", "<!-- KERCHUNK:END -->"
    if start in body and end in body:
        body = body[: body.index(start) + len(start)] + "\n" + text + body[body.index(end):]
        readme.write_text(body)


if __name__ == "__main__":
    main()
