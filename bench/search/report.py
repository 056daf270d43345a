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
    print("Bytes and requests are the query's index files (on the wire; `index.json` and the viewer belong to the first load); "
          "*first results* is from navigation start, cold cache, to the rendered results (includes loading the viewer); "
          "*search* is the viewer's own time from query to rendered results.\n")
    print("| query | results | KB | requests | first results ms | search ms | counts |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | --- |")
    for b in browser:
        nat = native.get(b["name"], {})
        counted = nat.get("counted", 12)
        print(f"| {b['name']} | {b['total'].split()[0]} | {kb(b['query_bytes'])} | {b['query_requests']} | {b['ready_ms']:.0f} | {b['query_ms']:.0f} | {'all 12' if counted == 12 else f'{counted} of 12'} |")
    if browser:
        land = browser[0]
        qb = [b["query_bytes"] for b in browser]
        rt = [b["ready_ms"] for b in browser]
        print(f"\nFirst load (viewer + `index.json`, compressed on the wire): **{kb(land['first_bytes'])} KB** in {land['first_requests']} requests. "
              f"Per query: median {kb(statistics.median(qb))} KB, max {kb(max(qb))} KB; first results median {statistics.median(rt):.0f} ms, max {max(rt):.0f} ms.")
