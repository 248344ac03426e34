"""Chart summaries of real runs checked against a brute-force reduction of their exact rows
(issue 13, Tests: "summaries equal to a brute-force min/max over the exact rows at every
level").

test_summaries.py checks the summary builder on tables written straight to metrics.parquet,
and the API against the server's own in-memory M4. Here the runs are logged for real
(several flushed segments, tiered merges, the close that compacts them), with NaN, inf,
-0.0, spikes, a sparse key, a key that starts late and steps repeated and out of order; and
every answer is compared with plain Python over the rows read back by load_metrics:
- the metrics.summary.parquet close() wrote, read as any Arrow tool reads it, bucket by
  bucket at every level, against min/max/first/last/first-NaN computed by hand;
- the points /api/.../metrics?max_points= sends for the closed run and for a live one, at
  overview and zoomed ranges, against a hand-written M4 over the same rows.
"""
import json
import math
import urllib.request

import pytest

import expman
from _util import serving
from test_summaries import brute_m4, check_level, summary_records

ROWS = 3000


@pytest.fixture
def small_summaries(monkeypatch):
    """Summaries for small runs, buckets from 2^2 rows, and a pyarrow compaction at every
    close, so that a few thousand rows exercise every level (the defaults start at 65,536
    rows and 2^8-row buckets)."""
    monkeypatch.setattr(expman, "SUMMARY_MIN_ROWS", 1)
    monkeypatch.setattr(expman, "PLAIN_FINAL_MAX_CELLS", 0)
    monkeypatch.setattr(expman, "SUMMARY_MIN_LEVEL", 2)


def row_values(i):
    """The metrics of row i: a wave with spikes, NaN, inf and -0.0; a sparse key; a key that
    appears only after row 1000."""
    loss = math.sin(i / 37) + i / ROWS
    if i % 211 == 0:
        loss = 40.0 + i                      # spikes a chart must keep
    if i % 97 == 5:
        loss = math.nan                      # gaps a chart must keep
    if i == 1500:
        loss = math.inf
    if i % 333 == 7:
        loss = -0.0
    row = {"loss": loss}
    if i % 7 == 0:
        row["val/acc"] = (i % 13) / 13 if i % 91 else math.nan
    if i >= 1000:
        row["late"] = -i if i % 5 else float(i)
    return row


def step_of(i):
    """Mostly increasing, with a repeat every 50 rows and a restart (a resumed run) at 2000."""
    return i if i < 2000 else i - 1500 + (i % 50 == 0)


def log_run(root, exp, name, rows, close=True):
    run = expman.Experiment(exp, base_dir=str(root), run_name=name, capture_git=False,
                            flush_interval_ms=20)
    for i in range(rows):
        run.log_metrics(row_values(i), step=step_of(i))
        if i % 400 == 399:
            assert run.flush(30)             # one segment per 400 rows: merges happen
    if close:
        run.close()
    else:
        assert run.flush(30)
    return run


def columns(run_dir):
    """{step, timestamp (µs), key: values} of the run's rows, as load_metrics reads them."""
    table = expman.load_metrics(str(run_dir))
    cols = table.to_pydict()
    cols["timestamp"] = [None if t is None else round(t.timestamp() * 1e6)
                         for t in cols["timestamp"]]
    return cols


def check_points(url, cols, keys, max_points, lo=None, hi=None):
    query = f"max_points={max_points}"
    if lo is not None:
        query += f"&x_min={lo}&x_max={hi}"
    with urllib.request.urlopen(f"{url}?{query}", timeout=60) as resp:
        data = json.loads(resp.read())
    assert data["rows"] == len(cols["step"])
    for key in keys:
        steps, times, values, _down = brute_m4(cols, key, max_points, lo, hi)
        got = data["series"].get(key, {"step": [], "time": [], "value": []})
        assert got["step"] == steps, (key, query)
        assert [repr(v) for v in got["value"]] == [repr(v) for v in values], (key, query)
        assert len(got["time"]) == len(times)
        assert all(a is None and b is None or abs(a - b) < 2e-6
                   for a, b in zip(got["time"], times)), (key, query)
    return data


QUERIES = [(40, None, None), (400, None, None), (4000, None, None), (40, 100, 900),
           (12, 1495, 1505), (100, 600, 2600)]


def test_a_logged_run_s_summary_is_every_bucket_of_its_rows(root, small_summaries):
    log_run(root, "sum", "r", ROWS)
    run_dir = root / "sum" / "r"
    summary = run_dir / expman.SUMMARY_FILE
    assert summary.exists() and not (run_dir / "metrics").exists()
    cols = columns(run_dir)
    assert len(cols["step"]) == ROWS
    found, meta = summary_records(str(summary))
    assert meta["rows"] == ROWS
    assert meta["min_level"] == 2 and 2 ** meta["top_level"] >= ROWS
    checked = 0
    for key in ("loss", "val/acc", "late"):
        for level in range(meta["min_level"], meta["top_level"] + 1):
            checked += check_level(found, cols, key, level)
    assert checked > 1000
    assert set(found) == {(k, lv) for k in ("loss", "val/acc", "late")
                          for lv in range(meta["min_level"], meta["top_level"] + 1)}
    with serving(root, live=False) as srv:
        url = f"{srv.url}/api/experiments/sum/runs/r/metrics"
        for max_points, lo, hi in QUERIES:
            check_points(url, cols, ["loss", "val/acc", "late"], max_points, lo, hi)


def test_a_live_run_s_points_are_the_points_of_its_rows(root, small_summaries):
    run = log_run(root, "sum", "live", ROWS, close=False)
    try:
        with serving(root) as srv:
            url = f"{srv.url}/api/experiments/sum/runs/live/metrics"
            for more in (0, 700):
                for i in range(ROWS, ROWS + more):   # more rows: the answers follow them
                    run.log_metrics(row_values(i), step=step_of(i))
                assert run.flush(30)
                cols = columns(run.run_dir)
                assert len(cols["step"]) == ROWS + more
                for max_points, lo, hi in QUERIES:
                    check_points(url, cols, ["loss", "val/acc", "late"], max_points, lo, hi)
    finally:
        run.close()
