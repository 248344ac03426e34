"""`expman export` (csv, json, parquet, tensorboard) and `expman import` of the exported event
files on one big run (issue 13 item 6): wall time and peak RSS of each command, for two copies
of expman.py side by side in one run (by default this checkout's and main's, `git show
main:expman.py`).

    python benchmarks/bench_export.py --data /tmp/bench-export      # 1M rows x 10 metrics
    python benchmarks/bench_export.py --rows 100000 --formats csv     # a smoke run
    python benchmarks/bench_export.py --sparse --formats tensorboard,import   # one key a row

The run is made once and kept in --data: an `expman.Experiment` logging ROWS rows of METRICS
float64 metrics with explicit steps through `log_metrics` (the real write path; 1M rows take
about a minute here), then closed (compacted into metrics.parquet). Every command runs in a
fresh child process; its peak RSS is the child's own ru_maxrss from os.wait4, so neither this
process nor other children count. Before and after alternate per command, so load changes hit
both. The `import` input is the event file the *after* export wrote, for both versions.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)

GEN = """
import random, sys, time
sys.path.insert(0, sys.argv[1])
import expman
rows, metrics, root = int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
sparse = sys.argv[5] == "sparse"
rng = random.Random(42)
pool = [rng.random() for _ in range(65536)]
keys = [f"train/metric_{k}" for k in range(metrics)]
t0 = time.perf_counter()
exp = expman.Experiment("bench", base_dir=root, run_name="big", config={"lr": 0.1, "n": rows},
                        capture_git=False)
for i in range(rows):
    if sparse:   # one metric a row, each in turn (keys logged on steps of their own)
        exp.log_metrics({keys[i % metrics]: pool[(i * 7) & 65535]}, step=i)
    else:
        exp.log_metrics({k: pool[(i * 7 + j * 7919) & 65535] for j, k in enumerate(keys)},
                        step=i)
exp.close()
print(time.perf_counter() - t0)
"""

CHILD = """
import sys
sys.path.insert(0, sys.argv[1])
import expman
sys.exit(expman.main(sys.argv[2:]))
"""


def run_child(version_dir, argv, env=None):
    """(wall seconds, peak RSS MB, exit code) of `expman ARGV` run from version_dir."""
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", CHILD, version_dir, *argv],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    err = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        print(f"  ! exit {proc.returncode}: {err.decode(errors='replace')[-400:]}", file=sys.stderr)
    return wall, usage.ru_maxrss / 1024, proc.returncode


def loadavg():
    try:
        return os.getloadavg()
    except OSError:
        return None


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", help="keep the generated run here and reuse it next time")
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--metrics", type=int, default=10)
    parser.add_argument("--sparse", action="store_true",
                        help="each row holds one metric, the next in turn (1/METRICS of the "
                             "values of a dense run)")
    parser.add_argument("--before", help="expman.py to compare against (default: main's)")
    parser.add_argument("--after", help="expman.py to measure (default: this checkout's)")
    parser.add_argument("--formats", default="csv,json,parquet,tensorboard,import")
    parser.add_argument("--no-before", action="store_true", help="measure this checkout only")
    parser.add_argument("--out", help="JSON results file (default: benchmarks/results/...)")
    args = parser.parse_args()

    data = args.data or tempfile.mkdtemp(prefix="expman-bench-export-")
    root = os.path.join(data, f"experiments-{args.rows}x{args.metrics}" +
                        ("-sparse" if args.sparse else ""))
    run_dir = os.path.join(root, "bench", "big")
    if not os.path.isdir(run_dir):
        print(f"generating {args.rows:,} rows x {args.metrics} metrics in {root} ...",
              flush=True)
        out = subprocess.run([sys.executable, "-c", GEN, REPO, str(args.rows), str(args.metrics),
                              root, "sparse" if args.sparse else "dense"],
                             check=True, capture_output=True, text=True)
        print(f"  logged and closed in {float(out.stdout):.1f} s", flush=True)

    work = tempfile.mkdtemp(prefix="expman-bench-export-work-", dir=data)
    versions = {"after": REPO}
    if args.after:
        os.makedirs(os.path.join(work, "after"))
        shutil.copy(args.after, os.path.join(work, "after", "expman.py"))
        versions["after"] = os.path.join(work, "after")
    if not args.no_before:
        before_dir = os.path.join(work, "before")
        os.makedirs(before_dir)
        if args.before:
            shutil.copy(args.before, os.path.join(before_dir, "expman.py"))
        else:
            with open(os.path.join(before_dir, "expman.py"), "wb") as fh:
                fh.write(subprocess.run(["git", "-C", REPO, "show", "main:expman.py"],
                                        check=True, capture_output=True).stdout)
        versions["before"] = before_dir
    order = ["before", "after"] if "before" in versions else ["after"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("EXPMAN_")}
    results = {"rows": args.rows, "metrics": args.metrics, "sparse": args.sparse,
               "started": time.strftime("%F %T"), "loadavg_start": loadavg(), "runs": []}
    tb_after = os.path.join(work, "tb-after")
    print(f"load average at start: {loadavg()}", flush=True)
    print("| command | version | wall s | peak RSS MB | exit | load avg |")
    print("|---|---|---:|---:|---:|---|")
    for fmt in args.formats.split(","):
        for version in order:
            vdir = versions[version]
            if fmt == "import":
                if not os.path.isdir(tb_after):
                    print("  (import needs the tensorboard export first)", file=sys.stderr)
                    break
                dest = os.path.join(work, f"import-{version}")
                argv = ["import", tb_after, "--dir", dest, "-e", "imported"]
            elif fmt == "tensorboard":
                dest = tb_after if version == "after" else os.path.join(work, "tb-before")
                argv = ["export", run_dir, "--format", "tensorboard", "-o", dest]
            else:
                dest = os.path.join(work, f"{version}.{fmt}")
                argv = ["export", run_dir, "--format", fmt, "-o", dest]
            wall, rss, code = run_child(vdir, argv, env)
            load = loadavg()
            size = None
            if os.path.isfile(dest):
                size = os.path.getsize(dest)
            results["runs"].append({"command": fmt, "version": version, "wall_s": round(wall, 2),
                                    "peak_rss_mb": round(rss, 1), "exit": code,
                                    "output_bytes": size, "loadavg": load})
            print(f"| {fmt} | {version} | {wall:.1f} | {rss:.0f} | {code} | "
                  f"{' '.join(f'{x:.1f}' for x in load) if load else '?'} |", flush=True)
            if fmt == "import" and os.path.isdir(dest):
                shutil.rmtree(dest)
            elif fmt in ("csv", "json", "parquet") and size is not None:
                os.remove(dest)
    results["loadavg_end"] = loadavg()
    out = args.out or os.path.join(HERE, "results",
                                   f"bench_export-{args.rows}{'-sparse' if args.sparse else ''}-"
                                   f"{time.strftime('%Y%m%d-%H%M')}.json")
    with open(out, "w") as fh:
        json.dump(results, fh, indent=1)
    print("results in", out)
    if not args.data:
        shutil.rmtree(data, ignore_errors=True)
    else:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
