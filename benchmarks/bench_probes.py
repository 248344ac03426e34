#!/usr/bin/env python
"""What a training script feels from the logger, beside expman-rs, in one run (issue 19).

    python benchmarks/bench_probes.py                  # all probes, 3 rounds (~5 min)
    python benchmarks/bench_probes.py --quick          # 1 round, 100k steps only
    python benchmarks/bench_probes.py --module /tmp/old --label before   # add another expman

Each probe runs in a fresh process per tool, the tools interleaved round by round (drift on a
shared machine hits all alike; read the ratios). expman-rs 1.3.0 runs from the venv that
``bench_peers.py --setup`` makes (benchmarks/.venvs/expman-rs; ``pip install
expman-rs==1.3.0`` there), and is left out when that venv is missing. Probes:

* ``loop N``: ``Experiment()`` then at once N back-to-back ``log_metrics(d, step=i)`` with 5
  floats, ``perf_counter_ns`` around every call (timer cost subtracted), then ``close()``.
  Median, mean, p99, p99.9, the worst call and the five worst with their index in the loop
  (a stall right after init or at a fixed row count shows as an index), loop overhead per
  step (loop minus the same loop without the call, run before init), close, and import/init;
  and the floor: ``deque.append(dict(d))`` in a method, timed by the same loop before init
  (the least a call that keeps the row can cost), with the call median as a multiple of it;
  the same with the row's step and ``time.time()`` (the least a call that stamps its rows can
  cost); and loop + close at the floor: that call's loop plus the least pure-Python writer's
  time for its rows (``_writer_floor``: pop, gather columns, arrays, min/max, microseconds).
* ``call``: the call median against both floors, in one process after init, in 20
  alternating blocks of 5,000 calls (empty loop, floor, floor with the time, the tool's call):
  the median of the per-block ratios, which a slow patch of the machine hits on both sides.
* ``threads``: 4 threads x 25k rows into one run, every call timed: worst call and p99; and
  the floor's p99.9 and worst call with the same 4 threads (the GIL's turns among them).
  ``--switch-interval 0.001`` runs both with shorter turns, to see what the turns cost.
* ``wide``: 20k steps of 50 metrics per row: median/mean/worst call, loop+close per step.
* ``tiny``: a whole script -- import, init, 100 logs, close -- as a fresh process, wall time
  minus a bare ``python -c pass``; and close() alone.
* ``rss``: peak RSS (VmHWM) of a process that logs a 20k-step run (5 metrics) and closes it.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
RS_PYTHON = os.path.join(HERE, ".venvs", "expman-rs", "bin", "python")
sys.path.insert(0, HERE)
import _harness as H  # noqa: E402


# == worker side (stdlib + the tool only) ===================================================
def _tool(cfg):
    """(module, make_run(base_dir), call text, close(run)) for the tool of cfg."""
    t0 = time.perf_counter()
    if cfg["tool"] == "expman-rs":
        import expman
        make = lambda d: expman.Experiment("bench", base_dir=d, redirect_console=False)  # noqa
        call = "obj.log_vector(d, step=i)"
    else:
        sys.path.insert(0, cfg["module"])
        import expman
        make = lambda d: expman.Experiment("bench", base_dir=d)  # noqa: E731
        call = "obj.log_metrics(d, step=i)"
    return expman, make, call, time.perf_counter() - t0


class _Floor:
    """The least a log call that keeps the row can do: copy the dict onto a deque."""

    def __init__(self):
        import collections
        self.q = collections.deque()

    def log_metrics(self, d, step=None):
        self.q.append(dict(d))


class _TimedFloor(_Floor):
    """The least a log call that keeps the row *and its time* can do (every tracker stamps
    its rows, and a clock read is a C call of its own): the row, its step and time.time()."""

    def log_metrics(self, d, step=None, _now=time.time):
        self.q.extend((dict(d), step, _now()))


def _writer_floor(q):
    """ns a row that the least pure-Python writer spends on the rows _TimedFloor queued,
    holding the GIL all along: pop them in chunks, gather each key's column (a C-level pass),
    array("d") it, its min and max (the run's summaries), the steps and times as int64
    microseconds, then free the rows. No type check, no Parquet, no file: what is left of a
    writer that keeps the data in columns. Our writer's conversion is measured against it."""
    import array
    import itertools
    import operator
    popleft = type(q).popleft
    n = len(q) // 3
    keys = list(q[0]) if n else []
    t0 = time.perf_counter_ns()
    left = n
    while left:
        k = min(left, 2048)
        flat = list(map(popleft, itertools.repeat(q, 3 * k)))
        batch, steps, times = flat[0::3], flat[1::3], flat[2::3]
        del flat
        for key in keys:
            values = list(map(operator.itemgetter(key), batch))
            array.array("d", values)
            min(values), max(values)
        array.array("q", steps)
        array.array("q", [int(t * 1e6) for t in times])
        del batch, steps, times
        left -= k
    return (time.perf_counter_ns() - t0) / max(n, 1)


def probe_loop(cfg):
    n = cfg["n"]
    lat, elat = H.timing_arrays(n)
    empty = H.make_loop(None, True)
    far = time.perf_counter_ns() + 10 ** 15
    e_ns, _ = empty(n, far, None, elat)            # before init: the writer does not exist yet
    timer = H.percentile(sorted(elat), 50)
    floor = H.make_loop("obj.log_metrics(d, step=i)", True)
    m = min(n, 100_000)
    floor(m, far, _Floor(), elat)                  # the floor, timed the same way
    floor_ns = H.percentile(sorted(elat[:m]), 50) - timer
    timed_floor = _TimedFloor()
    floor(m, far, timed_floor, elat)               # the same with the row's time
    floor_time_ns = H.percentile(sorted(elat[:m]), 50) - timer
    # loop + close at the floor: the untimed loop with the timed floor's call, plus the
    # least writer's GIL time for those rows (on one GIL, a writer thread's time adds up)
    pe_ns, _ = H.make_loop(None, False)(m, far, None)
    timed_floor = _TimedFloor()
    pf_ns, _ = H.make_loop("obj.log_metrics(d, step=i)", False)(m, far, timed_floor)
    floor_total_us = ((pf_ns - pe_ns) / m + _writer_floor(timed_floor.q)) / 1e3
    del timed_floor
    _mod, make, call, import_s = _tool(cfg)
    tmp = tempfile.mkdtemp(prefix="probe-")
    t0 = time.perf_counter()
    run = make(tmp)
    init_s = time.perf_counter() - t0
    logged = H.make_loop(call, True)
    loop_ns, done = logged(n, far, run, lat)        # at once, as a training loop would
    t1 = time.perf_counter()
    run.close()
    close_s = time.perf_counter() - t1
    st = H.latency_stats(lat, done, timer)
    H.emit({"import_s": import_s, "init_s": init_s, "close_s": close_s, "floor_ns": floor_ns,
            "floor_time_ns": floor_time_ns, "floor_total_us": floor_total_us,
            "overhead_loop_us": (loop_ns - e_ns) / n / 1e3,
            "overhead_total_us": (loop_ns - e_ns + close_s * 1e9) / n / 1e3, **st})


_BLOCK = """
def loop(n, obj, lat, base):
    pool, mask, pc = POOL, MASK, perf_counter_ns
    for i in range(base, base + n):
        d = DICT
        t0 = pc()
        CALL
        t1 = pc()
        lat[i - base] = t1 - t0
"""


def _block_loop(call):
    """The timed loop of make_loop, with steps that go on from ``base`` (blocks of one run)."""
    src = _BLOCK.replace("DICT", H._DICT).replace("CALL", call or "pass")
    ns = {"POOL": H.POOL, "MASK": H.MASK, "perf_counter_ns": time.perf_counter_ns}
    exec(compile(src, f"<block {call!r}>", "exec"), ns)  # noqa: S102 - our own template
    return ns["loop"]


def probe_call(cfg):
    """The call against its floors in one process, in alternating blocks: a slow patch of the
    machine (medians here move 2x between minutes) hits the floors and the call alike."""
    blocks, size = cfg["blocks"], cfg["size"]
    _mod, make, call, _ = _tool(cfg)
    run = make(tempfile.mkdtemp(prefix="probe-"))
    empty, floor, logged = (_block_loop(None), _block_loop("obj.log_metrics(d, step=i)"),
                            _block_loop(call))
    lat = H.timing_arrays(size)[0]

    def median(fn, obj, base):
        fn(size, obj, lat, base)
        return H.percentile(sorted(lat), 50)
    samples = []
    for b in range(blocks):
        timer = median(empty, None, 0)
        plain = median(floor, _Floor(), 0) - timer
        stamped = median(floor, _TimedFloor(), 0) - timer
        ours = median(logged, run, b * size) - timer
        samples.append((ours, plain, stamped))
    run.close()
    H.emit({"median_ns": statistics.median(s[0] for s in samples),
            "floor_ns": statistics.median(s[1] for s in samples),
            "floor_time_ns": statistics.median(s[2] for s in samples),
            "ratio_floor": statistics.median(s[0] / s[1] for s in samples),
            "ratio_floor_time": statistics.median(s[0] / s[2] for s in samples),
            "ratio_floor_time_range": [min(s[0] / s[2] for s in samples),
                                       max(s[0] / s[2] for s in samples)]})


def _threads_loop(n, k, obj, call):
    """k threads x n timed calls into obj, at once; the calls' times, sorted."""
    loop = H.make_loop(call, True)
    arrays = [H.timing_arrays(n)[0] for _ in range(k)]
    far = time.perf_counter_ns() + 10 ** 15
    threads = [threading.Thread(target=loop, args=(n, far, obj, arrays[j])) for j in range(k)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sorted(x for a in arrays for x in a)


def probe_threads(cfg):
    n, k = cfg["n"], cfg["threads"]
    if cfg.get("switch"):  # --switch-interval: the GIL's turns are what the floor waits for
        sys.setswitchinterval(cfg["switch"])
    # the floor first, the same way: k Python threads that log back to back take turns at
    # the GIL every sys.getswitchinterval() (5 ms), so a call waits for the other threads'
    # turns whatever the logger does (a worst call of tens of ms for deque.append alone)
    floor = _threads_loop(n, k, _Floor(), "obj.log_metrics(d, step=i)")
    _mod, make, call, _ = _tool(cfg)
    run = make(tempfile.mkdtemp(prefix="probe-"))
    merged = _threads_loop(n, k, run, call)
    run.close()
    H.emit({"median_ns": H.percentile(merged, 50), "p99_ns": H.percentile(merged, 99),
            "p999_ns": H.percentile(merged, 99.9), "max_ns": merged[-1],
            "mean_ns": sum(merged) / len(merged), "floor_p999_ns": H.percentile(floor, 99.9),
            "floor_max_ns": floor[-1]})


def probe_wide(cfg):
    n, width = cfg["n"], cfg["width"]
    _mod, make, call, _ = _tool(cfg)
    keys = [f"m/{j:02d}" for j in range(width)]
    pool = H.POOL
    run = make(tempfile.mkdtemp(prefix="probe-"))
    lat = [0] * n
    pc = time.perf_counter_ns
    method = getattr(run, call.split(".")[1].split("(")[0])
    t_start = pc()
    for i in range(n):
        d = {k: pool[(i * 7 + j) & H.MASK] for j, k in enumerate(keys)}
        a = pc()
        method(d, step=i)
        lat[i] = pc() - a
    loop_ns = pc() - t_start
    t1 = time.perf_counter()
    run.close()
    close_s = time.perf_counter() - t1
    s = sorted(lat)
    H.emit({"median_ns": H.percentile(s, 50), "mean_ns": sum(s) / n, "max_ns": s[-1],
            "p99_ns": H.percentile(s, 99), "loop_s": loop_ns / 1e9, "close_s": close_s})


def probe_tiny(cfg):
    t0 = time.perf_counter()
    _mod, make, call, import_s = _tool(cfg)
    t1 = time.perf_counter()
    run = make(tempfile.mkdtemp(prefix="probe-"))
    t2 = time.perf_counter()
    method = getattr(run, call.split(".")[1].split("(")[0])
    for i in range(100):
        method({"loss": 1.0 / (i + 1), "acc": i / 100}, step=i)
    t3 = time.perf_counter()
    run.close()
    t4 = time.perf_counter()
    H.emit({"import_s": t1 - t0, "init_s": t2 - t1, "log_s": t3 - t2, "close_s": t4 - t3,
            "inside_s": t4 - t0, "rss_peak": H.proc_status().get("VmHWM")})


def probe_rss(cfg):
    _mod, make, call, _ = _tool(cfg)
    run = make(tempfile.mkdtemp(prefix="probe-"))
    loop = H.make_loop(call, False)
    loop(cfg["n"], time.perf_counter_ns() + 10 ** 15, run)
    run.close()
    H.emit({"rss_peak": H.proc_status().get("VmHWM")})


PROBES = {"loop": probe_loop, "call": probe_call, "threads": probe_threads, "wide": probe_wide,
          "tiny": probe_tiny, "rss": probe_rss}


# == orchestration ============================================================================
def run_probe(tool, probe, cfg):
    python = RS_PYTHON if tool["tool"] == "expman-rs" else sys.executable
    # PYTHONDONTWRITEBYTECODE (set on some CI machines) would recompile expman.py, 10k lines,
    # at every import: users run from the cached .pyc
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "PYTHONDONTWRITEBYTECODE") and not k.startswith("EXPMAN_")}
    cfg = {**cfg, **tool, "probe": probe}
    t0 = time.perf_counter()
    proc = subprocess.run([python, os.path.abspath(__file__), "--worker", json.dumps(cfg)],
                          capture_output=True, text=True, timeout=900, env=env,
                          cwd=tempfile.gettempdir())
    wall = time.perf_counter() - t0
    res = H.parse_result(proc.stdout)
    if res is None:
        sys.stderr.write(proc.stdout[-2000:] + proc.stderr[-3000:])
        raise SystemExit(f"{tool['label']} {probe} {cfg} failed (exit {proc.returncode})")
    res["wall_s"] = wall
    res["warned"] = "Warning" in proc.stderr
    return res


def bare_python(python):
    best = None
    for _ in range(5):
        t0 = time.perf_counter()
        subprocess.run([python, "-c", "pass"], check=True)
        dt = time.perf_counter() - t0
        best = dt if best is None else min(best, dt)
    return best


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--rounds", type=int, default=None)
    ap.add_argument("--module", action="append", default=[],
                    help="another expman.py directory to measure beside this checkout")
    ap.add_argument("--label", action="append", default=[], help="its label")
    ap.add_argument("--no-rs", action="store_true", help="leave expman-rs out")
    ap.add_argument("--json", default=None)
    ap.add_argument("--switch-interval", type=float, default=None,
                    help="sys.setswitchinterval() for the threads probe (CPython's is 0.005)")
    ap.add_argument("--only", default=None,
                    help="comma-separated probes to run (loop,call,threads,wide,tiny,rss)")
    args = ap.parse_args()
    if args.worker:
        cfg = json.loads(args.worker)
        return PROBES[cfg["probe"]](cfg)
    tools = [{"tool": "expman", "module": REPO, "label": "expman"}]
    for j, mod in enumerate(args.module):
        label = args.label[j] if j < len(args.label) else f"expman@{mod}"
        tools.append({"tool": "expman", "module": os.path.abspath(mod), "label": label})
    if not args.no_rs and os.path.exists(RS_PYTHON):
        tools.append({"tool": "expman-rs", "label": "expman-rs"})
    rounds = args.rounds or (1 if args.quick else 3)
    sizes = [100_000] if args.quick else [100_000, 1_000_000]
    plan = [("loop", {"n": n}) for n in sizes] + [("call", {"blocks": 20, "size": 5000})] + [
        ("threads", {"n": 25_000, "threads": 4, "switch": args.switch_interval}), ("wide", {"n": 20_000, "width": 50}),
        ("tiny", {}), ("rss", {"n": 20_000})]
    if args.only:
        plan = [(p, c) for p, c in plan if p in args.only.split(",")]
    info = H.machine_info()
    print(f"bench_probes: {info['cores']} cores, Python {info['python']}, load "
          f"{info['loadavg_at_start']}", file=sys.stderr)
    bare = {t["label"]: bare_python(RS_PYTHON if t["tool"] == "expman-rs" else sys.executable)
            for t in tools}
    results = {}
    for _ in range(rounds):
        for probe, cfg in plan:
            for tool in tools:
                key = f"{probe} {cfg.get('n', '')}".strip()
                res = run_probe(tool, probe, cfg)
                results.setdefault(key, {}).setdefault(tool["label"], []).append(res)
                print(f"  {tool['label']:>10} {key}: done", file=sys.stderr, flush=True)
    info["loadavg_at_end"] = os.getloadavg()
    report(results, [t["label"] for t in tools], bare, info)
    path = args.json or os.path.join(HERE, "results",
                                     f"bench_probes-{time.strftime('%Y%m%d-%H%M')}.json")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as fh:
        json.dump({"machine": info, "bare_python_s": bare, "results": results}, fh, indent=1)
    print(f"\nresults written to {os.path.relpath(path)}")


def _med(rs, key):
    vals = [r[key] for r in rs if r.get(key) is not None]
    return statistics.median(vals) if vals else None


def _latency_cells(rs):
    """call median, mean, p99, p99.9, worst: medians over rounds, the worst their max."""
    return [H.fmt_ns(_med(rs, "median_ns")), H.fmt_ns(_med(rs, "mean_ns")),
            H.fmt_ns(_med(rs, "p99_ns")), H.fmt_ns(_med(rs, "p999_ns")),
            H.fmt_ns(max(r["max_ns"] for r in rs))]


def _loop_more(rs):
    more = [f"floor {H.fmt_ns(_med(rs, 'floor_ns'))} (median "
            f"{_med(rs, 'median_ns') / _med(rs, 'floor_ns'):.2f}x)"]
    if _med(rs, "floor_time_ns") is not None:   # (older result files lack the new floors)
        more.append(f"floor with the row's time {H.fmt_ns(_med(rs, 'floor_time_ns'))} (median "
                    f"{_med(rs, 'median_ns') / _med(rs, 'floor_time_ns'):.2f}x)")
    at_floor = (f" (floor: call + least writer {_med(rs, 'floor_total_us'):.2f})"
                if _med(rs, "floor_total_us") is not None else "")
    worst = "; ".join(", ".join(f"#{i}:{H.fmt_ns(ns)}" for i, ns in r["worst"][:3]) for r in rs)
    return more + [f"loop {_med(rs, 'overhead_loop_us'):.2f} µs/step, +close "
                   f"{_med(rs, 'overhead_total_us'):.2f}{at_floor}",
                   f"close {_med(rs, 'close_s') * 1e3:.0f} ms, init "
                   f"{_med(rs, 'init_s') * 1e3:.0f} ms, import {_med(rs, 'import_s') * 1e3:.0f} ms",
                   f"worst at {worst}"]


def _call_more(rs):
    lo = min(r["ratio_floor_time_range"][0] for r in rs)
    hi = max(r["ratio_floor_time_range"][1] for r in rs)
    return [f"in alternating blocks: floor {H.fmt_ns(_med(rs, 'floor_ns'))} (median "
            f"{_med(rs, 'ratio_floor'):.2f}x), with the row's time "
            f"{H.fmt_ns(_med(rs, 'floor_time_ns'))} (median "
            f"{_med(rs, 'ratio_floor_time'):.2f}x, blocks {lo:.2f}-{hi:.2f})"]


def _threads_more(rs):
    if _med(rs, "floor_max_ns") is None:
        return []
    return [f"floor (deque.append(dict(d)), same threads): p99.9 "
            f"{H.fmt_ns(_med(rs, 'floor_p999_ns'))}, worst "
            f"{H.fmt_ns(max(r['floor_max_ns'] for r in rs))}"]


def _wide_more(rs):
    per_step = (_med(rs, "loop_s") + _med(rs, "close_s")) * 1e6 / 20000
    return [f"loop+close {per_step:.2f} µs/step (dict of 50 built in the loop), close "
            f"{_med(rs, 'close_s') * 1e3:.0f} ms"]


def _tiny_more(rs, bare):
    wall = _med(rs, "wall_s") - bare
    return [f"script {wall * 1e3:.0f} ms over bare python (import "
            f"{_med(rs, 'import_s') * 1e3:.0f}, init {_med(rs, 'init_s') * 1e3:.0f}, close "
            f"{_med(rs, 'close_s') * 1e3:.1f} ms), peak RSS {H.fmt_bytes(_med(rs, 'rss_peak'))}"]


def _rss_more(rs):
    return [f"peak RSS {H.fmt_bytes(_med(rs, 'rss_peak'))} (max "
            f"{H.fmt_bytes(max(r['rss_peak'] for r in rs))})"]


def _report_row(probe, rs, bare):
    """(the five latency cells, the "more" notes) of one probe's rounds for one tool."""
    none = ["-"] * 5
    if probe == "loop":
        return _latency_cells(rs), _loop_more(rs)
    if probe == "call":
        return [H.fmt_ns(_med(rs, "median_ns"))] + none[1:], _call_more(rs)
    if probe == "threads":
        return _latency_cells(rs), _threads_more(rs)
    if probe == "wide":
        return _latency_cells(rs), _wide_more(rs)
    if probe == "tiny":
        return none, _tiny_more(rs, bare)
    return none, _rss_more(rs)


def report(results, labels, bare, info):
    print(f"\nload average: start {info['loadavg_at_start']}, end {info['loadavg_at_end']}; "
          f"medians over rounds (worst: the max over rounds)\n")
    rows = []
    for key, by_tool in results.items():
        for label in labels:
            rs = by_tool.get(label)
            if rs:
                cells, more = _report_row(key.split()[0], rs, bare[label])
                rows.append([key, label, *cells, " · ".join(more)])
    print(H.md_table(["probe", "tool", "call median", "mean", "p99", "p99.9", "worst", "more"],
                     rows))
    ratios = _paired_ratios(results, labels)
    if ratios:
        print("\nPer round, each expman against expman-rs run in the same round (the tools "
              "are interleaved, so a slow patch of the machine hits both): median over rounds "
              "of the ratio, and its range. Below 1: expman costs less.\n")
        print(H.md_table(["probe", "tool", "mean", "loop overhead", "loop + close"], ratios))


def _paired_ratios(results, labels, base="expman-rs"):
    """[probe, label, mean, loop, loop + close] cells: the ratios of each loop probe's figures
    to expman-rs's in the same round, as "median (min-max)"."""
    rows = []
    for key, by_tool in results.items():
        if not key.startswith("loop") or base not in by_tool:
            continue
        for label in labels:
            if label == base or label not in by_tool:
                continue
            cells = []
            for field in ("mean_ns", "overhead_loop_us", "overhead_total_us"):
                r = [a[field] / b[field] for a, b in zip(by_tool[label], by_tool[base])
                     if a.get(field) and b.get(field)]
                cells.append(f"{statistics.median(r):.2f} ({min(r):.2f}-{max(r):.2f})"
                             if r else "-")
            rows.append([key, label, *cells])
    return rows


if __name__ == "__main__":
    main()
