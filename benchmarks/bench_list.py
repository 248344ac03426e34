#!/usr/bin/env python
"""`expman list DIR -e EXP` over an experiment of 1,000 runs: start-up to last line, target ≤ 1.5 s.

    python benchmarks/bench_list.py                # generate 1,000 small runs, time 5 + 1 runs
    python benchmarks/bench_list.py --runs 200 --repeat 3
    python benchmarks/bench_list.py --keep /tmp/lst   # reuse / keep the generated tree

The runs are written with the library itself (each: a few params, 20 metric rows, closed
normally; every 50th closed as failed). Each timing is a fresh ``python expman.py ...`` process
(interpreter start, imports, reading 1,000 run.yaml files, printing), wall clock from spawn to
exit, output captured. The first call is reported separately (coldest page cache this script
can get without dropping the kernel's caches); the figure is the median of the next N.
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
EXPMAN = os.path.join(REPO, "expman.py")
sys.path.insert(0, HERE)
import _harness as H  # noqa: E402


def generate(root, exp_name, runs):
    sys.path.insert(0, REPO)
    import expman
    t0 = time.perf_counter()
    for i in range(runs):
        kwargs = {"capture_git": False}
        try:
            exp = expman.Experiment(exp_name, base_dir=root, run_name=f"run{i:04d}",
                                    config={"lr": 10 ** -(i % 5), "batch": 32 * (1 + i % 4),
                                            "model": {"depth": i % 7, "width": 64}},
                                    tags=["bench", f"g{i % 10}"], flush_interval_ms=1000,
                                    **kwargs)
        except TypeError:  # an expman without capture_git
            exp = expman.Experiment(exp_name, base_dir=root, run_name=f"run{i:04d}",
                                    flush_interval_ms=1000)
        for step in range(20):
            exp.log_metrics({"train/loss": 1.0 / (step + 1 + i), "val/acc": step / 20}, step=step)
        exp.log_scalar("best_acc", i / runs)
        exp.close(status="failed" if i % 50 == 49 else "finished")
    return time.perf_counter() - t0


def timed(cmd, env):
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    return time.perf_counter() - t0, proc


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=1000)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--keep", help="generate into (or reuse) this directory and keep it")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    exp_name = "bench_list"
    root = args.keep or tempfile.mkdtemp(prefix="expman-list-")
    exp_dir = os.path.join(root, exp_name)
    existing = len([d for d in os.listdir(exp_dir) if os.path.isdir(os.path.join(exp_dir, d))]) \
        if os.path.isdir(exp_dir) else 0
    gen_s = None
    if existing != args.runs:
        if os.path.isdir(exp_dir):
            shutil.rmtree(exp_dir)
        # a fresh process: this one must not have imported expman before the timings
        code = (f"import sys; sys.path.insert(0, {HERE!r}); import bench_list as b; "
                f"print(b.generate({root!r}, {exp_name!r}, {args.runs}))")
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        if proc.returncode:
            sys.exit(f"generating runs failed: {proc.stderr[-2000:]}")
        gen_s = float(proc.stdout.strip().splitlines()[-1])
        print(f"generated {args.runs} runs in {gen_s:.1f} s into {root}", file=sys.stderr)
    env = dict(os.environ)
    env.pop("EXPMAN_DIR", None)
    cases = {
        "python -c pass (interpreter alone)": [sys.executable, "-c", "pass"],
        "python -c 'import expman'": [sys.executable, "-c", f"import sys; sys.path.insert(0, "
                                                             f"{REPO!r}); import expman"],
        f"expman list DIR -e {exp_name}": [sys.executable, EXPMAN, "list", root, "-e", exp_name],
        f"expman list DIR -e {exp_name} --json": [sys.executable, EXPMAN, "list", root, "-e",
                                                  exp_name, "--json"],
        "expman list DIR": [sys.executable, EXPMAN, "list", root],
    }
    info = H.machine_info()
    results = {"machine": info, "runs": args.runs, "generate_s": gen_s, "cases": {}}
    rows = []
    for name, cmd in cases.items():
        first, proc = timed(cmd, env)
        if proc.returncode:
            sys.exit(f"{name} failed ({proc.returncode}): {proc.stderr[-1500:]}")
        times = [timed(cmd, env)[0] for _ in range(args.repeat)]
        check = ""
        if "--json" in cmd:
            data = json.loads(proc.stdout)
            runs = data.get("runs", data) if isinstance(data, dict) else data
            check = f"{len(runs)} runs in JSON"
            results["json_runs"] = len(runs)
        elif "-e" in cmd:
            check = f"{len(proc.stdout.splitlines())} lines out"
        results["cases"][name] = {"first_s": first, "times_s": times,
                                  "median_s": statistics.median(times)}
        rows.append([name, f"{statistics.median(times) * 1e3:.0f} ms",
                     f"{min(times) * 1e3:.0f}–{max(times) * 1e3:.0f} ms", f"{first * 1e3:.0f} ms",
                     check])
    print(f"\n### expman list over {args.runs:,} runs (fresh process each; median of "
          f"{args.repeat})\n")
    print(H.md_table(["command", "median", "range", "first call", "check"], rows))
    key = f"expman list DIR -e {exp_name}"
    med = results["cases"][key]["median_s"]
    print(f"\nTarget ≤ 1.5 s: {'met' if med <= 1.5 else 'MISSED'} ({med:.2f} s)")
    results["target_met"] = med <= 1.5
    path = args.json or os.path.join(HERE, "results",
                                     f"bench_list-{time.strftime('%Y%m%d-%H%M')}.json")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as fh:
        json.dump(results, fh, indent=1)
    print(f"results written to {os.path.relpath(path)}")
    if not args.keep:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
