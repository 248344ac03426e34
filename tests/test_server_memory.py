"""The server hands memory back once requests stop (issue 13: "back within 50 MB of its
baseline after the page closes"), measured on a real server in a child process."""
import math
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import expman
from _util import REPO, child_env, wait_for

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="reads /proc and trims glibc's heaps")

SERVE = """
import ctypes, signal, sys, time, expman
real_trim = expman._trim_memory

def trim():  # the server's own trim, reported with when it began (the real one runs)
    began = time.monotonic()
    real_trim()
    print("trimmed", began, flush=True)
expman._trim_memory = trim

def rss():
    with open("/proc/self/status") as fh:
        return next(int(l.split()[1]) for l in fh if l.startswith("VmRSS:")) / 1024

def probe(*_):  # what a trim now would still give back
    before = rss()
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    print("probe", before, rss(), flush=True)
signal.signal(signal.SIGUSR1, probe)
server = expman.make_server(sys.argv[1], port=0)
print(server.url, flush=True)
server.run()
"""


def rss_mb(pid):
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return None


def big_run(root, rows=300_000):
    """A closed run of `rows` rows and 3 metrics without a chart summary: each chart request
    reads its rows a batch at a time (many MB of temporaries per request)."""
    run = os.path.join(root, "e", "r")
    os.makedirs(run)
    steps = pa.array(range(rows), pa.int64())
    table = pa.table({"step": steps,
                      "timestamp": pa.compute.add(steps, 1_700_000_000_000_000).cast(
                          pa.timestamp("us", tz="UTC")),
                      **{f"m{k}": pa.array([math.sin(i / (k + 3)) for i in range(rows)],
                                           pa.float64()) for k in range(3)}})
    pq.write_table(table, os.path.join(run, expman.METRICS_FILE), row_group_size=1 << 16)
    with open(os.path.join(run, expman.RUN_YAML), "w") as fh:
        fh.write("name: 'r'\nexperiment: 'e'\nstatus: finished\n")


def test_memory_freed_by_chart_requests_goes_back_once_they_stop(tmp_path):
    """A burst of chart requests from several threads (as a page of many runs makes) raises
    the server's RSS; a moment after the last, the server trims by itself: a trim asked of
    it then gives back next to nothing (before: ~40 MB, kept until the server ended)."""
    big_run(str(tmp_path))
    proc = subprocess.Popen([sys.executable, "-c", SERVE, str(tmp_path)], cwd=REPO,
                            env=child_env(), stdout=subprocess.PIPE, text=True)
    try:
        url = proc.stdout.readline().strip()
        assert url.startswith("http")
        base_url = url + "/api/experiments/e/runs/r/metrics?keys=m0,m1,m2&max_points="

        def get(query):
            with urllib.request.urlopen(base_url + query, timeout=120) as resp:
                assert resp.status == 200
                return len(resp.read())

        get("100")
        base = rss_mb(proc.pid)
        queries = [f"{mp}" for mp in (180, 719, 3000, 5000)] * 3 + \
            [f"180&x_min={lo}&x_max={lo + 60_000}" for lo in range(0, 240_000, 20_000)]
        # the peak sampled all through the burst: the server may trim during it, so one
        # reading after the last answer can miss what it allocated
        samples, burst_over = [base], threading.Event()

        def sample():
            while not burst_over.wait(0.005):
                samples.append(rss_mb(proc.pid))

        sampler = threading.Thread(target=sample)
        sampler.start()
        try:
            with ThreadPoolExecutor(6) as pool:
                assert all(pool.map(get, queries))
        finally:
            burst_over.set()
            sampler.join()
        done = time.monotonic()
        peak = max(samples + [rss_mb(proc.pid)])
        # the server's trim begun after the last answer (lines before it: trims during the
        # burst, which under load can begin while slow requests are still being answered)
        deadline = time.monotonic() + 30
        while True:
            assert time.monotonic() < deadline, "the server never trimmed after the burst"
            line = proc.stdout.readline().split()
            if line and line[0] == "trimmed" and float(line[1]) > done:
                break
        proc.send_signal(signal.SIGUSR1)
        line = proc.stdout.readline().split()
        while line and line[0] == "trimmed":
            line = proc.stdout.readline().split()
        assert line[0] == "probe"
        before, after = float(line[1]), float(line[2])
        assert peak - base > 20 or before - base > 20, (base, peak)  # it did allocate
        assert before - after < 8, f"a trim still freed {before - after:.0f} MB " \
                                   f"(base {base:.0f}, after the burst {peak:.0f} MB)"
    finally:
        proc.terminate()
        proc.wait(30)
        proc.stdout.close()


def test_idle_trim_sleeps_until_a_request_and_trims_once(tmp_path):
    """The trimming thread does nothing until touched, trims once per quiet moment, never on
    a schedule of its own (an idle server does no periodic work)."""
    trim = expman._IdleTrim(delay=0.05, longest=1.0)
    assert trim.thread is None and trim.trims == 0
    for _ in range(5):
        trim.touch()
    wait_for(lambda: trim.trims == 1, timeout=10)
    time.sleep(0.3)  # noqa: checking that nothing more happens while nothing is asked
    assert trim.trims == 1 and trim.due is None
    trim.touch()
    wait_for(lambda: trim.trims == 2, timeout=10)
