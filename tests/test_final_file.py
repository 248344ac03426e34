"""What close() leaves behind, built cheaply (issue 19: loop + close): metrics.parquet and its
chart summary.

- The chart summary of rows without nulls is bucketed with NumPy (_m4_bucketed): its
  records must be the general path's (_m4_combine over _m4_rows, sorts) exactly, NaN, inf,
  -0.0, all-NaN buckets and batches cut anywhere included, and a closed run's summary file
  must hold every bucket of its rows by hand (brute force from test_summaries).
"""
import math
import random
import sys

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import expman
from test_summaries import brute_records, same, summary_records

SPECIAL = [math.nan, math.inf, -math.inf, -0.0, 0.0, 1.0, -1.0, 2.0]


def batch_of(steps, times, values):
    return pa.record_batch([pa.array(steps, pa.int64()),
                            pa.array(times, pa.timestamp("us", tz="UTC")),
                            pa.array(values, pa.float64())], names=["step", "timestamp", "k"])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), k0=st.integers(0, 5), at=st.integers(0, 100), cut=st.integers(0, 5))
def test_dense_bucketing_is_the_general_path(data, k0, at, cut):
    assert "numpy" in sys.modules  # pyarrow loads it: the fast path is the one under test
    n = data.draw(st.integers(1, 300))
    special = SPECIAL if data.draw(st.booleans()) else SPECIAL[1:]  # with NaN or without
    values = data.draw(st.lists(st.one_of(st.sampled_from(special), st.floats(-5, 5)),
                                min_size=n, max_size=n))
    if data.draw(st.booleans()):  # whole buckets of NaN, and NaN before an inf
        for i in range(0, n, 3):
            values[i] = math.nan
    steps = data.draw(st.lists(st.integers(-10, 40), min_size=n, max_size=n))
    times = [i * 1000 + (i % 7) for i in range(n)]
    batch = batch_of(steps, times, values)
    batch = batch.slice(min(cut, n - 1))  # a batch whose buffers start at an offset
    got = expman._m4_bucketed(batch, "k", at, k0)
    want = expman._m4_combine(expman._m4_batch(batch, "k", at), k0)
    assert got.schema == want.schema
    assert repr(got.to_pylist()) == repr(want.to_pylist())


def test_a_closed_run_s_summary_from_dense_batches_is_every_bucket(root, monkeypatch):
    """40,000 rows (batches of 2^14+ rows take the NumPy path) of a key in every row, with
    NaN runs, infs and -0.0, and a sparse key (the general path), against brute force."""
    monkeypatch.setattr(expman, "SUMMARY_MIN_ROWS", 1)
    monkeypatch.setattr(expman, "SUMMARY_MIN_LEVEL", 2)
    monkeypatch.setattr(expman, "PLAIN_SUMMARY_MIN_CELLS", 0)
    rng = random.Random(7)
    rows = 40_000
    run = expman.Experiment("dense", base_dir=str(root), run_name="r", capture_git=False)
    for i in range(rows):
        loss = rng.choice(SPECIAL) if i % 13 == 0 else math.sin(i / 50) + rng.random()
        if 8000 <= i < 8012 or i in (9001, 9002):
            loss = math.nan                  # an all-NaN bucket; NaN before an inf
        if i == 9003:
            loss = math.inf
        row = {"loss": loss, "smooth": math.cos(i / 300) + (i % 17) / 8}  # no NaN at all
        if i % 9 == 0:
            row["sparse"] = rng.random()
        run.log_metrics(row, step=i // 2)
        if i % 10_000 == 9_999:
            assert run.flush(30)             # segments of 10,000 rows, joined at close
    run.close()
    run_dir = root / "dense" / "r"
    table = expman.load_metrics(str(run_dir))
    cols = table.to_pydict()
    cols["timestamp"] = [round(t.timestamp() * 1e6) for t in cols["timestamp"]]
    assert len(cols["step"]) == rows
    found, meta = summary_records(str(run_dir / expman.SUMMARY_FILE))
    assert meta["rows"] == rows and meta["min_level"] == 2
    checked = 0
    for key in ("loss", "smooth", "sparse"):
        for level in range(meta["min_level"], meta["top_level"] + 1):
            want = brute_records(cols, key, level)
            got = found[(key, level)]
            assert sorted(got) == sorted(want), (key, level)
            for bucket, rec in want.items():
                rec, have = dict(rec), dict(got[bucket])
                for k in ("first_time", "last_time", "min_time", "max_time", "nan_time"):
                    a, b = rec.pop(k), have.pop(k)
                    assert (a is None and b is None) or abs(a - b) <= 1, (key, level, k)
                assert same(have, rec), (key, level, bucket)
                checked += 1
    assert checked > 10_000
