#!/usr/bin/env python
"""Peak memory of compacting a run, as its size grows (issue 13 item 6, the memory bound).

    python benchmarks/bench_compact.py --module DIR [--label before] [--segments 4,20,60,200]
                                       [--rounds 1] [--data /tmp/bench_compact]

A run whose writer died with N segments of 20,000 rows x 10 float64 keys (what a long run or
an import leaves before close compacts them) is written straight into the layout with pyarrow
once per N and kept in --data. Each measurement copies it and runs `expman reap --force
--compact --stale 0 --json` (the final metrics.parquet and its chart summary) in a fresh child
process, this checkout's expman.py and the --module one interleaved (who goes first
alternates round by round); reported: wall time and
the child's peak RSS (ru_maxrss from os.wait4) against the size of the values. A bounded
compaction's peak stays flat as N grows.
"""
import argparse
import os
import py_compile
import random
import shutil
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
ROWS, KEYS = 20_000, 10

CHILD = r"""
import importlib.util, sys
spec = importlib.util.spec_from_file_location("expman", sys.argv[1])
expman = importlib.util.module_from_spec(spec)
sys.modules["expman"] = expman
spec.loader.exec_module(expman)
sys.exit(expman.main(sys.argv[2:]))
"""


def write_run(run_dir, segments):
    import pyarrow as pa
    import pyarrow.parquet as pq
    os.makedirs(os.path.join(run_dir, "metrics"))
    with open(os.path.join(run_dir, "run.yaml"), "w") as f:
        f.write("name: r\nexperiment: e\nstatus: running\nhostname: elsewhere\npid: 1\n"
                "started_at: '2026-01-01T00:00:00+00:00'\n"
                "heartbeat_at: '2026-01-01T00:00:00+00:00'\nheartbeat_secs: 5.0\n")
    rng = random.Random(segments)
    pool = pa.array([rng.random() for _ in range(4093)], pa.float64())
    for s in range(segments):
        a, b = s * ROWS, (s + 1) * ROWS
        cols = {"step": pa.array(range(a, b), pa.int64()),
                "timestamp": pa.array([1_700_000_000_000_000 + i * 1000 for i in range(a, b)],
                                      pa.timestamp("us", tz="UTC"))}
        for k in range(KEYS):
            cols[f"m{k}"] = pa.concat_arrays([pool] * (ROWS // 4093 + 1)).slice(k, ROWS)
        table = pa.table(cols).replace_schema_metadata({b"expman.rows": f"{a} {b}".encode()})
        pq.write_table(table, os.path.join(run_dir, "metrics", f"seg-{a:012d}-{b:012d}.parquet"))


def compact(module, data, segments, work):
    """(wall seconds, peak RSS MB) of reap --compact on a copy of the N-segment run."""
    shutil.rmtree(work, ignore_errors=True)
    shutil.copytree(os.path.join(data, f"seg{segments}"), work)
    t = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", CHILD, os.path.join(module, "expman.py"),
                             "reap", work, "--force", "--compact", "--stale", "0", "--json"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _pid, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t
    err = proc.stderr.read().decode()
    proc.stderr.close()
    if status or not os.path.exists(os.path.join(work, "e", "r", "metrics.parquet")):
        sys.exit(f"reap --compact failed ({status}): {err}")
    shutil.rmtree(work, ignore_errors=True)
    return wall, usage.ru_maxrss / 1024


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--module", required=True, help="folder of the other expman.py")
    parser.add_argument("--label", default="before")
    parser.add_argument("--segments", default="4,20,60,200")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--data", default="/tmp/bench_compact")
    args = parser.parse_args()
    counts = [int(x) for x in args.segments.split(",")]
    for n in counts:
        run = os.path.join(args.data, f"seg{n}", "e", "r")
        if not os.path.exists(run):
            print(f"writing {n} segments of {ROWS:,} rows x {KEYS} keys ...", file=sys.stderr)
            write_run(run, n)
    for module in (args.module, REPO):  # both start from bytecode (PYTHONDONTWRITEBYTECODE
        py_compile.compile(os.path.join(module, "expman.py"))  # would leave one compiling)
    print(f"load average at start: {os.getloadavg()}")
    print(f"| segments (rows) | values MB | {args.label}: wall s, peak RSS MB "
          f"| this checkout: wall s, peak RSS MB | load avg |")
    print("|---|---:|---|---|---|")
    work = os.path.join(args.data, "work")
    for n in counts:
        for r in range(args.rounds):  # who goes first alternates round by round
            if r % 2:
                mine = compact(REPO, args.data, n, work)
                other = compact(os.path.abspath(args.module), args.data, n, work)
            else:
                other = compact(os.path.abspath(args.module), args.data, n, work)
                mine = compact(REPO, args.data, n, work)
            values = n * ROWS * (KEYS + 2) * 8 / 2**20
            load = " ".join(f"{x:.1f}" for x in os.getloadavg())
            print(f"| {n} ({n * ROWS:,}) | {values:.0f} | {other[0]:.2f} s, {other[1]:.0f} MB "
                  f"| {mine[0]:.2f} s, {mine[1]:.0f} MB | {load} |", flush=True)


if __name__ == "__main__":
    main()
