"""Dashboard-side figures (issue 4): metrics endpoint on a 1M-row run, SSE end-to-end
latency, and the page opening on 200 runs x 100,000 steps x 5 metrics in headless Chromium.

    python benchmarks/bench_server.py            # everything (page load needs Chromium)
    python benchmarks/bench_server.py --quick    # smaller data, for a smoke run
    python benchmarks/bench_server.py --skip-page

Data is generated with the library itself into a temporary directory (kept with --keep).
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


def bench_page(root, runs, rows):
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
    server, _ = start_server(root)
    timings = []
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=[
                "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--no-first-run", "--disable-sync"])
            for attempt in range(4):
                page = browser.new_page(viewport={"width": 1400, "height": 900})
                t = time.perf_counter()
                page.goto(server.url + "/#exp=sweep")
                page.wait_for_selector("tr[data-run]", timeout=60_000)
                table_s = time.perf_counter() - t
                page.wait_for_function(
                    "() => window.expman && document.querySelectorAll('#charts canvas').length"
                    " > 0 && Object.values(window.expman.chartPoints('train/m0') || {})"
                    ".some(n => n > 0)", timeout=60_000)
                timings.append((table_s, time.perf_counter() - t))
                if attempt == 0:
                    page.screenshot(path=os.path.join(HERE, "results", "page_200_runs.png"))
                page.close()
            browser.close()
    finally:
        server.close()
    warm = timings[1:]
    return {"runs": runs, "rows": rows, "first_open_s": timings[0][1],
            "table_median_s": statistics.median(t for t, _ in warm),
            "charts_median_s": statistics.median(c for _, c in warm)}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--skip-page", action="store_true")
    parser.add_argument("--keep", action="store_true")
    parser.add_argument("--data", help="keep generated data here and reuse it next time")
    args = parser.parse_args()
    os.makedirs(os.path.join(HERE, "results"), exist_ok=True)
    tmp = args.data or tempfile.mkdtemp(prefix="expman-bench-server-")
    results = {}
    try:
        root = os.path.join(tmp, "experiments")
        shutil.rmtree(os.path.join(root, "big"), ignore_errors=True)
        shutil.rmtree(os.path.join(root, "live"), ignore_errors=True)
        print("metrics endpoint ...", flush=True)
        results["endpoint"] = bench_endpoint(root, 100_000 if args.quick else 1_000_000)
        print("SSE latency ...", flush=True)
        results["sse"] = [bench_sse(root, ms, 40 if args.quick else 100) for ms in (500, 100)]
        if not args.skip_page:
            print("page load ...", flush=True)
            results["page"] = bench_page(root, 20 if args.quick else 200,
                                         10_000 if args.quick else 100_000)
    finally:
        if args.keep or args.data:
            print("data kept in", tmp)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    e = results["endpoint"]
    print(f"\nmetrics endpoint, one key of a {e['rows']:,}-row run -> {e['points']} points: "
          f"cold {e['cold_ms']:.0f} ms, warm median {e['warm_median_ms']:.0f} ms "
          f"(p90 {e['warm_p90_ms']:.0f} ms), zoomed range {e['zoom_median_ms']:.0f} ms")
    for s in results["sse"]:
        print(f"SSE log_metrics -> EventSource client, flush {s['flush_ms']} ms: median "
              f"{s['median_ms']:.0f} ms, p99 {s['p99_ms']:.0f} ms, max {s['max_ms']:.0f} ms "
              f"({s['samples']} samples)")
    page = results.get("page")
    if page and "skipped" not in page:
        print(f"page on {page['runs']} runs x {page['rows']:,} steps x 5 metrics: first open "
              f"{page['first_open_s']:.2f} s; warm: runs table {page['table_median_s']:.2f} s, "
              f"first charts drawn {page['charts_median_s']:.2f} s")
    elif page:
        print("page load skipped:", page["skipped"])
    out = os.path.join(HERE, "results", "server.json")
    with open(out, "w") as fh:
        json.dump({"date": time.strftime("%Y-%m-%d"), **results}, fh, indent=2)
    print("results written to", out)


if __name__ == "__main__":
    main()
