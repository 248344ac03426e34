"""The writer engine and the logging API: steps, bad input, closing, statuses, threads, faults."""
import errno
import json
import os
import signal
import sys
import threading
import time
import warnings
from pathlib import Path

import pytest
import yaml

import expman
from _util import Child, columns, make_experiment, only_run_dir, run_python, wait_for


make = make_experiment


def run_yaml(run_dir):
    return yaml.safe_load((run_dir / "run.yaml").read_text())


# -- steps and rows --------------------------------------------------------------------------

def test_step_auto_increments_and_mixes_with_explicit_steps(root):
    with make(root) as exp:
        exp.log_metrics({"x": 0})                 # 0
        exp.log_metrics({"x": 1})                 # 1
        exp.log_metrics({"x": 2}, step=10)        # 10
        exp.log_metrics({"x": 3})                 # 11
        exp.flush()
        exp.log_metrics({"x": 4})                 # 12: counting continues across flushes
        exp.log_metrics({"x": 5}, step=3)         # going back is allowed
        exp.log_metrics({"x": 6})                 # 4
        exp.log_metrics({"x": 7}, step=2 ** 40)
        exp.log_vector({"x": 8})
    data = columns(exp.run_dir)
    assert data["step"] == [0, 1, 10, 11, 12, 3, 4, 2 ** 40, 2 ** 40 + 1]
    assert data["x"] == [float(i) for i in range(9)]
    assert expman.load_run(exp.run_dir)["last_step"] == 2 ** 40 + 1


def test_numpy_steps_are_accepted(root):
    np = pytest.importorskip("numpy")
    with make(root) as exp:
        exp.log_metrics({"x": 1}, step=np.int64(5))
        exp.log_metrics({"x": 2}, step=np.array(6))
        exp.log_metrics({"x": 3}, step=7.0)
    assert columns(exp.run_dir)["step"] == [5, 6, 7]


def test_same_step_logged_twice_keeps_every_row(root):
    # The design decision: rows are never merged by step. Every call is one row, in order,
    # whether the repeats are in one flush or in different ones.
    with make(root) as exp:
        exp.log_metrics({"loss": 1.0}, step=5)
        exp.log_metrics({"loss": 2.0}, step=5)
        exp.log_metrics({"acc": 0.5}, step=5)
        exp.flush()
        exp.log_metrics({"loss": 3.0}, step=5)
    data = columns(exp.run_dir)
    assert data == {"step": [5, 5, 5, 5], "loss": [1.0, 2.0, None, 3.0],
                    "acc": [None, None, 0.5, None]}


def test_a_metric_that_changes_type_between_flushes_keeps_every_batch(root):
    # expman-rs dropped the whole batch when a key went from int to float: here all are float64
    np = pytest.importorskip("numpy")
    values = [1, 2.5, True, np.float32(0.5), np.int64(3), np.array(4.5)]
    with make(root) as exp:
        for step, value in enumerate(values):
            exp.log_metrics({"m": value}, step=step)
            exp.flush()
    assert columns(exp.run_dir)["m"] == [1.0, 2.5, 1.0, 0.5, 3.0, 4.5]


# Rows for the test below: the child that logs them and the parent that checks them make
# them from one seed with this code.
_ODD_ROWS = """
import math, random
def odd_rows(seed, n=7000):
    rnd = random.Random(seed)
    def value(key, i):
        # refused values, each in its key's checked path: where every row logs a and b
        # (the first batch: b's bounds still come from its numbers), and where not
        if key == "a" and 1000 <= i < 1040 and rnd.random() < 0.2:
            return 2 ** 53 + 1
        if 6000 <= i < 6040 and rnd.random() < 0.2:
            return "text" if key == "b" else 2 ** 53 + 1
        pick = rnd.random()
        if pick < 0.55:
            return rnd.uniform(-1e3, 1e3)
        if pick < 0.70:
            return rnd.randint(-1000, 1000)
        if pick < 0.78:
            return rnd.random() < 0.5
        if pick < 0.82:
            return rnd.choice([2 ** 53 - 1, -(2 ** 53 - 1), -0.0, 0.0])
        if pick < 0.92:
            return math.nan
        if key == "d" and pick < 0.95:   # in d alone: it would be every key's bound
            return rnd.choice([math.inf, -math.inf])
        return rnd.random()
    rows = []
    for i in range(n):
        if i < 2500:      # the keys the run knows: a, b
            keys = ["a", "b"]
        elif i < 4500:    # as many keys, one of them new (c), in either order
            keys = rnd.choice([["a", "b"], ["a", "c"], ["c", "a"], ["b", "a"]])
        else:             # fewer, more or other keys
            keys = rnd.sample(["a", "b", "c", "d"], rnd.randint(1, 4))
        rows.append({k: value(k, i) for k in keys})
    return rows
"""


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_rows_of_the_known_keys_or_not_keep_every_value_and_the_bounds(root, tmp_path, seed):
    """Every row of a batch that logs as many keys as the run knows, but not the same ones,
    is kept (the writer's fast path for "every row logged the known keys" must see it is
    not), and summary_min/summary_max/summary are those of the values stored: ints, bools,
    -0.0, NaN (ignored), inf, refused values (left out). In a child without NumPy, whose
    bounds come from the Python numbers the columns were made of, not from the arrays."""
    out = run_python(_ODD_ROWS + f"""
import sys, warnings
import expman
assert "numpy" not in sys.modules
exp = expman.Experiment("r", base_dir={str(root)!r}, capture_git=False,
                        flush_interval_ms=60_000)
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    for i, row in enumerate(odd_rows({seed})):
        exp.log_metrics(row, step=i)
    exp.close()
retried = any("failed" in str(w.message) for w in caught)  # a fast path's error, retried
print("numpy" in sys.modules, retried, exp.run_dir)
""", cwd=tmp_path, timeout=120).stdout.split()
    assert out[:2] == ["False", "False"]
    out = out[1:]
    scope = {}
    exec(_ODD_ROWS, scope)
    rows = scope["odd_rows"](seed)
    want = {k: [None] * len(rows) for k in "abcd"}
    for i, row in enumerate(rows):
        for k, v in row.items():
            if not isinstance(v, str) and abs(v) != 2 ** 53 + 1:
                want[k][i] = float(v)
    got = columns(out[1])
    meta = expman.load_run(out[1])
    raw = yaml.safe_load((Path(out[1]) / "run.yaml").read_text())
    assert {type(v) for f in ("summary_min", "summary_max") for v in raw[f].values()} == {float}
    for k, values in want.items():
        stored = [v for v in values if v is not None]
        assert len(got[k]) == len(rows)
        assert [repr(v) for v in got[k]] == [repr(v) for v in values], k
        numbers = [v for v in stored if v == v]
        assert repr(meta["summary_min"][k]) == repr(min(numbers)), k
        assert repr(meta["summary_max"][k]) == repr(max(numbers)), k
        assert repr(meta["summary"][k]) == repr(stored[-1]) or stored[-1] != stored[-1], k


def test_logged_dict_is_copied(root):
    with make(root) as exp:
        row = {"a": 1.0}
        exp.log_metrics(row, step=0)
        row["a"] = 2.0
        row["b"] = 3.0
        exp.log_metrics(row, step=1)
        row.clear()
    assert columns(exp.run_dir) == {"step": [0, 1], "a": [1.0, 2.0], "b": [None, 3.0]}


def test_flush_returns_true_and_data_is_on_disk(root):
    exp = make(root, flush_interval_ms=60_000)
    try:
        exp.log_metrics({"a": 1.0})
        assert exp.flush() is True
        assert columns(exp.run_dir) == {"step": [0], "a": [1.0]}
        assert run_yaml(exp.run_dir)["summary"] == {"a": 1.0}
    finally:
        exp.close()
    assert exp.flush() is True                  # after close: nothing left to wait for


# -- flushing by rows, backpressure (issue 15 item 1, issue 19) -----------------------------

def test_flush_interval_rows_flushes_without_waiting_for_the_timer(root):
    # the timer alone would flush after 10 minutes: rows on disk sooner prove the row count
    with make(root, flush_interval_ms=600_000, flush_interval_rows=100) as exp:
        for i in range(250):
            exp.log_metrics({"x": float(i)})
        rows = wait_for(lambda: expman.load_metrics(exp.run_dir).num_rows >= 200, timeout=30)
        assert rows
        assert exp._writer.pending() <= 250
    assert expman.load_metrics(exp.run_dir).column("x").to_pylist() == [float(i) for i in
                                                                        range(250)]


def test_flush_interval_rows_is_checked(root):
    for bad in (-1, 1.5, "10", True):
        with pytest.raises(expman.InvalidInputError, match="flush_interval_rows"):
            make(root, flush_interval_rows=bad)


def test_overload_waits_in_short_slices_loses_nothing_and_stays_bounded(root, monkeypatch):
    """A logging loop far faster than its writer (here: a writer slowed to 0.3 s a chunk)
    waits a few ms per call at most, never a whole chunk; the backlog stays near the bound."""
    monkeypatch.setattr(expman, "MAX_PENDING_BYTES", 1 << 20)   # ~2,000 rows of this size
    slow_stage = expman._Writer._stage

    def stage(self, *args, **kwargs):
        time.sleep(0.3)  # the writer (not the log call) is slow: a slow disk, a busy CPU
        return slow_stage(self, *args, **kwargs)

    monkeypatch.setattr(expman._Writer, "_stage", stage)
    n, waits, most = 30_000, [], 0
    with make(root) as exp:
        with pytest.warns(expman.ExpmanWarning, match="wait up to 2 ms"):
            for i in range(n):
                t0 = time.perf_counter()
                exp.log_metrics({"a": float(i), "b": 1.0})
                waits.append(time.perf_counter() - t0)
                if not i % 64:
                    most = max(most, exp._writer.pending())
    waits.sort()
    # the old wait lasted a writer chunk (here >= 0.3 s) each time the bound was met, which
    # happened a dozen times in this loop; a loaded machine may still deschedule a call or two
    assert sum(w > 0.25 for w in waits) <= 2, waits[-5:]
    assert waits[len(waits) // 2] < 0.005
    assert most <= 3 * max(expman.PENDING_CHECK_ROWS, (1 << 20) // 200)
    assert expman.load_metrics(exp.run_dir).column("a").to_pylist() == [float(i)
                                                                        for i in range(n)]


def test_a_call_waiting_for_room_gets_the_gil_back_when_its_wait_ends(root, tmp_path):
    """Past the backlog bound a log call waits BACKPRESSURE_SLICE_SECS (2 ms) for the writer;
    the writer, which sees the waiting call between two of its steps, then hands the GIL
    back at once. It did not: the call's wait ended in C, and it got the GIL back only at the
    writer's next slice end, the end of its drain pass or CPython's forced switch (7-11 ms a
    call at 1M rows). Here the slice is 0.25 s, the switch interval 0.5 s and the writer
    holds the GIL 1 ms a chunk more, so such a call waited up to ~0.3 s. Nothing is lost
    and the backlog stays near the bound; measured in a child (the switch interval is
    process-wide)."""
    out = run_python(f"""
        import sys, time, warnings
        import expman
        expman.MAX_PENDING_BYTES = 8 << 20            # ~36,000 rows of this size
        expman.WRITER_GIL_SLICE_SECS = 0.25
        expman.DRAIN_CHUNK_ROWS = 512
        stage = expman._Writer._stage
        def slow_stage(self, *args, **kwargs):        # a slow writer holding the GIL
            until = time.perf_counter() + 0.001
            while time.perf_counter() < until:
                pass
            return stage(self, *args, **kwargs)
        expman._Writer._stage = slow_stage
        sys.setswitchinterval(0.5)
        waits = []
        wait = expman._Writer.wait_for_room
        def timed(self, *args):
            t0 = time.perf_counter()
            wait(self, *args)
            waits.append(time.perf_counter() - t0)
        expman._Writer.wait_for_room = timed
        warnings.simplefilter("ignore")
        exp = expman.Experiment("r", base_dir={str(root)!r}, capture_git=False)
        n, most = 150_000, 0
        for i in range(n):
            exp.log_metrics({{"a": float(i), "b": 1.0}}, step=i)
            if not i % 256:
                most = max(most, exp._writer.pending())
        exp.close()
        a = expman.load_metrics(exp.run_dir).column("a").to_pylist()
        waits.sort()
        print(len(waits), waits[len(waits) * 9 // 10], sum(w > 0.1 for w in waits), most,
              a == [float(i) for i in range(n)])
    """, cwd=tmp_path, timeout=300).stdout.split()
    count, p90, over, most, complete = int(out[0]), float(out[1]), int(out[2]), int(out[3]), \
        out[4]
    assert complete == "True"
    assert count >= 10, out                        # the bound was met, many times
    # ~2-8 ms each on a quiet machine (~200 waits); a wait not handed back took 130-350 ms
    # (about half of the ~11 waits then). Generous for a loaded machine, which may deschedule
    # a call or two.
    assert p90 < 0.05 and over <= 2, out
    assert most <= 3 * max(expman.PENDING_CHECK_ROWS, (8 << 20) // 200), out


def test_the_backpressure_warning_points_at_the_users_log_call(root, monkeypatch):
    """The warning quotes the user's line (its file is small), not expman.py's: quoting
    expman.py made linecache read ~1 MB inside that log call."""
    monkeypatch.setattr(expman, "MAX_PENDING_BYTES", 1 << 20)
    slow_stage = expman._Writer._stage

    def stage(self, *args, **kwargs):
        time.sleep(0.05)
        return slow_stage(self, *args, **kwargs)

    monkeypatch.setattr(expman._Writer, "_stage", stage)
    with make(root) as exp:
        with pytest.warns(expman.ExpmanWarning, match="logging faster") as rec:
            for i in range(20_000):
                exp.log_metrics({"a": float(i)})
    where = [w.filename for w in rec if "logging faster" in str(w.message)]
    assert where == [__file__]


def test_the_writer_hands_the_gil_to_the_training_thread_between_slices(root, monkeypatch):
    """While the writer converts a big backlog, the training thread runs between its slices
    (it sees the queue shrink chunk by chunk), not only at CPython's forced switches. The
    switch interval is raised to 20 ms here so that without the hand-overs the thread would
    see a handful of the 100 chunks; rows keep their order and none is lost. (Each hand-over
    costs the spinning thread's 20 ms here, and the writer pauses between a chunk's columns
    too: 60,000 rows took a minute.)"""
    monkeypatch.setattr(expman, "DRAIN_CHUNK_ROWS", 200)
    monkeypatch.setattr(expman, "WRITER_GIL_SLICE_SECS", 0.0)   # hand over after every chunk
    n = 20_000                                   # under the backlog bound: no log call waits
    old = sys.getswitchinterval()
    with make(root, flush_interval_ms=10 ** 7) as exp:   # the timer never wakes the writer
        for i in range(n):
            exp.log_metrics({"a": float(i), "b": 1.0}, step=i)
        rows, seen = exp._writer.rows, set()
        flusher = threading.Thread(target=exp.flush, args=(120,))
        sys.setswitchinterval(0.02)
        try:
            flusher.start()
            while flusher.is_alive():          # pure Python: runs only when given the GIL
                seen.add(len(rows))
        finally:
            sys.setswitchinterval(old)
        flusher.join()
    chunks = n // 200
    assert len(seen) >= chunks // 5, (len(seen), chunks)
    data = columns(exp.run_dir)
    assert data["step"] == list(range(n))
    assert data["a"] == [float(i) for i in range(n)]


@pytest.mark.skipif(sys.implementation.name != "cpython", reason="PyObject_GC_UnTrack")
def test_the_row_queue_is_hidden_from_the_garbage_collector_and_keeps_its_rows(root):
    """A full collection does not walk the queued rows (one did, ~80 ns an entry: a 10 ms
    log call at 50,000 rows queued), and it frees nothing the queue holds: a media item (a
    tracked object only the queue refers to) and the rows survive it."""
    import gc
    with make(root, flush_interval_ms=10 ** 7) as exp:
        assert not gc.is_tracked(exp._writer.rows)
        for i in range(1000):
            exp.log_metrics({"a": float(i)}, step=i)
            if i == 500:
                exp.log_text("t", "x" * 10 + str(i))
        gc.collect()
        assert exp._writer.pending() == 1001
    assert columns(exp.run_dir)["a"] == [float(i) for i in range(1000)]
    assert [t["text"] for t in expman.read_media(exp.run_dir, kind="text")] == ["x" * 10 + "500"]


@pytest.mark.skipif(sys.implementation.name != "cpython", reason="PyObject_GC_UnTrack")
def test_a_popped_chunk_is_hidden_from_the_garbage_collector(root, monkeypatch):
    """The rows, steps and times the writer pops (lists of ~2,000 each) are untracked: they
    stay alive while the training thread runs between the writer's steps, and each young
    collection it made walked them (20-100 us calls, ~40 % of the 1M-step loop's calls over
    20 us). The rows are all kept."""
    import gc
    seen = []
    stage = expman._Writer._stage

    def watch(self, batch, steps, times, *args, **kwargs):
        seen.append((gc.is_tracked(batch), gc.is_tracked(steps), gc.is_tracked(times)))
        return stage(self, batch, steps, times, *args, **kwargs)

    monkeypatch.setattr(expman._Writer, "_stage", watch)
    with make(root, flush_interval_ms=10 ** 7) as exp:
        for i in range(5000):
            exp.log_metrics({"a": float(i)}, step=i)
        assert exp.flush(timeout=60)
    assert seen and set(seen) == {(False, False, False)}, seen
    assert columns(exp.run_dir)["a"] == [float(i) for i in range(5000)]


@pytest.mark.skipif(sys.implementation.name != "cpython", reason="PyObject_GC_UnTrack")
def test_a_chunks_gathered_columns_are_hidden_from_the_garbage_collector(root, monkeypatch):
    """The list of each key's values gathered from a chunk's rows (~2,000 numbers) is
    untracked: the writer pauses between keys, and the training thread's young collections
    then walked every gathered list (~300 of the 1M-step loop's calls over 20 us, its p99.9
    7.7-25 us). Every value is stored."""
    import gc
    seen = []
    column = expman._Writer._column

    def watch(self, key, values, *args, **kwargs):
        seen.append(gc.is_tracked(values))
        return column(self, key, values, *args, **kwargs)

    monkeypatch.setattr(expman._Writer, "_column", watch)
    with make(root, flush_interval_ms=10 ** 7) as exp:
        for i in range(5000):
            exp.log_metrics({"a": float(i), "b": i}, step=i)
        assert exp.flush(timeout=60)
    assert len(seen) >= 6 and not any(seen), seen   # 2 keys x 3 chunks at least
    got = columns(exp.run_dir)
    assert got["a"] == [float(i) for i in range(5000)]
    assert got["b"] == [float(i) for i in range(5000)]


@pytest.mark.skipif(sys.implementation.name != "cpython", reason="PyObject_GC_UnTrack")
def test_staged_batches_are_hidden_from_the_garbage_collector(root):
    """What the writer stages lives until the next flush, through young collections into the
    oldest generation, where each object counted towards a full collection run by the
    training thread (~2,000 a 1M-row loop: one 7-10 ms call every 1-2M rows). Every
    container of a staged batch is untracked, dense and sparse columns alike, and every row
    is stored."""
    import gc
    with make(root, flush_interval_ms=10 ** 7) as exp:
        for i in range(5000):
            row = {"a": float(i), "b": i * 0.5}
            if i % 7 == 0:
                row[f"rare{i % 3}"] = float(i)    # sparse keys, a column with gaps
            exp.log_metrics(row, step=i)
        writer = exp._writer
        writer.nudge()   # a drain now; the flush waits for its interval (never, here)
        wait_for(lambda: writer.pending() == 0 and writer.staged_rows == 5000,
                 message="the writer never staged the rows")
        staged = list(writer.staged)
        parts = [(name, obj) for batch in staged for name, obj in
                 [("batch", batch), ("steps", batch[1]), ("times", batch[2]),
                  ("columns", batch[3])] + [(f"column {k}", c) for k, c in batch[3].items()] +
                 [(f"values {k}", c[0]) for k, c in batch[3].items()]]
        assert staged and {"columns", "values rare0", "column rare2"} <= {n for n, _ in parts}
        assert [name for name, obj in parts if gc.is_tracked(obj)] == []
        gc.collect()
    got = columns(exp.run_dir)
    assert got["a"] == [float(i) for i in range(5000)]
    assert got["rare1"] == [float(i) if i % 7 == 0 and i % 3 == 1 else None for i in range(5000)]


def test_the_first_run_of_a_process_collects_garbage_once_at_init(root, tmp_path):
    """Importing expman leaves a full collection due, which fell ~50,000 calls into the first
    loop (a 6-10 ms call): the first init does it instead, and only the first."""
    out = run_python(f"""
        import gc, expman
        full = lambda: gc.get_stats()[2]["collections"]
        before = full()
        a = expman.Experiment("x", base_dir={str(root)!r}, capture_git=False)
        first = full() - before
        b = expman.Experiment("y", base_dir={str(root)!r}, capture_git=False)
        second = full() - before - first
        a.close(); b.close()
        print(first, second)
    """, cwd=tmp_path).stdout.split()
    assert out == ["1", "0"]


def test_a_backlog_is_written_a_segment_at_a_time(root, monkeypatch):
    """A backlog far over SEGMENT_MAX_ROWS is converted and written a segment at a time (one
    file of the whole backlog meant copies of tens of MB holding the GIL), and flush() still
    returns with every row logged before it written, in order."""
    monkeypatch.setattr(expman, "SEGMENT_MAX_ROWS", 5_000)
    monkeypatch.setattr(expman, "DRAIN_CHUNK_ROWS", 500)
    n = 60_000
    with make(root, flush_interval_ms=10 ** 7) as exp:   # the timer never wakes the writer
        for i in range(n):
            exp.log_metrics({"a": float(i)}, step=i)
        assert exp.flush(timeout=120)
        sizes = sorted(int(name[17:29]) - int(name[4:16])
                       for name in os.listdir(exp.run_dir / "metrics")
                       if name.startswith("seg-"))
        assert columns(exp.run_dir)["step"] == list(range(n))
    assert sum(sizes) == n and len(sizes) >= 10, sizes
    assert sizes[-1] <= 5_000 + 500, sizes


def test_numpy_imported_while_the_writer_converts_loses_no_row(root, tmp_path):
    """A NumPy half-way through its import on the training thread (``import torch`` after
    init, or a reader's pyarrow) was taken as loaded by the writer: np.errstate raised
    AttributeError and the chunks being converted were dropped (~20 % of the rows here)."""
    pytest.importorskip("numpy")
    out = run_python(f"""
        import sys, threading, time, warnings
        import expman
        assert "numpy" not in sys.modules
        exp = expman.Experiment("r", base_dir={str(root)!r}, capture_git=False,
                                flush_interval_ms=10)
        stop, count = threading.Event(), [0]
        def fire():
            i = 0
            while not stop.is_set():
                exp.log_metrics({{"a": float(i), "b": 1.0}}, step=i)
                i += 1
            count[0] = i
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            t = threading.Thread(target=fire)
            t.start()
            time.sleep(0.3)
            import numpy  # here, while the writer converts the firehose's rows
            stop.set()
            t.join()
            exp.close()
        bad = [str(w.message) for w in caught if "could not be stored" in str(w.message)
               or "failed" in str(w.message)]
        steps = expman.load_metrics(exp.run_dir).column("step").to_pylist()
        print(steps == list(range(count[0])), count[0] > 0, bad[:2])
    """, cwd=tmp_path, timeout=300).stdout.strip().split(None, 2)
    assert out == ["True", "True", "[]"]


# -- bad input -------------------------------------------------------------------------------

BAD = [
    ("s", "high", "str"),
    ("n", None, "None"),
    ("l", [1, 2], "list"),
    ("big", 2 ** 53 + 1, "cannot be stored exactly"),
    ("c", 1j, "complex"),
    ("d", {"x": 1}, "dict"),
]


def test_bad_values_warn_naming_the_key_and_the_rest_of_the_row_is_kept(root):
    exp = make(root)
    try:
        with pytest.warns(expman.ExpmanWarning) as rec:
            for step, (key, value, _) in enumerate(BAD):
                exp.log_metrics({"ok": float(step), key: value}, step=step)
            exp.log_metrics({"ok": 6.0, 7: 1.0}, step=6)                  # non-str key
            exp.log_metrics({"ok": 7.0, "step": 3}, step=7)              # reserved key
            exp.log_metrics({"ok": 8.0, "timestamp": 3}, step=8)
            exp.log_metrics({"ok": 9.0, "": 1.0}, step=9)
            exp.log_metrics({"ok": 10.0, "big": 2.0 ** 60, "s": 1.0}, step=10)  # fine now
            assert exp.flush() is True
        messages = [str(w.message) for w in rec]
        for key, _, reason in BAD:
            assert any(f"metric {key!r}" in m and reason in m for m in messages), (key, messages)
        assert any("metric 7:" in m and "not a string" in m for m in messages), messages
        assert any("'step'" in m and "reserved" in m for m in messages), messages
        assert any("'timestamp'" in m and "reserved" in m for m in messages), messages
        assert any("empty key" in m for m in messages), messages

        # the writer is alive and the rest of each row is stored
        exp.log_metrics({"ok": 11.0}, step=11)
        assert exp.flush() is True
        data = columns(exp.run_dir)
        assert data["ok"] == [float(i) for i in range(12)]
        assert data["step"] == list(range(12))
        assert data["big"] == [None] * 10 + [2.0 ** 60, None]
        assert data["s"] == [None] * 10 + [1.0, None]
        assert set(data) == {"step", "ok", "big", "s"}   # no column for refused-only keys
    finally:
        exp.close()
    assert columns(exp.run_dir)["ok"] == [float(i) for i in range(12)]
    log = (exp.run_dir / "run.log").read_text()
    assert "skipped metric 's'" in log           # the warnings are in the run's log too


def test_a_bad_key_in_one_row_does_not_lose_the_batch(root):
    # regression: a refused key made the batch look "every row has every key" and a KeyError
    # in the fast path dropped every row of the flush
    with make(root, flush_interval_ms=60_000) as exp:
        with pytest.warns(expman.ExpmanWarning, match="reserved"):
            exp.log_metrics({"loss": 1.0, "step": 0})
            exp.log_metrics({"loss": 2.0, "lr": 0.1})
            exp.flush()
    assert columns(exp.run_dir) == {"step": [0, 1], "loss": [1.0, 2.0], "lr": [None, 0.1]}


def test_bad_calls_warn_and_never_raise(root):
    with make(root) as exp:
        with pytest.warns(expman.ExpmanWarning, match="needs a dict of metrics"):
            assert exp.log_metrics([1, 2, 3]) is None
        with pytest.warns(expman.ExpmanWarning, match="log_params needs a dict"):
            exp.log_params("lr=1")
        with pytest.warns(expman.ExpmanWarning, match="log_scalar skipped"):
            exp.log_scalar(3, 1.0)
        with pytest.warns(expman.ExpmanWarning, match="log_scalar skipped metric 'best'"):
            exp.log_scalar("best", [0.9, 0.8])   # text is a summary now; a list is not
            exp.flush()
        exp.log_metrics({"x": 1.0})
    assert columns(exp.run_dir)["x"] == [1.0]
    assert "best" not in run_yaml(exp.run_dir)["summary"]


def test_invalid_arguments_raise_invalid_input_error(root):
    with pytest.raises(expman.InvalidInputError, match="flush_interval_ms"):
        make(root, flush_interval_ms=0)
    with pytest.raises(expman.InvalidInputError, match="config"):
        make(root, config=[1, 2])
    with pytest.raises(expman.InvalidInputError, match="experiment name"):
        make(root, name="///")
    assert list(root.iterdir()) == []            # refused before anything was created


# -- closing ---------------------------------------------------------------------------------

def test_log_after_close_warns_once_and_does_not_raise(root):
    exp = make(root)
    exp.log_metrics({"x": 1.0})
    exp.close()
    with pytest.warns(expman.ExpmanWarning, match="already closed") as rec:
        exp.log_metrics({"x": 2.0})
        exp.log_metrics({"x": 3.0})
        exp.log_params({"a": 1})
        exp.log_scalar("s", 1.0)
        exp.info("late")
        exp.warn("late")
    assert len(rec) == 1
    assert columns(exp.run_dir)["x"] == [1.0]
    assert expman.load_config(exp.run_dir) == {}
    assert "late" not in (exp.run_dir / "run.log").read_text()


def test_close_status_names(root):
    exp = make(root)
    with pytest.raises(ValueError, match="bogus"):
        exp.close(status="bogus")
    assert not exp.closed                       # a bad status does not half-close the run
    exp.log_metrics({"x": 1.0})
    exp.close(status="FINISHED")
    assert exp.status == "finished"
    exp.close()                                 # twice: harmless
    exp.close("failed")                         # and does not rewrite the status
    assert exp.closed
    meta = run_yaml(exp.run_dir)
    assert meta["status"] == "finished"
    assert meta["finished_at"] and meta["duration_secs"] >= 0
    for status in ("Interrupted", " failed ", "CRASHED"):
        other = make(root)
        other.close(status)
        assert run_yaml(other.run_dir)["status"] == status.strip().lower()


def test_with_block_and_exception_records_failed(root):
    with pytest.raises(ZeroDivisionError):
        with make(root, run_name="boom") as exp:
            exp.log_metrics({"x": 1.0})
            1 / 0
    meta = run_yaml(exp.run_dir)
    assert meta["status"] == "failed"
    assert "ZeroDivisionError" in meta["error"]
    assert columns(exp.run_dir)["x"] == [1.0]
    assert "ZeroDivisionError" in (exp.run_dir / "run.log").read_text()
    with pytest.raises(KeyboardInterrupt):
        with make(root, run_name="ctrlc") as exp2:
            raise KeyboardInterrupt
    assert run_yaml(exp2.run_dir)["status"] == "interrupted"


# -- text, scalars, artifacts ----------------------------------------------------------------

def test_info_and_warn_land_in_run_log(root):
    with make(root) as exp:
        exp.info("epoch 1 done")
        exp.warn("loss is NaN")
        exp.info({"not": "a string"})
    log = (exp.run_dir / "run.log").read_text()
    lines = log.splitlines()
    assert any("INFO" in line and line.endswith("epoch 1 done") for line in lines)
    assert any("WARN" in line and line.endswith("loss is NaN") for line in lines)
    assert "{'not': 'a string'}" in log
    text, offset = expman.load_log(exp.run_dir)
    assert text == log and offset == len(log.encode())


def test_log_scalar_goes_to_the_summary(root):
    with make(root) as exp:
        exp.log_metrics({"loss": 0.5, "acc": 0.1}, step=0)
        exp.log_metrics({"loss": 0.25}, step=1)
        exp.log_scalar("best/acc", 0.93)
        exp.log_scalar("best/acc", 0.95)          # the last value wins
        exp.log_scalar("epochs", 3)
    summary = run_yaml(exp.run_dir)["summary"]
    assert summary == {"loss": 0.25, "acc": 0.1, "best/acc": 0.95, "epochs": 3.0}
    assert expman.list_runs(root, "exp")[0]["summary"]["best/acc"] == 0.95


def test_save_artifact_copies_files_and_directories(root, tmp_path):
    src = tmp_path / "src"
    (src / "ckpt" / "sub").mkdir(parents=True)
    (src / "plot.png").write_bytes(b"\x89PNG fake")
    (src / "ckpt" / "model.pt").write_bytes(b"weights")
    (src / "ckpt" / "sub" / "notes.txt").write_text("hi")
    with make(root) as exp:
        assert exp.save_artifact(src / "plot.png") == exp.run_dir / "artifacts" / "plot.png"
        exp.save_artifact(str(src / "ckpt"))
        exp.save_artifact(src / "ckpt" / "model.pt", "best/model.pt")
        for bad in ("../x", "a/../../x", "/etc/passwd", "..", ""):
            with pytest.raises(expman.InvalidInputError, match="artifact name"):
                exp.save_artifact(src / "plot.png", bad)
        with pytest.raises(expman.InvalidInputError, match="no such file"):
            exp.save_artifact(tmp_path / "missing.bin")
    art = exp.run_dir / "artifacts"
    assert (art / "plot.png").read_bytes() == b"\x89PNG fake"
    assert (art / "ckpt" / "sub" / "notes.txt").read_text() == "hi"
    assert (art / "best" / "model.pt").read_bytes() == b"weights"
    assert not (exp.run_dir / "x").exists() and not (root / "exp" / "x").exists()
    listed = {a["path"]: a["kind"] for a in expman.list_artifacts(exp.run_dir)}
    assert listed == {"plot.png": "image", "ckpt/model.pt": "binary",
                      "ckpt/sub/notes.txt": "text", "best/model.pt": "binary"}
    assert "saved artifact best/model.pt" in (exp.run_dir / "run.log").read_text()


# -- statuses of real processes --------------------------------------------------------------

CHILD_PRELUDE = """
import os, signal, sys, expman
signal.signal(signal.SIGINT, signal.default_int_handler)   # as in a terminal, even if the
signal.signal(signal.SIGTERM, signal.SIG_DFL)              # test runner ignores them
"""


def child_code(root, body, **init):
    args = ", ".join(f"{k}={v!r}" for k, v in init.items())
    return (CHILD_PRELUDE + f"expman.init('proc', base_dir={str(root)!r}, capture_git=False"
            + (", " + args if args else "") + ")\n" + body)


def test_normal_exit_without_close_finishes_with_every_row(root, tmp_path):
    body = """
other = expman.Experiment("proc2", base_dir=expman.get_run()._root, capture_git=False)
for i in range(20000):
    expman.log_metrics({"i": i, "sq": i * i})
    other.log_metrics({"i": i})
expman.info("bye")
"""   # no close(), no flush(): atexit must do both, for both runs
    run_python(child_code(root, body, flush_interval_ms=60_000), cwd=tmp_path)
    for name, keys in (("proc", ["step", "i", "sq"]), ("proc2", ["step", "i"])):
        run = only_run_dir(root, name)
        meta = expman.load_run(run)
        assert meta["status"] == "finished" and meta["recorded_status"] == "finished"
        data = columns(run)
        assert list(data) == keys
        assert data["step"] == list(range(20000))
        assert data["i"] == [float(i) for i in range(20000)]
        assert (run / "metrics.parquet").is_file()
    assert "bye" in (only_run_dir(root, "proc") / "run.log").read_text()


@pytest.mark.parametrize("how,status", [
    ("raise", "failed"),
    ("exit3", "failed"),
    ("exit_text", "failed"),      # sys.exit("message"): Python prints it and exits 1
    ("exit0", "finished"),
])
def test_exit_paths_record_the_status(root, tmp_path, how, status):
    body = """
expman.log_metrics({"x": 1.0})
expman.log_metrics({"x": 2.0})
""" + {"raise": "raise RuntimeError('boom at step 2')",
       "exit3": "sys.exit(3)", "exit_text": "sys.exit('bad config')",
       "exit0": "sys.exit(0)"}[how]
    proc = run_python(child_code(root, body), cwd=tmp_path, check=False)
    assert proc.returncode == {"raise": 1, "exit3": 3, "exit_text": 1, "exit0": 0}[how]
    run = only_run_dir(root, "proc")
    meta = expman.load_run(run)
    assert meta["status"] == status
    assert columns(run)["x"] == [1.0, 2.0]
    if how == "raise":
        assert meta["error"] == "RuntimeError: boom at step 2"
        assert "Traceback" in proc.stderr          # the user's traceback is not swallowed


LOOP = """
i = 0
while True:
    expman.log_metrics({"i": i})
    i += 1
    if i % 200 == 0:
        print(i, flush=True)
"""


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_sigterm_and_ctrl_c_mid_logging_record_interrupted(root, tmp_path, signum):
    child = Child(child_code(root, LOOP), cwd=tmp_path)
    try:
        seen = int(child.wait_line(lambda line: line.isdigit() and int(line) >= 2000))
        child.proc.send_signal(signum)
        rc = child.wait()
    finally:
        child.kill()
    # SIGTERM unwinds as SystemExit(128 + 15). After Ctrl-C CPython would re-kill itself with
    # SIGINT, but pyarrow code run by the atexit close resets that flag, so the code is 1.
    expected = (128 + signum,) if signum == signal.SIGTERM else (1, -signal.SIGINT)
    assert rc in expected, child.stderr
    run = only_run_dir(root, "proc")
    meta = expman.load_run(run)
    assert meta["status"] == "interrupted"
    steps = columns(run)["step"]
    assert len(steps) >= seen                  # every row logged before the signal
    assert steps == list(range(len(steps)))
    assert columns(run)["i"] == [float(i) for i in steps]
    assert meta["rows"] == len(steps)


def test_sigkill_mid_logging_reads_as_crashed_with_flushed_rows(root, tmp_path):
    body = """
i = 0
while True:
    expman.log_metrics({"i": i})
    i += 1
    if i % 1000 == 0:
        expman.flush()
        print(i, flush=True)
"""
    child = Child(child_code(root, body, flush_interval_ms=60_000, heartbeat_secs=60),
                  cwd=tmp_path)
    try:
        flushed = int(child.wait_line(lambda line: line.isdigit() and int(line) >= 3000))
        child.proc.kill()
        child.wait()
    finally:
        child.kill()
    run = only_run_dir(root, "proc")
    assert not (run / "metrics.parquet").exists()
    assert yaml.safe_load((run / "run.yaml").read_text())["status"] == "running"
    meta = expman.load_run(run)
    assert meta["status"] == "crashed"          # dead pid on this host: no need to wait
    assert meta["recorded_status"] == "running"
    assert expman.list_runs(root, "proc")[0]["status"] == "crashed"
    with warnings.catch_warnings():
        warnings.simplefilter("error")          # the files left behind read cleanly
        steps = columns(run)["step"]
    assert len(steps) >= flushed
    assert steps == list(range(len(steps)))


def test_heartbeat_goes_stale_for_a_run_on_another_host(root):
    with make(root, run_name="r") as exp:
        exp.log_metrics({"x": 1.0})
    meta = run_yaml(exp.run_dir)
    meta.update(status="running", hostname="some-other-host", pid=1,
                heartbeat_at="2020-01-01T00:00:00+00:00")
    (exp.run_dir / "run.yaml").write_text(yaml.safe_dump(meta))
    assert expman.load_run(exp.run_dir)["status"] == "crashed"
    meta["heartbeat_at"] = expman._iso()
    (exp.run_dir / "run.yaml").write_text(yaml.safe_dump(meta))
    assert expman.load_run(exp.run_dir)["status"] == "running"


# -- concurrency -----------------------------------------------------------------------------

def test_many_threads_logging_to_one_experiment(root):
    n_threads, n_rows = 6, 3000
    exp = make(root, flush_interval_ms=20)
    start = threading.Barrier(n_threads)

    def work(t):
        start.wait()
        for j in range(n_rows):
            exp.log_metrics({f"t{t}": float(j), "thread": float(t), "j": float(j)})

    threads = [threading.Thread(target=work, args=(t,)) for t in range(n_threads)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    exp.close()
    data = columns(exp.run_dir)
    total = n_threads * n_rows
    assert data["step"] == list(range(total))    # auto steps: one per row, none lost
    pairs = list(zip(data["thread"], data["j"]))
    assert sorted(pairs) == sorted((float(t), float(j)) for t in range(n_threads)
                                   for j in range(n_rows))
    for i, (t, j) in enumerate(pairs):            # no row mixes two threads' values
        own = data[f"t{int(t)}"][i]
        others = [data[f"t{u}"][i] for u in range(n_threads) if u != int(t)]
        assert own == j and others == [None] * (n_threads - 1)
    for t in range(n_threads):                    # each thread's rows in its own order
        assert [j for tt, j in pairs if tt == t] == [float(j) for j in range(n_rows)]


def test_several_experiments_at_once(root):
    exps = [make(root, name=f"e{k}", flush_interval_ms=20) for k in range(4)]
    start = threading.Barrier(len(exps))

    def work(k, exp):
        start.wait()
        for j in range(4000):
            exp.log_metrics({"k": float(k), "j": float(j)}, step=j)

    threads = [threading.Thread(target=work, args=(k, e)) for k, e in enumerate(exps)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    for exp in exps:
        exp.close()
    for k, exp in enumerate(exps):
        data = columns(exp.run_dir)
        assert data["k"] == [float(k)] * 4000
        assert data["j"] == [float(j) for j in range(4000)]
        assert data["step"] == list(range(4000))


# -- disk faults -----------------------------------------------------------------------------

def _writer_failures(exp):
    # the writer's retry counter: the only way to know it has retried without a fixed sleep
    return exp._writer.failures


def test_segments_dir_replaced_by_a_file_mid_run(root):
    exp = make(root, flush_interval_ms=20)
    seg_dir = exp.run_dir / "metrics"
    try:
        for i in range(100):
            exp.log_metrics({"i": i})
        assert exp.flush() is True
        with warnings.catch_warnings(record=True) as rec:
            warnings.simplefilter("always")
            os.rename(seg_dir, exp.run_dir / "metrics.moved")
            seg_dir.write_text("not a directory")           # every segment write now fails
            for i in range(100, 200):
                exp.log_metrics({"i": i})                   # the training loop keeps going
            wait_for(lambda: _writer_failures(exp) >= 3, timeout=20)
            for i in range(200, 300):
                exp.log_metrics({"i": i})
            wait_for(lambda: _writer_failures(exp) >= 4, timeout=20)
            seg_dir.unlink()                                # the fault clears
            os.rename(exp.run_dir / "metrics.moved", seg_dir)
            assert exp.flush() is True
        cannot = [w for w in rec if "cannot write" in str(w.message)]
        assert len(cannot) == 1, [str(w.message) for w in rec]
        assert issubclass(cannot[0].category, expman.ExpmanWarning)
        assert "rows are kept in memory" in str(cannot[0].message)
        assert columns(exp.run_dir)["step"] == list(range(300))
    finally:
        exp.close()
    assert columns(exp.run_dir)["i"] == [float(i) for i in range(300)]
    assert expman.load_run(exp.run_dir)["status"] == "finished"
    assert "cannot write" in (exp.run_dir / "run.log").read_text()


def test_disk_full_for_a_while_loses_nothing(root, monkeypatch):
    exp = make(root, flush_interval_ms=20)
    store = exp._store
    real_open_atomic, real_write_atomic = store.open_atomic, store.write_atomic
    full = threading.Event()

    def open_atomic(path):   # files pyarrow writes: merges, compaction
        if full.is_set():
            raise OSError(errno.ENOSPC, "No space left on device", path)
        return real_open_atomic(path)

    def write_atomic(path, data):   # the writer's own segments (plain Parquet bytes)
        if full.is_set() and path.endswith(".parquet"):
            raise OSError(errno.ENOSPC, "No space left on device", path)
        return real_write_atomic(path, data)

    monkeypatch.setattr(store, "open_atomic", open_atomic)
    monkeypatch.setattr(store, "write_atomic", write_atomic)
    try:
        with pytest.warns(expman.ExpmanWarning) as rec:
            full.set()
            for i in range(500):
                exp.log_metrics({"i": i, "sq": float(i * i)})
            wait_for(lambda: _writer_failures(exp) >= 3, timeout=20)
            assert not exp.flush(timeout=0.2)      # honest: not on disk yet
            full.clear()
            assert exp.flush() is True
        messages = [str(w.message) for w in rec]
        assert sum("No space left on device" in m and "cannot write" in m
                   for m in messages) == 1, messages
    finally:
        exp.close()
    data = columns(exp.run_dir)
    assert data["step"] == list(range(500))
    assert data["sq"] == [float(i * i) for i in range(500)]


def test_run_yaml_is_never_read_half_written(root, tmp_path):
    # a reader process hammers run.yaml while the writer rewrites it (heartbeat every flush):
    # it reads until it has made 200 reads and seen 20 versions of the file (the writer's
    # rewrites raced its reads), however slow a loaded machine makes either side; the
    # deadline only bounds a writer that stopped rewriting
    exp = make(root, flush_interval_ms=5, heartbeat_secs=0.005)
    code = f"""
        import json, time, yaml
        bad = reads = 0
        versions = set()
        deadline = time.monotonic() + 120
        while (reads < 200 or len(versions) < 20) and time.monotonic() < deadline:
            with open({str(exp.run_dir / "run.yaml")!r}) as fh:
                data = yaml.safe_load(fh.read())
            reads += 1
            if not isinstance(data, dict) or data.get("name") != {exp.run_name!r}:
                bad += 1
            else:
                versions.add((data.get("heartbeat_at"), data.get("rows")))
        print(json.dumps([reads, len(versions), bad]))
    """
    child = Child(code, cwd=tmp_path)
    try:
        i = 0
        while child.proc.poll() is None:
            exp.log_metrics({"i": i})
            exp.log_scalar("i", i)
            i += 1
            if i % 50 == 0:
                exp.flush()
        assert child.wait(150) == 0, child.stderr
    finally:
        child.kill()
        exp.close()
    reads, versions, bad = json.loads(child.lines[-1])
    assert reads >= 200 and versions >= 20 and bad == 0, (reads, versions, bad)


def test_rows_are_stored_while_another_thread_is_importing_numpy(root, tmp_path):
    # NumPy is imported on whichever thread first needs it (`import pyarrow` pulls it in: the
    # demo's first pa.table() call), and sits in sys.modules half-initialized until that
    # import ends. The writer took it for loaded, and every row it converted meanwhile was
    # lost ("rows could not be stored": the demo's first run, then `expman export` of it in
    # the README test, under load). Here a real NumPy import is held half-way, in the loader
    # of its numpy.version step (a per-module lock: other imports go on), while the run logs
    # and flushes.
    proc = run_python(f"""
        import importlib.abc, importlib.machinery, sys, threading
        held, release = threading.Event(), threading.Event()

        class HeldLoader(importlib.abc.Loader):
            def __init__(self, loader):
                self.loader = loader

            def create_module(self, spec):
                return self.loader.create_module(spec)

            def exec_module(self, module):
                held.set()
                release.wait(120)
                self.loader.exec_module(module)

        class Hold(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path, target=None):
                if name != "numpy.version":
                    return None
                spec = importlib.machinery.PathFinder.find_spec(name, path)
                spec.loader = HeldLoader(spec.loader)
                return spec

        sys.meta_path.insert(0, Hold())
        import expman
        assert "numpy" not in sys.modules, "this test needs NumPy not imported yet"
        importer = threading.Thread(target=__import__, args=("numpy",), name="importer")
        importer.start()
        assert held.wait(60)
        assert sys.modules["numpy"].__spec__._initializing   # half-way, really
        exp = expman.Experiment("numpy", base_dir={str(root)!r}, run_name="r",
                                capture_git=False, flush_interval_ms=20)
        for i in range(500):
            exp.log_metrics({{"a": i / 7, "b": i}}, step=i)
        assert exp.flush(60)
        assert importer.is_alive()      # still held: the writer met NumPy half-way
        release.set()
        importer.join(60)
        exp.close()
        print("ok")
    """, cwd=tmp_path, timeout=180)
    assert proc.stdout.strip() == "ok", proc.stderr
    assert "could not be stored" not in proc.stderr and "failed" not in proc.stderr, proc.stderr
    run = root / "numpy" / "r"
    assert expman.load_run(run)["rows"] == 500
    assert columns(run)["a"] == [i / 7 for i in range(500)]
    assert columns(run)["b"] == [float(i) for i in range(500)]


def test_a_forked_child_neither_logs_into_nor_waits_for_the_parents_run(root, tmp_path):
    # DataLoader workers and multiprocessing pools fork after init(): the child has the run
    # object but no writer thread. Its log calls must warn (not vanish silently), and its
    # exit must not wait CLOSE_TIMEOUT_SECS for a writer that does not exist.
    proc = run_python(f"""
        import os, sys, time, warnings
        import expman
        exp = expman.init("forky", base_dir={str(root)!r}, capture_git=False)
        expman.log_metrics({{"a": 1.0}}, step=0)
        pid = os.fork()
        if pid == 0:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                exp.log_metrics({{"a": 2.0}}, step=1)
            print("child:", [str(w.message) for w in caught], flush=True)
            sys.exit(0)
        start = time.monotonic()
        os.waitpid(pid, 0)
        print("child exit took", round(time.monotonic() - start, 2))
        expman.log_metrics({{"a": 3.0}}, step=2)
    """, cwd=tmp_path, timeout=60)
    assert "forked child process" in proc.stdout
    took = float(proc.stdout.split("child exit took")[1].split()[0])
    assert took < 5, proc.stdout
    run_dir = only_run_dir(root, "forky")
    assert columns(run_dir) == {"step": [0, 2], "a": [1.0, 3.0]}
    assert expman.load_run(run_dir)["status"] == "finished"
