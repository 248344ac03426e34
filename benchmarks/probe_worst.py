#!/usr/bin/env python
"""Where the worst log calls come from: a dump of the N worst calls of a back-to-back loop,
each with what the writer thread was doing at that moment (issue 19).

    python benchmarks/probe_worst.py                      # 100k steps, this checkout
    python benchmarks/probe_worst.py -n 1000000 --threads 4 --module /work/main
    python benchmarks/probe_worst.py -n 1000000 --worst 3 --timeline   # each call's steps in order

The loop is bench_probes' (``Experiment()`` then at once N timed ``log_metrics(d, step=i)``
with 5 floats). While it runs, the writer's steps are timed by wrapping its methods and
module functions (``_Writer._drain``, ``_stage``, ``_flush``, ``_plain_parquet``, a merge,
``_write_meta``...: one ``list.append`` of (name, start, end) per step, on the writer
thread), and every garbage collection is timed through ``gc.callbacks`` (generation,
objects collected, duration, which thread). Each of the worst calls is printed with its
loop index, its start (ms since the loop began), its length, and the writer steps and
collections that overlap it (innermost first), so a stall reads as "call #61,234 waited
11.2 ms while the writer ran _plain_parquet (10.9 ms)".

The wrappers cost the writer ~1 us a step (a few hundred steps a second): they do not change
what the training thread sees in a way that matters at a ms scale.
"""
import argparse
import bisect
import gc
import os
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)
import _harness as H  # noqa: E402

# (owner, name) wrapped: owner "module" is expman itself, else a class of it
PHASES = [("_Writer", "_drain"), ("_Writer", "_stage"), ("_Writer", "_columns"),
          ("_Writer", "_batch_keys"), ("_Writer", "_steps"), ("_Writer", "_flush"),
          ("_Writer", "_write_meta"), ("_Writer", "_join_segments"),
          ("_Writer", "_finish"), ("_Writer", "_handle"), ("_Writer", "_may_merge"),
          ("_Writer", "_slice_rows"), ("_Writer", "_yield_gil"),
          ("_Writer", "wait_for_room"), ("_Writer", "_give_room"),
          ("_SegmentLog", "merge"), ("_SegmentLog", "_write_file"),
          ("_SegmentLog", "_summarize_segment"), ("_SegmentLog", "_summarize_segments"),
          ("_SegmentLog", "_delete_segments"), ("_SegmentLog", "_summarize"),
          ("_Writer", "_compact_logs"), ("_Writer", "_join_plain_segments"),
          ("module", "_plain_parquet"), ("module", "_pq_join"), ("module", "_pq_write"),
          ("module", "_micros"), ("module", "_yaml_dump"), ("module", "_arrow_for_writer"),
          ("module", "_min_max_valid"), ("module", "_pq_columns")]


def instrument(mod, log):
    pc = time.perf_counter_ns
    append = log.append

    def wrap(name, fn):
        def timed(*a, **k):
            t0 = pc()
            try:
                return fn(*a, **k)
            finally:
                append((name, t0, pc(), threading.get_ident()))
        return timed

    for owner, name in PHASES:
        target = mod if owner == "module" else getattr(mod, owner, None)
        fn = getattr(target, name, None) if target is not None else None
        if fn is None:
            continue
        if owner == "module" or name in target.__dict__:
            setattr(target, name, wrap(name if owner == "module" else f"{owner}.{name}", fn))


def gc_recorder(log):
    pc = time.perf_counter_ns
    start = {}

    def cb(phase, info):
        if phase == "start":
            start["t"] = pc()
        else:
            log.append((f"gc{info['generation']} ({info['collected']} freed)", start.get("t", 0),
                        pc(), threading.get_ident()))
    return cb


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("-n", type=int, default=100_000)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--worst", type=int, default=20)
    ap.add_argument("--module", default=REPO)
    ap.add_argument("--no-trace", action="store_true", help="time the calls only")
    ap.add_argument("--timeline", action="store_true",
                    help="under each worst call, every step that overlaps it, in time order, "
                         "with its start and end relative to the call's start")
    ap.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                    help="override a constant of expman for the experiment (a number)")
    args = ap.parse_args()
    sys.path.insert(0, args.module)
    import expman
    _override(expman, args.set)
    phases = []
    if not args.no_trace:
        instrument(expman, phases)
        gc.callbacks.append(gc_recorder(phases))
    n, k = args.n, args.threads
    main_ident = threading.get_ident()
    lats, ats, writer_ident, t_begin, t_loop, t_end = _timed_run(expman, n, k)
    samples = sorted(((lats[j][i], j, i) for j in range(k) for i in range(n)), reverse=True)
    every = sorted(s[0] for s in samples)
    print(f"{n} steps x {k} thread(s), module {args.module}; loop {(t_loop - t_begin) / 1e9:.2f} s,"
          f" close {(t_end - t_loop) / 1e9:.2f} s; load {os.getloadavg()}")
    _print_latencies(every)
    writer_phases = [p for p in phases if p[3] == writer_ident]
    gcs_main = [p for p in phases if p[0].startswith("gc") and p[3] == main_ident]
    _print_collections(writer_phases, gcs_main)
    waits = [p for p in phases if p[0] == "_Writer.wait_for_room"]
    slow = sorted((ats[j][i], ats[j][i] + lat) for lat, j, i in samples if lat > 2e4)
    print(f"calls over 20 us: {len(slow)}, of which overlap a collection on the training thread: "
          f"{_count_over(slow, gcs_main)}, a backpressure wait: {_count_over(slow, waits)}")
    _print_writer_steps(writer_phases)
    if waits:
        _print_waits(waits, sorted((ats[j][i], ats[j][i] + lat) for lat, j, i in samples
                                   if lat > 5e6))
    print(f"\nthe {args.worst} worst calls:")
    for lat, j, i in samples[:args.worst]:
        _print_worst_call(lat, j, i, ats[j][i], phases, writer_ident, t_begin, args.timeline)


_LOOP = """
def loop(n, obj, lat, at, offset):
    pool, mask, pc = POOL, MASK, perf_counter_ns
    for i in range(n):
        d = DICT
        t0 = pc()
        obj.log_metrics(d, step=i + offset)
        t1 = pc()
        lat[i] = t1 - t0
        at[i] = t0
"""


def _timed_run(expman, n, k):
    """bench_probes' loop in k threads x n calls into one run, then close(): each call's
    length and start (the timed loop of _harness keeps only lengths, hence this loop), the
    writer's thread id, and the times the loop began and ended and close() ended."""
    lats = [H.timing_arrays(n)[0] for _ in range(k)]
    ats = [H.timing_arrays(n)[0] for _ in range(k)]
    ns = {"POOL": H.POOL, "MASK": H.MASK, "perf_counter_ns": time.perf_counter_ns}
    exec(compile(_LOOP.replace("DICT", H._DICT), "<probe loop>", "exec"), ns)  # noqa: S102
    run = expman.Experiment("probe", base_dir=tempfile.mkdtemp(prefix="probe-worst-"))
    writer_ident = run._writer.ident
    t_begin = time.perf_counter_ns()
    if k == 1:
        ns["loop"](n, run, lats[0], ats[0], 0)
    else:
        ts = [threading.Thread(target=ns["loop"], args=(n, run, lats[j], ats[j], j * n))
              for j in range(k)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
    t_loop = time.perf_counter_ns()
    run.close()
    return lats, ats, writer_ident, t_begin, t_loop, time.perf_counter_ns()


def _print_latencies(every):
    over = {label: sum(1 for x in every if x > limit)
            for label, limit in (("20 us", 2e4), ("100 us", 1e5), ("1 ms", 1e6), ("5 ms", 5e6))}
    print(f"median {H.percentile(every, 50)} ns, p99 {H.percentile(every, 99)} ns, p99.9 "
          f"{H.percentile(every, 99.9)} ns, worst {every[-1] / 1e6:.2f} ms (timer not "
          f"subtracted); calls " + ", ".join(f"over {label}: {c}" for label, c in over.items()))


def _print_collections(writer_phases, gcs_main):
    print(f"writer steps traced: {len(writer_phases)}; collections on the training thread: "
          f"{len(gcs_main)} (gen2: {sum(1 for p in gcs_main if p[0].startswith('gc2'))}, "
          f"longest {max((p[2] - p[1] for p in gcs_main), default=0) / 1e6:.2f} ms, over 20 us: "
          f"{sum(1 for p in gcs_main if p[2] - p[1] > 2e4)})")


def _override(expman, items):
    """--set NAME=VALUE: a constant of expman, of the type it has."""
    for item in items:
        name, value = item.split("=", 1)
        setattr(expman, name, type(getattr(expman, name))(float(value)))


def _print_waits(waits, over5):
    """The backpressure waits, and how many of the calls over 5 ms (start, end) overlap one."""
    longest = max(b - a for _n, a, b, _t in waits)
    waited = sum(1 for a, b in over5 if any(w[1] < b and w[2] > a for w in waits))
    print(f"backpressure waits: {len(waits)} (longest {longest / 1e6:.2f} ms); calls over 5 ms "
          f"that waited for room: {waited} of {len(over5)}")


def _count_over(slow, spans):
    """How many of the slow calls ((start, end), sorted) overlap one of the spans."""
    starts = [a for a, _b in slow]
    hit = set()
    for _name, a, b, _t in spans:
        k = bisect.bisect_left(starts, a - 10 ** 8)
        while k < len(slow) and slow[k][0] < b:
            if slow[k][1] > a:
                hit.add(k)
            k += 1
    return len(hit)


def _print_writer_steps(writer_phases):
    by_name = {}
    for name, a, b, _t in writer_phases:
        tot = by_name.setdefault(name.split(" (")[0], [0, 0, 0])
        tot[0] += 1
        tot[1] += b - a
        tot[2] = max(tot[2], b - a)
    print("writer steps (count, total ms, longest ms):")
    for key, (c, tot, mx) in sorted(by_name.items(), key=lambda kv: -kv[1][1]):
        print(f"  {key:32} {c:6d} {tot / 1e6:9.1f} {mx / 1e6:8.2f}")


def _print_worst_call(lat, j, i, a, phases, writer_ident, t_begin, timeline):
    """One worst call: its index, start and length, and the steps that overlap it."""
    b = a + lat
    over = [p for p in phases if p[1] < b and p[2] > a]
    # the training thread's own steps (a backpressure wait, a collection) first, then
    # the writer's, innermost (shortest) first
    over.sort(key=lambda p: (p[3] == writer_ident, p[2] - p[1]))
    where = "; ".join(f"{'W' if p[3] == writer_ident else 'T'}:{p[0]} "
                      f"{(p[2] - p[1]) / 1e6:.2f}ms" for p in over[:5])
    print(f"  #{i:>8} (thread {j}) at {(a - t_begin) / 1e6:9.1f} ms: {lat / 1e6:6.2f} ms"
          f"  | {where or '-'}")
    if timeline:
        for name, p0, p1, ident in sorted(over, key=lambda p: p[1]):
            print(f"        {'W' if ident == writer_ident else 'T'} {name:32} "
                  f"{(p0 - a) / 1e6:+8.3f} .. {(p1 - a) / 1e6:+8.3f} ms")

if __name__ == "__main__":
    main()
