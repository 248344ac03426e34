#!/usr/bin/env python
"""expman alone, against the targets of issue 2 (the logging engine).

    python benchmarks/bench_log.py            # N = 100k and 1M, 3 repetitions, ~2 min
    python benchmarks/bench_log.py --quick    # smoke run, ~30 s

Every configuration runs in a fresh subprocess (``--worker``). Figures:

* log call median / mean / p99 / worst: ``perf_counter_ns()`` around every call; the timer's own
  cost (median of the same loop with the call removed, measured in the same process) is
  subtracted from each sample. Samples include whatever the writer thread costs the caller (GIL
  hand-offs). The loop starts right after ``Experiment()`` returns, as a training loop does:
  this harness used to pause 0.3 s after init, which hid the writer's start-up (its pyarrow
  import held the GIL for up to 300 ms in the loop's first seconds) and is why it reported
  1.3-1.7 µs/row while a back-to-back loop right after init felt a 4-6 µs mean (issue 19).
  The five worst calls are listed with their index in the loop (``worst``), so a stall at
  start-up or at a fixed row count shows where it is.
* loop overhead per row: wall time of the training loop that logs, minus the same loop that
  only builds the dict (no per-call timers in either; the faster of two empty loops, run before
  and after, is the baseline). "loop" is the loop alone, "+close" adds ``close()`` (final flush,
  compaction into metrics.parquet, final run.yaml). The writer thread's GIL time is inside both.
* CPU per row: process CPU time (both threads) of loop + close minus the empty loop's time.
* RSS growth: peak RSS (VmHWM, reset with ``/proc/self/clear_refs`` after ``import expman``,
  pyarrow import, ``Experiment()`` and the timing arrays) minus RSS at that point. "warm": a
  1,000-row run was logged and closed first in the same process, so pyarrow's one-time
  Parquet/compute start-up (~20-35 MB: code pages, memory pools) is not counted; "cold": the
  measured run is the process's first (3 extra processes per N; median and worst shown).
* live-read latency: a second *process* polls ``load_metrics(run_dir, since_row=n)`` every
  5 ms; latency = wall clock when a row first came back minus the row's own timestamp (taken
  in the log call; same host clock). One row is logged every ~25 ms (jittered).
"""
import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)
import _harness as H  # noqa: E402


# -- workers (fresh subprocesses) -------------------------------------------------------------
def worker_run(cfg):
    t0 = time.perf_counter()
    sys.path.insert(0, cfg.get("module") or REPO)
    import expman
    t_import = time.perf_counter() - t0
    import pyarrow  # noqa: F401 - expman imports it lazily; keep it out of the RSS growth
    tmp = tempfile.mkdtemp(prefix="expman-bench-")
    if cfg.get("warm"):  # a first small run maps pyarrow's Parquet code and memory pools
        warm = expman.Experiment("warmup", base_dir=tmp, flush_interval_ms=cfg["flush_ms"])
        for i in range(1000):
            warm.log_metrics({k: 0.5 for k in H.KEYS}, step=i)
        warm.close()
    t0 = time.perf_counter()
    exp = expman.Experiment("bench", base_dir=tmp, flush_interval_ms=cfg["flush_ms"])
    t_init = time.perf_counter() - t0
    if cfg.get("settle_s"):  # opt-in: what the loop would feel with a pause after init
        time.sleep(cfg["settle_s"])
    res = H.measure("obj.log_metrics(d, step=i)", exp, cfg["n"], cfg.get("cap_s", 600),
                    cfg["timed"], exp.close, empty_before=False)
    res.update(import_s=t_import, init_s=t_init, warm=bool(cfg.get("warm")))
    res["bytes"], res["files"] = H.disk_usage(exp.run_dir)
    t0 = time.perf_counter()
    table = expman.load_metrics(exp.run_dir)
    res["read_s"] = time.perf_counter() - t0
    import numpy as np
    n = res["done"]
    ok = table.num_rows == n and np.array_equal(table.column("step").to_numpy(), np.arange(n))
    pool = np.array(H.POOL)
    cols = []
    for key, off in zip(H.KEYS, H.OFFSETS):
        col = table.column(key).to_numpy()
        ok = ok and np.array_equal(col, pool[(np.arange(n) + off) & H.MASK])
        cols.append(col)
    res.update(read_rows=table.num_rows, read_ok=bool(ok),
               checksum=math.fsum(np.concatenate(cols)), checksum_expected=H.expected_checksum(n))
    import shutil
    shutil.rmtree(tmp, ignore_errors=True)
    H.emit(res)


def worker_live(cfg):
    sys.path.insert(0, REPO)
    import random
    import expman
    tmp = tempfile.mkdtemp(prefix="expman-live-")
    exp = expman.Experiment("live", base_dir=tmp, flush_interval_ms=cfg["flush_ms"])
    reader = subprocess.Popen([sys.executable, __file__, "--reader",
                               json.dumps({"run_dir": str(exp.run_dir), "n": cfg["samples"]})],
                              stdout=subprocess.PIPE, text=True)
    assert reader.stdout.readline().strip() == "READY"
    rnd = random.Random(7)
    for i in range(cfg["samples"]):
        exp.log_metrics({k: H.POOL[(i + o) & H.MASK] for k, o in zip(H.KEYS, H.OFFSETS)}, step=i)
        time.sleep(cfg["period_s"] * rnd.uniform(0.5, 1.5))
    out, _ = reader.communicate(timeout=60)
    exp.close()
    import shutil
    shutil.rmtree(tmp, ignore_errors=True)
    res = H.parse_result(out)
    res["flush_ms"] = cfg["flush_ms"]
    H.emit(res)


def reader(cfg):
    sys.path.insert(0, REPO)
    import pyarrow as pa
    import expman
    expman.load_metrics(cfg["run_dir"])  # warm: imports, first listing
    print("READY", flush=True)
    n, lats, costs = 0, [], []
    deadline = time.time() + 120
    while n < cfg["n"] and time.time() < deadline:
        t0 = time.perf_counter()
        tab = expman.load_metrics(cfg["run_dir"], since_row=n)
        now = time.time()
        costs.append(time.perf_counter() - t0)
        if tab.num_rows:
            ts = tab.column("timestamp").cast(pa.int64()).to_pylist()
            lats += [now - t / 1e6 for t in ts]
            n += tab.num_rows
        time.sleep(0.005)
    lats.sort()
    costs.sort()
    H.emit({"samples": len(lats), "median_s": H.percentile(lats, 50),
            "p99_s": H.percentile(lats, 99), "max_s": lats[-1] if lats else None,
            "poll_median_s": H.percentile(costs, 50), "poll_p99_s": H.percentile(costs, 99),
            "polls": len(costs)})


# -- orchestration ----------------------------------------------------------------------------
def run_worker(kind, cfg, timeout=900):
    t0 = time.time()
    proc = subprocess.run([sys.executable, __file__, "--" + kind, json.dumps(cfg)],
                          capture_output=True, text=True, timeout=timeout)
    res = H.parse_result(proc.stdout)
    if res is None:
        sys.stderr.write(proc.stdout[-3000:] + proc.stderr[-3000:])
        raise SystemExit(f"worker {kind} {cfg} failed (exit {proc.returncode})")
    if proc.stderr.strip():
        res["stderr"] = proc.stderr.strip()[-2000:]
    print(f"  {kind} {cfg}: {time.time() - t0:.1f}s", file=sys.stderr, flush=True)
    return res


def median_of(results, key):
    vals = [r[key] for r in results if r.get(key) is not None]
    return statistics.median(vals) if vals else None


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    ap.add_argument("--quick", action="store_true", help="small N, one repetition")
    ap.add_argument("--reps", type=int, default=None, help="repetitions of each N (default 3)")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--live", help=argparse.SUPPRESS)
    ap.add_argument("--reader", help=argparse.SUPPRESS)
    ap.add_argument("--report", metavar="JSON", help="print the tables of a saved result file")
    ap.add_argument("--module", default=None, help="directory of the expman.py to measure "
                                                   "(default: this checkout)")
    ap.add_argument("--json", default=None, help="write results here (default "
                                                "benchmarks/results/bench_log-<date>.json)")
    args = ap.parse_args()
    if args.worker:
        return worker_run(json.loads(args.worker))
    if args.live:
        return worker_live(json.loads(args.live))
    if args.reader:
        return reader(json.loads(args.reader))
    if args.report:
        with open(args.report) as fh:
            return report(json.load(fh))

    sizes = (20_000, 200_000) if args.quick else (100_000, 1_000_000)
    reps = args.reps or (1 if args.quick else 3)
    samples = 40 if args.quick else 200
    info = H.machine_info()
    print(f"bench_log: {info['cores']} cores, {info['cpu']}, Python {info['python']}, "
          f"load {info['loadavg_at_start']}", file=sys.stderr)
    results = {"machine": info, "sizes": sizes, "reps": reps, "plain": {}, "timed": {},
               "live": {}}
    for rep in range(reps):  # interleave sizes and kinds: drift on a shared machine hits all
        for n in sizes:
            for timed in (False, True):
                r = run_worker("worker", {"n": n, "timed": timed, "flush_ms": 500, "warm": True,
                                          "module": args.module})
                results["timed" if timed else "plain"].setdefault(str(n), []).append(r)
            # RSS as a user's first run in a process meets it: no warm-up run before
            results.setdefault("cold", {}).setdefault(str(n), []).append(run_worker(
                "worker", {"n": n, "timed": False, "flush_ms": 500, "warm": False,
                           "module": args.module}))
    for flush_ms in (500, 50):
        results["live"][str(flush_ms)] = run_worker(
            "live", {"flush_ms": flush_ms, "samples": samples, "period_s": 0.025})
    import pyarrow
    info["pyarrow"] = pyarrow.__version__
    report(results)
    path = args.json or os.path.join(HERE, "results", f"bench_log-{time.strftime('%Y%m%d-%H%M')}"
                                                        f".json")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as fh:
        json.dump(results, fh, indent=1)
    print(f"\nresults written to {os.path.relpath(path)}")


def report(results):
    sizes, reps = results["sizes"], results["reps"]
    rows, summary = [], {}
    for n in sizes:
        plain, timed = results["plain"][str(n)], results["timed"][str(n)]
        lat_med = statistics.median(r["latency"]["median_ns"] for r in timed)
        lat_p99 = statistics.median(r["latency"]["p99_ns"] for r in timed)
        s = summary[n] = {
            "lat_med": lat_med, "lat_p99": lat_p99,
            "lat_mean": statistics.median(r["latency"]["mean_ns"] for r in timed),
            "worst": [r["latency"].get("worst") for r in timed],
            "lat_p999": statistics.median(r["latency"]["p999_ns"] for r in timed),
            "lat_max": max(r["latency"]["max_ns"] for r in timed),
            "loop": median_of(plain, "overhead_loop_us"),
            "total": median_of(plain, "overhead_total_us"),
            "cpu": median_of(plain, "cpu_overhead_us"), "close": median_of(plain, "close_s"),
            "rss": median_of(plain, "rss_growth"), "bytes": plain[0]["bytes"],
            "files": plain[0]["files"], "read_s": median_of(plain, "read_s"),
            "logged_s": statistics.median(r["loop_s"] + r["close_s"] for r in plain),
            "empty_s": median_of(plain, "empty_s"),
            "ok": all(r["read_ok"] and r["checksum"] == r["checksum_expected"]
                      for r in plain + timed),
            "import_s": median_of(plain, "import_s"), "init_s": median_of(plain, "init_s"),
            "rss_cold": median_of(results["cold"][str(n)], "rss_growth"),
            "rss_cold_max": max(r["rss_growth"] for r in results["cold"][str(n)]),
            "backpressure": sum("logging faster" in r.get("stderr", "") for r in plain + timed),
            "runs": len(plain + timed)}
        rows.append([
            f"{n:,}", H.fmt_ns(lat_med), H.fmt_ns(s["lat_mean"]), H.fmt_ns(lat_p99),
            f"{H.fmt_ns(s['lat_p999'])} / {H.fmt_ns(s['lat_max'])}", f"{s['loop']:.2f} µs",
            f"{s['total']:.2f} µs", f"{s['cpu']:.2f} µs", f"{s['close'] * 1e3:.0f} ms",
            f"{H.fmt_bytes(s['rss'])} / {H.fmt_bytes(s['rss_cold'])} (max "
            f"{H.fmt_bytes(s['rss_cold_max'])})",
            f"{s['backpressure']}/{s['runs']}",
            f"{H.fmt_bytes(s['bytes'])} ({s['files']} files)",
            ("ok " if s["ok"] else "MISMATCH ") + f"{plain[0]['read_rows']:,} rows, "
            f"Σ={plain[0]['checksum']:.6f}", f"{s['read_s'] * 1e3:.0f} ms",
            f"{s['import_s'] * 1e3:.0f} / {s['init_s'] * 1e3:.0f} ms"])
    print(f"\n### expman alone (median of {reps} fresh processes per figure)\n")
    print(H.md_table(["N", "log call median", "mean", "log call p99", "p99.9 / worst", "overhead/row (loop)",
                      "overhead/row (loop+close)", "CPU/row", "close", "RSS growth warm / cold",
                      "backpressure hit",
                      "on disk", "read-back (load_metrics)", "read time", "import / init"],
                     rows))
    small, big = sizes
    g = summary[big]["total"] * big / (summary[small]["total"] * small)
    gl = summary[big]["logged_s"] / summary[small]["logged_s"]
    gc = summary[big]["cpu"] * big / (summary[small]["cpu"] * small)
    ge = summary[big]["empty_s"] / summary[small]["empty_s"]
    print(f"\nCost growth {big:,} vs {small:,} rows (target ≤ ~12x): logging overhead "
          f"(loop+close - empty) {g:.1f}x; CPU overhead {gc:.1f}x; whole logged loop+close "
          f"{gl:.1f}x (the empty loop alone: {ge:.1f}x)")
    for n in sizes:
        print(f"worst calls at N={n:,} (index in the loop: time), per process: " + "; ".join(
            ", ".join(f"#{i}: {H.fmt_ns(ns)}" for i, ns in w) for w in summary[n]["worst"] if w))
    results["summary"] = {str(k): v for k, v in summary.items()}
    results["growth"] = {"overhead": g, "cpu": gc, "logged_total": gl, "empty": ge}
    live_rows = []
    for flush_ms, r in results["live"].items():
        live_rows.append([f"{flush_ms} ms", r["samples"], f"{r['median_s'] * 1e3:.0f} ms",
                          f"{r['p99_s'] * 1e3:.0f} ms", f"{r['max_s'] * 1e3:.0f} ms",
                          f"{r['poll_median_s'] * 1e3:.1f} ms"])
    print("\n### live-read latency (log call -> visible to load_metrics(since_row=n) in "
          "another process, polled every 5 ms)\n")
    print(H.md_table(["flush interval", "samples", "median", "p99", "max",
                      "poll cost (median)"], live_rows))
    t = summary[big]
    print(f"\nTargets (issue 2) at {big:,} rows: median ≤ 0.5 µs: "
          f"{'met' if t['lat_med'] <= 500 else 'MISSED'} ({H.fmt_ns(t['lat_med'])}); "
          f"p99 ≤ 5 µs: {'met' if t['lat_p99'] <= 5000 else 'MISSED'} "
          f"({H.fmt_ns(t['lat_p99'])}); overhead ≤ 2 µs/row: "
          f"{'met' if t['total'] <= 2 else 'MISSED'} ({t['total']:.2f} µs loop+close); "
          f"growth ≤ ~12x: {'met' if g <= 12.5 else 'MISSED'} ({g:.1f}x); RSS ≤ 100 MB: "
          f"{'met' if t['rss_cold_max'] <= 100 * 2 ** 20 else 'MISSED'} (warm "
          f"{H.fmt_bytes(t['rss'])}, cold median {H.fmt_bytes(t['rss_cold'])}, worst "
          f"{H.fmt_bytes(t['rss_cold_max'])}); live ≤ flush interval + ε: see table")


if __name__ == "__main__":
    main()
