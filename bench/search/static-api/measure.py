"""Time to the first page (20 items) of each facet/time/bbox query of
queries.txt from stac-fastapi-static over the same 100k items (its static
catalogue on the local filesystem), one fresh server per query (cold) and the
same query again (warm, its document cache filled). Free text is not part of
STAC API Item Search with CQL2, so text queries are left out.
    python3 measure.py <venv python> <catalog.json> <queries.txt>  → JSON lines"""
import json, os, signal, socket, subprocess, sys, time, urllib.parse, urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "tests" / "python"))
from test_search_index import cql2_filter  # the same CQL2 the cross-check evaluates

python, catalog, queries = sys.argv[1:4]
TIMEOUT = float(os.environ.get("STATIC_API_TIMEOUT", "60"))


def port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p


for line in Path(queries).read_text().splitlines():
    if not line or line.startswith("#"):
        continue
    name, _, qs = line.partition("\t")
    params = urllib.parse.parse_qs(qs)
    if "q" in params or "page" in params:
        continue
    q = {"facets": {k[2:]: v for k, v in params.items() if k.startswith("f.")}}
    for k in ("from", "to"):
        if k in params:
            q[k] = params[k][0]
    if "bbox" in params:
        q["bbox"] = [float(x) for x in params["bbox"][0].split(",")]
    expr = cql2_filter(q)  # CQL2 "and" takes two or more arguments
    body = {"limit": 20}
    if len(expr["args"]) == 1:
        expr = expr["args"][0]
    if expr.get("args"):
        body.update({"filter": expr, "filter-lang": "cql2-json"})
    p = port()
    env = dict(os.environ, catalog_href=f"file://{catalog}", app_port=str(p), app_host="127.0.0.1", log_level="error", reload="false")
    server = subprocess.Popen([python, "-m", "stac_fastapi.static.app"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(200):  # the port accepts connections once the app is up
            try:
                socket.create_connection(("127.0.0.1", p), timeout=1).close(); break
            except OSError:
                time.sleep(0.1)
        times, size, n = [], 0, 0
        for _ in range(2):
            req = urllib.request.Request(f"http://127.0.0.1:{p}/search", data=json.dumps(body).encode(), headers={"content-type": "application/json"})
            t = time.perf_counter()
            try:
                data = urllib.request.urlopen(req, timeout=TIMEOUT).read()
            except Exception as e:  # a time-out is a result too
                times.append(None)
                print(json.dumps({"name": name, "error": f"{type(e).__name__} after {time.perf_counter() - t:.0f} s"}), flush=True)
                break
            times.append((time.perf_counter() - t) * 1000)
            size, n = len(data), len(json.loads(data)["features"])
        else:
            print(json.dumps({"name": name, "first_page_items": n, "cold_ms": times[0], "warm_ms": times[1], "bytes": size}), flush=True)
    finally:
        server.send_signal(signal.SIGTERM); server.wait()
