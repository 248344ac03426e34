"""Faults survived, nothing lost: real processes killed with SIGKILL at random moments, damaged
files, a filesystem that fills up or turns read-only, many writers at once, and the server
under load. Every wait polls with a deadline; child processes are killed on the way out.

The random kill loop prints its seed; rerun one with EXPMAN_KILL_SEED=<seed>, or soak it with
EXPMAN_KILL_ITERATIONS=500.
"""
import collections
import concurrent.futures
import csv
import errno
import http.client
import json
import os
import random
import re
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import warnings

import pyarrow.parquet as pq
import pytest
import yaml

import expman
from _util import Child, wait_for


def make(root, name="exp", **kwargs):
    kwargs.setdefault("flush_interval_ms", 20)
    kwargs.setdefault("capture_git", False)
    return expman.Experiment(name, base_dir=root, **kwargs)


def cli(capsys, *argv):
    rc = expman.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def get(url, timeout=30):
    """(status, body) of a GET; HTTP errors are answers too."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def get_json(url):
    status, body = get(url)
    assert status == 200, (url, status, body[:300])
    return json.loads(body)


@pytest.fixture
def server(root):
    srv = expman.make_server(root, port=0)
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    yield srv
    srv.close()
    thread.join(10)


# -- SIGKILL at random moments -----------------------------------------------------------------

KILL_ITERATIONS = int(os.environ.get("EXPMAN_KILL_ITERATIONS") or 30)   # more: a soak run
ARGV4 = "sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])"
KILL_CHILD = r"""
import os, sys, expman
root, every, fan_in, close_at = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
expman.SEGMENT_FAN_IN = fan_in       # small: merges happen within a few flushes, kills hit them
exp = expman.Experiment("crashy", base_dir=root, flush_interval_ms=5, heartbeat_secs=0.05,
                        capture_git=False, config={"every": every})
print("ready", exp.run_name, flush=True)
i = 0
while True:
    exp.log_metrics({"i": i, "half": i / 2, "later": 1.0} if i > 100 else {"i": i})
    i += 1
    if i % 37 == 0:
        exp.info(f"row {i}")
    if i % every == 0:
        exp.flush()                  # returns once every row so far is on disk
        print("flushed", i, flush=True)
    if i == close_at:
        print("closing", i, flush=True)
        exp.close()                  # the kill may land inside the final compaction
        print("closed", i, flush=True)
        break
"""


def _flushed(lines):
    """Rows the child had on disk before it died: the largest count it printed."""
    # a kill can cut a line short ("flushed 1" of "flushed 150"): that only undercounts
    counts = [int(m.group(2)) for m in map(re.compile(r"^(flushed|closed) (\d+)$").match, lines)
              if m]
    return max(counts, default=0)


@pytest.mark.slow
def test_sigkill_at_random_moments_loses_no_flushed_row(root, tmp_path, server, capsys):
    seed = int(os.environ.get("EXPMAN_KILL_SEED") or random.randrange(1 << 30))
    with capsys.disabled():
        print(f"\nkill loop seed: {seed}")
    rnd = random.Random(seed)
    with make(root, "crashy", run_name="neighbour") as neighbour:   # a finished run beside
        for i in range(50):
            neighbour.log_metrics({"i": i})
    crashed = []
    started = time.monotonic()
    for it in range(KILL_ITERATIONS):
        every = rnd.choice([1, 7, 50, 200])
        target = rnd.choice([0, 1, 3, 10, 40, 100])          # flushes to wait for, 0: at once
        close_at = rnd.choice([0, 0, 0, every * (target + 1)])  # sometimes die while closing
        fan_in = rnd.choice([2, 3, 16])
        child = Child(KILL_CHILD.replace(ARGV4, f"{str(root)!r}, {every}, {fan_in}, {close_at}"),
                      cwd=tmp_path)
        try:
            # any line, not the last: init() now returns with the writer ready, so "flushed"
            # lines can follow "ready" before this poll sees it
            run_name = wait_for(lambda: next((l for l in list(child.lines)
                                               if l.startswith("ready")), None),
                                timeout=30).split()[1]
            if close_at:
                child.wait_line(lambda l: l.startswith(("closing", "closed")), timeout=30)
            elif target:
                child.wait_line(lambda l: l.startswith("flushed")
                                and int(l.split()[1]) >= target * every, timeout=30)
            time.sleep(rnd.uniform(0, 0.02))   # jitter: the kill moment itself is the variable
            child.proc.kill()
            child.wait()
        finally:
            child.kill()
        flushed = _flushed(child.lines)
        run = root / "crashy" / run_name
        crashed.append((run_name, flushed))
        with warnings.catch_warnings(record=True) as rec:
            warnings.simplefilter("always")
            meta = expman.load_run(run)
            data = expman.load_metrics(run).to_pydict()
        assert not rec, [str(w.message) for w in rec]        # nothing half-written is read
        n = len(data["step"])
        info = f"iteration {it} (seed {seed}): {run_name} flushed {flushed}, read {n}"
        assert n >= flushed, info
        assert data["step"] == list(range(n)), info
        assert data.get("i", []) == [float(i) for i in range(n)], info
        if any(line.startswith("closed") for line in child.lines):
            assert meta["status"] == "finished" and n == close_at, info
        elif close_at and meta["status"] == "finished":   # killed after close() was done
            assert n == close_at, info
        else:
            assert meta["status"] == "crashed", info
            assert meta["recorded_status"] == "running", info
        assert meta["config"] == {"every": every}, info

        # the CLI on it and on the whole experiment
        rc, out, err = cli(capsys, "inspect", run, "--json")
        assert rc == 0 and "Traceback" not in err, info + err
        assert json.loads(out)["status"] == meta["status"]
        out_csv = tmp_path / f"export{it}.csv"
        rc, _, err = cli(capsys, "export", run, "-o", out_csv)
        if n == 0:   # no rows: an error naming the run, no file (issue 15 item 6)
            assert rc == 1 and "no metric rows" in err and run_name in err, info + err
            assert not out_csv.exists(), info
        else:
            assert rc == 0, info + err
            with open(out_csv, newline="") as fh:
                assert len(list(csv.reader(fh))) == n + 1, info
        rc, out, err = cli(capsys, "list", root, "-e", "crashy", "--json")
        assert rc == 0, info + err
        listed = {r["name"]: r for r in json.loads(out)["runs"]}
        assert set(listed) == {"neighbour"} | {name for name, _ in crashed}, info
        assert listed["neighbour"]["status"] == "finished"

        # the dashboard's API on it and on its neighbour
        base = f"{server.url}/api/experiments/crashy/runs"
        rows = {r["name"]: r for r in get_json(base)["runs"]}
        assert rows[run_name]["status"] == meta["status"] and rows["neighbour"]["rows"] == 50
        for name, count in ((run_name, n), ("neighbour", 50)):
            metrics = get_json(f"{base}/{name}/metrics")
            assert metrics["rows"] == count, info
            get_json(f"{base}/{name}/log")
            assert get_json(f"{base}/{name}/metadata")["name"] == name
    elapsed = time.monotonic() - started
    with capsys.disabled():
        print(f"{KILL_ITERATIONS} kills in {elapsed:.1f}s")
    assert any(flushed for _, flushed in crashed)   # the loop did kill runs that had data
    rc, out, err = cli(capsys, "list", root)
    assert rc == 0 and "crashy" in out and "Traceback" not in err



# -- SIGKILL inside close()'s compaction, then `expman reap --compact` --------------------------

CLOSE_CHILD = r"""
import os, signal, sys, expman
root, rows, kill_after = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
expman.SEGMENT_FAN_IN = 10 ** 6      # no merges: close() has many segments to compact and delete
if kill_after < 0:
    # The random variant: deletes as slow as on a network filesystem (1 ms), so that random
    # kills land inside the deletions too, not only before them (local unlinks take ~10 us)
    import time
    real_delete = expman._LocalStore.delete
    def delete(self, path):
        time.sleep(0.001)
        real_delete(self, path)
    expman._LocalStore.delete = delete
elif kill_after:
    # The deterministic variant: the real delete runs, then the process dies at once (a real
    # SIGKILL, no seam in expman): the kill lands exactly after the kill_after-th deletion.
    deletes, real_delete = [0], expman._LocalStore.delete
    def delete(self, path):
        real_delete(self, path)
        if os.path.basename(path).startswith("seg-"):
            deletes[0] += 1
            if deletes[0] == kill_after:
                os.kill(os.getpid(), signal.SIGKILL)
    expman._LocalStore.delete = delete
exp = expman.Experiment("crashy", base_dir=root, flush_interval_ms=10 ** 6, capture_git=False)
print("ready", exp.run_name, flush=True)
for i in range(rows):
    exp.log_metrics({"i": i})
    exp.log_histogram("h", [float(i), 1.0, 2.0], step=i) if i % 50 == 0 else None
    if i % 10 == 9:
        exp.flush()                  # one metrics segment (and a histogram segment) each
print("closing", flush=True)
exp.close()
print("closed", flush=True)
"""


def _kill_in_close(root, tmp_path, rows, kill_after, delay=None):
    """Run CLOSE_CHILD, kill it in close() (at kill_after deletions, or `delay` seconds after
    it starts closing); return the run directory."""
    child = Child(CLOSE_CHILD.replace("sys.argv[1], int(sys.argv[2]), int(sys.argv[3])",
                                      f"{str(root)!r}, {rows}, {kill_after}"), cwd=tmp_path)
    try:
        run_name = child.wait_line(lambda l: l.startswith("ready"), timeout=30).split()[1]
        if kill_after > 0:
            assert child.wait(timeout=60) == -signal.SIGKILL, child.stderr
        else:
            child.wait_line(lambda l: l.startswith(("closing", "closed")), timeout=60)
            time.sleep(delay)   # the kill moment is the variable under test, not a wait
            child.proc.kill()
            child.wait()
    finally:
        child.kill()
    return root / "crashy" / run_name, child


def _reap_and_check(run, rows, capsys, every=50, histograms=None):
    """Every row and histogram (one each `every` steps: `histograms` of them, by default
    one for each such step of the rows) is readable before and after `expman reap
    --compact`; returns what the reap printed."""
    histograms = len(range(0, rows, every)) if histograms is None else histograms
    for when in ("before reap", "after reap"):
        with warnings.catch_warnings(record=True) as rec:
            warnings.simplefilter("always")
            data = expman.load_metrics(run).to_pydict()
            hist = expman.read_histograms(run)
        assert not rec, (when, [str(w.message) for w in rec])
        assert data["step"] == list(range(rows)), (when, len(data["step"]))
        assert data["i"] == [float(i) for i in range(rows)], when
        assert hist.column("step").to_pylist() == list(range(0, every * histograms, every)), when
        if when == "before reap":
            rc, out, err = cli(capsys, "reap", run, "--compact", "--stale", "0", "--force")
            assert rc == 0 and "Traceback" not in err, out + err
            printed = out
            recorded = yaml.safe_load((run / "run.yaml").read_text())["status"]
            assert recorded in ("crashed", "finished"), out   # reaped, or closed before
    assert not (run / "metrics").exists() and not (run / "histograms").exists(), (
        out, os.listdir(run / "metrics") if (run / "metrics").exists() else None)
    assert pq.ParquetFile(run / "metrics.parquet").metadata.num_rows == rows
    if histograms:
        assert pq.ParquetFile(run / "histograms.parquet").metadata.num_rows == histograms
    else:   # none was flushed
        assert not (run / "histograms.parquet").exists()
    # reaping again changes nothing
    rc, out, err = cli(capsys, "reap", run, "--compact", "--stale", "0", "--force")
    assert rc == 0
    assert expman.load_metrics(run).column("step").to_pylist() == list(range(rows))
    return printed


# of 100 metrics + 20 histogram segments; 100 and 120: every segment of a folder deleted, the
# empty folder not yet
@pytest.mark.parametrize("kill_after", [1, 2, 50, 99, 100, 105, 120])
def test_sigkill_after_the_nth_segment_delete_of_close_then_reap_loses_nothing(
        root, tmp_path, capsys, kill_after):
    """Issue 20 #1: killed right after close() deleted its first segment(s), then `reap
    --compact` overwrote the complete metrics.parquet with the leftovers (1000 -> 990, 980
    and 500 rows for the first three kill points before the fix). Killed after a folder's
    last segment went, reap left the empty folder behind (found by the random-kill test,
    seed 639865605)."""
    run, child = _kill_in_close(root, tmp_path, 1000, kill_after)
    assert "closed" not in child.lines
    left = "metrics" if kill_after <= 100 else "histograms"
    assert (run / f"{left}.parquet").exists() and (run / left).exists()  # mid-clean-up
    printed = _reap_and_check(run, 1000, capsys)
    # what was compacted, said of the file it went into: the histograms' 20 segments when
    # close died before them; nothing when only a finished compaction's leftovers remained
    compacted = "20 segments compacted into histograms.parquet" if left == "metrics" else None
    assert (compacted in printed if compacted else "compacted" not in printed), printed
    assert "compacted into metrics.parquet" not in printed, printed


JOIN_KILL_CHILD = r"""
import os, signal, expman
root, kill_at = ROOT, KILL_AT
# A real SIGKILL once close's byte-level join of the segments has written kill_at pieces of
# metrics.parquet (at its temp name): the pieces are the join's own, no seam in expman.
real_write = expman._pq_write
def pq_write(store, path, pieces):
    def cut():
        final = path.endswith("metrics.parquet")
        for i, piece in enumerate(pieces):
            if i == kill_at and final:
                os.kill(os.getpid(), signal.SIGKILL)
            yield piece
        if kill_at < 0 and final:   # every piece written, the rename not yet made
            os.kill(os.getpid(), signal.SIGKILL)
    return real_write(store, path, cut())
expman._pq_write = pq_write
exp = expman.Experiment("crashy", base_dir=root, flush_interval_ms=10 ** 6, capture_git=False)
print("ready", exp.run_name, flush=True)
for i in range(3000):
    exp.log_metrics({"i": i, **({"odd": -i} if i % 2 else {})})
    if i % 10 == 9:
        exp.flush()                  # 300 segments, merged in tiers of 16 while the run is live
print("closing", flush=True)
exp.close()
print("closed", flush=True)
"""


@pytest.mark.parametrize("kill_at", [1, 2, -1])  # pieces: PAR1, the row group, the footer
def test_sigkill_inside_the_byte_join_of_close_then_reap_loses_nothing(
        root, tmp_path, capsys, kill_at):
    """Close joins the segments byte for byte into metrics.parquet; killed at any piece of
    that join, the file never appears half-written, the segments still hold every row, and
    `reap --compact` finishes the run."""
    run = killed_in_the_join(JOIN_KILL_CHILD.replace("ROOT", repr(str(root)))
                             .replace("KILL_AT", str(kill_at)), root, tmp_path)
    reap_finishes_the_join(run, 3000, capsys)


def child_to_its_end(code, tmp_path, timeout):
    """Run a child script that prints "ready <run name>" to its end (or its kill); (run
    name, exit code, the child)."""
    child = Child(code, cwd=tmp_path)
    try:
        rc = child.wait(timeout=timeout)
    finally:
        child.kill()
    ready = [line for line in child.lines if line.startswith("ready ")]
    assert ready, (rc, child.lines[-5:], child.stderr)
    return ready[0].split()[1], rc, child


def killed_in_the_join(code, root, tmp_path):
    """Run a JOIN_KILL_CHILD script to its SIGKILL inside close's join; the run's folder,
    checked to hold its segments and no metrics.parquet."""
    run_name, code, child = child_to_its_end(code, tmp_path, 120)
    run = root / "crashy" / run_name
    assert code == -signal.SIGKILL, child.stderr
    assert not (run / "metrics.parquet").exists() and (run / "metrics").exists()
    return run


def reap_finishes_the_join(run, rows, capsys):
    """Every one of the killed run's rows reads back before and after `reap --compact`,
    which leaves one metrics.parquet of them all and no segments."""
    expect_odd = [float(-i) if i % 2 else None for i in range(rows)]
    for when in ("before reap", "after reap"):
        data = expman.load_metrics(run).to_pydict()
        assert data["step"] == list(range(rows)), when
        assert data["i"] == [float(i) for i in range(rows)], when
        assert data["odd"] == expect_odd, when
        if when == "before reap":
            rc, out, err = cli(capsys, "reap", run, "--compact", "--stale", "0", "--force")
            assert rc == 0 and "Traceback" not in err, out + err
    assert not (run / "metrics").exists()
    assert pq.ParquetFile(run / "metrics.parquet").metadata.num_rows == rows


@pytest.mark.slow
def test_sigkill_at_random_moments_of_close_then_reap_loses_nothing(root, tmp_path, capsys):
    seed = int(os.environ.get("EXPMAN_KILL_SEED") or random.randrange(1 << 30))
    with capsys.disabled():
        print(f"\nclose kill seed: {seed}")
    rnd = random.Random(seed)
    outcomes = collections.Counter()
    for it in range(max(8, KILL_ITERATIONS // 2)):
        rows = rnd.choice([1000, 2000, 3000])
        # close() of 100-300 segments: ~0.1-0.3 s compacting, then 0.1-0.3 s deleting
        run, child = _kill_in_close(root, tmp_path, rows, -1, delay=rnd.uniform(0, 0.5))
        left = sorted(os.listdir(run / "metrics")) if (run / "metrics").exists() else []
        final = (run / "metrics.parquet").exists()
        outcomes["closed" if "closed" in child.lines else "mid-delete" if final and left else
                 "before-final" if left else "after-delete"] += 1
        try:
            _reap_and_check(run, rows, capsys)
        except AssertionError as exc:
            raise AssertionError(f"iteration {it} (seed {seed}), {rows} rows, final file "
                                 f"{final}, {len(left)} segments left") from exc
    with capsys.disabled():
        print(f"close kills: {dict(outcomes)}")
    assert sum(outcomes.values()) >= 8

# -- SIGKILL at every file operation of the writer and of close() -------------------------------

# mode "summaries": compacted with pyarrow, with segment and final chart summaries (the
# child and the reaper both run with these)
SUMMARY_KNOBS = {"SUMMARY_MIN_ROWS": 1, "SEGMENT_SUMMARY_MIN_ROWS": 40,
                 "PLAIN_FINAL_MAX_CELLS": 0, "SUMMARY_MIN_LEVEL": 2}

EVERY_OP_CHILD = r"""
import os, signal, expman
root, rows, kill_at, knobs, phase = __ROOT__, __ROWS__, __KILL_AT__, __KNOBS__, __PHASE__
expman.SEGMENT_FAN_IN = 4            # tiers merged while live: close sees segments of 3 sizes
for name, value in knobs.items():    # mode "summaries": SUMMARY_KNOBS
    setattr(expman, name, value)
# Every change the writer and close() make to the filesystem is one of these calls (a file
# appears by os.replace of its temp name; shutil.rmtree unlinks and rmdirs). Counted from the
# first log call (phase "live": segment writes and merges) or from close(), the process dies
# by a real SIGKILL right before (kill_at[1] "before") or after the kill_at[0]-th of them.
closing, done = [False], [0]
def counted(name):
    real = getattr(os, name)
    def op(*args, **kwargs):
        if not closing[0]:
            return real(*args, **kwargs)
        done[0] += 1
        print("op", done[0], name, flush=True)
        if (done[0], "before") == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
        out = real(*args, **kwargs)
        if (done[0], "after") == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
        return out
    setattr(os, name, op)
for name in ("replace", "rename", "unlink", "remove", "rmdir"):
    counted(name)
exp = expman.Experiment("crashy", base_dir=root, flush_interval_ms=10 ** 6, capture_git=False)
print("ready", exp.run_name, flush=True)
closing[0] = phase == "live"
for i in range(rows):
    exp.log_metrics({"i": i})
    if i % 25 == 0:
        exp.log_histogram("h", [float(i), 1.0, 2.0], step=i)
    if i % 10 == 9:
        exp.flush()                  # a segment each, merged 4 by 4
        print("flushed", i + 1, flush=True)
exp.log_metrics({"i": rows})         # and a row still queued when close starts
print("closing", flush=True)
closing[0] = True
exp.close()
print("closed", flush=True)
"""


def _every_op_child(root, tmp_path, mode, phase, kill_at):
    """Run EVERY_OP_CHILD to its kill (or its end); (run folder, the operations it counted
    before close() began or, in phase "close", in it, the rows it last saw flushed)."""
    code = (EVERY_OP_CHILD.replace("__ROOT__", repr(str(root)))
            .replace("__ROWS__", "200" if phase == "close" else "80")
            .replace("__KILL_AT__", repr(kill_at))
            .replace("__KNOBS__", repr(SUMMARY_KNOBS if mode == "summaries" else {}))
            .replace("__PHASE__", repr(phase)))
    run_name, rc, child = child_to_its_end(code, tmp_path, 60)
    assert rc in (0, -signal.SIGKILL), child.stderr
    lines = child.lines
    if phase == "live" and "closing" in lines:
        lines = lines[:lines.index("closing")]
    flushed = [int(l.split()[1]) for l in lines if l.startswith("flushed ")]
    return (root / "crashy" / run_name, [l.split()[2] for l in lines if l.startswith("op ")],
            flushed[-1] if flushed else 0)


@pytest.mark.slow
@pytest.mark.parametrize("phase, mode", [("close", "plain"), ("close", "summaries"),
                                         ("live", "summaries")])
def test_sigkill_at_every_file_operation_then_reap_leaves_a_closed_run(
        root, tmp_path, capsys, monkeypatch, phase, mode):
    """Not a random moment but every one: the run is killed right after each of its file
    operations in turn (and right before each file it renames into place, which leaves the
    temp file), in close() or while it logs (segment writes and merges, with their chart
    summaries), and each time no flushed row is lost and `reap --compact` leaves exactly what
    a clean close leaves, every row and histogram readable, and the runs list right. The
    random-kill test found a folder left behind in one such window; this walks them all."""
    if mode == "summaries":   # the reaper compacts as the child closes
        for name, value in SUMMARY_KNOBS.items():
            monkeypatch.setattr(expman, name, value)
    clean, ops, _flushed = _every_op_child(root, tmp_path, mode, phase, None)
    want_files = sorted(os.listdir(clean))
    assert {"metrics.parquet", "histograms.parquet"} <= set(want_files), want_files
    assert ("metrics.summary.parquet" in want_files) == (mode == "summaries"), want_files
    assert len(ops) >= 10, ops
    points = [(n, "after") for n in range(1, len(ops) + 1)] + \
        [(n, "before") for n, op in enumerate(ops, 1) if op in ("replace", "rename")]
    # two children at a time (one per core), each run checked in order as its child ends
    pool = concurrent.futures.ThreadPoolExecutor(2)
    try:
        killed = pool.map(lambda p: _every_op_child(root, tmp_path, mode, phase, p), points)
        for point, (run, _ops, flushed) in zip(points, killed):
            try:
                _check_reaped(root, run, phase, point, flushed, want_files, capsys)
            except AssertionError as exc:
                raise AssertionError(f"killed {point[1]} operation {point[0]} "
                                     f"({ops[point[0] - 1]}) of {ops}") from exc
            shutil.rmtree(run)
    finally:
        pool.shutdown(cancel_futures=True)


def _check_reaped(root, run, phase, point, flushed, want_files, capsys):
    """The checks of the every-operation test for one run killed at point (see there)."""
    rows = len(expman.load_metrics(run))
    if phase == "close":
        # killed before close's first operation, the last row never reached the disk (it
        # was in memory; a flushed row is what must never be lost); later all 201 are there
        assert rows == (200 if point == (1, "before") else 201), rows
        histograms = 8
    else:   # what reached the disk: at least every row flushed, in order, from step 0
        histograms = len(expman.read_histograms(run))
        assert rows >= flushed and histograms >= len(range(0, flushed, 25)), (rows, flushed)
    if rows:
        _reap_and_check(run, rows, capsys, every=25, histograms=histograms)
    else:   # killed before the first segment was renamed into place: no row, no file
        rc, out, err = cli(capsys, "reap", run, "--compact", "--stale", "0", "--force")
        assert rc == 0 and "Traceback" not in err, out + err
    left = sorted(os.listdir(run))
    want = [name for name in want_files if not (
        (name.startswith("metrics.") and not rows) or (name == "histograms.parquet"
                                                       and not histograms))]
    assert left == want, left
    listed = {r["name"]: r for r in expman.list_runs(root, "crashy")}[run.name]
    status = yaml.safe_load((run / "run.yaml").read_text())["status"]
    assert listed["status"] == status and listed["rows"] == rows, (listed, status, rows)
    if "metrics.summary.parquet" in left:
        got = expman._open_summary(expman._LocalStore(), str(run / "metrics.parquet"),
                                   str(run / "metrics.summary.parquet"))
        assert got, "the chart summary is missing or does not match metrics.parquet"


# -- half-written and damaged files --------------------------------------------------------------

def closed_run(root, name, rows=30, **kwargs):
    with make(root, run_name=name, **kwargs) as exp:
        for i in range(rows):
            exp.log_metrics({"x": float(i)}, step=i)
        exp.info(f"{name} done")
    return exp.run_dir


def test_truncated_metrics_parquet_warns_and_hides_no_other_run(root, server, capsys):
    good, bad = closed_run(root, "good"), closed_run(root, "bad")
    data = (bad / "metrics.parquet").read_bytes()
    (bad / "metrics.parquet").write_bytes(data[: len(data) // 2])
    with pytest.warns(expman.ExpmanWarning, match="metrics.parquet"):
        assert expman.load_metrics(bad).num_rows == 0
    assert expman.load_metrics(good).num_rows == 30
    assert {r["name"] for r in expman.list_runs(root, "exp")} == {"good", "bad"}
    with pytest.warns(expman.ExpmanWarning):
        table = expman.load_experiment(root, "exp")
    assert table.num_rows == 30 and set(table.column("run").to_pylist()) == {"good"}
    rc, out, err = cli(capsys, "list", root, "-e", "exp")
    assert rc == 0 and "good" in out and "bad" in out
    rc, out, err = cli(capsys, "inspect", bad)
    assert rc == 0 and "metrics.parquet" in err and "Traceback" not in err
    rc, out, err = cli(capsys, "export", bad)
    assert rc == 1 and err.strip().splitlines()[-1].startswith("expman: error:")
    base = f"{server.url}/api/experiments/exp/runs"
    with pytest.warns(expman.ExpmanWarning):
        assert get_json(f"{base}/bad/metrics")["rows"] == 0
    assert get_json(f"{base}/good/metrics")["rows"] == 30
    assert {r["name"] for r in get_json(base)["runs"]} == {"good", "bad"}


def test_zero_byte_metrics_parquet_and_stray_temp_files(root, server, capsys):
    run = closed_run(root, "r")
    closed_run(root, "other")
    (run / "metrics.parquet").write_bytes(b"")
    # what a kill between write and rename leaves: temp files of every kind
    (run / "run.yaml.tmp-123-456").write_text("name: r\nstatus: runn")
    (run / "config.yaml.tmp-123-456").write_bytes(b"")
    (run / "metrics.parquet.tmp-123-456").write_bytes(b"PAR1\0\0")
    (root / "exp" / "experiment.yaml.tmp-1-2").write_text("name: [")
    (root / "exp" / ".r.tmp").mkdir()
    with pytest.warns(expman.ExpmanWarning, match="metrics.parquet"):
        assert expman.load_metrics(run).num_rows == 0
    assert expman.load_run(run)["status"] == "finished"
    assert {r["name"] for r in expman.list_runs(root, "exp")} == {"r", "other"}
    assert expman.list_artifacts(run) == []
    rc, out, err = cli(capsys, "list", root, "-e", "exp")
    assert rc == 0 and len(out.splitlines()) == 3
    assert get_json(f"{server.url}/api/experiments/exp/runs/other/metrics")["rows"] == 30
    assert get_json(f"{server.url}/api/experiments")["experiments"][0]["runs"] == 2


@pytest.mark.parametrize("damage", ["truncated", "zero", "garbled", "list", "binary"])
def test_damaged_run_yaml_and_config_yaml_never_hide_the_others(root, server, capsys, damage):
    closed_run(root, "good", config={"lr": 0.1})
    bad = closed_run(root, "bad")
    damaged_config = closed_run(root, "badcfg", config={"lr": 0.2})
    text = (bad / "run.yaml").read_text()
    broken = {"truncated": text[: len(text) // 3], "zero": "", "garbled": "a: [b\n  c: : {",
              "list": "- 1\n- 2\n", "binary": "\x00\x01\x02\xff"}[damage]
    (bad / "run.yaml").write_text(broken, errors="surrogateescape")
    (damaged_config / "config.yaml").write_text(broken, errors="surrogateescape")
    rows = {r["name"]: r for r in expman.list_runs(root, "exp")}
    if damage != "truncated":   # a truncated file can still be valid YAML (fewer fields)
        assert rows["bad"]["status"] == "crashed"
    assert rows["good"]["status"] == "finished" and rows["good"]["params"] == {"lr": 0.1}
    assert rows["badcfg"]["status"] == "finished"
    assert expman.load_metrics(bad).num_rows == 30          # the data stays readable
    rc, out, err = cli(capsys, "list", root, "-e", "exp")
    assert rc == 0 and {line.split()[0] for line in out.splitlines()[1:]} == {
        "good", "bad", "badcfg"}, (out, err)
    assert "Traceback" not in err
    for cmd in (["inspect", bad], ["inspect", damaged_config], ["export", bad]):
        rc, out, err = cli(capsys, *cmd)
        assert rc in (0, 1) and "Traceback" not in err and "unexpected" not in err, err
        if rc:
            assert err.strip().startswith("expman: error:") and len(err.strip().splitlines()) \
                == 1, err
    base = f"{server.url}/api/experiments/exp/runs"
    assert {r["name"] for r in get_json(base)["runs"]} == {"good", "bad", "badcfg"}
    for name in ("bad", "badcfg"):
        assert get_json(f"{base}/{name}/metrics")["rows"] == 30
        for route in ("metadata", "config", "log", "artifacts"):
            status, body = get(f"{base}/{name}/{route}")
            assert status in (200, 404, 422, 500), (route, status)
            assert "error" in json.loads(body) or status == 200
            assert b"Traceback" not in body


def test_foreign_fields_in_run_yaml_do_not_break_readers(root, server, capsys):
    """A hand-edited or foreign run.yaml: every field of the wrong type."""
    good, odd = closed_run(root, "good"), closed_run(root, "odd")
    (odd / "run.yaml").write_text(yaml.safe_dump({
        "name": {"a": 1}, "status": "FINISHED", "started_at": 12345, "finished_at": [1],
        "duration_secs": "long", "rows": "many", "last_step": {"x": 1}, "tags": "a,b",
        "description": 42, "summary": [1, 2], "hostname": 7, "pid": "self", "git": "abc",
        "heartbeat_at": None, "heartbeat_secs": "fast", "command": {"x": 1}}))
    rows = {r["name"]: r for r in expman.list_runs(root, "exp")}
    assert set(rows) == {"good", "odd"}
    assert rows["odd"]["status"] == "finished"
    for argv in (["list", root, "-e", "exp"], ["list", root], ["inspect", odd],
                 ["inspect", odd, "--json"], ["list", root, "-e", "exp", "--json"],
                 ["compare", good, odd]):
        rc, out, err = cli(capsys, *argv)
        assert rc == 0, (argv, err)
        assert "Traceback" not in err
    base = f"{server.url}/api/experiments/exp/runs"
    runs = {r["name"]: r for r in get_json(base)["runs"]}
    assert isinstance(runs["odd"]["description"], str)
    assert runs["odd"]["duration_secs"] is None or isinstance(runs["odd"]["duration_secs"],
                                                              (int, float))
    assert isinstance(runs["odd"]["rows"], int)
    get_json(f"{base}/odd/metadata")


# -- disk full / read-only, on a real size-limited filesystem and simulated ----------------------

@pytest.fixture
def small_fs(tmp_path):
    """A 2 MB tmpfs mounted for the test (needs root and mount(8); skipped otherwise)."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    if os.geteuid() != 0 or not shutil.which("mount"):
        pytest.skip("mounting a size-limited tmpfs needs root and mount(8); the simulated "
                    "ENOSPC test below covers the same code paths")
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m,mode=0755", "tmpfs",
                           str(mnt)], capture_output=True, text=True)
    if proc.returncode:
        pytest.skip(f"cannot mount a tmpfs here ({proc.stderr.strip()}); the simulated "
                    f"ENOSPC test below covers the same code paths")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def fill(path):
    """Fill the filesystem of path up to the last byte; returns the filler file."""
    filler = path / "filler"
    with open(filler, "wb", buffering=0) as fh:
        for chunk in (1 << 16, 4096, 512, 1):
            try:
                while True:
                    fh.write(b"\0" * chunk)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC, exc
    return filler


def _messages(rec):
    return [str(w.message) for w in rec if issubclass(w.category, expman.ExpmanWarning)]


@pytest.mark.parametrize("fault", ["full", "readonly"])
def test_real_filesystem_full_or_read_only_mid_run(small_fs, fault):
    root = small_fs / "experiments"
    exp = make(root, "disk", flush_interval_ms=20, heartbeat_secs=0.1)
    big_line = "x" * 3000      # log lines bigger than what is left: appends fail half-way
    try:
        for i in range(100):
            exp.log_metrics({"i": i})
        exp.info("before " + big_line)
        assert exp.flush() is True
        with warnings.catch_warnings(record=True) as rec:
            warnings.simplefilter("always")
            if fault == "full":
                filler = fill(small_fs)
            else:
                subprocess.run(["mount", "-o", "remount,ro", str(small_fs)], check=True)
            for k in range(3):     # log lines alone first: the append itself hits the wall
                exp.info(f"only {k} " + big_line)
            wait_for(lambda: exp._writer.failures >= 1, timeout=30)
            t0 = time.perf_counter()
            for i in range(100, 3100):             # the training loop keeps going, unslowed
                exp.log_metrics({"i": i, "sq": float(i * i)})
                if i % 500 == 0:
                    exp.info(f"during {i} " + big_line)
            logging_secs = time.perf_counter() - t0
            wait_for(lambda: exp._writer.failures >= 3, timeout=30)
            assert exp.flush(timeout=0.3) is False       # honest: not on disk yet
            if fault == "full":
                filler.unlink()
            else:
                subprocess.run(["mount", "-o", "remount,rw", str(small_fs)], check=True)
            assert exp.flush(timeout=60) is True
        messages = _messages(rec)
        cannot = [m for m in messages if "cannot write" in m]
        assert len(cannot) == 1, messages                 # one warning, with the reason
        reason = "No space left on device" if fault == "full" else "Read-only file system"
        assert reason in cannot[0] and "kept in memory" in cannot[0]
        assert logging_secs < 2.0, logging_secs
    finally:
        exp.close()
    data = expman.load_metrics(exp.run_dir).to_pydict()
    assert data["step"] == list(range(3100))
    assert data["i"] == [float(i) for i in range(3100)]
    assert data["sq"][100:] == [float(i * i) for i in range(100, 3100)]
    meta = expman.load_run(exp.run_dir)
    assert meta["status"] == "finished" and meta["rows"] == 3100
    log = (exp.run_dir / "run.log").read_text()
    for line in [f"only {k} " for k in range(3)] + [f"during {i} " for i in range(500, 3100,
                                                                                    500)]:
        assert log.count(line) == 1, (line, log.count(line))   # once, never a torn copy
    assert log.count("x" * 3000) == 1 + 3 + len(range(500, 3100, 500))
    assert "works again" in log
    yaml.safe_load((exp.run_dir / "run.yaml").read_text())


def test_simulated_enospc_at_every_write_call(root, monkeypatch):
    """ENOSPC from every write primitive of the store, then space comes back."""
    exp = make(root, "sim", flush_interval_ms=20, heartbeat_secs=0.05)
    store = exp._store
    full = threading.Event()
    calls = {"n": 0}

    def failing(real):
        def wrapper(path, *args, **kwargs):
            if full.is_set():
                calls["n"] += 1
                raise OSError(errno.ENOSPC, "No space left on device", path)
            return real(path, *args, **kwargs)
        return wrapper

    for method in ("write_atomic", "open_atomic", "append"):
        monkeypatch.setattr(store, method, failing(getattr(store, method)))
    try:
        with warnings.catch_warnings(record=True) as rec:
            warnings.simplefilter("always")
            full.set()
            for i in range(2000):
                exp.log_metrics({"i": i})
                if i % 400 == 0:
                    exp.info(f"line {i}")
                    exp.log_params({f"p{i}": i})
                    exp.log_scalar("last", i)
            wait_for(lambda: exp._writer.failures >= 3, timeout=20)
            assert expman.load_run(exp.run_dir)["status"] == "running"  # run.yaml intact
            full.clear()
            assert exp.flush() is True
        messages = _messages(rec)
        assert sum("cannot write" in m for m in messages) == 1, messages
    finally:
        exp.close()
    assert calls["n"] >= 3
    data = expman.load_metrics(exp.run_dir).to_pydict()
    assert data["i"] == [float(i) for i in range(2000)]
    run = expman.load_run(exp.run_dir)
    assert run["status"] == "finished" and run["summary"]["last"] == 1600.0
    assert run["config"] == {f"p{i}": i for i in range(0, 2000, 400)}
    log = (exp.run_dir / "run.log").read_text()
    assert [log.count(f"line {i}\n") for i in range(0, 2000, 400)] == [1] * 5


# -- many writers --------------------------------------------------------------------------------

N_PROCS, PROC_ROWS = 8, 3000
PROC_CHILD = r"""
import os, sys, time, expman
root, go, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
print("ready", flush=True)
deadline = time.monotonic() + 60
while not os.path.exists(go) and time.monotonic() < deadline:
    time.sleep(0.001)                       # a start line: every process races at once
pid = os.getpid()
exp = expman.Experiment("shared", base_dir=root, run_name="same", flush_interval_ms=10,
                        capture_git=False, config={"pid": pid})
for j in range(n):
    exp.log_metrics({"pid": pid, "j": j, f"own_{pid}": -j})
    if j % 1000 == 0:
        exp.info(f"pid {pid} row {j}")
        exp.log_scalar("pid", pid)
exp.close()
print("done", exp.run_name, flush=True)
"""


def test_eight_processes_log_to_one_experiment_at_once(root, tmp_path):
    go = tmp_path / "go"
    code = PROC_CHILD.replace("sys.argv[1], sys.argv[2], int(sys.argv[3])",
                              f"{str(root)!r}, {str(go)!r}, {PROC_ROWS}")
    children = [Child(code, cwd=tmp_path) for _ in range(N_PROCS)]
    try:
        for child in children:
            child.wait_line(lambda line: line == "ready", timeout=60)
        go.write_text("")
        names = [child.wait_line(lambda l: l.startswith("done"), timeout=120).split()[1]
                 for child in children]
        assert [child.wait() for child in children] == [0] * N_PROCS
    finally:
        for child in children:
            child.kill()
    assert sorted(names) == sorted(["same"] + [f"same_{k}" for k in range(2, N_PROCS + 1)])
    pids = set()
    for name in names:
        run = root / "shared" / name
        meta = expman.load_run(run)
        pid = meta["config"]["pid"]
        pids.add(pid)
        assert meta["status"] == "finished" and meta["pid"] == pid and meta["rows"] == PROC_ROWS
        assert meta["summary"]["pid"] == float(pid)
        data = expman.load_metrics(run).to_pydict()
        assert set(data) == {"step", "timestamp", "pid", "j", f"own_{pid}"}   # no foreign key
        assert data["pid"] == [float(pid)] * PROC_ROWS
        assert data["j"] == [float(j) for j in range(PROC_ROWS)]
        assert data[f"own_{pid}"] == [-float(j) for j in range(PROC_ROWS)]
        log = (run / "run.log").read_text()
        assert log.count("pid ") == 3 and log.count(f"pid {pid} ") == 3
    assert pids == {c.proc.pid for c in children}
    assert yaml.safe_load((root / "shared" / "experiment.yaml").read_text())["name"] == "shared"
    [exp] = expman.list_experiments(root)
    assert exp["runs"] == N_PROCS and exp["status_counts"] == {"finished": N_PROCS}


def test_several_experiments_and_threads_in_one_process(root):
    n_threads, n_rows = 4, 1500
    exps = [make(root, "multi", run_name="m") for _ in range(3)] + [make(root, "solo")]
    start = threading.Barrier(n_threads)
    errors = []

    def work(t):
        try:
            start.wait()
            for j in range(n_rows):
                for e, exp in enumerate(exps):
                    exp.log_metrics({"e": e, "t": t, "j": j, f"t{t}": j})
                if j % 300 == 0:
                    for exp in exps:
                        exp.log_params({f"t{t}": j})
                        exp.info(f"thread {t} row {j}")
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(repr(exc))

    threads = [threading.Thread(target=work, args=(t,)) for t in range(n_threads)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(120)
    for exp in exps:
        exp.close()
    assert not errors, errors
    assert sorted(e.run_name for e in exps[:3]) == ["m", "m_2", "m_3"]
    total = n_threads * n_rows
    for e, exp in enumerate(exps):
        data = expman.load_metrics(exp.run_dir).to_pydict()
        assert data["step"] == list(range(total))
        assert data["e"] == [float(e)] * total                 # no row of another experiment
        pairs = list(zip(data["t"], data["j"]))
        assert sorted(pairs) == sorted((float(t), float(j)) for t in range(n_threads)
                                       for j in range(n_rows))
        for t in range(n_threads):
            assert [j for tt, j in pairs if tt == t] == [float(j) for j in range(n_rows)]
        for i, (t, j) in enumerate(pairs):                      # no row mixes two threads
            assert data[f"t{int(t)}"][i] == j
            assert all(data[f"t{u}"][i] is None for u in range(n_threads) if u != int(t))
        config = expman.load_config(exp.run_dir)
        assert config == {f"t{t}": 1200 for t in range(n_threads)}
        log = (exp.run_dir / "run.log").read_text()
        assert sum(log.count(f"thread {t} row ") for t in range(n_threads)) == n_threads * 5


# -- hostile inputs to log_params and steps (issue 20 items 7, 8, 11) -----------------------------

def test_log_params_with_a_dict_that_refers_to_itself_twice_returns_and_warns(root):
    me = {"lr": 0.1}
    me["a"] = me
    me["b"] = me                    # two self-references: 2**50 expansions before
    shared = [1.0]
    for _ in range(40):             # no cycle, but the same list at every level: 2**40
        shared = [shared, shared]
    with make(root) as exp:
        started = time.monotonic()
        with pytest.warns(expman.ExpmanWarning, match="holds itself"):
            exp.log_params({"model": me, "other": 3})
        with pytest.warns(expman.ExpmanWarning, match="cut"):
            exp.log_params({"dag": shared})
        assert time.monotonic() - started < 10
        exp.log_metrics({"x": 1.0})
    config = expman.load_config(exp.run_dir)
    assert config["model"]["lr"] == 0.1 and config["other"] == 3
    assert config["model"]["a"] == config["model"]["b"] == "<recursive dict>"
    assert expman.load_metrics(exp.run_dir).num_rows == 1       # nothing else lost


def test_log_params_with_an_object_whose_str_raises_never_reaches_the_script(root):
    class Hostile:
        def __str__(self):
            raise RuntimeError("str exploded")

        def __repr__(self):
            raise RuntimeError("repr exploded")

    class StrOnly:
        def __str__(self):
            raise ValueError("nope")

        def __repr__(self):
            return "StrOnly()"

    with make(root) as exp:
        with pytest.warns(expman.ExpmanWarning, match="__str__ raised"):
            exp.log_params({"obj": Hostile(), "other": StrOnly(), Hostile(): 1, "ok": 2,
                            "set": {Hostile(), 3}})
    config = expman.load_config(exp.run_dir)
    assert config["obj"] == "<Hostile>" and config["other"] == "StrOnly()"
    assert config["<Hostile>"] == 1 and config["ok"] == 2 and len(config["set"]) == 2


@pytest.mark.parametrize("flush_between", [False, True], ids=["one-batch", "two-batches"])
def test_an_auto_step_after_the_largest_int64_step_keeps_the_batch(root, flush_between):
    big = 2 ** 63 - 1
    with make(root) as exp:
        with pytest.warns(expman.ExpmanWarning, match="2\\*\\*63-1"):
            exp.log_metrics({"a": 0.0}, step=0)
            exp.log_metrics({"a": 1.0}, step=big)
            if flush_between:
                assert exp.flush(timeout=30)
            exp.log_metrics({"a": 2.0})             # auto step: would be 2**63
            exp.log_metrics({"a": 3.0}, step=7)
            exp.log_metrics({"a": 4.0})
            assert exp.flush(timeout=30)
    table = expman.load_metrics(exp.run_dir).to_pydict()
    assert table["a"] == [0.0, 1.0, 2.0, 3.0, 4.0]
    assert table["step"] == [0, big, big, 7, 8]


# -- the server under load -----------------------------------------------------------------------

LOAD_SECS = 25.0           # benchmarks/bench_load.py runs the same load for 60 s
LOAD_RSS_GROWTH_MB = 12.0  # allowed after warm-up; pyarrow's mimalloc pool grew ~13 MB/15 s
LOAD_SSE_CLIENTS = 20
LOAD_API_THREADS = 2
LOAD_API_RATE = 15.0       # requests per second per API thread

LOAD_SERVER = r"""
import sys, threading, time, expman
expman._use_system_memory_pool()     # what `expman serve` does
server = expman.make_server(sys.argv[1], port=0)
hub = server.app.config["expman.hub"]
print("url", server.url, flush=True)
def report():          # what the test cannot see from outside: open streams
    while True:
        print("subs", len(hub.subscribers), flush=True)
        time.sleep(0.25)
threading.Thread(target=report, daemon=True).start()
server.run()
"""

LOAD_WRITER = r"""
import os, sys, time, expman
root, stop = sys.argv[1], sys.argv[2]
with expman.Experiment("load", base_dir=root, run_name="live", flush_interval_ms=100,
                       capture_git=False) as exp:
    step = 0
    while not os.path.exists(stop):
        exp.log_metrics({"train/loss": 1.0 / (1 + step), "train/acc": step / 1e5}, step=step)
        if step % 50 == 0:
            exp.info(f"step {step}")
        step += 1
        time.sleep(0.005)
print("done", step, flush=True)
"""


def rss_kb(pid):
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


class RawSSE(threading.Thread):
    """An EventSource that reads and discards, counting events; vanishes on request."""

    def __init__(self, host, port, path):
        super().__init__(daemon=True)
        self.sock = socket.create_connection((host, port), timeout=30)
        self.sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
                          f"Accept: text/event-stream\r\n\r\n".encode())
        self.events = 0
        self.bytes = 0
        self.start()

    def run(self):
        try:
            while True:
                data = self.sock.recv(65536)
                if not data:
                    return
                self.bytes += len(data)
                self.events += data.count(b"\nevent: ")
        except OSError:
            return

    def vanish(self):
        """Gone without a goodbye: RST, like a killed browser or a dropped laptop lid."""
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
        self.sock.close()
        self.join(5)


def make_load_data(root, runs=20, rows=3000):
    for r in range(runs):
        with make(root, "load", run_name=f"r{r:02d}", flush_interval_ms=10_000,
                  config={"lr": 10 ** -(r % 5), "seed": r}) as exp:
            for i in range(rows):
                exp.log_metrics({"train/loss": 1.0 / (i + 1), "val/acc": i / rows}, step=i)
            exp.info(f"run {r} done")


def api_paths(runs):
    base = "/api/experiments/load/runs"
    paths = ["/api/health", "/api/experiments", base]
    for r in runs:
        paths += [f"{base}/{r}/metrics?max_points=1000", f"{base}/{r}/log",
                  f"{base}/{r}/metadata", f"{base}/{r}/artifacts"]
    return paths


@pytest.mark.slow
def test_server_under_sse_and_api_load(root, tmp_path):
    make_load_data(root)
    runs = [f"r{r:02d}" for r in range(20)] + ["live"]
    stop = tmp_path / "stop"
    writer = Child(LOAD_WRITER.replace("sys.argv[1], sys.argv[2]",
                                       f"{str(root)!r}, {str(stop)!r}"), cwd=tmp_path)
    server = Child(LOAD_SERVER.replace("sys.argv[1]", repr(str(root))), cwd=tmp_path)
    clients, latencies, failures = [], [], []
    done = threading.Event()
    try:
        url = wait_for(lambda: next((l for l in server.lines if l.startswith("url")), None),
                       timeout=30, message=f"no URL from the server: {server.stderr}").split()[1]
        host, port = urllib.parse.urlsplit(url).hostname, urllib.parse.urlsplit(url).port
        wait_for(lambda: (root / "load" / "live" / "run.yaml").exists(), timeout=30)
        subs = lambda: int(next((l for l in reversed(server.lines)  # noqa: E731
                                 if l.startswith("subs")), "subs -1").split()[1])
        stream = "/api/stream?runs=" + ",".join(f"load/{r}" for r in ("live", "r00", "r01"))
        clients = [RawSSE(host, port, stream) for _ in range(LOAD_SSE_CLIENTS)]
        wait_for(lambda: subs() == LOAD_SSE_CLIENTS, timeout=30)

        paths = api_paths(runs)

        def api_worker(seed):
            rnd = random.Random(seed)
            conn = http.client.HTTPConnection(host, port, timeout=30)
            next_at = time.monotonic()
            while not done.is_set():
                path = rnd.choice(paths)
                t0 = time.perf_counter()
                try:
                    conn.request("GET", path)
                    resp = conn.getresponse()
                    body = resp.read()
                    if resp.status != 200:
                        failures.append((path, resp.status, body[:200]))
                except (OSError, http.client.HTTPException) as exc:
                    failures.append((path, repr(exc)))
                    conn.close()
                    conn = http.client.HTTPConnection(host, port, timeout=30)
                latencies.append(time.perf_counter() - t0)
                next_at += 1.0 / LOAD_API_RATE      # a steady rate, not a flood
                done.wait(max(0.0, next_at - time.monotonic()))
            conn.close()

        workers = [threading.Thread(target=api_worker, args=(s,), daemon=True)
                   for s in range(LOAD_API_THREADS)]
        for w in workers:
            w.start()
        started = time.monotonic()
        warm = started + min(5.0, LOAD_SECS / 4)
        wait_for(lambda: time.monotonic() >= warm, timeout=LOAD_SECS)
        rss_start = rss_kb(server.proc.pid)
        churned = 0
        rss_samples = []
        while time.monotonic() - started < LOAD_SECS:
            # churn: a few clients vanish and others arrive while the load goes on
            victim = clients.pop(random.randrange(len(clients)))
            victim.vanish()
            clients.append(RawSSE(host, port, stream))
            churned += 1
            done.wait(1.0)
            rss_samples.append(rss_kb(server.proc.pid))
        done.set()
        for w in workers:
            w.join(30)
        rss_end = rss_kb(server.proc.pid)
        assert not failures, failures[:5]
        assert len(latencies) >= LOAD_API_THREADS * LOAD_API_RATE * LOAD_SECS * 0.5
        p50 = statistics.median(latencies)
        p99 = sorted(latencies)[int(0.99 * (len(latencies) - 1))]
        events = sum(c.events for c in clients)
        print(f"load: {len(latencies)} API requests, p50 {p50 * 1000:.1f} ms, "
              f"p99 {p99 * 1000:.1f} ms; {events} SSE events to the last {len(clients)} "
              f"clients; {churned} churned; RSS {rss_start / 1024:.1f} -> "
              f"{rss_end / 1024:.1f} MB (max {max(rss_samples) / 1024:.1f})")
        assert p50 < 0.5 and p99 < 3.0, (p50, p99)   # generous: a shared 2-core machine
        assert all(c.events > 0 for c in clients[:LOAD_SSE_CLIENTS - churned])
        first, last = (statistics.median(rss_samples[:5]),
                       statistics.median(rss_samples[-5:]))
        assert last - first < LOAD_RSS_GROWTH_MB * 1024, (rss_start, rss_samples)
        # every client vanishes: the server notices and lets go of each stream
        for client in clients:
            client.vanish()
        wait_for(lambda: subs() == 0, timeout=20, message="streams of vanished clients linger")
        status, _ = get(url + "/api/health", timeout=10)
        assert status == 200
    finally:
        done.set()
        stop.write_text("stop")
        for client in clients:
            client.vanish()
        writer.wait(30) if writer.proc.poll() is None else None
        writer.kill()
        server.kill()


# -- the CLI on missing, empty, corrupt and foreign directories ----------------------------------

def _bad_dirs(tmp_path):
    """name -> a directory (or path) no command can use as a run or an experiments root."""
    dirs = {"missing": tmp_path / "missing", "file": tmp_path / "a_file.txt",
            "empty": tmp_path / "empty", "foreign": tmp_path / "foreign",
            "corrupt": tmp_path / "corrupt" / "exp" / "bad"}
    dirs["file"].write_text("not a directory")
    dirs["empty"].mkdir()
    foreign = dirs["foreign"]
    (foreign / "src" / "pkg").mkdir(parents=True)
    (foreign / "src" / "pkg" / "main.py").write_text("print('hi')\n")
    (foreign / "README.md").write_text("# a project\n")
    (foreign / "data").mkdir()
    (foreign / "data" / "x.parquet").write_bytes(b"PAR1 not really")
    (foreign / "config.yaml").write_text("lr: 0.1\n")
    run = closed_run(tmp_path / "corrupt", "bad")
    (run / "run.yaml").write_text("name: bad\nstatus: [finished\n  : {{\n")
    data = (run / "metrics.parquet").read_bytes()
    (run / "metrics.parquet").write_bytes(data[: len(data) // 2])
    (tmp_path / "corrupt" / "exp" / "experiment.yaml").write_text("\x00\x01 ::: [")
    return dirs


def _one_error(err, what):
    lines = [line for line in err.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("expman: error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0], (what, err)
    assert all(line.startswith("expman: ") for line in lines), (what, err)
    assert "Traceback" not in err and "unexpected" not in err, (what, err)
    return errors[0]


@pytest.fixture
def fake_serve(monkeypatch):
    calls = []
    monkeypatch.setattr(expman, "serve", lambda root, **kw: calls.append(root) or 0)
    return calls


def test_every_command_on_bad_directories_gives_one_line_and_an_exit_code(
        tmp_path, capsys, fake_serve):
    dirs = _bad_dirs(tmp_path)
    good = closed_run(tmp_path / "good_root", "good")
    for kind, path in dirs.items():
        for argv in (["inspect", path], ["inspect", path, "--json"], ["export", path],
                     ["export", path, "--format", "json"], ["compare", path, good],
                     ["compare", good, path], ["tail", path, "--interval", "0.05"]):
            rc, out, err = cli(capsys, *argv)
            assert rc == 1, (kind, argv, out, err)
            line = _one_error(err, (kind, argv))
            if kind != "corrupt":
                assert str(path) in line, line
                assert out == "", (kind, argv, out)
            if kind == "file":
                assert "not a directory" in line, line
        for argv in (["list", path, "-e", "exp"], ["clean", "exp", "--dir", path],
                     ["clean", "exp", "--dir", path, "--force", "--keep", "0"]):
            rc, out, err = cli(capsys, *argv)
            if kind == "corrupt":
                # the root of the corrupt run is the corrupt experiment's parent: not a root
                assert rc == 1, (argv, err)
            else:
                assert rc == 1, (kind, argv, out, err)
            _one_error(err, (kind, argv))
        rc, out, err = cli(capsys, "list", path)
        if kind in ("missing", "file", "corrupt"):   # corrupt: a run directory, not a root
            assert rc == 1 and out == ""
            _one_error(err, (kind, "list"))
            if kind != "corrupt":
                rc, _, err = cli(capsys, "serve", path)
                assert rc == 1
                _one_error(err, (kind, "serve"))
        else:
            # an empty or foreign directory is a valid, empty root: said in one line
            assert rc == 0 and "Traceback" not in err, (kind, out, err)
            assert out.strip().startswith(("no experiments in", "EXPERIMENT")), out
    assert fake_serve == []
    # the corrupt run's experiment, listed as a root: the damage is reported, others shown
    rc, out, err = cli(capsys, "list", tmp_path / "corrupt", "-e", "exp")
    assert rc == 0 and "bad" in out and "crashed" in out and "Traceback" not in err
    rc, out, err = cli(capsys, "clean", "exp", "--dir", tmp_path / "corrupt", "--keep", "0")
    assert rc == 0 and "Traceback" not in err
