"""The writer's own Parquet (section 7.3) and what it buys (issue 19): segments any Parquet
reader reads exactly, a short run that never imports pyarrow, and a backlog estimate that
counts what queued rows really hold."""
import array
import json
import math
import sys
import warnings

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import expman
from _util import columns, make_experiment, run_python


def _read(data):
    return pq.read_table(pa.BufferReader(data))


def _batch(steps, cols):
    """A staged batch as _Writer._stage makes it: cols {key: [value or None per row]}."""
    n = len(steps)
    out = {}
    for key, values in cols.items():
        kept = array.array("d", [v for v in values if v is not None])
        if len(kept) == n:
            out[key] = (kept, None)
        else:
            bitmap = bytearray((n + 7) >> 3)
            for i, v in enumerate(values):
                if v is not None:
                    bitmap[i >> 3] |= 1 << (i & 7)
            out[key] = (kept, bytes(bitmap))
    micros = array.array("q", [1_700_000_000_000_000 + s for s in steps])
    return (n, array.array("q", steps), micros, out)


@pytest.mark.parametrize("sizes", [[1], [13], [8, 8], [13, 3, 21], [10_000, 7]])
def test_plain_parquet_reads_back_exactly(sizes):
    # batches of any length (not multiples of 8) join into one page per column; a key
    # missing from a batch, nulls at any position, NaN and inf survive
    batches, expect, start = [], {"step": [], "a": [], "b": [], "c": []}, 0
    for k, n in enumerate(sizes):
        steps = list(range(start, start + n))
        a = [float(s) * 0.5 for s in steps]
        a[0] = math.inf
        b = [None if (s % 3 == 0) else float(s) for s in steps]
        cols = {"a": a, "b": b}
        if k % 2:
            cols["c"] = [math.nan if s % 2 else -1.0 for s in steps]
        batches.append(_batch(steps, cols))
        expect["step"] += steps
        expect["a"] += a
        expect["b"] += b
        expect["c"] += cols.get("c", [None] * n)
        start += n
    data = expman._plain_parquet(batches, ["a", "b", "c", "never"], (5, 5 + start))
    table = _read(data)
    assert table.schema.field("step").type == pa.int64()
    assert table.schema.field("timestamp").type == pa.timestamp("us", tz="UTC")
    assert table.schema.names == ["step", "timestamp", "a", "b", "c"] if len(sizes) > 1 \
        else table.schema.names == ["step", "timestamp", "a", "b"]
    assert table.schema.metadata[b"expman.rows"] == f"5 {5 + start}".encode()
    got = table.to_pydict()
    assert got["step"] == expect["step"]
    assert [t.timestamp() for t in got["timestamp"]] == [1_700_000_000 + s / 1e6
                                                         for s in expect["step"]]
    for key in table.schema.names[2:]:
        assert [repr(v) for v in got[key]] == [repr(v) for v in expect[key]], key


def test_plain_parquet_many_columns_and_no_rows():
    keys = [f"k/{i:03d}" for i in range(40)]   # > 15: the long list headers
    data = expman._plain_parquet([_batch([0, 1], {k: [1.0, None] for k in keys})], keys,
                                 (0, 2))
    table = _read(data)
    assert table.schema.names[2:] == keys and table.column("k/039").to_pylist() == [1.0, None]
    empty = _read(expman._plain_parquet([], (), (0, 0)))
    assert empty.num_rows == 0 and empty.schema.names == ["step", "timestamp"]
    assert empty.schema.field("timestamp").type == pa.timestamp("us", tz="UTC")


def test_a_segment_is_built_with_a_pause_before_every_page_step_and_time_too():
    """The writer's _pause runs before each column's page, the step and timestamp pages as
    well (they ran in one go after the writer's slice: a 5 ms wait for the log call that met
    it), and the file is the same with or without pauses."""
    staged = [_batch(list(range(300)), {"a": [1.0] * 300, "b": [2.0] * 300}),
              _batch(list(range(300, 400)), {"a": [3.0] * 100})]
    pages = []
    data = expman._plain_parquet(staged, ["a", "b"], (0, 400), pause=lambda: pages.append(1))
    assert len(pages) == 4                     # step, timestamp, a, b
    assert data == expman._plain_parquet(staged, ["a", "b"], (0, 400))
    assert _read(data).column("step").to_pylist() == list(range(400))


def test_a_short_run_never_imports_pyarrow(tmp_path):
    out = run_python(f"""
        import json, sys, expman
        exp = expman.Experiment("tiny", base_dir={str(tmp_path)!r})
        for i in range(300):
            exp.log_metrics({{"loss": 1.0 / (i + 1), "acc": i / 300}}, step=i)
            if i == 150:
                exp.log_metrics({{"val/loss": 0.5}})
        exp.close()
        print(json.dumps([sorted(m for m in sys.modules if m.split(".")[0] == "pyarrow"),
                          str(exp.run_dir)]))
    """, cwd=tmp_path).stdout
    loaded, run_dir = json.loads(out.strip().splitlines()[-1])
    assert loaded == []
    data = columns(run_dir)
    assert data["step"] == list(range(151)) + [151] + list(range(151, 300))
    assert data["loss"][:3] == [1.0, 0.5, 1 / 3] and data["val/loss"][151] == 0.5
    assert sorted(p.name for p in expman._RunPath(run_dir).iterdir()) == [
        "artifacts", "config.yaml", "metrics.parquet", "run.log", "run.yaml"]
    run = expman.load_run(run_dir)
    assert run["status"] == "finished" and run["summary"]["loss"] == 1 / 300
    import pyarrow
    assert run["packages"]["pyarrow"] == pyarrow.__version__  # found without importing it


def test_segments_join_into_metrics_parquet_without_pyarrow(tmp_path):
    # several segments (flush every 200 rows), a key that appears late, a value refused:
    # close joins them byte for byte, one row group each, in a process without pyarrow
    out = run_python(f"""
        import json, sys, warnings, expman
        warnings.simplefilter("ignore")
        exp = expman.Experiment("join", base_dir={str(tmp_path)!r}, flush_interval_rows=200,
                                capture_git=False)
        for i in range(1000):
            row = {{"a": float(i)}}
            if i >= 450:
                row["late"] = -float(i)
            if i == 600:
                row["a"] = "bad"
            exp.log_metrics(row, step=i)
            if i % 200 == 199:
                exp.flush()
        exp.close()
        print(json.dumps([sorted(m for m in sys.modules if m.split(".")[0] == "pyarrow"),
                          str(exp.run_dir)]))
    """, cwd=tmp_path).stdout
    loaded, run_dir = json.loads(out.strip().splitlines()[-1])
    assert loaded == []
    meta = pq.ParquetFile(f"{run_dir}/metrics.parquet").metadata
    # the five 200-row segments' row groups are coalesced into one (small groups would make
    # readers pay per group); the pages are joined, not re-encoded
    assert meta.num_rows == 1000 and meta.num_row_groups == 1
    data = columns(run_dir)
    assert data["step"] == list(range(1000))
    assert data["a"] == [None if i == 600 else float(i) for i in range(1000)]
    assert data["late"] == [None] * 450 + [-float(i) for i in range(450, 1000)]
    assert not (expman._RunPath(run_dir) / "metrics").exists()


def test_a_big_run_is_joined_byte_for_byte(root, monkeypatch):
    # a run past SUMMARY_MIN_ROWS, in several segments: close joins the writer's pages
    # without decoding them (as the flushes wrote them: GZIP where that shrinks a page, see
    # test_final_file.py), big row groups copied whole, and
    # still writes the chart summary of a run past PLAIN_SUMMARY_MIN_CELLS (lowered here)
    monkeypatch.setattr(expman, "PLAIN_SUMMARY_MIN_CELLS", 1 << 20)
    exp = make_experiment(root, flush_interval_ms=60_000)
    n = 3 * expman.SEGMENT_MAX_ROWS + 123
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", expman.ExpmanWarning)  # a tight loop meets the bound
        for i in range(n):
            exp.log_metrics({"x": float(i % 7), **({"y": -float(i)} if i % 3 else {})},
                            step=i)
    exp.close()
    pf = pq.ParquetFile(exp.run_dir / "metrics.parquet")
    meta = pf.metadata
    # step: compressed by the flush that wrote it, and copied so
    assert meta.num_rows == n and meta.row_group(0).column(0).compression == "GZIP"
    # each flush's segment (>= SEGMENT_MAX_ROWS rows in a tight loop) is one row group, copied
    # whole: not re-cut into 64k-row groups as a pyarrow compaction would
    assert 2 <= meta.num_row_groups <= n // expman.SEGMENT_MAX_ROWS
    table = pf.read()
    assert table.column("step").to_pylist() == list(range(n))
    assert table.column("x").to_pylist() == [float(i % 7) for i in range(n)]
    assert table.column("y").to_pylist() == [-float(i) if i % 3 else None for i in range(n)]
    assert pf.schema_arrow.metadata[b"expman.rows"] == f"0 {n}".encode()
    assert (exp.run_dir / expman.SUMMARY_FILE).exists()
    assert not (exp.run_dir / "metrics").exists()


def test_a_run_past_the_join_limit_is_compacted_compressed(root, monkeypatch):
    # past PLAIN_FINAL_MAX_CELLS, close compacts with pyarrow (snappy), even one segment
    monkeypatch.setattr(expman, "PLAIN_FINAL_MAX_CELLS", 3000)
    exp = make_experiment(root, flush_interval_ms=60_000)
    n = expman.PLAIN_FINAL_MAX_CELLS // 3 + 10
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", expman.ExpmanWarning)  # a tight loop meets the bound
        for i in range(n):
            exp.log_metrics({"x": float(i % 7)}, step=i)
    exp.close()
    meta = pq.ParquetFile(exp.run_dir / "metrics.parquet").metadata
    assert meta.num_rows == n
    assert meta.row_group(0).column(0).compression != "UNCOMPRESSED"


def test_backlog_estimate_counts_keys_made_per_row(root):
    shared = make_experiment(root, flush_interval_ms=60_000)
    fresh = make_experiment(root, flush_interval_ms=60_000)
    keys = ["train/loss", "train/acc", "lr", "grad_norm", "val/loss"]
    try:
        for i in range(3 * expman.PENDING_CHECK_ROWS):
            shared.log_metrics({k: i + 0.5 for k in keys}, step=i)
            # keys decoded per row, as an import reading event files makes them
            fresh.log_metrics({k.encode().decode(): i + 0.5 for k in keys}, step=i)
        base = sys.getsizeof(dict.fromkeys(keys, 0.5)) + 24 * 5 + 28 + 24 + 3 * 8
        assert base <= shared._row_bytes < base * 1.1
        assert fresh._row_bytes >= shared._row_bytes + 5 * 55
    finally:
        shared.close()
        fresh.close()


@pytest.mark.parametrize("group_rows", [1, 20, 10_000])
def test_join_plain_coalesces_small_row_groups_and_copies_big_ones(group_rows):
    # three plain files, the second lacking "b", the third with a key of its own, nulls in
    # odd places and lengths that are not multiples of 8: the join reads back exactly, row
    # groups of >= group_rows rows are copied, smaller neighbours coalesced into one page
    parts, expect = [], {"step": [], "a": [], "b": [], "late": []}
    at = 0
    for n, cols in [(13, {"a": True, "b": True}), (7, {"a": True}), (21, {"a": True,
                                                                          "late": True})]:
        steps = list(range(at, at + n))
        values = {k: [None if (k == "a" and i % 5 == 2) else float(i * (1 + j))
                      for i in steps] for j, k in enumerate(cols)}
        layout = []
        data = expman._plain_parquet([_batch(steps, values)], ["a", "b", "late"],
                                     (at, at + n), layout)
        parts.append((data, layout))
        for key in ("a", "b", "late"):
            expect[key] += values.get(key, [None] * n)
        expect["step"] += steps
        at += n
    layout = []
    data = expman._join_plain(parts, ["a", "b", "late"], (0, at), group_rows, layout)
    table = _read(data)
    assert {k: table.column(k).to_pylist() for k in expect} == expect
    assert table.schema.metadata[b"expman.rows"] == f"0 {at}".encode()
    meta = pq.ParquetFile(pa.BufferReader(data)).metadata
    sizes = [meta.row_group(i).num_rows for i in range(meta.num_row_groups)]
    assert sizes == {1: [13, 7, 21], 20: [20, 21], 10_000: [41]}[group_rows]
    assert [n for n, _c in layout[0]] == sizes
    # the result joins again (a merge of merges), into what it already is
    again = expman._join_plain([(data, layout[0])], ["a", "b", "late"], (0, at), group_rows)
    assert _read(again).equals(table)


def test_merges_join_segments_byte_for_byte_without_pyarrow(tmp_path):
    # 40 flushes of 25 rows: tiered merges (16 segments -> 1) run while the run is live,
    # byte for byte, in a process that never imports pyarrow; readers see every row then
    # and after close
    out = run_python(f"""
        import json, os, sys, warnings, expman
        warnings.simplefilter("ignore")
        exp = expman.Experiment("merge", base_dir={str(tmp_path)!r}, capture_git=False,
                                flush_interval_ms=10 ** 6)
        for i in range(1000):
            row = {{"a": float(i)}}
            if i >= 330:
                row["late"] = -float(i)
            if 500 <= i < 600:
                del row["a"]
            exp.log_metrics(row, step=i)
            if i % 25 == 24:
                exp.flush()
        live = sorted(os.listdir(os.path.join(str(exp.run_dir), "metrics")))
        loaded = sorted(m for m in sys.modules if m.split(".")[0] == "pyarrow")
        exp.close()
        print(json.dumps([live, loaded, str(exp.run_dir)]))
    """, cwd=tmp_path).stdout
    live, loaded, run_dir = json.loads(out.strip().splitlines()[-1])
    assert loaded == []
    assert live == ["seg-000000000000-000000000400.parquet",     # 16 segments, merged
                    "seg-000000000400-000000000800.parquet"] + [
        f"seg-{s:012d}-{s + 25:012d}.parquet" for s in range(800, 1000, 25)]
    data = columns(run_dir)
    assert data["step"] == list(range(1000))
    assert data["a"] == [None if 500 <= i < 600 else float(i) for i in range(1000)]
    assert data["late"] == [None] * 330 + [-float(i) for i in range(330, 1000)]
    assert pq.ParquetFile(f"{run_dir}/metrics.parquet").metadata.num_row_groups == 1
