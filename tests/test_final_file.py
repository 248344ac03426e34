"""What close() leaves behind, built cheaply (issue 19: loop + close): metrics.parquet and its
chart summary.

- metrics.parquet's pages are GZIP-compressed where that shrinks them (step, timestamp,
  floats that deflate: a float32 loss, fractions, constants), by the flush or merge that
  makes them; every Arrow reader reads the file back equal to the rows logged, joins copy
  or coalesce compressed pages exactly, and a SIGKILL inside close's join of compressed
  segments leaves no half-written file and loses no row.
- The chart summary of rows without nulls is bucketed with NumPy (_m4_bucketed): its
  records must be the general path's (_m4_combine over _m4_rows, sorts) exactly, NaN, inf,
  -0.0, all-NaN buckets and batches cut anywhere included, and a closed run's summary file
  must hold every bucket of its rows by hand (brute force from test_summaries).
"""
import array
import importlib
import math
import random
import sys
import warnings

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import expman
from _util import make_experiment
from test_plain_parquet import _batch, _read
from test_reliability import JOIN_KILL_CHILD, killed_in_the_join, reap_finishes_the_join
from test_summaries import check_level, summary_records

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
            assert (key, level) in found, (key, level)
            checked += check_level(found, cols, key, level)
    assert checked > 10_000


# -- compressed pages ----------------------------------------------------------------------------

def f32(x):
    return array.array("f", [x])[0]   # what float(tensor.item()) of a float32 loss gives


def realistic_row(i, rng):
    """A training step: a float32 loss, an accuracy of k/256, a warm-up lr, a noisy float64
    gradient norm (does not shrink), and a validation loss every 100 steps."""
    row = {"train/loss": f32(2.3 * math.exp(-i / 4000) + 0.05 * rng.gauss(0, 1)),
           "train/acc": rng.randint(0, 256) / 256, "lr": 1e-3 * min(1.0, i / 1000),
           "grad_norm": abs(rng.gauss(1, 0.3))}
    if i % 100 == 99:
        row["val/loss"] = f32(2.0 * math.exp(-i / 4000))
    return row


def codecs(path):
    """{column: set of codecs over its row groups}."""
    meta = pq.ParquetFile(path).metadata
    out = {}
    for g in range(meta.num_row_groups):
        group = meta.row_group(g)
        for j in range(group.num_columns):
            col = group.column(j)
            out.setdefault(col.path_in_schema, set()).add(col.compression)
    return out


def test_the_final_file_is_compressed_where_that_pays_and_reads_equal(root):
    """A 12,000-row flush (compressed where it is written), 16 flushes of 625 rows (the
    first 15 merged with it, 16 segments to a merge: its group copied, theirs coalesced
    into one 9,375-row group that the merge compresses), then 625 + 1,000 rows in 5 flushes
    that close joins (coalesced, left plain: close compresses nothing). Every reader reads
    back exactly the rows logged."""
    rng = random.Random(3)
    exp = make_experiment(root, flush_interval_ms=10 ** 6)
    rows = [realistic_row(i, rng) for i in range(23_000)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", expman.ExpmanWarning)  # a tight loop meets the bound
        for i, row in enumerate(rows):
            exp.log_metrics(row, step=i)
            if i == 11_999 or (12_000 < i < 22_000 and (i - 12_000) % 625 == 624) or (
                    i > 22_000 and i % 250 == 249):
                assert exp.flush(60)
    exp.close()
    path = exp.run_dir / "metrics.parquet"
    meta = pq.ParquetFile(path).metadata
    assert [meta.row_group(g).num_rows for g in range(meta.num_row_groups)] == [
        12_000, 9_375, 1_625]
    names = [meta.row_group(0).column(j).path_in_schema for j in range(meta.num_columns)]
    found = [{n: meta.row_group(g).column(j).compression for j, n in enumerate(names)}
             for g in range(3)]
    # the flush: step, timestamp and what deflates to 40 % (k/256, a constant lr); the
    # merge: also what deflates to 80 % (a float32 loss); neither: random float64 bits
    want_codecs = [{"train/loss": "UNCOMPRESSED"}, {"train/loss": "GZIP"}]
    for group, want in zip(found, want_codecs):
        want = {"step": "GZIP", "timestamp": "GZIP", "train/acc": "GZIP", "lr": "GZIP",
                "grad_norm": "UNCOMPRESSED", "val/loss": "UNCOMPRESSED", **want}
        assert group == want, found
    assert set(found[2].values()) == {"UNCOMPRESSED"}  # close's own: not compressed
    keys = ["train/loss", "train/acc", "lr", "grad_norm", "val/loss"]
    want = {"step": list(range(len(rows)))}
    want.update({k: [r.get(k) for r in rows] for k in keys})
    table = pq.read_table(path)
    assert {k: table.column(k).to_pylist() for k in want} == want
    assert table.schema.metadata[b"expman.rows"] == b"0 23000"
    stamps = table.column("timestamp").cast(pa.int64()).to_pylist()
    assert stamps == sorted(stamps) and stamps[0] > 1.7e15
    # other Arrow readers, where installed (requirements-dev.txt has both)
    for name, read in (("duckdb", lambda m: m.sql(
            f"SELECT * FROM read_parquet('{path}') ORDER BY step").arrow()),
                       ("polars", lambda m: m.read_parquet(str(path)).to_arrow())):
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        other = read(module)
        other = other.read_all() if hasattr(other, "read_all") else other
        assert {k: other.column(k).to_pylist() for k in want} == want, name
        assert other.column("timestamp").cast(pa.int64()).to_pylist() == stamps, name
    assert expman.load_metrics(exp.run_dir).drop_columns(["timestamp"]).to_pydict() == want


@pytest.mark.parametrize("group_rows", [1, 300, 100_000])
def test_joins_copy_and_coalesce_compressed_pages_exactly(monkeypatch, group_rows):
    """Plain files with compressed pages (lowered threshold), joined: a group with a
    compressed page is copied whole, its bytes as they are, whatever group_rows says; small
    plain neighbours are coalesced (and compressed when big enough, unless close's
    compress=False); a join of the join reads the same; _pq_group still decodes compressed
    pages it is given to coalesce (files not made by this writer's rules)."""
    monkeypatch.setattr(expman, "PLAIN_GZIP_MIN_ROWS", 100)
    parts, expect, at = [], {"step": [], "a": [], "b": [], "noise": []}, 0
    rng = random.Random(9)
    for n, keys in [(400, ("a", "b", "noise")), (150, ("a",)), (40, ("a", "noise")),
                    (70, ("a", "b")), (700, ("a", "b"))]:
        steps = list(range(at, at + n))
        values = {"a": [float(i % 5) for i in steps],
                  "b": [None if i % 3 == 0 else 0.25 for i in steps],
                  "noise": [rng.random() for _ in steps]}
        values = {k: v for k, v in values.items() if k in keys}
        layout = []
        data = expman._plain_parquet([_batch(steps, values)], ["a", "b", "noise"],
                                     (at, at + n), layout)
        parts.append((data, layout))
        for key in ("a", "b", "noise"):
            expect[key] += values.get(key, [None] * n)
        expect["step"] += steps
        at += n
    first = pq.ParquetFile(pa.BufferReader(parts[0][0])).metadata.row_group(0)
    assert [first.column(j).compression for j in range(5)] == [
        "GZIP", "GZIP", "GZIP", "GZIP", "UNCOMPRESSED"]   # step, timestamp, a, b, noise
    layout = []
    data = expman._join_plain(parts, ["a", "b", "noise"], (0, at), group_rows, layout)
    table = _read(data)
    assert {k: table.column(k).to_pylist() for k in expect} == expect
    meta = pq.ParquetFile(pa.BufferReader(data)).metadata
    sizes = [meta.row_group(i).num_rows for i in range(meta.num_row_groups)]
    assert sizes == ([400, 150, 40, 70, 700] if group_rows == 1 else [400, 150, 110, 700])
    assert [meta.row_group(g).column(0).compression for g in range(len(sizes))] == [
        "GZIP" if n >= 100 else "UNCOMPRESSED" for n in sizes]   # 40, 70: too few alone
    plain = expman._join_plain(parts, ["a", "b", "noise"], (0, at), group_rows,
                               compress=False)
    meta = pq.ParquetFile(pa.BufferReader(plain)).metadata
    assert [meta.row_group(g).column(0).compression for g in range(len(sizes))] == [
        "GZIP", "GZIP"] + ["UNCOMPRESSED"] * (len(sizes) - 3) + ["GZIP"]
    assert _read(plain).equals(table)
    pending = [(memoryview(d), lay[0][0], lay[0][1]) for d, lay in parts[:2]]
    piece, (n, chunks) = expman._pq_group(pending, ["step", "timestamp", "a", "b", "noise"],
                                          4, compress=False)
    alone = b"PAR1" + piece + expman._pq_footer(["a", "b", "noise"], [(n, chunks)], (0, 550))
    assert {k: _read(alone).column(k).to_pylist() for k in expect} == {
        k: v[:550] for k, v in expect.items()}
    if group_rows == 1:   # copied whole: the very bytes of the source pages
        src = parts[0][1][0][1]
        lo, hi = min(c[3] for c in src), max(c[3] + c[4] for c in src)
        assert parts[0][0][lo:hi] in data
    again = expman._join_plain([(data, layout[0])], ["a", "b", "noise"], (0, at), 200)
    assert _read(again).equals(table)


@pytest.mark.parametrize("kill_at", [1, 2, -1])  # pieces: PAR1, a row group, the footer
def test_sigkill_inside_the_join_of_compressed_segments_loses_nothing(root, tmp_path, capsys,
                                                                       kill_at):
    """test_reliability's kill inside close's byte join, with segments whose pages are
    compressed (threshold lowered, 200-row flushes, values that deflate), merged 16 at a
    time with their compressed pages copied: killed at any piece, no metrics.parquet appears, every row reads from
    the segments, and `reap --compact` finishes the run."""
    rows = 5000
    code = (JOIN_KILL_CHILD.replace("ROOT", repr(str(root))).replace("KILL_AT", str(kill_at))
            .replace("import os, signal, expman",
                     "import os, signal, expman\nexpman.PLAIN_GZIP_MIN_ROWS = 64")
            .replace("range(3000)", f"range({rows})").replace("i % 10 == 9", "i % 200 == 199"))
    assert "PLAIN_GZIP_MIN_ROWS = 64" in code and f"range({rows})" in code
    run = killed_in_the_join(code, root, tmp_path)
    assert [p.name for p in run.glob("metrics.parquet.tmp-*")]  # cut short, never renamed
    segs = sorted((run / "metrics").iterdir())
    merged = [p for p in segs if p.name.startswith("seg-000000000000-000000003200")]
    assert merged and codecs(merged[0])["i"] == {"GZIP"}    # the merge copied them
    reap_finishes_the_join(run, rows, capsys)
    # the killed join's temp file (metrics.parquet.tmp-<pid>-<thread>) is gone with it
    assert sorted(p.name for p in run.iterdir()) == [
        "artifacts", "config.yaml", "metrics.parquet", "run.log", "run.yaml"]
