"""Zooms served from chart summaries (issue 13 items 3 and 4): /metrics?...&snap=1 answers a
zoom from summary records alone, its range widened to the edges of the records it reads and
said in the series' "range"; the points are exactly those a brute-force min/max (first, last,
first NaN) over the rows of that widened range gives. Where it cannot be exact that way
(steps out of order, zoomed in far), it answers as without snap, from the rows. Several runs
in one request (/api/experiments/<exp>/metrics?run=a&run=b) answer what one request per run
answers.
"""
import json
import math
import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

import expman
from _util import start_server, stop_server
from test_server import Client
from test_summaries import (brute_m4, live_row, live_summaries, small_summaries,  # noqa: F401
                           tables, write_run)

NO_SHRINK = [Phase.explicit, Phase.reuse, Phase.generate]
STORE = expman._LOCAL_STORE


def snapped(run, keys, max_points, lo, hi):
    return expman._chart_series(STORE, run, keys, max_points, lo, hi, snap=True)


def exact(run, keys, max_points, lo, hi):
    return expman._chart_series(STORE, run, keys, max_points, lo, hi)


def check_against_rows(cols, key, got, max_points, lo, hi, plain):
    """got (one snapped series) is the brute-force chart of the rows of its range, which
    holds [lo, hi]; or, without a range, the series the request without snap sends."""
    if "range" not in got:
        assert got == plain
        return False
    a, b = got.pop("range")
    # every value in [lo, hi] is in the range (which may end where the values end)
    inside = [s for s, v in zip(cols["step"], cols[key]) if v is not None
              and (lo is None or s >= lo) and (hi is None or s <= hi)]
    assert all((a is None or a <= s) and (b is None or s <= b) for s in inside)
    steps, times, values, _down = brute_m4(cols, key, max_points, a, b)
    assert got["step"] == steps and got["time"] == times
    assert [repr(v) for v in got["value"]] == [repr(v) for v in values]
    return True


@settings(max_examples=80, deadline=None, phases=NO_SHRINK,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(cols=tables(max_rows=600), group=st.integers(1, 64),
       max_points=st.sampled_from([4, 8, 12, 20, 60]), lo=st.integers(-10, 900),
       width=st.integers(0, 600), open_end=st.sampled_from([None, "lo", "hi"]))
def test_a_snapped_zoom_is_the_brute_force_chart_of_its_widened_range(
        tmp_path_factory, monkeypatch, cols, group, max_points, lo, width, open_end):
    monkeypatch.setattr(expman, "SUMMARY_MIN_ROWS", 1)
    monkeypatch.setattr(expman, "SUMMARY_MIN_LEVEL", 1)
    expman._SUMMARIES.clear()
    hi = lo + width
    lo, hi = (None, hi) if open_end == "lo" else (lo, None) if open_end == "hi" else (lo, hi)
    run = str(tmp_path_factory.mktemp("run"))
    write_run(run, cols, group)
    expman._write_summary(STORE, os.path.join(run, "metrics.parquet"),
                          os.path.join(run, expman.SUMMARY_FILE))
    keys = ["loss", "val/acc"]
    got = snapped(run, keys, max_points, lo, hi)
    plain = exact(run, keys, max_points, lo, hi)
    assert got[2:] == plain[2:]
    for key in keys:
        if key in plain[0]:
            check_against_rows(cols, key, got[0][key], max_points, lo, hi, plain[0][key])


def spiky(n, seed=0):
    """A wave with spikes, NaN and infinities at rows a zoom's edges come near."""
    out = []
    for i in range(n):
        v = math.sin((i + seed) / 50.0)
        if i % 9973 == 17:
            v = 100.0 + i / n
        elif i % 7919 == 3:
            v = -100.0 - i / n
        elif i % 6007 == 11:
            v = math.nan
        elif i % 15013 == 5:
            v = math.inf
        out.append(v)
    return out


def big_run(path, n=300_000, seed=0, sparse_every=3):
    """A closed run's metrics.parquet as compaction writes it (65,536-row groups) and its
    summary made by this expman."""
    os.makedirs(path, exist_ok=True)
    values = spiky(n, seed)
    table = pa.table({
        "step": pa.array(range(n), pa.int64()),
        "timestamp": pa.array([1_700_000_000_000_000 + 1000 * i for i in range(n)],
                              pa.timestamp("us", tz="UTC")),
        "loss": pa.array(values, pa.float64()),
        "acc": pa.array([v if i % sparse_every == 0 else None for i, v in enumerate(values)],
                        pa.float64())})
    pq.write_table(table, os.path.join(path, "metrics.parquet"), row_group_size=65536)
    assert expman._write_summary(STORE, os.path.join(path, "metrics.parquet"),
                                 os.path.join(path, expman.SUMMARY_FILE))
    return table


def cols_of(table):
    return {"step": table.column("step").to_pylist(),
            "timestamp": table.column("timestamp").cast(pa.int64()).to_pylist(),
            **{k: table.column(k).to_pylist() for k in ("loss", "acc")}}


def test_a_zoom_of_a_big_run_reads_no_rows_and_keeps_its_extremes(tmp_path, monkeypatch):
    """300,000 rows, summary buckets from 2^8 rows: zooms to 1-50 % of the run, at the
    page's point counts, are answered from the summary without reading a row (spied on the
    row scanner), widened by at most one summary record each side, and equal the brute-force
    chart of the widened range: every spike, infinity and NaN gap in it."""
    expman._SUMMARIES.clear()
    run = str(tmp_path / "big" / "r")
    cols = cols_of(big_run(run))
    scans = []
    real_scan = expman._scan_key
    monkeypatch.setattr(expman, "_scan_key", lambda *a: scans.append(a) or real_scan(*a))
    for max_points, lo, hi in ((180, 120_000, 135_000), (180, 3, 150_000), (720, 100, 30_100),
                               (100, 270_000, 299_999), (2000, 7_777, 299_999)):
        got, down, rows, keys = snapped(run, ["loss", "acc"], max_points, lo, hi)
        assert down and rows == 300_000 and keys == ["loss", "acc"]
        for key in ("loss", "acc"):
            series = got[key]
            a, b = series["range"]
            # widened by at most one record of the level read (2^(chart level - 3)) a side
            assert lo - 2 ** 8 - (hi - lo) // 16 <= a <= lo + 3
            assert hi - 3 <= b <= hi + 2 ** 8 + (hi - lo) // 16
            assert check_against_rows(cols, key, series, max_points, lo, hi, None)
        if lo == 120_000:  # a spike of the range, alone in its bucket: drawn
            spikes = [cols["loss"][s] for s in range(lo, hi + 1) if s % 9973 == 17]
            assert spikes and all(s in got["loss"]["value"] for s in spikes)
    assert not scans, "a snapped zoom of a summarized run read rows"
    # zoomed in far (buckets finer than the summary's, or fewer values than points): the
    # rows, exactly as without snap
    for max_points, lo, hi in ((400, 5000, 5100), (180, 100, 3_100), (2000, 77_777, 99_999)):
        far = snapped(run, ["loss", "acc"], max_points, lo, hi)
        assert "range" not in far[0]["loss"] and far == exact(run, ["loss", "acc"], max_points,
                                                               lo, hi)
    assert scans


def test_steps_out_of_order_are_answered_from_the_rows(tmp_path):
    """A run whose steps go back (a resumed run): no widening can be exact there, so the
    snapped request sends what the plain one does."""
    expman._SUMMARIES.clear()
    run = str(tmp_path / "big" / "r")
    n = 80_000
    table = pa.table({"step": pa.array([i if i < 60_000 else i - 50_000 for i in range(n)],
                                       pa.int64()),
                      "timestamp": pa.array([1000 * i for i in range(n)],
                                            pa.timestamp("us", tz="UTC")),
                      "loss": pa.array(spiky(n), pa.float64())})
    os.makedirs(run)
    pq.write_table(table, os.path.join(run, "metrics.parquet"), row_group_size=8192)
    assert expman._write_summary(STORE, os.path.join(run, "metrics.parquet"),
                                 os.path.join(run, expman.SUMMARY_FILE))
    # the last range holds only rows of before the steps went back: in order there, but
    # rows outside it have steps inside what a widening would cover
    for lo, hi in ((6000, 12000), (1000, 29_000), (29_000, 30_000), (40_000, 55_000)):
        got = snapped(run, ["loss"], 40, lo, hi)
        assert "range" not in got[0]["loss"]
        assert got == exact(run, ["loss"], 40, lo, hi)


def test_a_live_runs_zoom_is_the_brute_force_chart_of_its_widened_range(root, live_summaries):
    """A real writer's live run (summarized segments and a tail without summaries):
    snapped zooms equal the brute-force chart of their range, as closed runs' do."""
    e = expman.Experiment("big", base_dir=str(root), run_name="r", capture_git=False,
                          flush_interval_ms=60_000)
    try:
        for i in range(3000):
            e.log_metrics(live_row(i), step=i)
            if i % 45 == 44:
                assert e.flush(30)
        assert e.flush(30)
        store, path = expman._open_store(e.run_dir)
        assert os.listdir(os.path.join(path, expman.SUMMARY_DIR))
        table = expman.load_metrics(e.run_dir)
        cols = {"step": table.column("step").to_pylist(),
                "timestamp": table.column("timestamp").cast(pa.int64()).to_pylist(),
                "loss": table.column("loss").to_pylist(), "acc": table.column("acc").to_pylist()}
        widened = 0
        for max_points, lo, hi in ((12, 100, 2000), (40, 500, 2999), (8, 1200, 1500),
                                   (20, 0, 700), (60, 2900, 3100), (16, 2500, 2999)):
            got = snapped(path, ["loss", "acc"], max_points, lo, hi)
            plain = exact(path, ["loss", "acc"], max_points, lo, hi)
            assert got[2:] == plain[2:]
            for key in ("loss", "acc"):
                widened += check_against_rows(cols, key, got[0][key], max_points, lo, hi,
                                              plain[0][key])
        assert widened >= 6
    finally:
        e.close()


def test_many_runs_in_one_request_answer_what_one_request_each_does(tmp_path):
    """/api/experiments/<exp>/metrics?run=..: the same series as /runs/<run>/metrics per
    run, a 404 entry for a run that is not there, a 400 for a bad request."""
    expman._SUMMARIES.clear()
    root = tmp_path / "root"
    for i in range(3):  # a run made by expman, its rows then replaced by a big table
        with expman.Experiment("big", base_dir=str(root), run_name=f"r{i}",
                               capture_git=False) as e:
            e.log_metrics({"loss": 0.0, "acc": 0.0}, step=0)
        big_run(str(root / "big" / f"r{i}"), n=70_000, seed=i, sparse_every=2 + i)
    with expman.Experiment("big", base_dir=str(root), run_name="small", capture_git=False) as e:
        for i in range(500):
            e.log_metrics({"loss": 1.0 / (1 + i)}, step=i)
    server, thread = start_server(str(root))
    try:
        client = Client(server.url)
        runs = ["r0", "r1", "small", "r2"]
        for query in ("keys=loss&since=0&max_points=180&x_min=20000&x_max=30000&snap=1",
                      "keys=loss,acc&max_points=100&x_min=10&x_max=60000",
                      "max_points=400"):
            many = client.json(f"/api/experiments/big/metrics?{query}"
                               + "".join(f"&run={r}" for r in runs + ["gone"]))["runs"]
            assert sorted(many) == sorted(runs + ["gone"])
            for run in runs:
                one = client.json(f"/api/experiments/big/runs/{run}/metrics?{query}")
                assert json.dumps(many[run], sort_keys=True) == json.dumps(one, sort_keys=True)
            assert many["gone"]["status"] == 404 and "gone" in many["gone"]["error"]
        wide = client.json("/api/experiments/big/metrics?keys=loss&max_points=180&x_min=20000"
                           "&x_max=30000&snap=1&run=r0")["runs"]["r0"]["series"]["loss"]
        assert wide["range"][0] <= 20000 and wide["range"][1] >= 30000
        base = "/api/experiments/big/metrics"
        assert client.request(base + "?max_points=10")[0] == 400            # no run
        assert client.request(base + "?run=r0")[0] == 400                  # not a chart
        assert client.request(base + "?max_points=10&run=r0&snap=2")[0] == 400
        assert client.request(base + "?max_points=10&run=r0&x_min=nan")[0] == 400
        assert client.request(base + "?max_points=10" + "".join(
            f"&run=r{i}" for i in range(expman._MANY_RUNS_MAX + 1)))[0] == 400
        assert client.request("/api/experiments/nope/metrics?max_points=10&run=r0")[0] == 200
        assert client.json("/api/experiments/nope/metrics?max_points=10&run=r0")["runs"][
            "r0"]["status"] == 404
    finally:
        stop_server(server, thread)


@pytest.fixture(autouse=True)
def _clear_summaries():
    yield
    expman._SUMMARIES.clear()
