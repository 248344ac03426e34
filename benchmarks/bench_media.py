#!/usr/bin/env python3
"""What log_image and log_histogram cost the training thread, against what the writer thread
then spends converting the same inputs (PNG encoding, binning).

    python benchmarks/bench_media.py [--calls 200] [--size 256] [--values 1000000]

Call costs are medians of per-call perf_counter timings with the writer idle (a 60 s flush
interval: nothing is written while the calls are timed), so they are the training thread's own
cost: cheap checks plus a copy of the caller's array. Writer costs time the writer's conversion
functions directly on the same inputs.
"""
import argparse
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import numpy as np  # noqa: E402

import expman  # noqa: E402


def per_call(fn, n):
    samples = []
    for i in range(n):
        t0 = time.perf_counter_ns()
        fn(i)
        samples.append(time.perf_counter_ns() - t0)
    return statistics.median(samples) / 1000, max(samples) / 1000  # microseconds


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=200)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--values", type=int, default=1_000_000)
    args = ap.parse_args(argv)
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (args.size, args.size, 3), dtype=np.uint8)
    values = rng.standard_normal(args.values)
    values32 = values.astype(np.float32)
    as_list = values.tolist()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        exp = expman.Experiment("bench", base_dir=tmp, flush_interval_ms=60_000,
                                capture_git=False)
        exp.flush()  # the writer has imported pyarrow (its start-up work) before we time
        results["log_image uint8 %dx%dx3 (call)" % (args.size, args.size)] = per_call(
            lambda i: exp.log_image("img", image, step=i), args.calls)
        exp.flush()
        results["bare NumPy copy of the 1e6 float64 values"] = per_call(
            lambda i: values.copy(), max(10, args.calls // 10))
        results["log_histogram %.0e float64 (call)" % args.values] = per_call(
            lambda i: exp.log_histogram("h", values, step=i), max(10, args.calls // 10))
        results["log_histogram %.0e float32 (call)" % args.values] = per_call(
            lambda i: exp.log_histogram("h32", values32, step=i), max(10, args.calls // 10))
        results["log_histogram %.0e list (call)" % args.values] = per_call(
            lambda i: exp.log_histogram("hl", as_list, step=i), 5)
        t0 = time.perf_counter()
        exp.close()
        results["close (encode + write the queue)"] = ((time.perf_counter() - t0) * 1e6, 0)
    item = expman._MediaItem("histogram", "h", 0, 0.0, "array", values, bins=64)
    results["writer: PNG encode (zlib)"] = per_call(
        lambda i: expman._encode_image("array", image), max(10, args.calls // 10))
    results["writer: bin 1e6 float64 (NumPy)"] = per_call(
        lambda i: expman._histogram_row(item), 10)
    pure = expman._MediaItem("histogram", "h", 0, 0.0, "values", as_list, bins=64)
    saved = sys.modules.pop("numpy")
    try:
        sys.modules["numpy"] = None  # the pure-Python path (NumPy not imported by the script)
        results["writer: bin 1e6 floats (pure Python)"] = per_call(
            lambda i: expman._histogram_row(pure), 3)
    finally:
        sys.modules["numpy"] = saved
    width = max(map(len, results))
    for name, (median, worst) in results.items():
        extra = f"   (max {worst / 1000:.2f} ms)" if worst else ""
        print(f"{name:<{width}}  {median / 1000:9.3f} ms{extra}")


if __name__ == "__main__":
    sys.exit(main())
