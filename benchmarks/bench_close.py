#!/usr/bin/env python
"""close() of a big run, split into its parts, and the size of the file it leaves (issue 19).

    python benchmarks/bench_close.py --module DIR [--label main] [--rows 100000,1000000]
                                     [--rounds 3] [--data bench,real]

Each (tool, rows, data) is a fresh subprocess, interleaved round by round. It logs ``rows``
steps of 5 metrics back to back right after ``Experiment()`` (as bench_probes' loop does,
dict built in the loop), then times ``close()``, and inside it (by wrapping the writer's
methods, the same names in every version): ``finish`` (final flush + compaction + run.yaml),
``compact`` (the join or compaction, summary included) and ``summary`` (the chart summary).
What is left of close beyond ``finish`` is the writer catching up with the queued rows.
Reported: loop, close and loop + close per row, metrics.parquet and summary sizes.

Data: ``bench`` is the harness's (5 floats drawn from a pool of 65,536 random numbers: no
float column shrinks; pyarrow's dictionary encoding finds the pool, which no real run has);
``real`` is a training loop's: a float32 loss (as ``tensor.item()`` gives), accuracy k/256,
a cosine lr with warm-up, a float32 gradient norm, a float32 validation loss every 1,000
steps.
"""
import argparse
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)

WORKER = r"""
import array, importlib.util, json, math, os, random, shutil, sys, tempfile, time
cfg = json.loads(sys.argv[1])
spec = importlib.util.spec_from_file_location("expman", os.path.join(cfg["module"], "expman.py"))
expman = importlib.util.module_from_spec(spec)
sys.modules["expman"] = expman
spec.loader.exec_module(expman)
phase = {}
def timed(owner, name, key):
    real = getattr(owner, name)
    def wrapper(*a, **k):
        t = time.perf_counter()
        try:
            return real(*a, **k)
        finally:
            phase[key] = phase.get(key, 0.0) + time.perf_counter() - t
    setattr(owner, name, wrapper)
timed(expman._Writer, "_finish", "finish")
timed(expman._Writer, "_compact_logs", "compact")
timed(expman._SegmentLog, "_summarize", "summary")
n = cfg["rows"]
rng = random.Random(1234)
pool = [rng.random() for _ in range(1 << 16)]
keys = ("train/loss", "train/acc", "lr", "grad_norm", "val/loss")
offs = (0, 7919, 15401, 28411, 40009)
f32 = array.array("f", [0.0])
def real_rows():
    for i in range(n):
        f32[0] = 2.3 * math.exp(-i / (n / 4)) + 0.05 * rng.gauss(0, 1)
        d = {"train/loss": f32[0], "train/acc": rng.randint(0, 256) / 256,
             "lr": 1e-3 * min(1, i / 1000) * 0.5 * (1 + math.cos(math.pi * i / n))}
        f32[0] = abs(rng.gauss(1, 0.3))
        d["grad_norm"] = f32[0]
        if i % 1000 == 999:
            f32[0] = 2.3 * math.exp(-i / (n / 4))
            d["val/loss"] = f32[0]
        yield d
rows = list(real_rows()) if cfg["data"] == "real" else None   # made before the clock starts
tmp = tempfile.mkdtemp(prefix="bench-close-")
run = expman.Experiment("bench", base_dir=tmp, capture_git=False)
t0 = time.perf_counter()
if rows is None:
    for i in range(n):
        run.log_metrics({k: pool[(i + o) & 0xFFFF] for k, o in zip(keys, offs)}, step=i)
else:
    for i in range(n):
        run.log_metrics(rows[i], step=i)
t1 = time.perf_counter()
run.close()
t2 = time.perf_counter()
size = lambda name: (os.path.getsize(os.path.join(run.run_dir, name))
                     if os.path.exists(os.path.join(run.run_dir, name)) else None)
print(json.dumps({"loop_s": t1 - t0, "close_s": t2 - t1, **phase,
                  "parquet_bytes": size("metrics.parquet"),
                  "summary_bytes": size("metrics.summary.parquet"),
                  "load": os.getloadavg()[0]}))
shutil.rmtree(tmp)
"""


def run_one(cfg):
    out = subprocess.run([sys.executable, "-c", WORKER, json.dumps(cfg)], capture_output=True,
                         text=True, timeout=1800)
    if out.returncode:
        raise SystemExit(f"worker failed: {cfg}\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    ap.add_argument("--module", action="append", default=[],
                    help="a directory holding another expman.py, measured beside this one")
    ap.add_argument("--label", action="append", default=[])
    ap.add_argument("--rows", default="100000,1000000")
    ap.add_argument("--data", default="bench,real")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    tools = [("this", REPO)] + [(args.label[i] if i < len(args.label) else m, os.path.abspath(m))
                                for i, m in enumerate(args.module)]
    sizes = [int(x) for x in args.rows.split(",")]
    kinds = args.data.split(",")
    start_load = os.getloadavg()
    print(f"bench_close: load {start_load}", file=sys.stderr)
    results = {}
    for _ in range(args.rounds):
        for n in sizes:
            for kind in kinds:
                for label, module in tools:
                    res = run_one({"module": module, "rows": n, "data": kind})
                    results.setdefault(f"{kind} {n}", {}).setdefault(label, []).append(res)
                    print(f"  {label:>8} {kind} {n}: close {res['close_s']:.3f} s "
                          f"(load {res['load']:.1f})", file=sys.stderr, flush=True)
    end_load = os.getloadavg()
    print(f"\nload average at start {start_load}, at end {end_load}")
    for key, by_tool in results.items():
        n = int(key.split()[1])
        print(f"\n{key} rows x 5 metrics (median of {args.rounds}; min-max)")
        for label, rs in by_tool.items():
            def med(name, scale=1.0):
                vals = sorted(r.get(name) or 0.0 for r in rs)
                return (vals[len(vals) // 2] * scale, vals[0] * scale, vals[-1] * scale)
            per_row = sorted((r["loop_s"] + r["close_s"]) / n * 1e6 for r in rs)
            line = [f"{label:>8}: close {med('close_s')[0]:.3f} s ({med('close_s')[1]:.3f}-"
                    f"{med('close_s')[2]:.3f})",
                    f"finish {med('finish')[0]:.3f}", f"compact {med('compact')[0]:.3f}",
                    f"summary {med('summary')[0]:.3f}",
                    f"loop {med('loop_s')[0]:.2f} s",
                    f"loop+close {per_row[len(per_row) // 2]:.2f} µs/row",
                    f"metrics.parquet {rs[-1]['parquet_bytes'] / 1e6:.1f} MB",
                    f"summary {(rs[-1]['summary_bytes'] or 0) / 1e6:.1f} MB"]
            print("  " + ", ".join(line))
    path = args.json or os.path.join(HERE, "results",
                                     f"bench_close-{time.strftime('%Y%m%d-%H%M')}.json")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as fh:
        json.dump({"load_start": start_load, "load_end": end_load, "results": results}, fh,
                  indent=1)
    print(f"\nresults written to {os.path.relpath(path)}")


if __name__ == "__main__":
    main()
