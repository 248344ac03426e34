"""Dashboard-side figures (issue 4): metrics endpoint on a 1M-row run, SSE end-to-end
latency, the page opening on 200 runs x 100,000 steps x 5 metrics in headless Chromium, and
(issue 13.4) "select all" on 50 runs x 1,000,000 steps x 3 metrics: time until every curve is
drawn, the longest long task, and a drag-zoom. The page figures compare the page of --baseline
(default main) with this tree's, both served by this tree's server, alternately in one run.

    python benchmarks/bench_server.py            # everything (page load needs Chromium)
    python benchmarks/bench_server.py --quick    # smaller data, for a smoke run
    python benchmarks/bench_server.py --skip-page
    python benchmarks/bench_server.py --data DIR --parts page,select-all --rounds 2

Data is generated with the library itself into a temporary directory (kept with --keep, or
reused from --data DIR); the 50 x 1M runs are written straight into the layout with pyarrow
(make_big_runs), since logging 150M values through the writer takes minutes.
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import warnings

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
import expman  # noqa: E402

warnings.simplefilter("ignore", expman.ExpmanWarning)


def pct(values, q):
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def log_run(root, exp, run, rows, keys=5):
    with expman.Experiment(exp, base_dir=root, run_name=run, capture_git=False,
                           config={"lr": 0.001 * (1 + hash(run) % 7), "seed": hash(run) % 100}) as e:
        for i in range(rows):
            e.log_metrics({f"train/m{k}": (k + 1) / (i + 1) for k in range(keys)}, step=i)


def make_big_runs(root, exp, runs, rows, keys=3):
    """runs x rows x keys, written straight into the layout: each run is first made by the
    library with 10 rows (run.yaml, config.yaml, the catalog's files), then its metrics.parquet
    is replaced by a pyarrow table of `rows` rows with the same schema and row-range metadata,
    and run.yaml's rows/last_step/summary are set to match. The catalog is dropped, so the
    server rebuilds it from the runs. Logging 50M rows through the writer would take minutes;
    this takes a few seconds per run."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq
    import yaml
    exp_dir = os.path.join(root, exp)
    done = os.path.join(exp_dir, ".generated")
    if os.path.exists(done):
        with open(done) as fh:
            if fh.read().strip() == f"{runs} {rows} {keys}":
                print(f"  reusing {exp_dir}", flush=True)
                build_summaries(exp_dir)
                return
    shutil.rmtree(exp_dir, ignore_errors=True)
    t0 = time.perf_counter()
    names = [f"train/m{k}" for k in range(keys)]
    steps = np.arange(rows, dtype=np.int64)
    for r in range(runs):
        name = f"run{r:03d}"
        with expman.Experiment(exp, base_dir=root, run_name=name, capture_git=False,
                               config={"lr": 0.001 * (1 + r % 7), "seed": r}) as e:
            for i in range(10):
                e.log_metrics({key: 1.0 for key in names}, step=i)
        run_dir = os.path.join(exp_dir, name)
        rng = np.random.default_rng(r)
        start = time.time() - 3600
        columns = {"step": pa.array(steps),
                   "timestamp": pa.array(((start + steps * 1e-3) * 1e6).astype(np.int64),
                                         pa.timestamp("us", tz="UTC"))}
        decay = 1.0 / (1.0 + steps / (2000.0 * (1 + r % 5)))
        for k, key in enumerate(names):
            columns[key] = pa.array((k + 1) * decay + 0.05 * rng.standard_normal(rows))
        table = pa.table(columns).replace_schema_metadata({b"expman.rows": f"0 {rows}".encode()})
        pq.write_table(table, os.path.join(run_dir, "metrics.parquet"), row_group_size=1 << 17)
        meta_path = os.path.join(run_dir, "run.yaml")
        with open(meta_path) as fh:
            meta = yaml.safe_load(fh)
        last = {key: float(columns[key][-1].as_py()) for key in names}
        meta.update(rows=rows, last_step=rows - 1, summary=last, vectors=dict(last))
        with open(meta_path, "w") as fh:
            yaml.safe_dump(meta, fh, sort_keys=False)
    shutil.rmtree(os.path.join(exp_dir, ".catalog"), ignore_errors=True)
    with open(done, "w") as fh:
        fh.write(f"{runs} {rows} {keys}")
    print(f"  generated {runs} runs x {rows:,} rows x {keys} metrics in "
          f"{time.perf_counter() - t0:.0f}s (pyarrow, straight into the layout)", flush=True)
    build_summaries(exp_dir)


def build_summaries(exp_dir):
    """The chart summary of each run, as close() writes it (issue 13 item 3): the generated
    metrics.parquet did not go through a compaction. Skipped by an expman without them."""
    if not hasattr(expman, "SUMMARY_FILE"):
        return
    t0, built = time.perf_counter(), 0
    for name in sorted(os.listdir(exp_dir)):
        run_dir = os.path.join(exp_dir, name)
        if name.startswith(".") or not os.path.isdir(run_dir) or \
                os.path.exists(os.path.join(run_dir, expman.SUMMARY_FILE)):
            continue
        expman._SegmentLog.metrics(expman._LOCAL_STORE, run_dir).compact()
        built += 1
    if built:
        print(f"  built {built} chart summaries in {time.perf_counter() - t0:.0f}s", flush=True)


def start_server(root):
    server = expman.make_server(root, port=0)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    return server, thread


def get_json(url):
    with urllib.request.urlopen(url, timeout=60) as resp:
        return json.loads(resp.read())


def bench_endpoint(root, rows):
    t0 = time.perf_counter()
    log_run(root, "big", "r", rows)
    print(f"  generated a {rows:,}-row run in {time.perf_counter() - t0:.1f}s", flush=True)
    server, _ = start_server(root)
    try:
        url = server.url + "/api/experiments/big/runs/r/metrics?keys=train%2Fm0&max_points=2000"
        cold = time.perf_counter()
        data = get_json(url)
        cold = time.perf_counter() - cold
        warm = []
        for _ in range(20):
            t = time.perf_counter()
            data = get_json(url)
            warm.append(time.perf_counter() - t)
        points = len(data["series"]["train/m0"]["step"])
        zoom = []
        for i in range(10):
            lo = i * rows // 10
            t = time.perf_counter()
            get_json(url + f"&x_min={lo}&x_max={lo + rows // 100}")
            zoom.append(time.perf_counter() - t)
    finally:
        server.close()
    return {"rows": rows, "points": points, "cold_ms": cold * 1e3,
            "warm_median_ms": statistics.median(warm) * 1e3, "warm_p90_ms": pct(warm, 0.9) * 1e3,
            "zoom_median_ms": statistics.median(zoom) * 1e3}


CHILD = r"""
import sys, time
sys.path.insert(0, sys.argv[1])
import expman
exp = expman.Experiment("live", base_dir=sys.argv[2], run_name=sys.argv[3], capture_git=False,
                        flush_interval_ms=int(sys.argv[4]))
print("ready", flush=True)
sys.stdin.readline()
for i in range(int(sys.argv[5])):
    exp.log_metrics({"sent": time.time()}, step=i)
    time.sleep(0.05)
exp.close()
"""


def bench_sse(root, flush_ms, samples):
    run = f"l{flush_ms}"
    server, _ = start_server(root)
    child = subprocess.Popen([sys.executable, "-c", CHILD, os.path.dirname(HERE), str(root),
                              run, str(flush_ms), str(samples)],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    latencies = []
    try:
        assert child.stdout.readline().strip() == "ready"
        resp = urllib.request.urlopen(server.url + f"/api/stream?runs=live/{run}:0", timeout=60)
        child.stdin.write("go\n")
        child.stdin.flush()
        event = None
        deadline = time.time() + 60
        for raw in resp:
            line = raw.decode().strip()
            if line.startswith("event:"):
                event = line[6:].strip()
            elif line.startswith("data:") and event == "metrics":
                now = time.time()
                data = json.loads(line[5:])
                latencies += [now - v for v in data["series"]["sent"]["value"]]
                if len(latencies) >= samples or time.time() > deadline:
                    break
        resp.close()
    finally:
        child.wait(30)
        server.close()
    return {"flush_ms": flush_ms, "samples": len(latencies),
            "median_ms": statistics.median(latencies) * 1e3, "p99_ms": pct(latencies, 0.99) * 1e3,
            "max_ms": max(latencies) * 1e3}


def bench_page(root, runs, rows, ref=None):
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        return {"skipped": "playwright is not installed"}
    if not os.path.exists("/usr/bin/chromium"):
        return {"skipped": "no /usr/bin/chromium"}
    t0 = time.perf_counter()
    import multiprocessing as mp
    existing = os.path.join(root, "sweep")
    if os.path.isdir(existing) and len(os.listdir(existing)) > runs:
        print(f"  reusing {existing}", flush=True)
    else:
        with mp.get_context("fork").Pool(2) as pool:
            pool.starmap(log_run, [(root, "sweep", f"run{i:03d}", rows) for i in range(runs)])
        print(f"  generated {runs} runs x {rows:,} rows in {time.perf_counter() - t0:.0f}s",
              flush=True)
    versions = page_versions(ref)
    timings = {label: [] for label in versions}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--no-first-run", "--disable-sync"])
        # one server per version, pages opened alternately: A B A B ...
        served = {label: ServedPage(root, path) for label, path in versions.items()}
        try:
            for attempt in range(6):
                for label in versions:
                    page = browser.new_page(viewport={"width": 1400, "height": 900})
                    t = time.perf_counter()
                    page.goto(served[label].url + "/#exp=sweep")
                    page.wait_for_selector("tr[data-run]", timeout=60_000)
                    table_s = time.perf_counter() - t
                    page.wait_for_function(
                        "() => window.expman && document.querySelectorAll('#charts canvas').length"
                        " > 0 && Object.values(window.expman.chartPoints('train/m0') || {})"
                        ".some(n => n > 0)", timeout=60_000)
                    timings[label].append((table_s, time.perf_counter() - t))
                    if attempt == 0 and label == "this":
                        page.screenshot(path=os.path.join(HERE, "results", "page_200_runs.png"))
                    page.close()
        finally:
            for server in served.values():
                server.close()
        browser.close()
    out = {}
    for label, rows_ in timings.items():
        warm = rows_[1:]
        out[label] = {"first_open_s": rows_[0][1],
                      "table_median_s": statistics.median(t for t, _ in warm),
                      "charts_median_s": statistics.median(c for _, c in warm),
                      "load_average": load_average()}
    return {"runs": runs, "rows": rows, "versions": out}


SERVE_CHILD = r"""
import importlib.util, sys
def load(name, path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
server_module = load("expman", sys.argv[1])
if sys.argv[2] != sys.argv[1]:   # the same server, serving another version's page
    server_module.DASHBOARD_HTML = load("expman_page", sys.argv[2]).DASHBOARD_HTML
server = server_module.make_server(sys.argv[3], port=0)
print(server.url, flush=True)
server.run()
"""


def page_versions(ref):
    """{label: path of an expman.py whose page to serve}: this tree's, and ref's (from git)."""
    here = os.path.join(os.path.dirname(HERE), "expman.py")
    versions = {"this": here}
    if ref:
        text = subprocess.run(["git", "-C", os.path.dirname(HERE), "show", f"{ref}:expman.py"],
                              capture_output=True, text=True, check=True).stdout
        path = os.path.join(tempfile.mkdtemp(prefix="expman-page-"), "expman_page.py")
        with open(path, "w") as fh:
            fh.write(text)
        versions = {ref: path, "this": here}
    return versions


class ServedPage:
    """This tree's server in a child process, serving the page of `page_path`'s expman.py."""

    def __init__(self, root, page_path, server_path=None):
        here = server_path or os.path.join(os.path.dirname(HERE), "expman.py")
        self.proc = subprocess.Popen([sys.executable, "-c", SERVE_CHILD, here, page_path, root],
                                     stdout=subprocess.PIPE, text=True)
        self.url = self.proc.stdout.readline().strip()
        if not self.url.startswith("http"):
            raise RuntimeError("the server did not start")

    def rss_mb(self, field="VmRSS"):
        """The server's resident memory (VmHWM: its peak so far), MB."""
        with open(f"/proc/{self.proc.pid}/status") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024
        return None

    def close(self):
        self.proc.terminate()
        self.proc.wait(30)


def load_average():
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


LONGTASKS = """
window.__longTasks = [];
try {
  new PerformanceObserver(list => { for (const e of list.getEntries()) window.__longTasks.push([e.startTime, e.duration]); })
    .observe({ type: 'longtask', buffered: true });
} catch (e) {}
"""

ALL_DRAWN = """([keys, runs]) => keys.every(key => {
  const n = Object.values(window.expman.chartPoints(key) || {});
  return n.length >= runs && n.every(c => c > 0);
})"""

TWO_FRAMES = "() => new Promise(r => requestAnimationFrame(() => requestAnimationFrame(() => r(performance.now()))))"


def select_all_once(browser, url, exp, runs, keys, rss=None):
    """Open the page on exp, then tick "select all": seconds until every run's curve is in
    every chart and drawn, the long tasks meanwhile, then a drag-zoom on the first chart:
    seconds until every run's zoomed range has arrived and is drawn."""
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    page.add_init_script(LONGTASKS)
    requests = []
    zoomed = []
    page.on("request", lambda r: requests.append(r.url) if "/metrics?" in r.url else None)
    # a zoom asks per run (/runs/<run>/metrics) or for several runs at once (&run=a&run=b)
    page.on("requestfinished", lambda r: zoomed.extend(
        [r.url] * (1 if "/runs/" in r.url else r.url.count("&run="))) if "x_min=" in r.url else None)
    page.goto(url + "/#exp=" + exp)
    page.wait_for_selector("tr[data-run]", timeout=60_000)
    page.wait_for_function("() => window.expman && Object.values(window.expman.chartPoints("
                           f"{json.dumps(keys[0])}) || {{}}).some(n => n > 0)", timeout=120_000)
    page.evaluate(TWO_FRAMES)
    warm = rss() if rss else None   # the server with the page open on 5 runs' charts
    before = len(requests)
    t0 = page.evaluate("() => { window.__longTasks.length = 0; return performance.now(); }")
    page.click("input.select-all")
    page.wait_for_function(ALL_DRAWN, arg=[keys, runs], timeout=300_000, polling=50)
    drawn = page.evaluate(TWO_FRAMES) - t0
    tasks = page.evaluate("() => window.__longTasks.slice()")
    points = page.evaluate("mp => mp", [int(u.split("max_points=")[1].split("&")[0])
                                        for u in requests[before:] if "max_points=" in u])
    # drag-zoom 40% -> 45% of the first chart's plot, as a person would
    card = page.locator(f'.chart[data-key="{keys[0]}"] canvas.chart-overlay')
    card.scroll_into_view_if_needed()
    page.evaluate(TWO_FRAMES)
    box = card.bounding_box()
    y = box["y"] + box["height"] / 2
    page.mouse.move(box["x"] + box["width"] * 0.4, y)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] * 0.45, y, steps=4)
    zoomed.clear()
    page.evaluate("() => { window.__longTasks.length = 0; }")
    z0 = time.perf_counter()
    page.mouse.up()
    deadline = time.time() + 120
    while len(zoomed) < runs and time.time() < deadline:
        page.wait_for_timeout(20)
    page.evaluate(TWO_FRAMES)
    zoom_s = time.perf_counter() - z0
    zoom_tasks = page.evaluate("() => window.__longTasks.slice()")
    page.close()
    return {"drawn_s": drawn / 1e3, "longest_task_ms": max([d for _, d in tasks], default=0),
            "long_tasks_ms": sum(d for _, d in tasks), "requests": len(points),
            "max_points": sorted(set(points)), "zoom_s": zoom_s, "zoom_requests": len(zoomed),
            "zoom_longest_task_ms": max([d for _, d in zoom_tasks], default=0),
            "server_warm_rss_mb": warm}


def bench_select_all(root, ref, rounds, runs=50, rows=1_000_000, whole=False, exp_dir=None):
    """50 runs x 1M steps x 3 metrics, select all: main's page against this tree's, served
    by this tree's server (one fresh server per measurement), alternating A B A B. whole:
    the baseline's page served by the baseline's own server (old against new end to end).
    exp_dir: an experiment of `runs` runs made elsewhere (e.g. bench_summaries.py --live's
    live_fifty: runs still in segments) instead of big50; its keys from its first run."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        return {"skipped": "playwright is not installed"}
    exp = "big50"
    if exp_dir:
        root, exp = os.path.split(os.path.abspath(exp_dir))
        first = sorted(n for n in os.listdir(exp_dir) if not n.startswith("."))[0]
        schema = expman.load_metrics(os.path.join(exp_dir, first)).schema
        keys = [n for n in schema.names if n not in ("step", "timestamp")]
    else:
        make_big_runs(root, exp, runs, rows)
        keys = [f"train/m{k}" for k in range(3)]
    versions = page_versions(ref)
    out = {label: [] for label in versions}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--no-first-run", "--disable-sync"])
        for attempt in range(rounds):
            for label, path in versions.items():
                served = ServedPage(root, path, path if whole and label != "this" else None)
                try:
                    started = served.rss_mb()
                    result = select_all_once(browser, served.url, exp, runs, keys, served.rss_mb)
                    # the page is closed: what the server keeps 10 s later, and its peak
                    time.sleep(10)
                    result["server_rss_mb"] = {"started": started,
                                               "warm": result.pop("server_warm_rss_mb"),
                                               "peak": served.rss_mb("VmHWM"),
                                               "page_closed_10s": served.rss_mb()}
                finally:
                    served.close()
                result["load_average"] = load_average()
                out[label].append(result)
                print(f"  [{label}] all {runs} curves drawn {result['drawn_s']:.2f} s, longest "
                      f"task {result['longest_task_ms']:.0f} ms (sum {result['long_tasks_ms']:.0f}), "
                      f"{result['requests']} requests, max_points {result['max_points']}; zoom "
                      f"{result['zoom_s']:.2f} s ({result['zoom_requests']} requests, longest task "
                      f"{result['zoom_longest_task_ms']:.0f} ms); server RSS "
                      f"{result['server_rss_mb']}; load {result['load_average']}",
                      flush=True)
        browser.close()
    return {"runs": runs, "rows": rows, "metrics": len(keys), "versions": out}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--skip-page", action="store_true")
    parser.add_argument("--keep", action="store_true")
    parser.add_argument("--data", help="keep generated data here and reuse it next time")
    parser.add_argument("--parts", default="endpoint,sse,page,select-all",
                        help="comma-separated: endpoint, sse, page, select-all")
    parser.add_argument("--baseline", default="main",
                        help="git ref whose page the page figures are compared with ('' for none)")
    parser.add_argument("--rounds", type=int, default=2,
                        help="select-all rounds per page version (alternating)")
    parser.add_argument("--baseline-server", action="store_true",
                        help="select-all: serve the baseline's page with the baseline's server")
    parser.add_argument("--select-exp", help="select-all on this experiment folder instead of "
                        "big50 (e.g. DATA/live_fifty from bench_summaries.py --live)")
    args = parser.parse_args()
    parts = set(args.parts.split(","))
    if args.skip_page:
        parts -= {"page", "select-all"}
    os.makedirs(os.path.join(HERE, "results"), exist_ok=True)
    tmp = args.data or tempfile.mkdtemp(prefix="expman-bench-server-")
    results = {}
    try:
        root = os.path.join(tmp, "experiments")
        shutil.rmtree(os.path.join(root, "big"), ignore_errors=True)
        shutil.rmtree(os.path.join(root, "live"), ignore_errors=True)
        if "endpoint" in parts:
            print("metrics endpoint ...", flush=True)
            results["endpoint"] = bench_endpoint(root, 100_000 if args.quick else 1_000_000)
        if "sse" in parts:
            print("SSE latency ...", flush=True)
            results["sse"] = [bench_sse(root, ms, 40 if args.quick else 100) for ms in (500, 100)]
        if "page" in parts:
            print("page load ...", flush=True)
            results["page"] = bench_page(root, 20 if args.quick else 200,
                                         10_000 if args.quick else 100_000, args.baseline)
        if "select-all" in parts:
            print("select all ...", flush=True)
            results["select_all"] = bench_select_all(
                root, args.baseline, args.rounds, 10 if args.quick else 50,
                100_000 if args.quick else 1_000_000, args.baseline_server, args.select_exp)
    finally:
        if args.keep or args.data:
            print("data kept in", tmp)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    e = results.get("endpoint")
    if e:
        print(f"\nmetrics endpoint, one key of a {e['rows']:,}-row run -> {e['points']} points: "
              f"cold {e['cold_ms']:.0f} ms, warm median {e['warm_median_ms']:.0f} ms "
              f"(p90 {e['warm_p90_ms']:.0f} ms), zoomed range {e['zoom_median_ms']:.0f} ms")
    for s in results.get("sse", []):
        print(f"SSE log_metrics -> EventSource client, flush {s['flush_ms']} ms: median "
              f"{s['median_ms']:.0f} ms, p99 {s['p99_ms']:.0f} ms, max {s['max_ms']:.0f} ms "
              f"({s['samples']} samples)")
    page = results.get("page")
    if page and "skipped" not in page:
        for label, fig in page["versions"].items():
            print(f"page [{label}] on {page['runs']} runs x {page['rows']:,} steps x 5 metrics: "
                  f"first open {fig['first_open_s']:.2f} s; warm: runs table "
                  f"{fig['table_median_s']:.2f} s, first charts drawn {fig['charts_median_s']:.2f} s "
                  f"(load {fig['load_average']})")
    elif page:
        print("page load skipped:", page["skipped"])
    sel = results.get("select_all")
    if sel and "skipped" not in sel:
        for label, rounds in sel["versions"].items():
            med = lambda name: statistics.median(r[name] for r in rounds)  # noqa: E731
            print(f"select all [{label}] {sel['runs']} runs x {sel['rows']:,} steps x "
                  f"{sel['metrics']} metrics, median of {len(rounds)}: all curves drawn "
                  f"{med('drawn_s'):.2f} s, longest long task {med('longest_task_ms'):.0f} ms, "
                  f"drag-zoom {med('zoom_s'):.2f} s")
    elif sel:
        print("select all skipped:", sel["skipped"])
    everything = {"endpoint", "sse", "page", "select-all"}
    name = "server.json" if parts >= everything else f"server-{'-'.join(sorted(parts))}.json"
    out = os.path.join(HERE, "results", name)
    with open(out, "w") as fh:
        json.dump({"date": time.strftime("%Y-%m-%d"), **results}, fh, indent=2)
    print("results written to", out)


if __name__ == "__main__":
    main()
