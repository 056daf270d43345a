"""Markdown figures of bench/search/run.sh: python3 report.py <sizes...>"""
import json, os, platform, statistics, subprocess, sys, datetime
from pathlib import Path

out = Path("bench/out/search")
sizes = [int(s) for s in sys.argv[1:]]


def lines(p):
    return [json.loads(l) for l in p.read_text().splitlines() if l.strip()] if p.exists() else []


def kb(n):
    return f"{n / 1024:,.1f}"


cores = os.cpu_count()
mem = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30)
print(f"Measured {datetime.date.today()} on {cores} cores, {mem} GiB, {platform.machine()}; release builds; "
      "Chromium headless with an empty cache per query, nginx on localhost (gzip for the viewer's own files).\n")
print("### Index size and build time\n")
print("| items | index files | index bytes | bytes/item (without FGB) | items.fgb bytes/item | build s | peak memory |")
print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
summary = {}
for n in sizes:
    d = out / f"s{n}"
    build = json.loads((d / "build.json").read_text())
    files, total, fgb = 0, 0, 0
    for root, _, names in os.walk(d / "index"):
        for f in names:
            s = os.path.getsize(os.path.join(root, f))
            if f == "items.fgb":
                fgb = s
            else:
                files += 1
                total += s
    fgb_cell = f"{fgb / n:,.0f}" if fgb else "not written"
    print(f"| {n:,} | {files:,} | {total:,} | {total / n:.1f} | {fgb_cell} | {build['seconds']:.1f} | {build['peak_rss_mib']:,.0f} MiB |")
    summary[n] = {"build": build}

for n in sizes:
    d = out / f"s{n}"
    native = {q["name"]: q for q in lines(d / "native.jsonl")}
    browser = lines(d / "browser.jsonl")
    print(f"\n### {n:,} items: per query\n")
    print("Bytes and requests are the query's index files, result rows and live counts included (on the wire; `index.json` and the viewer belong to the first load); "
          "*first results* is from navigation start, cold cache, to the rendered result rows (includes loading the viewer); "
          "*search* is the viewer's own time from query to rendered rows, *counts* to the live counts (they fill in after the rows); "
          "results marked ≥ are a lower bound (common words read as far as the page needs; \"Count all\" reads the rest).\n")
    print("| query | results | KB | requests | first results ms | search ms | counts ms | counts |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
    for b in browser:
        nat = native.get(b["name"], {})
        counted = nat.get("counted", 12)
        total = b["total"].replace("at least ", "≥ ").rsplit(" ", 1)[0]
        counts_ms = f"{b['counts_ms']:.0f}" if b.get("counts_ms") is not None else ""
        print(f"| {b['name']} | {total} | {kb(b['query_bytes'])} | {b['query_requests']} | {b['ready_ms']:.0f} | {b['query_ms']:.0f} | {counts_ms} | {'all 12' if counted == 12 else f'{counted} of 12'} |")
    if browser:
        land = browser[0]
        qb = [b["query_bytes"] for b in browser]
        rt = [b["ready_ms"] for b in browser]
        over_kb = sum(1 for x in qb if x > 500 * 1024)
        over_ms = sum(1 for x in rt if x > 300)
        print(f"\nFirst load (viewer + `index.json`, compressed on the wire): **{kb(land['first_bytes'])} KB** in {land['first_requests']} requests. "
              f"Per query: median {kb(statistics.median(qb))} KB, max {kb(max(qb))} KB ({len(qb) - over_kb} of {len(qb)} ≤ 500 KB); "
              f"first results median {statistics.median(rt):.0f} ms, max {max(rt):.0f} ms ({len(rt) - over_ms} of {len(rt)} ≤ 300 ms).")
        load = d / "loadavg.txt"
        if load.exists():
            print(f"Load average (1/5/15 min) before and after the browser run: {load.read_text().strip()}.")
