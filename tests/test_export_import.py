"""Streaming export/import and the CLI's progress line (_Progress).

The progress tests run a child with its stderr on a real pseudo-terminal (pty.openpty), and
piped, because whether a bar is drawn depends on the real isatty() of the stream."""
import subprocess
import sys
import textwrap

import pytest
from _util import child_env, peak_rss_mb, run_on_pty

import expman

PROGRESS_CHILD = """
    import sys, expman
    ticks = [0.0]
    def clock():                      # 0.05 s per call: deterministic, no sleeping
        ticks[0] += 0.05
        return ticks[0]
    total = None if sys.argv[1] == "none" else 100
    with expman._Progress("export", total=total, unit="rows", clock=clock,
                          enabled=sys.argv[2] == "on") as bar:
        for _ in range(100):
            bar.update(1)
    print("done", bar.count)
"""


def _run_progress(tmp_path, total, enabled, tty):
    """Run PROGRESS_CHILD; return (stdout, stderr bytes)."""
    argv = [sys.executable, "-c", textwrap.dedent(PROGRESS_CHILD), total, enabled]
    if not tty:
        proc = subprocess.run(argv, cwd=tmp_path, env=child_env(), capture_output=True,
                              timeout=60)
        assert proc.returncode == 0, proc.stderr
        return proc.stdout.decode(), proc.stderr
    code, err, out = run_on_pty(argv, tmp_path, timeout=60, terminal="stderr")
    assert code == 0
    return out.decode(), err


def test_progress_on_a_tty_draws_throttled_and_clears(tmp_path):
    out, err = _run_progress(tmp_path, "100", "on", tty=True)
    assert out.strip() == "done 100"
    text = err.decode()
    draws = text.count("export: [")
    # 100 updates over 5 fake seconds at one redraw per 0.1 s: about 50, never one per update
    assert 10 <= draws <= 51, text
    assert "/100 rows" in text and "rows/s" in text and "ETA" in text
    assert text.endswith("\r\x1b[K"), "the line is cleared at the end"


def test_progress_unknown_total_shows_count_and_rate(tmp_path):
    _, err = _run_progress(tmp_path, "none", "on", tty=True)
    text = err.decode()
    assert "export: " in text and " rows, " in text and "rows/s" in text
    assert "ETA" not in text and "export: [" not in text


@pytest.mark.parametrize("enabled,tty", [("on", False), ("off", True)])
def test_progress_prints_nothing_when_piped_or_disabled(tmp_path, enabled, tty):
    out, err = _run_progress(tmp_path, "100", enabled, tty=tty)
    assert out.strip() == "done 100"
    assert err == b""


def test_progress_counts_even_when_not_drawn():
    with expman._Progress("x", total=10, stream=None) as bar:
        bar.update(3)
        bar.update(4)
    assert bar.count == 7


# -- streaming export: the same output as the whole table, a batch at a time ------------------

import csv  # noqa: E402
import datetime  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import os as _os  # noqa: E402,F811
import random  # noqa: E402
import struct  # noqa: E402

import pyarrow as pa  # noqa: E402
import pyarrow.csv as pacsv  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

from _util import run_python  # noqa: E402
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


def _cli(capsys, *argv):
    rc = expman.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def _rows(table):
    """The rows of a table, NaN made comparable (Table.equals says NaN != NaN)."""
    return [{k: "nan" if isinstance(v, float) and v != v else v for k, v in row.items()}
            for row in table.to_pylist()]


def _same(a, b):
    return a.schema == b.schema and _rows(a) == _rows(b)


def _live_run_with_late_keys(root, name="live"):
    """A live run with several segments and a key that appears only in later segments."""
    run = expman.Experiment("e", base_dir=root, run_name=name, capture_git=False,
                            flush_interval_ms=50)
    for i in range(30):
        row = {"loss": 1.0 / (i + 1)}
        if i >= 12:
            row["acc"] = i / 30
        if i == 20:
            row["loss"] = float("nan")
        run.log_metrics(row, step=i // 2)   # two rows per step
        if i % 7 == 6:
            assert run.flush()
    assert run.flush()
    return run


def test_metric_stream_batches_equal_load_metrics(root):
    run = _live_run_with_late_keys(root)
    try:
        assert len(list((run.run_dir / expman.SEGMENTS_DIR).iterdir())) > 1
        stream = expman._MetricStream(run.run_dir, batch_rows=4)
        batches = list(stream)
        assert max(b.num_rows for b in batches) <= 4 and len(batches) > 5
        assert stream.total == 30 and stream.keys == ["loss", "acc"]
        table = pa.Table.from_batches(batches)
        assert _same(table, expman.load_metrics(run.run_dir))
    finally:
        run.close()


def test_metric_stream_resumes_when_the_run_compacts_mid_read(root):
    run = _live_run_with_late_keys(root)
    expected = expman.load_metrics(run.run_dir)
    stream = expman._MetricStream(run.run_dir, batch_rows=3)
    batches = iter(stream)
    first = [next(batches), next(batches)]
    run.close()   # compaction: metrics.parquet written, every segment deleted
    assert not (run.run_dir / expman.SEGMENTS_DIR).exists()
    rest = list(batches)   # the next segment is gone: it lists again and resumes at row 6
    assert _same(pa.Table.from_batches(first + rest), expected)


def test_metric_stream_counts_again_when_the_run_compacts_while_it_counts(root, monkeypatch):
    """A listing taken just before a live run compacts names segments that are gone when
    their footers are read: the count must come from a fresh listing, not skip them (a
    total of 0 made export refuse the run as having no metric rows)."""
    run = _live_run_with_late_keys(root)
    expected = expman.load_metrics(run.run_dir)
    stale = expman._metric_files(*expman._resolve_run(run.run_dir))
    assert len(stale) > 1 and all(end is not None for _, end, _ in stale)
    run.close()   # compaction: every listed segment is deleted
    listings = []

    def listing_taken_before_the_close(store, path):
        listings.append(path)
        return stale if len(listings) == 1 else real(store, path)

    real = expman._metric_files
    monkeypatch.setattr(expman, "_metric_files", listing_taken_before_the_close)
    stream = expman._MetricStream(run.run_dir, batch_rows=7)
    assert len(listings) == 2   # the stale listing, then a fresh one
    assert stream.total == 30 and stream.keys == ["loss", "acc"]
    assert _same(pa.Table.from_batches(list(stream)), expected)


@pytest.mark.parametrize("fmt", ["csv", "json", "parquet"])
def test_streamed_export_equals_the_whole_table(capsysbinary, root, tmp_path, fmt):
    run = _live_run_with_late_keys(root)
    try:
        table = expman.load_metrics(run.run_dir)
        (tmp_path / "out").mkdir()
        out = tmp_path / "out" / f"x.{fmt}"
        assert expman.main(["export", str(run.run_dir), "--format", fmt, "-o", str(out)]) == 0
        assert b"wrote 30 rows (2 metrics)" in capsysbinary.readouterr().err
        if fmt == "csv":
            sink = io.BytesIO()
            pacsv.write_csv(table, sink)
            assert out.read_bytes() == sink.getvalue()
        elif fmt == "parquet":
            assert _same(pq.read_table(out), table)
        else:
            text = out.read_text()
            assert text.startswith("[\n{") and text.endswith("}\n]\n")
            records = json.loads(text)
            assert [r["step"] for r in records] == table.column("step").to_pylist()
            assert [r["acc"] for r in records] == table.column("acc").to_pylist()
            assert records[20]["loss"] == "NaN"
        assert [p.name for p in out.parent.iterdir()] == [out.name]   # no temp file left
    finally:
        run.close()


def test_export_json_spans_batches_as_one_array(capsys, root, monkeypatch):
    run = _live_run_with_late_keys(root)
    run.close()
    original = expman._MetricStream.__init__

    def small_batches(self, run_dir, batch_rows=65536):
        original(self, run_dir, batch_rows=4)

    monkeypatch.setattr(expman._MetricStream, "__init__", small_batches)
    rc, out, _ = _cli(capsys, "export", run.run_dir, "--format", "json")
    assert rc == 0 and len(json.loads(out)) == 30 and out.count("\n") == 32


def _json_text_oracle(step, micros, values):
    """What `export --format json` writes for one record, by json.dumps of a dict."""
    def number(v):
        if v is None or math.isfinite(v):
            return v
        return "NaN" if v != v else ("Infinity" if v > 0 else "-Infinity")
    epoch = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)
    record = {"step": step,
              "timestamp": None if micros is None else
              (epoch + datetime.timedelta(microseconds=micros)).isoformat()}
    record.update((k, number(v)) for k, v in values)
    return json.dumps(record, ensure_ascii=False)


@settings(max_examples=200, deadline=None)
@given(rows=st.lists(st.tuples(
    st.one_of(st.none(), st.integers(-2 ** 63, 2 ** 63 - 1)),
    st.one_of(st.none(), st.integers(-2 ** 55, 2 ** 55)),
    st.one_of(st.none(), st.floats(width=64)), st.one_of(st.none(), st.floats(width=32))),
    max_size=12),
    keys=st.lists(st.text(min_size=1, max_size=6).filter(lambda k: k not in ("step",
                                                                             "timestamp")),
                  min_size=2, max_size=2, unique=True),
    first=st.booleans())
def test_json_records_are_the_text_json_dumps_writes(rows, keys, first):
    # the batch's texts come from C loops over columns; each record must read as json.dumps
    # writes it: float reprs, NaN/inf as strings, null, ISO times, any key (a '%', quotes)
    batch = pa.RecordBatch.from_arrays(
        [pa.array([r[0] for r in rows], pa.int64()),
         pa.array([r[1] for r in rows], pa.int64()).cast(pa.timestamp("us", tz="UTC")),
         pa.array([r[2] for r in rows], pa.float64()),
         pa.array([r[3] for r in rows], pa.float32())], names=["step", "timestamp", *keys])
    f32 = batch.column(3).to_pylist()
    expected = "".join(("\n" if first and i == 0 else ",\n") +
                       _json_text_oracle(r[0], r[1], [(keys[0], r[2]), (keys[1], f32[i])])
                       for i, r in enumerate(rows))
    assert expman._json_records(batch, first).decode("utf-8") == expected


def test_export_of_a_run_without_rows_is_an_error_for_tensorboard_too(capsys, root, tmp_path):
    with expman.Experiment("e", base_dir=root, run_name="empty", capture_git=False,
                           config={"lr": 1}) as run:
        pass
    rc, out, err = _cli(capsys, "export", run.run_dir, "--format", "tensorboard", "-o",
                        tmp_path / "tb")
    assert rc == 1 and "run empty" in err and "no metric rows" in err
    assert not (tmp_path / "tb").exists()


# -- TensorBoard: hand-encoded events, CRC32C, exact round trip, single files ----------------

tb = pytest.importorskip("tensorboard")
from tensorboard.compat.proto import event_pb2, summary_pb2  # noqa: E402
from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import (  # noqa: E402
    crc32c as tb_crc32c, masked_crc32c)


def test_crc32c_paths_agree_with_tensorboards():
    rng = random.Random(7)
    records = [bytes(rng.randrange(256) for _ in range(rng.choice([0, 1, 5, 8, 63, 340, 341])))
               for _ in range(400)]
    expected = [tb_crc32c(r) for r in records]
    assert expman._crc32c_py(records) == expected
    assert expman._crc32c_numpy(records, chunk=16) == expected
    assert expman._crc32c_many(records) == expected
    np = pytest.importorskip("numpy")
    grid = np.frombuffer(b"".join(r for r in records if len(r) == 340), dtype=np.uint8)
    same = [r for r in records if len(r) == 340]
    assert expman._crc32c_grid(np, grid.reshape(len(same), 340), chunk=7).tolist() == \
        [tb_crc32c(r) for r in same]
    assert [expman._tb_masked(c) for c in expected[:50]] == [masked_crc32c(r)
                                                             for r in records[:50]]


def _frames(path):
    """Every record of an event file, each frame's two CRCs checked with tensorboard's."""
    data, pos, records = path.read_bytes(), 0, []
    while pos < len(data):
        (length,) = struct.unpack_from("<Q", data, pos)
        assert struct.unpack_from("<I", data, pos + 8)[0] == masked_crc32c(data[pos:pos + 8])
        body = data[pos + 12:pos + 12 + length]
        assert struct.unpack_from("<I", data, pos + 12 + length)[0] == masked_crc32c(body)
        records.append(body)
        pos += 16 + length
    return records


def _expected_event(wall, step, values, described):
    summary = summary_pb2.Summary()
    for key, number in values:
        value = summary.value.add(tag=key)
        value.tensor.dtype = 2
        value.tensor.double_val.append(number)
        if key not in described:
            described.add(key)
            value.metadata.plugin_data.plugin_name = "scalars"
    return event_pb2.Event(wall_time=wall, step=step, summary=summary)


def test_hand_encoded_events_are_what_protobuf_writes(root, tmp_path, capsys):
    keys = ["a", "b/" + "x" * 130]   # a tag longer than 127 bytes: two-byte lengths
    with expman.Experiment("e", base_dir=root, run_name="r", capture_git=False) as run:
        for i in range(300):   # dense rows (the NumPy blocks) and sparse ones (row by row)
            row = {"a": i * 0.5 - 3} if i % 5 == 0 else {"a": -i / 7, keys[1]: i * 1e-300}
            run.log_metrics(row, step=i * 1000 - 5000 if i != 150 else 2 ** 40)
    assert _cli(capsys, "export", run.run_dir, "--format", "tensorboard", "-o",
                tmp_path / "tb")[0] == 0
    (path,) = (tmp_path / "tb").iterdir()
    records = _frames(path)
    assert event_pb2.Event.FromString(records[0]).file_version == "brain.Event:2"
    table = expman.load_metrics(run.run_dir)
    micros = table.column("timestamp").cast(pa.int64()).to_pylist()
    described = set()
    scalar_records = records[2:]   # after the file version and the head (config); no hparams, no end
    assert len(scalar_records) == table.num_rows == 300
    for i, record in enumerate(scalar_records):
        values = [(k, table.column(k)[i].as_py()) for k in keys
                  if table.column(k)[i].as_py() is not None]
        expected = _expected_event(micros[i] / 1e6, table.column("step")[i].as_py(), values,
                                   described)
        # the same message, and the bytes protobuf writes for it (a step 0 left out)
        assert event_pb2.Event.FromString(record) == expected
        assert record == expected.SerializeToString()


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_sparse_rows_are_encoded_as_protobuf_writes_them(root, tmp_path, capsys, seed):
    # rows of a few key sets (each enough for a NumPy block), rare sets (row by row), a key
    # first seen late (its plugin named mid-block), steps 0, negative and past 2**35
    rng = random.Random(seed)
    keys = ["loss", "acc", "val/loss", "lr", "late/" + "k" * 140]
    common = [("loss",), ("loss", "acc"), ("val/loss",), ("loss", "acc", "val/loss", "lr")]
    with expman.Experiment("e", base_dir=root, run_name="r", capture_git=False) as run:
        for i in range(3000):
            if rng.random() < 0.03:
                names = rng.sample(keys[:4], rng.randint(1, 4))
            else:
                names = list(rng.choice(common))
            if i >= 2000 and rng.random() < 0.3:
                names.append(keys[4])
            step = rng.choice([i, i, i, 0, -i - 1, 2 ** 35 + i])
            run.log_metrics({k: rng.choice([rng.gauss(0, 1e3), -0.0, float("nan"),
                                            float("inf"), 1e-300, float(i)])
                             for k in names}, step=step)
    assert _cli(capsys, "export", run.run_dir, "--format", "tensorboard", "-o",
                tmp_path / "tb")[0] == 0
    (path,) = (tmp_path / "tb").iterdir()
    table = expman.load_metrics(run.run_dir)
    micros = table.column("timestamp").cast(pa.int64()).to_pylist()
    order = table.column_names[2:]   # the event's values in the file's column order
    assert sorted(order) == sorted(keys)
    columns = {k: table.column(k).to_pylist() for k in order}
    steps = table.column("step").to_pylist()
    described = set()
    records = _frames(path)[2:]
    assert len(records) == table.num_rows == 3000
    for i, record in enumerate(records):
        values = [(k, columns[k][i]) for k in order if columns[k][i] is not None]
        expected = _expected_event(micros[i] / 1e6, steps[i], values, described)
        assert record == expected.SerializeToString(), i


def test_tensorboard_round_trip_is_exact_with_two_rows_per_step(root, tmp_path, capsys):
    # issue 16 item 3: 320 rows came back as 316 (rows of one step merged)
    with expman.Experiment("e", base_dir=tmp_path / "src", run_name="r", capture_git=False,
                           config={"lr": 0.1}) as run:
        for s in range(160):
            run.log_metrics({"train/loss": 1 / (s + 1)}, step=s)
            run.log_metrics({"val/loss": 2 / (s + 1)} if s % 40 else {"train/loss": 0.5},
                            step=s)
    original = expman.load_metrics(run.run_dir)
    assert original.num_rows == 320
    assert _cli(capsys, "export", run.run_dir, "--format", "tensorboard", "-o",
                tmp_path / "tb")[0] == 0
    assert _cli(capsys, "import", tmp_path / "tb", "--dir", root, "-e", "back")[0] == 0
    back = expman.load_metrics(root / "back" / "tb")
    assert back.num_rows == 320
    assert back.equals(original)
    assert expman.load_config(root / "back" / "tb") == {"lr": 0.1}


def test_import_of_a_single_event_file(root, tmp_path, capsys):
    with expman.Experiment("e", base_dir=tmp_path / "src", run_name="r",
                           capture_git=False) as run:
        for s in range(10):
            run.log_metrics({"loss": float(s)}, step=s)
    assert _cli(capsys, "export", run.run_dir, "--format", "tensorboard", "-o",
                tmp_path / "tb" / "one")[0] == 0
    (event_file,) = (tmp_path / "tb" / "one").iterdir()
    (tmp_path / "tb" / "one" / "events.out.tfevents.0.other").write_bytes(b"")   # not read
    rc, out, err = _cli(capsys, "import", event_file, "--dir", root, "--json")
    assert rc == 0 and err == ""
    result = json.loads(out)
    assert [(r["run"], r["rows"], r["files"]) for r in result["runs"]] == [("one", 10, 1)]
    assert expman.load_metrics(root / "one" / "one").column("loss").to_pylist() == \
        [float(s) for s in range(10)]
    rc, out, _ = _cli(capsys, "import", event_file, "--dir", root, "-e", "x")
    assert rc == 0 and "one" in out and " ." in out


def test_import_groups_rows_in_a_bounded_window():
    rows = []
    grouper = expman._TBRows(lambda step, wall, values: rows.append((step, values)), window=3)
    for step in range(5):
        grouper.event(float(step), step, [("a", 1.0)])
    grouper.event(9.0, 4, [("b", 2.0)])     # step 4's row is still open: merged
    grouper.event(9.0, 0, [("b", 3.0)])     # step 0's row went out: a new row
    grouper.event(9.0, 4, [("a", 5.0)])     # a tag step 4 already has: a new row (restart)
    grouper.finish()
    assert rows == [(0, {"a": 1.0}), (1, {"a": 1.0}), (2, {"a": 1.0}), (3, {"a": 1.0}),
                    (4, {"a": 1.0, "b": 2.0}), (0, {"b": 3.0}), (4, {"a": 5.0})]


# -- progress of the real commands on a terminal ----------------------------------------------

def _run_cli_on_pty(argv, cwd):
    """The CLI with its stderr on a terminal: (exit code, stdout bytes, terminal text)."""
    code, err, out = run_on_pty([sys.executable, "-c", "import sys, expman; "
                                 "sys.exit(expman.main(sys.argv[1:]))", *map(str, argv)],
                                cwd, timeout=120, terminal="stderr")
    return code, out, err.decode()


def _write_big_run(root, rows, metrics=10, name="big", row_group_size=65536):
    """A closed run whose metrics.parquet is written straight into the layout (logging this
    many rows would dominate the test's time)."""
    with expman.Experiment("e", base_dir=root, run_name=name, capture_git=False,
                           config={"lr": 0.1}) as run:
        run.log_metrics({"m0": 0.0}, step=0)
    rng = random.Random(rows)
    pool = pa.array([rng.random() for _ in range(4096)], pa.float64())
    columns = {"step": pa.array(range(rows), pa.int64()),
               "timestamp": pa.array([1_700_000_000_000_000 + i * 1000 for i in range(rows)],
                                     pa.timestamp("us", tz="UTC"))}
    for k in range(metrics):
        columns[f"m{k}"] = pa.concat_arrays([pool] * (rows // 4096 + 1)).slice(k, rows)
    pq.write_table(pa.table(columns), run.run_dir / "metrics.parquet",
                   row_group_size=row_group_size)
    return run.run_dir


def test_export_and_import_show_a_bar_on_a_terminal_only(root, tmp_path):
    run_dir = _write_big_run(root, 200_000, metrics=3)
    rc, _, err = _run_cli_on_pty(["export", run_dir, "--format", "json", "-o",
                                  tmp_path / "x.json"], tmp_path)
    assert rc == 0 and "export: [" in err and "rows/s" in err and "\r\x1b[K" in err
    assert "wrote 200000 rows" in err
    rc, _, err = _run_cli_on_pty(["export", run_dir, "--format", "tensorboard", "-o",
                                  tmp_path / "tb"], tmp_path)
    assert rc == 0 and "wrote 200000 rows" in err
    rc, _, err = _run_cli_on_pty(["import", tmp_path / "tb", "--dir", tmp_path / "imp"],
                                 tmp_path)
    assert rc == 0 and "import: [" in err and "\r\x1b[K" in err
    rc, out, err = _run_cli_on_pty(["import", tmp_path / "tb", "--dir", tmp_path / "imp2",
                                    "--json"], tmp_path)
    assert rc == 0 and err == "" and json.loads(out)["runs"][0]["rows"] == 200_000


# -- memory: what a command holds must not grow with the run's size --------------------------
# Round trips on data larger than the 300 MB bound are too slow for the suite (the benchmark,
# benchmarks/bench_export.py, does 1M rows x 10 metrics). Here: the same command on a small
# and a 10x larger run, each in a child whose own peak RSS (os.wait4) is compared, with the
# batch size lowered so that both runs span many batches. The code
# this replaced held every row (JSON: ~2 GB for 1M rows x 10), so it grew by 100+ MB here.

# the memory bound, lowered: batches of 4,096 rows, so both sizes span many batches
CLI_CHILD = ("import sys, expman; expman._MetricStream.__init__.__defaults__ = (4096,); "
             "sys.exit(expman.main(sys.argv[1:]))")


def _peak_rss_mb(argv, cwd):
    """The CLI's own peak RSS in MB (_util.peak_rss_mb: a grandchild, os.wait4)."""
    return peak_rss_mb([sys.executable, "-c", CLI_CHILD, *argv], cwd, timeout=300)


@pytest.mark.parametrize("fmt", ["csv", "json", "parquet", "tensorboard"])
def test_export_memory_does_not_grow_with_the_run(tmp_path, fmt):
    peaks = []
    for rows in (12_000, 120_000):
        # row groups as small as the batches: a reader holds one row group, so with 65,536-row
        # groups the small run (one partial group) against the big one (whole groups of 10 MB)
        # measured the row group's size, not growth with the run (15-20 MB, at the bound)
        run_dir = _write_big_run(tmp_path / f"root{rows}", rows, metrics=20,
                                 row_group_size=4096)
        peaks.append(_peak_rss_mb(["export", run_dir, "--format", fmt, "-o",
                                   tmp_path / f"out{rows}.{fmt}"], tmp_path))
    assert peaks[1] - peaks[0] < 10, peaks   # MB, for 10x the rows (+18 MB as float64); 0-2 seen


def test_import_memory_does_not_grow_with_the_file(tmp_path):
    peaks = []
    for rows in (15_000, 150_000):
        run_dir = _write_big_run(tmp_path / f"root{rows}", rows, metrics=4)
        assert expman.main(["export", str(run_dir), "--format", "tensorboard", "-o",
                            str(tmp_path / f"tb{rows}")]) == 0
        peaks.append(_peak_rss_mb(["import", tmp_path / f"tb{rows}", "--dir",
                                   tmp_path / f"imported{rows}"], tmp_path))
        assert expman.load_metrics(tmp_path / f"imported{rows}" / f"tb{rows}" /
                                   f"tb{rows}").num_rows == rows
    assert peaks[1] - peaks[0] < 50, peaks   # MB, for 10x the events
