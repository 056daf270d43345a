"""One small HTML page per synthetic item (bench-index --dump), for Pagefind:
the text search covers what fedstac's does (id, title, variable long and
standard names) and each CMIP6 facet is a Pagefind filter.
    python3 pages.py items.jsonl <site dir>"""
import html, json, os, sys

src, site = sys.argv[1], sys.argv[2]
os.makedirs(os.path.join(site, "items"), exist_ok=True)
with open(src) as f:
    for n, line in enumerate(f):
        it = json.loads(line)
        filters = "".join(
            f'<span data-pagefind-filter="{k}">{html.escape(v)}</span>' for k, vs in it["facets"].items() for v in vs
        )
        body = (
            f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(it["id"])}</title></head>'
            f'<body><main data-pagefind-body><h1>{html.escape(it["id"])}</h1><p>{html.escape(it["title"])}</p>'
            f'<p>{" ".join(html.escape(t) for t in it["text"])}</p><div hidden>{filters}</div></main></body></html>'
        )
        d = os.path.join(site, "items", str(n // 1000))
        if n % 1000 == 0:
            os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, f"{n}.html"), "w") as out:
            out.write(body)
with open(os.path.join(site, "search.html"), "w") as out:
    out.write("""<!doctype html><html><head><meta charset="utf-8"><title>pagefind bench</title></head><body><p id="total"></p><script type="module">
const t0 = performance.now();
const pagefind = await import("./pagefind/pagefind.js");
await pagefind.init();
const params = new URLSearchParams(location.search);
const filters = {};
for (const [k, v] of params) if (k.startsWith("f.")) (filters[k.slice(2)] ??= { any: [] }).any.push(v);
const term = params.get("q");
const search = await pagefind.search(term || null, { filters });
const rows = await Promise.all(search.results.slice(0, 20).map(r => r.data()));
document.querySelector("#total").textContent = `${search.results.length} items`;
document.body.dataset.rows = rows.length;
document.body.dataset.ms = (performance.now() - t0).toFixed(1);
document.body.dataset.readyAt = performance.now().toFixed(1);
document.body.dataset.state = "ready";
</script></body></html>""")
