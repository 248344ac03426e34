#!/usr/bin/env python
"""The SummaryWriter shim against expman's own log_metrics and TensorBoard's writers (issue 8).

    python benchmarks/bench_shim.py              # N = 20,000 steps x 5 scalars, 3 repetitions
    python benchmarks/bench_shim.py --steps 100000 --repeat 5

The workload of _harness.py: each step logs the 5 scalars of KEYS. Every configuration runs in
a fresh subprocess; the figure is wall time of the loop (logging included, background threads'
GIL time included) minus the same loop without the logging, per step and per scalar, then
close() (final flush) separately. Median of the repetitions.

* expman.log_metrics: one dict of 5 per step;
* expman.SummaryWriter.add_scalar: 5 calls per step (the shim buffers them into one row);
* torch.utils.tensorboard.SummaryWriter.add_scalar and tensorboardX's: 5 calls per step.
"""
import argparse
import json
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

CALLS = {
    "expman.log_metrics": "log({" + ", ".join(
        f'"{k}": pool[(i + {o}) & mask]' for k, o in zip(H.KEYS, H.OFFSETS)) + "}, step=i)",
    "add_scalar x5": "; ".join(f'add("{k}", pool[(i + {o}) & mask], i)'
                               for k, o in zip(H.KEYS, H.OFFSETS)),
}
EMPTY = "; ".join(f'x = ("{k}", pool[(i + {o}) & mask], i)' for k, o in zip(H.KEYS, H.OFFSETS))


def _loop(body):
    src = f"def loop(n, log, add, pool, mask):\n    for i in range(n):\n        {body}\n"
    scope = {}
    exec(src, scope)  # noqa: S102 - generated from the constants above
    return scope["loop"]


def worker(tool, steps):
    sys.path.insert(0, REPO)
    tmp = tempfile.mkdtemp(prefix="expman-bench-shim-")
    os.environ["EXPMAN_DIR"] = os.path.join(tmp, "exps")
    if tool == "expman.log_metrics":
        import expman
        obj = expman.Experiment("bench", capture_git=False)
        log, add, body, close = obj.log_metrics, None, CALLS[tool], obj.close
    elif tool == "expman.SummaryWriter":
        import expman
        obj = expman.SummaryWriter(os.path.join(tmp, "exps", "shim"))  # log_dir: a path
        log, add, body, close = None, obj.add_scalar, CALLS["add_scalar x5"], obj.close
    elif tool == "torch SummaryWriter":
        from torch.utils.tensorboard import SummaryWriter
        obj = SummaryWriter(os.path.join(tmp, "tb"))
        log, add, body, close = None, obj.add_scalar, CALLS["add_scalar x5"], obj.close
    else:
        from tensorboardX import SummaryWriter
        obj = SummaryWriter(os.path.join(tmp, "tbx"))
        log, add, body, close = None, obj.add_scalar, CALLS["add_scalar x5"], obj.close
    time.sleep(0.3)   # writer threads finish their start-up
    empty, logged = _loop(EMPTY), _loop(body)
    pool, mask = H.POOL, H.MASK
    t0 = time.perf_counter()
    empty(steps, log, add, pool, mask)
    t_empty = time.perf_counter() - t0
    t0 = time.perf_counter()
    logged(steps, log, add, pool, mask)
    t_loop = time.perf_counter() - t0
    t0 = time.perf_counter()
    close()
    t_close = time.perf_counter() - t0
    print(json.dumps({"loop_ns_per_step": (t_loop - t_empty) / steps * 1e9,
                      "close_s": t_close}))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--worker", nargs=2, metavar=("TOOL", "STEPS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args.worker[0], int(args.worker[1]))
    tools = ["expman.log_metrics", "expman.SummaryWriter", "torch SummaryWriter",
             "tensorboardX SummaryWriter"]
    results = {}
    for tool in tools:
        runs = []
        for _ in range(args.repeat):
            out = subprocess.run([sys.executable, __file__, "--worker", tool, str(args.steps)],
                                 capture_output=True, text=True, check=True).stdout
            runs.append(json.loads(out.strip().splitlines()[-1]))
        results[tool] = {
            "ns_per_step": statistics.median(r["loop_ns_per_step"] for r in runs),
            "close_s": statistics.median(r["close_s"] for r in runs)}
    print(f"{args.steps:,} steps x {len(H.KEYS)} scalars, median of {args.repeat}\n")
    print("| tool | per step (5 scalars) | per scalar | close() |")
    print("|---|---:|---:|---:|")
    for tool, r in results.items():
        print(f"| {tool} | {r['ns_per_step'] / 1000:.2f} us | "
              f"{r['ns_per_step'] / len(H.KEYS) / 1000:.2f} us | {r['close_s'] * 1000:.0f} ms |")
    os.makedirs(os.path.join(HERE, "results"), exist_ok=True)
    with open(os.path.join(HERE, "results", "bench_shim.json"), "w") as fh:
        json.dump({"steps": args.steps, "repeat": args.repeat, "results": results}, fh, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
