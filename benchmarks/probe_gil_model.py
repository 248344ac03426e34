#!/usr/bin/env python
"""A model of the writer sharing the GIL, without expman: is a worst call the GIL or the OS?

    python benchmarks/probe_gil_model.py none     # a background thread that never yields
    python benchmarks/probe_gil_model.py pause    # one that hands the GIL over every 3 ms

A background thread does ~1 ms C steps (two sorts of 4,000 floats) in a loop, like the writer
converting rows, while the main thread times 1M ``deque.append(dict(d))`` calls, as
bench_probes' loop does. ``pause`` hands the GIL over as expman's writer does (``_Writer._pause``:
after 3 ms held, sleep 50 us up to four times until another thread has run). Prints the loop's
wall time, p99.9, worst call and the calls over 1 and 5 ms, with the load average: with
``none`` every hand-over waits for CPython's switch interval (5 ms) plus a C step; when
``pause`` still shows calls over 5 ms, the OS descheduled the GIL's holder.
"""
import collections
import os
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _harness as H  # noqa: E402


def main():
    mode = sys.argv[1] if len(sys.argv) > 1 else "pause"
    q = collections.deque()

    class Floor:
        def log_metrics(self, d, step=None):
            q.append(dict(d))

    stop = False
    work = [float(i % 977) for i in range(4000)]

    def writer():
        held = time.perf_counter()
        while not stop:
            sorted(work)
            sorted(work)
            if q:
                q.popleft()
            if mode == "pause":
                now = time.perf_counter()
                if now - held >= 0.003:
                    n = len(q)
                    for _ in range(4):
                        time.sleep(0.00005)
                        later = time.perf_counter()
                        if len(q) != n or later - now > 0.001:
                            break
                        now = later
                    held = time.perf_counter()

    t = threading.Thread(target=writer)
    t.start()
    n = 1_000_000
    lat, _ = H.timing_arrays(n)
    loop = H.make_loop("obj.log_metrics(d, step=i)", True)
    t0 = time.perf_counter()
    loop(n, time.perf_counter_ns() + 10 ** 15, Floor(), lat)
    wall = time.perf_counter() - t0
    stop = True
    t.join()
    s = sorted(lat)
    print(f"{mode}: loop {wall:.2f} s, p99.9 {s[int(n * .999)] / 1e3:.1f} us, worst "
          f"{s[-1] / 1e6:.2f} ms, calls over 1 ms {sum(x > 1e6 for x in s)}, over 5 ms "
          f"{sum(x > 5e6 for x in s)}; load {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
