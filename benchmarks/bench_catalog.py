#!/usr/bin/env python
"""Listing 10,000 runs: `expman list DIR -e E`, `expman list DIR`, list_runs(), before/after.

    python benchmarks/bench_catalog.py                       # 10,000 runs, cached in /tmp
    python benchmarks/bench_catalog.py --runs 2000 --repeat 3
    python benchmarks/bench_catalog.py --baseline /tmp/old_expman.py   # side by side

The experiment is written straight into the storage layout (what a finished sweep leaves:
run.yaml, config.yaml with 5 params, metrics.parquet of 200 steps x 5 metrics), once, into a
`--data` folder reused by later runs: logging 10,000 runs through the library takes minutes
and measures the writer, not the listing. Each timing is a fresh `python expman.py ...`
process (interpreter start, imports, listing, printing to a pipe), wall clock from spawn to
exit. "cold" is the first listing with no catalog (it builds one), "warm" the median of the
next N. With `--baseline FILE`, the same commands run against that copy of expman.py (e.g.
main before the catalog), alternating, so both see the same machine load.
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time

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


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=10_000)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--data", default="/tmp/expman-bench-catalog")
    ap.add_argument("--baseline", help="another expman.py to time side by side")
    ap.add_argument("--json", action="store_true")
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
    results = {}
    for label, cmd in commands.items():
        for which, module in modules.items():
            shutil.rmtree(os.path.join(exp_dir, ".catalog"), ignore_errors=True)
            cold, size = timed([sys.executable, module, *cmd])
            results[(label, which)] = {"cold": cold, "warm": [], "bytes": size}
        for _ in range(args.repeat):
            for which, module in modules.items():  # alternating: the same load for both
                results[(label, which)]["warm"].append(timed([sys.executable, module, *cmd])[0])
    load = os.getloadavg()
    out = []
    for (label, which), r in results.items():
        out.append({"command": f"expman {label}", "expman": which, "runs": args.runs,
                    "cold_s": round(r["cold"], 3),
                    "warm_median_s": round(statistics.median(r["warm"]), 3),
                    "warm_min_s": round(min(r["warm"]), 3), "stdout_bytes": r["bytes"]})
    if args.json:
        print(json.dumps({"load_avg": load, "results": out}, indent=1))
        return
    print(f"{args.runs} runs, load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    print(f"{'command':<26} {'expman':<9} {'cold s':>8} {'warm s':>8} {'min s':>8}")
    for r in out:
        print(f"{r['command']:<26} {r['expman']:<9} {r['cold_s']:>8.3f} "
              f"{r['warm_median_s']:>8.3f} {r['warm_min_s']:>8.3f}")


if __name__ == "__main__":
    main()
