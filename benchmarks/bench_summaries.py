"""Chart summaries and a bounded server (issue 13 items 3 and 5, metrics): first chart of a
5M- and a 100M-row run, zoom, and the server's peak and settled RSS on 50 runs x 1M steps x
3 metrics, for two versions of expman.py side by side in one invocation.

    python benchmarks/bench_summaries.py --before /tmp/main --data /tmp/summ_bench
    python benchmarks/bench_summaries.py --quick          # small data, a smoke run
    python benchmarks/bench_summaries.py --live --before /tmp/main --data DIR   # live runs

--live: the same charts of runs still being logged: a 5M-step run and 50 x 1M, in the
segments a writer logging 20 rows a flush leaves (live_layout: tiers of 16), with the
summaries of their big segments (metrics.summary/) made by this expman.py's writer code.

--before DIR: a directory holding the other expman.py (e.g. `git show main:expman.py`);
without it only this worktree's is measured. The data is generated straight into the run
layout with pyarrow (metrics.parquet as compaction writes it: row groups of 65,536 rows and
the "expman.rows" record; run.yaml, config.yaml), not logged: logging 150M rows would take
far longer than measuring them. The chart summaries are then built by this expman.py exactly
as close() builds them (_SegmentLog.compact on the closed run), and that build is timed.
Both servers see the same files (the old one ignores metrics.summary.parquet). Each server is
its own process, so RSS (VmRSS; VmHWM for the peak) is the server's alone.
"""
import argparse
import concurrent.futures
import json
import os
import statistics
import subprocess
import sys
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, REPO)
sys.path.insert(0, HERE)
import expman  # noqa: E402
from _harness import proc_status  # noqa: E402

KEYS = ("train/loss", "train/acc", "lr")


def load():
    return os.getloadavg()


def write_run(root, exp, run, rows, keys, seed):
    """One closed run written with pyarrow, as expman's compaction leaves it."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq
    path = os.path.join(root, exp, run)
    if os.path.exists(os.path.join(path, "run.yaml")):
        return path, False
    os.makedirs(path, exist_ok=True)
    rng = np.random.default_rng(seed)
    fields = [("step", pa.int64()), ("timestamp", pa.timestamp("us", tz="UTC"))]
    fields += [(k, pa.float64()) for k in keys]
    schema = pa.schema(fields).with_metadata({b"expman.rows": f"0 {rows}".encode()})
    t0 = 1_700_000_000_000_000
    chunk = 1 << 20
    tmp = os.path.join(path, "metrics.parquet.tmp")
    with pq.ParquetWriter(tmp, schema, compression="snappy", use_dictionary=False) as w:
        walk = 0.0
        for start in range(0, rows, chunk):
            n = min(chunk, rows - start)
            i = np.arange(start, start + n, dtype=np.int64)
            cols = [pa.array(i), pa.array(t0 + i * 1000).cast(pa.timestamp("us", tz="UTC"))]
            for j, _k in enumerate(keys):
                if j == 0:
                    v = 1.0 / (1.0 + i / 10_000) + rng.normal(0, 0.01, n)
                    v[rng.integers(0, n, 3)] = 50.0  # spikes the chart must keep
                elif j == 1:
                    v = np.cos(i / 5_000.0) + rng.normal(0, 0.02, n)
                    v[(i % 250_000) < 40] = np.nan  # gaps the chart must keep
                else:
                    v = walk + np.cumsum(rng.normal(0, 1e-3, n))
                    walk = float(v[-1])
                cols.append(pa.array(v))
            w.write_table(pa.Table.from_arrays(cols, schema=schema), row_group_size=65_536)
    os.replace(tmp, os.path.join(path, "metrics.parquet"))
    with open(os.path.join(path, "config.yaml"), "w") as fh:
        fh.write(f"seed: {seed}\n")
    with open(os.path.join(path, "run.yaml"), "w") as fh:
        fh.write(f"name: '{run}'\nexperiment: '{exp}'\nstatus: finished\n"
                 f"started_at: '2026-12-01T00:00:00+00:00'\n"
                 f"finished_at: '2026-12-01T10:00:00+00:00'\nduration_secs: 36000.0\n"
                 f"rows: {rows}\nlast_step: {rows - 1}\n")
    return path, True


def live_layout(rows, per_flush=20):
    """The (start, end) segments a live writer leaves after `rows` rows logged `per_flush`
    rows a flush (default: 40 steps/s at the 500 ms flush): _SegmentLog.merge's tiers."""
    segs = []
    for start in range(0, rows, per_flush):
        segs.append([start, min(rows, start + per_flush), 0])
        while len(segs) >= 16 and len({t for _s, _e, t in segs[-16:]}) == 1:
            group = segs[-16:]
            first, last, tier = group[0][0], group[-1][1], group[0][2]
            if tier < 0 or last - first > 2_000_000:
                for seg in group:
                    seg[2] = -1
                break
            del segs[-16:]
            segs.append([first, last, tier + 1])
    return [(a, b) for a, b, _t in segs]


def write_live_run(root, exp, run, rows, keys, seed):
    """One run still being logged: the segments (metrics/) a live writer leaves after `rows`
    rows (live_layout), the values of write_run, and the summaries of its big segments made
    by this expman.py's writer code (_SegmentLog._summarize_segment, from each segment's rows;
    a real writer builds most from the parts' summaries). (path, seconds the summaries took,
    or None when the run was there already)."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    path = os.path.join(root, exp, run)
    if os.path.exists(os.path.join(path, "run.yaml")):
        return path, None
    closed, _ = write_run(os.path.join(root, ".tmp-live"), exp, run, rows, keys, seed)
    table = pq.read_table(os.path.join(closed, "metrics.parquet"))
    seg_dir = os.path.join(path, "metrics")
    os.makedirs(seg_dir, exist_ok=True)
    for start, end in live_layout(rows):
        part = table.slice(start, end - start).replace_schema_metadata(
            {b"expman.rows": f"{start} {end}".encode()})
        pq.write_table(part, os.path.join(seg_dir, expman._segment_name(start, end)),
                       compression="snappy", use_dictionary=False, row_group_size=1 << 20)
    del table
    t = time.perf_counter()
    log = expman._SegmentLog.metrics(expman._LOCAL_STORE, path)
    for start, end in live_layout(rows):
        log._summarize_segment(start, end)
    took = time.perf_counter() - t
    for name in ("config.yaml",):
        os.replace(os.path.join(closed, name), os.path.join(path, name))
    with open(os.path.join(closed, "run.yaml")) as fh:
        meta = fh.read().replace("status: finished", "status: running")
    with open(os.path.join(path, "run.yaml"), "w") as fh:
        fh.write(meta)
    import shutil
    shutil.rmtree(closed)
    return path, took


def make_live_data(data, quick):
    """A 5M-step run and 50 x 1M-step runs, live (in segments)."""
    scale = 100 if quick else 1
    t = time.perf_counter()
    one, b1 = write_live_run(data, "live_one", "r", 5_000_000 // scale, KEYS, 1)
    fifty = [write_live_run(data, "live_fifty", f"r{i:02d}", 1_000_000 // scale, KEYS, 100 + i)
             for i in range(50)]
    builds = [b for _p, b in fifty if b is not None]
    print(f"live data in {data}: made in {time.perf_counter() - t:.1f}s; segment summaries "
          f"(from rows) 5M run {b1 or 0:.1f}s, 1M runs {sum(builds):.1f}s in all "
          f"(0: cached); {len(os.listdir(os.path.join(one, 'metrics')))} segments and "
          f"{len(os.listdir(os.path.join(one, expman.SUMMARY_DIR)))} segment summaries in the "
          f"5M run; load {load()}", flush=True)


def summarize(path):
    """Build the chart summary as close() does; seconds it took (0 when already there)."""
    if os.path.exists(os.path.join(path, expman.SUMMARY_FILE)):
        return 0.0
    t = time.perf_counter()
    expman._SegmentLog.metrics(expman._LOCAL_STORE, path).compact()
    assert os.path.exists(os.path.join(path, expman.SUMMARY_FILE)), path
    return time.perf_counter() - t


def make_data(data, quick):
    scale = 100 if quick else 1
    t = time.perf_counter()
    made = {"one": [], "fifty": [], "huge": []}
    builds = {}
    one, _ = write_run(data, "one", "r", 5_000_000 // scale, KEYS, 1)
    fifty = [write_run(data, "fifty", f"r{i:02d}", 1_000_000 // scale, KEYS, 100 + i)[0]
             for i in range(50)]
    huge, _ = write_run(data, "huge", "r", 100_000_000 // scale, KEYS[:1], 7)
    write_run(data, "warm", "r", 10_000, KEYS[:1], 3)  # a small chart that warms a server up
    gen = time.perf_counter() - t
    builds["one"] = summarize(one)
    builds["fifty"] = [summarize(p) for p in fifty]
    builds["huge"] = summarize(huge)
    made.update(one=one, fifty=fifty, huge=huge)
    return made, gen, builds


class Server:
    """`expman serve` of one expman.py in its own process."""

    def __init__(self, code_dir, root):
        script = ("import sys; sys.path.insert(0, sys.argv[1]); import expman; "
                  "s = expman.make_server(sys.argv[2], port=0); print(s.url, flush=True); "
                  "s.run()")
        self.proc = subprocess.Popen([sys.executable, "-c", script, code_dir, root],
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                     text=True)
        self.url = self.proc.stdout.readline().strip()
        deadline = time.monotonic() + 60
        while True:
            try:
                get(self.url + "/api/health")
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def warm(self):
        """RSS once the server has served a page: the runs list and one small chart (the
        first one loads pyarrow and its kernels, paid once per process whatever the data)."""
        get(self.url + "/api/experiments")
        get(self.url + "/api/experiments/warm/runs/r/metrics?since=0&max_points=2000")
        return self.rss()[0]

    def rss(self):
        st = proc_status(self.proc.pid)
        return st.get("VmRSS", 0) / 2**20, st.get("VmHWM", 0) / 2**20

    def settle(self, secs=10.0):
        """RSS after the requests stop: sampled each second for secs, the last sample."""
        out = []
        for _ in range(int(secs)):
            time.sleep(1.0)  # sampling interval of an idle server, not a wait for a result
            out.append(self.rss()[0])
        return out[-1]

    def close(self):
        self.proc.terminate()
        self.proc.wait(10)


def get(url, timeout=600):
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return json.loads(resp.read())


def timed(url, timeout=600):
    t = time.perf_counter()
    try:
        data = get(url, timeout)
    except Exception as exc:  # noqa: BLE001 - a timeout is a result here
        return time.perf_counter() - t, f"{type(exc).__name__}"
    return time.perf_counter() - t, data


def bench_one(code_dir, root, exp, rows, timeout):
    """First chart (every key, as the page asks), warm repeats, zooms to 1% of the steps."""
    s = Server(code_dir, root)
    try:
        base = s.rss()[0]
        warm = s.warm()
        url = f"{s.url}/api/experiments/{exp}/runs/r/metrics?since=0&max_points=2000"
        first, data = timed(url, timeout)
        if isinstance(data, str):
            return {"first_s": first, "error": data, "peak_mb": s.rss()[1], "base_mb": base,
                    "warm_mb": warm, "load": load()}
        points = sum(len(v["step"]) for v in data["series"].values())
        again = [timed(url, timeout)[0] for _ in range(3)]
        zoom = []
        key = urllib.request.quote(list(data["series"])[0], safe="")
        for i in range(5):
            lo = (2 * i + 1) * rows // 11
            zoom.append(timed(f"{s.url}/api/experiments/{exp}/runs/r/metrics?keys={key}&since=0"
                              f"&max_points=2000&x_min={lo}&x_max={lo + rows // 100}", timeout)[0])
        peak = s.rss()[1]
        return {"first_s": first, "again_s": statistics.median(again),
                "zoom_s": statistics.median(zoom), "points": points, "base_mb": base,
                "warm_mb": warm,
                "peak_mb": peak, "settled_mb": s.settle(), "load": load()}
    finally:
        s.close()


def bench_fifty(code_dir, root, timeout, exp="fifty"):
    """All 50 runs asked at once, four at a time (the page's limit), as selecting all does."""
    s = Server(code_dir, root)
    try:
        base = s.rss()[0]
        warm = s.warm()
        urls = [f"{s.url}/api/experiments/{exp}/runs/r{i:02d}/metrics?since=0&max_points=2000"
                for i in range(50)]
        t = time.perf_counter()
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            results = list(pool.map(lambda u: timed(u, timeout), urls))
        total = time.perf_counter() - t
        errors = len([r[1] for r in results if isinstance(r[1], str)])
        peak = s.rss()[1]
        return {"all_s": total, "slowest_s": max(r[0] for r in results), "errors": errors,
                "base_mb": base, "warm_mb": warm, "peak_mb": peak, "settled_mb": s.settle(),
                "load": load()}
    finally:
        s.close()


def fmt(result):
    return json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in result.items()})


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="/tmp/summ_bench", help="generated runs (reused)")
    parser.add_argument("--before", help="directory of the other expman.py to compare")
    parser.add_argument("--after", default=REPO, help="directory of this expman.py (default: "
                        "the repository's; a copy keeps a long run apart from edits)")
    parser.add_argument("--quick", action="store_true", help="1/100 of the data")
    parser.add_argument("--skip-huge-before", action="store_true",
                        help="do not ask the old version for the 100M-row chart")
    parser.add_argument("--skip-huge", action="store_true", help="no 100M-row chart at all")
    parser.add_argument("--timeout", type=float, default=300.0)
    parser.add_argument("--live", action="store_true", help="only the live runs: a 5M-step "
                        "run and 50 x 1M, still in segments (metrics/ + metrics.summary/)")
    args = parser.parse_args()
    data = args.data + ("-quick" if args.quick else "")
    if args.quick:  # runs this small get no summary otherwise
        expman.SUMMARY_MIN_ROWS = 1
    print(f"load average {load()}", flush=True)
    versions = [("after", args.after)] + ([("before", args.before)] if args.before else [])
    scale = 100 if args.quick else 1
    if args.live:
        if args.quick:
            expman.SEGMENT_SUMMARY_MIN_ROWS = 1 << 10
        make_live_data(data, args.quick)
        write_run(data, "warm", "r", 10_000, KEYS[:1], 3)
        for label, code in versions:
            print(f"[{label}] live 5M run: "
                  f"{fmt(bench_one(code, data, 'live_one', 5_000_000 // scale, args.timeout))}",
                  flush=True)
        for label, code in versions:
            print(f"[{label}] live 50 x 1M x 3: "
                  f"{fmt(bench_fifty(code, data, args.timeout, 'live_fifty'))}", flush=True)
        return
    made, gen, builds = make_data(data, args.quick)
    print(f"data in {data}: generated in {gen:.1f}s; summaries built in "
          f"one {builds['one']:.1f}s, fifty {sum(builds['fifty']):.1f}s in all "
          f"(max {max(builds['fifty']):.2f}s), huge {builds['huge']:.1f}s "
          f"(0: cached); load {load()}", flush=True)
    sizes = {}
    for name in ("one", "huge"):
        p = made[name]
        sizes[name] = (os.path.getsize(os.path.join(p, "metrics.parquet")),
                       os.path.getsize(os.path.join(p, expman.SUMMARY_FILE)))
    print(f"file sizes (metrics, summary) bytes: {sizes}", flush=True)
    for label, code in versions:
        print(f"[{label}] 5M run: {fmt(bench_one(code, data, 'one', 5_000_000 // scale, args.timeout))}",
              flush=True)
    for label, code in versions:
        print(f"[{label}] 50 x 1M x 3: {fmt(bench_fifty(code, data, args.timeout))}", flush=True)
    for label, code in versions:
        if args.skip_huge or (label == "before" and args.skip_huge_before):
            continue
        print(f"[{label}] 100M run: "
              f"{fmt(bench_one(code, data, 'huge', 100_000_000 // scale, args.timeout))}",
              flush=True)


if __name__ == "__main__":
    main()
