#!/usr/bin/env python
"""Listing and serving 10,000 runs: `expman list DIR -e E`, `expman list DIR`, `expman serve`
(time to the first answer, CPU while idle), before/after.

    python benchmarks/bench_catalog.py                       # 10,000 runs, cached in /tmp
    python benchmarks/bench_catalog.py --runs 2000 --repeat 3
    python benchmarks/bench_catalog.py --baseline /tmp/old_expman.py   # side by side
    python benchmarks/bench_catalog.py --baseline OLD --drop-caches --idle-secs 60

The experiment is written straight into the storage layout (what a finished sweep leaves:
run.yaml, config.yaml with 5 params, metrics.parquet of 200 steps x 5 metrics), once, into a
`--data` folder reused by later runs: logging 10,000 runs through the library takes minutes
and measures the writer, not the listing. Each timing is a fresh `python expman.py ...`
process (interpreter start, imports, listing, printing to a pipe), wall clock from spawn to
exit. "cold" is the first listing with no catalog (it builds one), "warm" the median of the
next N. With `--baseline FILE`, the same commands run against that copy of expman.py (e.g.
main before the catalog), alternating, so both see the same machine load.

`--drop-caches` (root only) adds "cold cache": the catalog is there, but the kernel's page
cache is dropped first (echo 3 > /proc/sys/vm/drop_caches), so every file is read from disk.
Serving: `expman serve DIR --port 0` is started for each expman side by side; "ready" is the
wall clock from spawn until GET /api/health answers, "experiments" until GET
/api/experiments (10,000 runs listed) answers; then, with no page open, the CPU the process
burns over `--idle-secs` is read from /proc/<pid>/stat (utime + stime), as % of one core.
"""
import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)


def generate(exp_dir, runs):
    import pyarrow as pa
    import pyarrow.parquet as pq
    import yaml
    steps = 200
    table = pa.table({"step": pa.array(range(steps), pa.int64()),
                      "timestamp": pa.array([1_760_000_000_000_000 + i for i in range(steps)],
                                            pa.timestamp("us", tz="UTC")),
                      **{f"m{k}": pa.array([1.0 / (i + k + 1) for i in range(steps)])
                         for k in range(5)}})
    os.makedirs(exp_dir, exist_ok=True)
    for i in range(runs):
        path = os.path.join(exp_dir, f"run{i:05d}")
        os.makedirs(path, exist_ok=True)
        started = f"2026-11-{1 + i % 28:02d}T{i // 3600 % 24:02d}:{i // 60 % 60:02d}:{i % 60:02d}+00:00"
        meta = {"name": f"run{i:05d}", "experiment": os.path.basename(exp_dir),
                "status": "failed" if i % 50 == 49 else "finished", "started_at": started,
                "finished_at": started, "duration_secs": 12.5, "hostname": "bench",
                "pid": 1, "rows": steps, "last_step": steps - 1, "tags": ["bench"],
                "summary": {f"m{k}": 1.0 / (steps + k) for k in range(5)}}
        with open(os.path.join(path, "run.yaml"), "w") as f:
            yaml.safe_dump(meta, f, sort_keys=False)
        with open(os.path.join(path, "config.yaml"), "w") as f:
            yaml.safe_dump({"lr": 10 ** -(i % 5), "batch": 32 * (1 + i % 4), "seed": i,
                            "model": {"depth": i % 7, "width": 64}}, f)
        pq.write_table(table, os.path.join(path, "metrics.parquet"))


def timed(cmd):
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{cmd} failed: {proc.stderr[-2000:]}")
    return time.perf_counter() - t0, len(proc.stdout)


def drop_caches():
    subprocess.run(["sync"], check=True)
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("3\n")


def cpu_secs(pid):
    """utime + stime of a process, in seconds (/proc/<pid>/stat fields 14 and 15)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def get(url, timeout=60):
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return resp.read()


def start_serving(module, root):
    """(process, url, seconds to /api/health, seconds to /api/experiments)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, module, "serve", root, "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    line = proc.stdout.readline()
    match = re.search(r"(http://[^\s/]+)", line)
    if not match:
        proc.kill()
        raise SystemExit(f"{module} serve printed {line!r}")
    url = match.group(1)
    while True:
        try:
            get(url + "/api/health", timeout=5)
            break
        except OSError:
            time.sleep(0.01)
    ready = time.perf_counter() - t0
    get(url + "/api/experiments")
    return proc, url, ready, time.perf_counter() - t0


def bench_serve(modules, root, idle_secs):
    """{which: {"ready_s", "experiments_s", "idle_cpu_pct"}}: servers measured one after the
    other for start-up (each alone on the machine), then idle side by side."""
    out, procs = {}, {}
    try:
        for which, module in modules.items():
            proc, url, ready, listed = start_serving(module, root)
            procs[which] = proc
            out[which] = {"ready_s": round(ready, 3), "experiments_s": round(listed, 3)}
        time.sleep(2.0)  # past start-up work (a watcher's first pass, catalog writes)
        before = {w: cpu_secs(p.pid) for w, p in procs.items()}
        t0 = time.perf_counter()
        time.sleep(idle_secs)
        wall = time.perf_counter() - t0
        for which, proc in procs.items():
            out[which]["idle_cpu_pct"] = round(100 * (cpu_secs(proc.pid) - before[which]) / wall,
                                               2)
    finally:
        for proc in procs.values():
            proc.kill()
            proc.wait()
            proc.stdout.close()
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=10_000)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--data", default="/tmp/expman-bench-catalog")
    ap.add_argument("--baseline", help="another expman.py to time side by side")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--drop-caches", action="store_true",
                    help="also time a listing after dropping the page cache (root only)")
    ap.add_argument("--idle-secs", type=float, default=60.0,
                    help="how long an idle server's CPU is measured (0: no serving figures)")
    ap.add_argument("--only-serve", action="store_true", help="serving figures only")
    ap.add_argument("--commands", default="list -e,list,list -e --json",
                    help="which listings to time, comma-separated")
    args = ap.parse_args()

    root = os.path.join(args.data, f"runs{args.runs}")
    exp_dir = os.path.join(root, "sweep")
    if not os.path.isfile(os.path.join(exp_dir, f"run{args.runs - 1:05d}", "metrics.parquet")):
        t0 = time.perf_counter()
        generate(exp_dir, args.runs)
        print(f"generated {args.runs} runs in {time.perf_counter() - t0:.1f} s into {root}",
              file=sys.stderr)
    modules = {"this": os.path.join(REPO, "expman.py")}
    if args.baseline:
        modules["baseline"] = args.baseline
    commands = {"list -e": ["list", root, "-e", "sweep"], "list": ["list", root],
                "list -e --json": ["list", root, "-e", "sweep", "--json"]}
    wanted = [c.strip() for c in args.commands.split(",")]
    commands = {label: cmd for label, cmd in commands.items() if label in wanted}
    if args.only_serve:
        commands = {}
    results = {}
    for label, cmd in commands.items():
        for which, module in modules.items():
            shutil.rmtree(os.path.join(exp_dir, ".catalog"), ignore_errors=True)
            cold, size = timed([sys.executable, module, *cmd])
            results[(label, which)] = {"cold": cold, "warm": [], "bytes": size,
                                       "cold_cache": None}
            if args.drop_caches:  # the catalog this expman just wrote, read from disk
                drop_caches()
                results[(label, which)]["cold_cache"] = timed([sys.executable, module, *cmd])[0]
        for _ in range(args.repeat):
            for which, module in modules.items():  # alternating: the same load for both
                results[(label, which)]["warm"].append(timed([sys.executable, module, *cmd])[0])
    load = os.getloadavg()
    out = []
    for (label, which), r in results.items():
        out.append({"command": f"expman {label}", "expman": which, "runs": args.runs,
                    "cold_s": round(r["cold"], 3),
                    "cold_cache_s": r["cold_cache"] and round(r["cold_cache"], 3),
                    "warm_median_s": round(statistics.median(r["warm"]), 3),
                    "warm_min_s": round(min(r["warm"]), 3), "stdout_bytes": r["bytes"]})
    serving = bench_serve(modules, root, args.idle_secs) if args.idle_secs > 0 else {}
    load_after = os.getloadavg()
    if args.json:
        print(json.dumps({"load_avg": load, "results": out, "serve": serving,
                          "load_avg_after_serve": load_after}, indent=1))
        return
    if out:
        print(f"{args.runs} runs, load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
        print(f"{'command':<26} {'expman':<9} {'no catalog s':>13} {'cold cache s':>13} "
              f"{'warm s':>8} {'min s':>8}")
        for r in out:
            cc = f"{r['cold_cache_s']:>13.3f}" if r["cold_cache_s"] is not None else f"{'-':>13}"
            print(f"{r['command']:<26} {r['expman']:<9} {r['cold_s']:>13.3f} {cc} "
                  f"{r['warm_median_s']:>8.3f} {r['warm_min_s']:>8.3f}")
    if serving:
        print(f"serve, {args.runs} runs, idle {args.idle_secs:.0f} s, load average after "
              f"{load_after[0]:.2f} {load_after[1]:.2f} {load_after[2]:.2f}")
        print(f"{'expman':<9} {'ready s':>8} {'experiments s':>14} {'idle CPU %':>11}")
        for which, r in serving.items():
            print(f"{which:<9} {r['ready_s']:>8.3f} {r['experiments_s']:>14.3f} "
                  f"{r['idle_cpu_pct']:>11.2f}")


if __name__ == "__main__":
    main()
