"""Many runs as one table (issue 8): `load_experiment` before and after the pyarrow.dataset
scan, on 1,000 runs x 1,000 rows by default.

    python benchmarks/bench_tables.py                      # 1,000 runs x 1,000 rows, 5 repeats
    python benchmarks/bench_tables.py --runs 200 --rows 10000 --live 0.2 --keep DIR

The tree is written directly with pyarrow in expman's layout (run.yaml, config.yaml and either
metrics.parquet for a closed run, or 8 segments metrics/seg-*.parquet for a live one); every
fourth run logs one extra key, so schemas must be unified. "old" is `load_experiment` of commit
146e5d9 (one `load_metrics` per run, in a row, then concat), loaded from git into its own
module; "new" is this checkout's (one pyarrow.dataset scan over every file). Each figure is the
median of --repeat runs in this process after one warm-up; both must return the same rows.
Also times DuckDB's `read_parquet(..., union_by_name=true)` over the closed runs' files, and
Polars' `scan_parquet` when installed, as a reference. Writes JSON to benchmarks/results/.
"""
import argparse
import datetime
import importlib.util
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import warnings

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, REPO)
import expman  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

warnings.simplefilter("ignore", expman.ExpmanWarning)
OLD_COMMIT = "146e5d9"


def old_module():
    source = subprocess.run(["git", "show", f"{OLD_COMMIT}:expman.py"], cwd=REPO, check=True,
                            capture_output=True).stdout
    path = os.path.join(tempfile.mkdtemp(), "expman_old.py")
    with open(path, "wb") as fh:
        fh.write(source)
    spec = importlib.util.spec_from_file_location("expman_old", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def build(root, runs, rows, live_share):
    exp = os.path.join(root, "bench")
    os.makedirs(exp, exist_ok=True)
    with open(os.path.join(exp, "experiment.yaml"), "w") as fh:
        fh.write("name: bench\n")
    now = time.time()
    n_live = int(runs * live_share)
    for r in range(runs):
        name = f"run{r:05d}"
        path = os.path.join(exp, name)
        os.makedirs(os.path.join(path, "metrics"), exist_ok=True)
        cols = {"step": pa.array(range(rows), pa.int64()),
                "timestamp": pa.array([int((now + i) * 1e6) for i in range(rows)],
                                      pa.timestamp("us", tz="UTC")),
                "train/loss": pa.array([1.0 / (i + 1 + r) for i in range(rows)]),
                "train/acc": pa.array([i / rows for i in range(rows)]),
                "lr": pa.array([1e-3] * rows)}
        if r % 4 == 0:
            cols["val/loss"] = pa.array([0.5] * rows)
        table = pa.table(cols)
        live = r < n_live
        status = "running" if live else "finished"
        with open(os.path.join(path, "run.yaml"), "w") as fh:
            fh.write(f"name: '{name}'\nexperiment: bench\nstatus: {status}\n"
                     f"started_at: '{expman._iso(now)}'\nheartbeat_at: '{expman._iso(now)}'\n"
                     f"hostname: elsewhere\npid: 1\nrows: {rows}\n")
        with open(os.path.join(path, "config.yaml"), "w") as fh:
            fh.write(f"lr: 0.001\nseed: {r}\n")
        if live:
            step = max(1, rows // 8)
            for start in range(0, rows, step):
                end = min(rows, start + step)
                pq.write_table(table.slice(start, end - start), os.path.join(
                    path, "metrics", expman._segment_name(start, end)), compression="snappy")
        else:
            pq.write_table(table, os.path.join(path, "metrics.parquet"), compression="snappy")


def timed(fn, repeat):
    fn()  # warm-up: imports, page cache
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), min(times), out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=1000)
    ap.add_argument("--rows", type=int, default=1000)
    ap.add_argument("--live", type=float, default=0.1, help="share of live runs (segments)")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--keep", metavar="DIR", help="build (or reuse) the tree here")
    args = ap.parse_args()
    root = args.keep or tempfile.mkdtemp(prefix="expman-tables-")
    if not os.path.isdir(os.path.join(root, "bench")):
        t = time.perf_counter()
        build(root, args.runs, args.rows, args.live)
        print(f"built {args.runs} runs x {args.rows} rows in {time.perf_counter() - t:.1f}s "
              f"under {root}")
    old = old_module()
    results = {}
    med, best, old_table = timed(lambda: old.load_experiment(root, "bench"), args.repeat)
    results["old load_experiment (per run, serial)"] = (med, best)
    med, best, new_table = timed(lambda: expman.load_experiment(root, "bench"), args.repeat)
    results["new load_experiment (pyarrow.dataset)"] = (med, best)
    key = ["run", "step"]
    assert old_table.num_rows == new_table.num_rows == args.runs * args.rows
    a = old_table.select(["run", "step", "train/loss", "val/loss"]).sort_by(
        [(k, "ascending") for k in key])
    b = new_table.select(["run", "step", "train/loss", "val/loss"]).sort_by(
        [(k, "ascending") for k in key])
    assert a.equals(b), "old and new tables differ"
    pattern = os.path.join(root, "bench", "*", "metrics.parquet")
    try:
        import duckdb
        con = duckdb.connect()
        sql = (f"SELECT * FROM read_parquet('{pattern}', filename=true, union_by_name=true)")
        med, best, _ = timed(lambda: con.execute(sql).fetch_arrow_table(), args.repeat)
        results["DuckDB read_parquet (closed runs only)"] = (med, best)
    except ImportError:
        pass
    try:
        import polars as pl
        med, best, _ = timed(lambda: pl.scan_parquet(
            pattern, missing_columns="insert", extra_columns="ignore",
            include_file_paths="file").collect(), args.repeat)
        results["Polars scan_parquet (closed runs only)"] = (med, best)
    except Exception as exc:  # noqa: BLE001 - older Polars without these options
        print(f"(polars skipped: {exc})")
    base = results["old load_experiment (per run, serial)"][0]
    print(f"\n{args.runs} runs x {args.rows} rows ({int(args.runs * args.live)} live, "
          f"8 segments each), {os.cpu_count()} CPUs, median of {args.repeat}\n")
    print("| reader | median | best | vs old |\n|---|---:|---:|---:|")
    for name, (med, best) in results.items():
        print(f"| {name} | {med * 1000:.0f} ms | {best * 1000:.0f} ms | {base / med:.1f}x |")
    out = {"runs": args.runs, "rows": args.rows, "live_share": args.live, "cpus": os.cpu_count(),
           "python": platform.python_version(), "pyarrow": pa.__version__,
           "results": {k: {"median_s": m, "best_s": b} for k, (m, b) in results.items()}}
    os.makedirs(os.path.join(HERE, "results"), exist_ok=True)
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%d-%H%M")
    with open(os.path.join(HERE, "results", f"bench_tables-{args.runs}x{args.rows}-{stamp}.json"), "w") as fh:
        json.dump(out, fh, indent=2)
    if not args.keep:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
