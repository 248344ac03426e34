#!/usr/bin/env python
"""Start-up of the binary (issue 17): `dist/expman --help` and `dist/expman list DIR`, side by
side with the zipapp (`python3 dist/expman.pyz`) and `python3 -c pass`, in one run.

    python benchmarks/bench_binary.py                    # 100 rounds; build with ./build_binary.sh first
    python benchmarks/bench_binary.py --rounds 20 --old /path/to/older/expman

Every round runs each command once, in a fixed interleaved order, as a fresh process with its
output captured; wall time is spawn to exit (perf_counter), CPU time is the child's user+sys
from wait4. Medians over the rounds; ratios against the zipapp's median from the same rounds.
DIR holds the demo's 3 experiments / 15 runs, written by `python expman.py demo --no-serve`.
The binary's one-time cost (its first start unpacks itself into the cache) is taken separately:
3 first starts, each into an empty XDG_CACHE_HOME, against the second start of the same cache.
All rounds use one unpacked cache in a temporary XDG_CACHE_HOME. Targets: median <= 0.3 s
wall, <= 1.5x the zipapp, binary <= 30 MB.
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


def timed(argv, env):
    """(wall s, cpu s) of one run of argv to completion, its output discarded."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"bench_binary: {argv} exited {proc.returncode}")
    return wall, usage.ru_utime + usage.ru_stime


def first_start(binary, env, repeat=3):
    """Median (wall, cpu) of a first start into an empty cache, and of the start after it."""
    firsts, seconds = [], []
    for _ in range(repeat):
        cache = tempfile.mkdtemp(prefix="bench-binary-cache-")
        try:
            e = dict(env, XDG_CACHE_HOME=cache)
            firsts.append(timed([binary, "--version"], e))
            seconds.append(timed([binary, "--version"], e))
        finally:
            shutil.rmtree(cache)
    med = lambda xs, i: statistics.median(x[i] for x in xs)  # noqa: E731
    return (med(firsts, 0), med(firsts, 1)), (med(seconds, 0), med(seconds, 1))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=100)
    ap.add_argument("--binary", default=os.path.join(REPO, "dist", "expman"))
    ap.add_argument("--zipapp", default=os.path.join(REPO, "dist", "expman.pyz"))
    ap.add_argument("--old", help="another binary to time beside it (e.g. an older build)")
    ap.add_argument("--python", default="python3", help="runs the zipapp and the baseline")
    ap.add_argument("--out", default=os.path.join(HERE, "results", "bench_binary.json"))
    args = ap.parse_args()
    for path in (args.binary, args.zipapp):
        if not os.path.exists(path):
            raise SystemExit(f"bench_binary: no {path}; run ./build_binary.sh first")

    work = tempfile.mkdtemp(prefix="bench-binary-")
    try:
        data = os.path.join(work, "experiments")
        subprocess.run([sys.executable, os.path.join(REPO, "expman.py"), "demo", data,
                        "--no-serve"], check=True, stdout=subprocess.DEVNULL)
        env = {k: v for k, v in os.environ.items() if not k.startswith("EXPMAN_")
               and k != "PYTHONPATH"}
        env["XDG_CACHE_HOME"] = os.path.join(work, "cache")
        load_before = os.getloadavg()
        (first_wall, first_cpu), (second_wall, second_cpu) = first_start(args.binary, env)

        commands = {
            "binary --help": [args.binary, "--help"],
            "binary list DIR": [args.binary, "list", data],
            "zipapp --help": [args.python, args.zipapp, "--help"],
            "zipapp list DIR": [args.python, args.zipapp, "list", data],
            "python3 -c pass": [args.python, "-c", "pass"],
        }
        if args.old:
            commands["old --help"] = [args.old, "--help"]
            commands["old list DIR"] = [args.old, "list", data]
        for argv in commands.values():  # warm-up: unpack the cache, fill the page cache
            timed(argv, env)
        walls = {name: [] for name in commands}
        cpus = {name: [] for name in commands}
        for _ in range(args.rounds):
            for name, argv in commands.items():
                wall, cpu = timed(argv, env)
                walls[name].append(wall)
                cpus[name].append(cpu)
        load_after = os.getloadavg()
    finally:
        shutil.rmtree(work, ignore_errors=True)

    med = {name: statistics.median(v) for name, v in walls.items()}
    cpu = {name: statistics.median(v) for name, v in cpus.items()}
    size = os.path.getsize(args.binary)
    print(f"## dist/expman start-up ({args.rounds} rounds, load average "
          f"{load_before[0]:.2f} before, {load_after[0]:.2f} after)\n")
    print("| command | median wall | p90 wall | median CPU | wall / zipapp |")
    print("|---|---|---|---|---|")
    for name in commands:
        ref = "zipapp list DIR" if "list" in name else "zipapp --help"
        p90 = statistics.quantiles(walls[name], n=10)[-1] if args.rounds > 1 else med[name]
        ratio = f"{med[name] / med[ref]:.2f}x" if name != "python3 -c pass" else ""
        print(f"| `{name}` | {med[name] * 1e3:.0f} ms | {p90 * 1e3:.0f} ms "
              f"| {cpu[name] * 1e3:.0f} ms | {ratio} |")
    print(f"\n- dist/expman: {size / 1e6:.1f} MB; dist/expman.pyz: "
          f"{os.path.getsize(args.zipapp) / 1e6:.1f} MB"
          + (f"; old: {os.path.getsize(args.old) / 1e6:.1f} MB" if args.old else ""))
    print(f"- first start (unpacks into an empty cache): {first_wall:.2f} s wall, "
          f"{first_cpu:.2f} s CPU; the start after it: {second_wall * 1e3:.0f} ms wall, "
          f"{second_cpu * 1e3:.0f} ms CPU (median of 3)")
    checks = {
        "size <= 30 MB": size <= 30e6,
        "--help median <= 0.3 s": med["binary --help"] <= 0.3,
        "list median <= 0.3 s": med["binary list DIR"] <= 0.3,
        "--help <= 1.5x zipapp": med["binary --help"] <= 1.5 * med["zipapp --help"],
        "list <= 1.5x zipapp": med["binary list DIR"] <= 1.5 * med["zipapp list DIR"],
    }
    print("- targets: " + ", ".join(f"{k}: {'met' if v else 'MISSED'}" for k, v in checks.items()))
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump({"rounds": args.rounds, "load_before": load_before, "load_after": load_after,
                   "size_bytes": size, "median_wall_s": med, "median_cpu_s": cpu,
                   "first_start": {"wall_s": first_wall, "cpu_s": first_cpu},
                   "second_start": {"wall_s": second_wall, "cpu_s": second_cpu},
                   "targets": checks}, f, indent=2)
    print(f"\n(JSON: {os.path.relpath(args.out)})")


if __name__ == "__main__":
    main()
