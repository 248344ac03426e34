"""Measurement code shared by the benchmarks. Standard library only: it also runs inside the
peers' virtual environments (see bench_peers.py), where neither expman nor pyarrow exists.

The workload: N steps, each builds a dict of 5 floats (drawn from a fixed pool of 65,536 random
numbers, so the values have realistic entropy and the checksum is known) and logs it with an
explicit step. Two loop shapes, generated from one template so the only difference between the
measured loop and its baseline is the logging statement:

* ``timed``: ``perf_counter_ns()`` around every call. The same loop with the call removed gives
  the timer's own cost (median of back-to-back ``perf_counter_ns()`` pairs, same loop body),
  which is subtracted from every sample. The loop totals include the timers on both sides, so
  their difference is still the logging cost.
* ``plain``: no per-call timers (the clock is read once per 4,096 steps for the time cap).
  ``logged - empty`` is the wall time the logging costs the training loop, background threads'
  GIL time included.
"""
import array
import gc
import heapq
import json
import math
import os
import random
import sys
import time

KEYS = ("train/loss", "train/acc", "lr", "grad_norm", "val/loss")
OFFSETS = (0, 7919, 15401, 28411, 40009)
POOL_BITS = 16
POOL = [random.Random(1234).random() for _ in range(1 << POOL_BITS)]
MASK = (1 << POOL_BITS) - 1

_DICT = ("{" + ", ".join(f'"{k}": pool[(i + {o}) & mask]' if o else f'"{k}": pool[i & mask]'
                         for k, o in zip(KEYS, OFFSETS)) + "}")

_TIMED = """
def loop(n, deadline_ns, obj, lat):
    pool, mask, pc = POOL, MASK, perf_counter_ns
    done = n
    t_start = pc()
    for i in range(n):
        d = DICT
        t0 = pc()
        CALL
        t1 = pc()
        lat[i] = t1 - t0
        if not i & 4095 and t1 > deadline_ns:
            done = i + 1
            break
    return pc() - t_start, done
"""

_PLAIN = """
def loop(n, deadline_ns, obj, lat=None):
    pool, mask, pc = POOL, MASK, perf_counter_ns
    done = n
    t_start = pc()
    for i in range(n):
        d = DICT
        CALL
        if not i & 4095 and pc() > deadline_ns:
            done = i + 1
            break
    return pc() - t_start, done
"""


def make_loop(call, timed):
    """A loop function whose body logs with ``call`` (source text using ``obj``, ``d``, ``i``);
    ``call=None`` gives the baseline loop that only builds the dict."""
    src = (_TIMED if timed else _PLAIN).replace("DICT", _DICT).replace("CALL", call or "pass")
    ns = {"POOL": POOL, "MASK": MASK, "perf_counter_ns": time.perf_counter_ns}
    exec(compile(src, f"<loop {call!r}>", "exec"), ns)  # noqa: S102 - our own template
    return ns["loop"]


def expected_checksum(n, float32=False):
    """fsum of every value the workload logs in n steps (exactly rounded, order-free)."""
    pool = list(array.array("f", POOL)) if float32 else POOL
    return math.fsum(pool[(i + o) & MASK] for o in OFFSETS for i in range(n))


def expected_values(n):
    """{key: [values]} for checking a few rows exactly."""
    return {k: [POOL[(i + o) & MASK] for i in range(n)] for k, o in zip(KEYS, OFFSETS)}


def percentile(sorted_values, q):
    if not sorted_values:
        return None
    idx = min(len(sorted_values) - 1, max(0, math.ceil(q / 100 * len(sorted_values)) - 1))
    return sorted_values[idx]


def latency_stats(lat, done, timer_ns):
    """Median/p99/p99.9/max in ns of the first ``done`` samples, timer cost subtracted."""
    s = sorted(lat[:done])
    worst = heapq.nlargest(5, range(done), key=lat.__getitem__)   # where the stalls are
    return {"median_ns": percentile(s, 50) - timer_ns, "p99_ns": percentile(s, 99) - timer_ns,
            "p999_ns": percentile(s, 99.9) - timer_ns, "max_ns": s[-1] - timer_ns,
            "mean_ns": sum(s) / len(s) - timer_ns, "timer_ns": timer_ns, "samples": done,
            "worst": [(i, lat[i] - timer_ns) for i in worst]}


# -- memory and disk --------------------------------------------------------------------------
def proc_status(pid="self"):
    out = {}
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith(("VmRSS:", "VmHWM:")):
                    out[line.split(":")[0]] = int(line.split()[1]) * 1024
    except OSError:
        pass
    return out


def reset_peak_rss():
    """Reset VmHWM (Linux: 5 > /proc/self/clear_refs); False when the kernel refuses."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def tree_rss(pid):
    """RSS in bytes of pid and all its descendants (via /proc/<pid>/task/*/children)."""
    total, stack, seen = 0, [pid], set()
    while stack:
        p = stack.pop()
        if p in seen:
            continue
        seen.add(p)
        total += proc_status(p).get("VmRSS", 0)
        try:
            for tid in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{tid}/children") as fh:
                    stack.extend(int(c) for c in fh.read().split())
        except OSError:
            pass
    return total


def disk_usage(path):
    """(apparent bytes, files) under path."""
    total = files = 0
    for root, _dirs, names in os.walk(path):
        for name in names:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
                files += 1
            except OSError:
                pass
    return total, files


# -- the common driver ------------------------------------------------------------------------
def timing_arrays(n):
    """The per-call sample arrays (allocate before taking an RSS baseline)."""
    return array.array("q", bytes(8 * n)), array.array("q", bytes(8 * n))


def measure(call, obj, n, cap_s, timed, close, arrays=None, after_close=None,
            empty_before=True):
    """Run the empty loop, the logged loop and ``close()``; returns a dict of timings.

    ``close`` is a zero-argument callable that flushes/finishes the tool; ``after_close`` is
    called right after it (bench_peers stops its RSS sampler there). The empty loop runs
    before and after the logged one (the faster of the two is the baseline: conservative);
    ``empty_before=False`` runs it twice after instead, so the logged loop starts right after
    the tool's init, as a training loop does (a first empty loop hid start-up stalls).
    """
    lat, elat = (arrays or timing_arrays(n)) if timed else (None, None)
    empty = make_loop(None, timed)
    logged = make_loop(call, timed)
    far = time.perf_counter_ns() + 10 ** 15
    gc.collect()
    rss0 = proc_status()
    peak_reset = reset_peak_rss()
    e1 = empty(n, far, None, elat)[0] if empty_before else None
    cpu0 = time.process_time()
    loop_ns, done = logged(n, time.perf_counter_ns() + int(cap_s * 1e9), obj, lat)
    t1 = time.perf_counter_ns()
    close()
    t2 = time.perf_counter_ns()
    cpu1 = time.process_time()
    rss1 = proc_status()
    if after_close:
        after_close()
    e2, _ = empty(n, far, None, elat if timed else None)
    if e1 is None:
        e1, _ = empty(n, far, None, elat if timed else None)
    empty_ns = min(e1, e2) * done / n
    out = {"n": n, "done": done, "complete": done == n, "loop_s": loop_ns / 1e9,
           "close_s": (t2 - t1) / 1e9, "empty_s": empty_ns / 1e9,
           "overhead_loop_us": (loop_ns - empty_ns) / done / 1e3,
           "overhead_total_us": (loop_ns + (t2 - t1) - empty_ns) / done / 1e3,
           "cpu_s": cpu1 - cpu0,
           "rss_after_init": rss0.get("VmRSS"), "rss_peak": rss1.get("VmHWM"),
           "rss_growth": (rss1.get("VmHWM", 0) - rss0.get("VmRSS", 0)) if peak_reset else None,
           "rss_growth_method": "VmHWM after clear_refs=5 minus VmRSS after init"
           if peak_reset else "unavailable"}
    out["cpu_overhead_us"] = (out["cpu_s"] - empty_ns / 1e9) / done * 1e6
    if timed:
        timer = percentile(sorted(elat[:n]), 50)
        out["latency"] = latency_stats(lat, done, timer)
    return out


def emit(result):
    """The worker's last stdout line is its JSON result."""
    sys.stdout.write("\nRESULT " + json.dumps(result) + "\n")
    sys.stdout.flush()


def parse_result(stdout):
    for line in reversed(stdout.splitlines()):
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    return None


def fmt_ns(ns):
    if ns is None:
        return "-"
    if ns < 1000:
        return f"{ns:.0f} ns"
    if ns < 1e6:
        return f"{ns / 1e3:.2f} µs"
    if ns < 1e9:
        return f"{ns / 1e6:.1f} ms"
    return f"{ns / 1e9:.2f} s"


def fmt_bytes(b):
    if b is None:
        return "-"
    for unit in ("B", "KB", "MB", "GB"):
        if abs(b) < 1024 or unit == "GB":
            return f"{b:.0f} {unit}" if unit == "B" else f"{b:.1f} {unit}"
        b /= 1024


def md_table(headers, rows):
    out = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(out)


def machine_info():
    cpu = "?"
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    return {"cores": os.cpu_count(), "cpu": cpu, "python": sys.version.split()[0],
            "loadavg_at_start": load, "date": time.strftime("%Y-%m-%d %H:%M %Z")}
