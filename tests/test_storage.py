"""The run directory: what is stored, how it reads back, live and closed, and when it is damaged."""
import enum
import json
import math
import os
import shutil
import threading

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

import expman
from _util import Child, columns, make_experiment, run_python, wait_for

try:
    import numpy as np
except ImportError:  # pragma: no cover - numpy is a dev requirement
    np = None


make = make_experiment


def same_float(a, b):
    return (math.isnan(a) and math.isnan(b)) if isinstance(a, float) and math.isnan(a) \
        else a == b and math.copysign(1, a) == math.copysign(1, b)


def segment_names(run_dir):
    seg_dir = run_dir / "metrics"
    return sorted(p.name for p in seg_dir.iterdir()) if seg_dir.is_dir() else []


# -- values ----------------------------------------------------------------------------------

PLAIN_VALUES = [
    ("float", 0.125, 0.125),
    ("neg_zero", -0.0, -0.0),
    ("tiny", 5e-324, 5e-324),
    ("huge", 1.7976931348623157e308, 1.7976931348623157e308),
    ("int", 3, 3.0),
    ("int_2_53", 2 ** 53, float(2 ** 53)),
    ("neg_int", -(2 ** 53), -float(2 ** 53)),
    ("true", True, 1.0),
    ("false", False, 0.0),
    ("nan", float("nan"), float("nan")),
    ("inf", float("inf"), float("inf")),
    ("ninf", float("-inf"), float("-inf")),
]


def numpy_values():
    if np is None:
        return []
    return [
        ("np_f64", np.float64(0.1), 0.1),
        ("np_f32", np.float32(0.1), float(np.float32(0.1))),
        ("np_f16", np.float16(1.5), 1.5),
        ("np_i64", np.int64(-7), -7.0),
        ("np_u8", np.uint8(255), 255.0),
        ("np_bool", np.bool_(True), 1.0),
        ("np_nan", np.float32("nan"), float("nan")),
        ("np_inf", np.float64("-inf"), float("-inf")),
        ("arr0_f", np.array(2.5), 2.5),
        ("arr0_i", np.array(4, dtype=np.int32), 4.0),
        ("arr0_f32", np.array(0.1, dtype=np.float32), float(np.float32(0.1))),
    ]


class DeviceScalar:
    """A stand-in for a 0-d tensor: only .item(), which records the thread that called it."""

    def __init__(self, value):
        self.value, self.threads = value, []

    def item(self):
        self.threads.append(threading.current_thread().name)
        return self.value


@pytest.mark.parametrize("kind", ["plain", "numpy"])
def test_every_value_kind_round_trips(root, kind):
    values = PLAIN_VALUES if kind == "plain" else numpy_values()
    if not values:
        pytest.skip("numpy is not installed")
    exp = make(root)
    row = {key: value for key, value, _ in values}
    exp.log_metrics(row, step=0)
    exp.log_metrics(dict(row), step=1)            # twice: one flush holds a column of each
    exp.flush()
    exp.log_metrics(row, step=2)                  # and once more in its own segment
    exp.close()
    table = expman.load_metrics(exp.run_dir)
    for key, _, expected in values:
        assert table.schema.field(key).type == pa.float64(), key
        got = table.column(key).to_pylist()
        assert len(got) == 3
        assert all(same_float(g, expected) for g in got), (key, got, expected)


def test_tensor_like_values_are_converted_on_the_writer_thread(root):
    scalars = [DeviceScalar(float(i) / 4) for i in range(5)]
    with make(root) as exp:
        for i, s in enumerate(scalars):
            exp.log_metrics({"t": s, "plain": i}, step=i)
    assert columns(exp.run_dir)["t"] == [0.0, 0.25, 0.5, 0.75, 1.0]
    # .item() can wait for a GPU: it must never run on the training thread
    assert {name for s in scalars for name in s.threads} == {"expman-writer"}


def test_keys_with_slashes_and_keys_appearing_later(root):
    exp = make(root)
    for step in range(10):
        exp.log_metrics({"train/loss": 1.0 / (step + 1)}, step=step)
        if step % 5 == 4:                       # validation every 5 steps, in its own flush
            exp.flush()
            exp.log_metrics({"val/acc": step / 10, "val/loss": 2.0}, step=step)
    exp.flush()
    exp.log_metrics({"train/loss": 0.01, "lr": 1e-4}, step=10)
    exp.flush()
    live = expman.load_metrics(exp.run_dir)   # segments with three different schemas
    exp.close()
    final = expman.load_metrics(exp.run_dir)
    for table in (live, final):
        assert table.column_names == ["step", "timestamp", "train/loss", "val/acc", "val/loss",
                                      "lr"]
        data = table.to_pydict()
        assert data["step"] == [0, 1, 2, 3, 4, 4, 5, 6, 7, 8, 9, 9, 10]
        assert data["val/acc"] == [None] * 5 + [0.4] + [None] * 5 + [0.9, None]
        assert data["train/loss"][:5] == [1.0, 0.5, 1 / 3, 0.25, 0.2]
        assert data["train/loss"][5] is None
        assert data["lr"] == [None] * 12 + [1e-4]
    assert expman.metric_keys(exp.run_dir) == ["train/loss", "val/acc", "val/loss", "lr"]
    subset = expman.load_metrics(exp.run_dir, keys=["val/acc"])
    assert subset.column_names == ["step", "timestamp", "val/acc"]
    stats = expman.metric_stats(exp.run_dir)
    assert stats["val/acc"] == {"last": 0.9, "min": 0.4, "max": 0.9, "count": 2,
                                "last_step": 9}


# -- params and names ------------------------------------------------------------------------

def test_nested_params_are_deep_merged_and_stay_nested(root):
    config = {"optimizer": {"name": "adam", "lr": 1e-3, "betas": [0.9, 0.999]}, "batch": 32}
    with make(root, config=config) as exp:
        exp.log_params({"optimizer": {"lr": 3e-4, "schedule": {"kind": "cosine"}}})
        exp.log_params({"optimizer": {"schedule": {"warmup": 100}}, "seed": 7})
        if np is not None:
            exp.log_params({"np": {"f": np.float32(0.5), "i": np.int64(3)}})
    config["batch"] = 999                       # the caller's dict is not aliased
    expected = {"optimizer": {"name": "adam", "lr": 3e-4, "betas": [0.9, 0.999],
                              "schedule": {"kind": "cosine", "warmup": 100}},
                "batch": 32, "seed": 7}
    if np is not None:
        expected["np"] = {"f": 0.5, "i": 3}
    raw = yaml.safe_load((exp.run_dir / "config.yaml").read_text())
    assert raw == expected                     # plain nested YAML any tool can read
    assert expman.load_config(exp.run_dir) == expected
    params = expman.load_run(exp.run_dir)["params"]
    assert params["optimizer.schedule.kind"] == "cosine"
    assert params["optimizer.lr"] == 3e-4
    assert json.loads(params["optimizer.betas"]) == [0.9, 0.999]


class Mode(str, enum.Enum):
    FAST = "fast"


class Level(enum.IntEnum):
    HIGH = 3


class Label(str):
    pass


def test_str_int_float_subclasses_are_stored_as_plain_values(root):
    """StrEnum/IntEnum params, a str-subclass description or tag (torch's TorchVersion is one)
    used to make the safe YAML dumper raise in init() and log_params."""
    with make(root, config={"mode": Mode.FAST, "level": Level.HIGH},
              description=Label("a run"), tags=[Label("t")]) as exp:
        exp.log_params({"label": Label("x"), "ratio": type("Ratio", (float,), {})(0.5)})
    assert yaml.safe_load((exp.run_dir / "config.yaml").read_text()) == {
        "mode": "fast", "level": 3, "label": "x", "ratio": 0.5}
    meta = yaml.safe_load((exp.run_dir / "run.yaml").read_text())
    assert (meta["description"], meta["tags"], meta["status"]) == ("a run", ["t"], "finished")


@pytest.mark.parametrize("run_name", ["20240101_120000", "1e3", "true", "null", "0o17", "012"])
def test_run_names_that_look_like_numbers_read_back_as_strings(root, run_name):
    with make(root, name="2024", run_name=run_name) as exp:
        exp.log_metrics({"x": 1})
    assert exp.run_name == run_name
    assert exp.run_dir.name == run_name
    raw = yaml.safe_load((exp.run_dir / "run.yaml").read_text())   # plain PyYAML, as users do
    assert raw["name"] == run_name and raw["experiment"] == "2024"
    exp_raw = yaml.safe_load((root / "2024" / "experiment.yaml").read_text())
    assert exp_raw["name"] == "2024" and exp_raw["display_name"] == "2024"
    assert expman.load_run(exp.run_dir)["name"] == run_name
    [row] = expman.list_runs(root, "2024")
    assert row["name"] == run_name
    assert [e["name"] for e in expman.list_experiments(root)] == ["2024"]


def test_runs_started_in_the_same_second_get_distinct_directories(root):
    exps = [make(root, run_name="20240101_120000") for _ in range(3)]
    exps += [make(root) for _ in range(3)]          # default names, same second or not
    try:
        for i, exp in enumerate(exps):
            exp.log_metrics({"who": i})
    finally:
        for exp in exps:
            exp.close()
    assert [e.run_name for e in exps[:3]] == ["20240101_120000", "20240101_120000_2",
                                              "20240101_120000_3"]
    dirs = {e.run_dir for e in exps}
    assert len(dirs) == 6
    for i, exp in enumerate(exps):
        assert columns(exp.run_dir)["who"] == [float(i)]
        assert yaml.safe_load((exp.run_dir / "run.yaml").read_text())["name"] == exp.run_name


def test_two_processes_starting_at_once_get_distinct_directories(root, tmp_path):
    go = tmp_path / "go"
    code = f"""
        import os, sys, expman
        print("ready", flush=True)
        while not os.path.exists({str(go)!r}):   # a start line, so both race for the name
            pass
        exp = expman.Experiment("race", base_dir={str(root)!r}, run_name="20240101_120000",
                                capture_git=False)
        exp.log_metrics({{"pid": os.getpid()}})
        exp.close()
        print("done", exp.run_name, flush=True)
    """
    children = [Child(code, cwd=tmp_path) for _ in range(2)]
    try:
        for child in children:
            child.wait_line(lambda line: line == "ready")
        go.write_text("")
        names = [child.wait_line(lambda line: line.startswith("done")).split()[1]
                 for child in children]
        assert [child.wait() for child in children] == [0, 0]
    finally:
        for child in children:
            child.kill()
    assert sorted(names) == ["20240101_120000", "20240101_120000_2"]
    pids = {columns(root / "race" / name)["pid"][0] for name in names}
    assert pids == {float(c.proc.pid) for c in children}


# -- live runs -------------------------------------------------------------------------------

def test_live_run_is_readable_incrementally_and_compacted_on_close(root, tmp_path):
    exp = make(root, flush_interval_ms=60_000)     # only explicit flushes write
    try:
        for step in range(10):
            exp.log_metrics({"loss": float(step)})
        assert exp.flush() is True
        assert not (exp.run_dir / "metrics.parquet").exists()
        assert segment_names(exp.run_dir) == ["seg-000000000000-000000000010.parquet"]
        assert columns(exp.run_dir)["step"] == list(range(10))

        for step in range(10, 15):
            exp.log_metrics({"loss": float(step)})
        exp.flush()
        assert len(segment_names(exp.run_dir)) == 2
        assert columns(exp.run_dir, since_row=10) == {"step": [10, 11, 12, 13, 14],
                                                      "loss": [10.0, 11.0, 12.0, 13.0, 14.0]}
        assert columns(exp.run_dir, since_row=12)["step"] == [12, 13, 14]  # mid-segment
        assert expman.load_metrics(exp.run_dir, since_row=15).num_rows == 0
        assert expman.load_metrics(exp.run_dir, since_row=1000).num_rows == 0

        # another process sees the same rows while the run is live
        code = f"""
            import json, expman
            t = expman.load_metrics({str(exp.run_dir)!r}, since_row=3)
            print(json.dumps([t.num_rows, t.column("step")[0].as_py(),
                              expman.load_run({str(exp.run_dir)!r})["status"]]))
        """
        assert json.loads(run_python(code, cwd=tmp_path).stdout) == [12, 3, "running"]
        meta = expman.load_run(exp.run_dir)
        assert meta["status"] == "running" and meta["rows"] == 15 and meta["last_step"] == 14
    finally:
        exp.close()
    assert (exp.run_dir / "metrics.parquet").is_file()
    assert not (exp.run_dir / "metrics").exists()
    assert pq.read_metadata(exp.run_dir / "metrics.parquet").num_rows == 15
    assert columns(exp.run_dir)["loss"] == [float(i) for i in range(15)]
    assert columns(exp.run_dir, since_row=12)["step"] == [12, 13, 14]
    assert expman.load_metrics(exp.run_dir, since_row=15).num_rows == 0


def test_an_empty_run_reads_as_an_empty_table(root):
    with make(root) as exp:
        pass
    table = expman.load_metrics(exp.run_dir)
    assert table.num_rows == 0
    assert table.column_names == ["step", "timestamp"]
    assert pq.read_table(exp.run_dir / "metrics.parquet").num_rows == 0


def test_segments_merge_so_the_file_count_stays_bounded(root, monkeypatch):
    monkeypatch.setattr(expman, "SEGMENT_FAN_IN", 3)
    exp = make(root, flush_interval_ms=60_000)
    errors, reads = [], [0]
    stop = threading.Event()

    def reader():  # reads while merges happen: must never see rows vanish or reorder
        seen = 0
        while not stop.is_set():
            try:
                steps = expman.load_metrics(exp.run_dir).column("step").to_pylist()
            except Exception as exc:  # noqa: BLE001 - reported by the assertion below
                errors.append(repr(exc))
                return
            if steps != list(range(len(steps))) or len(steps) < seen:
                errors.append(f"bad read: {len(steps)} rows after {seen}")
                return
            seen = len(steps)
            reads[0] += 1

    thread = threading.Thread(target=reader)
    thread.start()
    max_files = 0
    try:
        for flush in range(60):
            exp.log_metrics({"a": float(flush)})
            exp.log_metrics({"a": float(flush), "b": 1.0} if flush % 7 == 0 else {"a": 0.5})
            exp.flush()
            max_files = max(max_files, len(segment_names(exp.run_dir)))
            assert expman.load_metrics(exp.run_dir).num_rows == 2 * (flush + 1)
        wait_for(lambda: reads[0] >= 3 or errors)
    finally:
        stop.set()
        thread.join()
        exp.close()
    assert not errors, errors
    # 60 flushes with fan-in 3: at most 2 segments per tier, 4 tiers
    assert max_files <= 8, max_files
    table = expman.load_metrics(exp.run_dir)
    assert table.column("step").to_pylist() == list(range(120))
    assert table.column("b").drop_null().to_pylist() == [1.0] * 9


# -- damaged files ---------------------------------------------------------------------------

def test_truncated_and_empty_segments_and_tmp_files_are_skipped(root, tmp_path):
    exp = make(root, flush_interval_ms=60_000)
    try:
        for chunk in range(3):
            for i in range(10):
                exp.log_metrics({"x": float(chunk * 10 + i)})
            exp.flush()
        crashed = tmp_path / "crashed_copy"          # what kill -9 on a bad disk leaves
        shutil.copytree(exp.run_dir, crashed)
    finally:
        exp.close()
    seg_dir = crashed / "metrics"
    middle = seg_dir / "seg-000000000010-000000000020.parquet"
    middle.write_bytes(middle.read_bytes()[:40])          # truncated
    (seg_dir / "seg-000000000030-000000000040.parquet").write_bytes(b"")   # zero bytes
    (seg_dir / "seg-000000000040-000000000050.parquet.tmp-1-2").write_bytes(b"PAR1 half")

    with pytest.warns(expman.ExpmanWarning, match="skipped unreadable metrics file") as rec:
        table = expman.load_metrics(crashed)
    messages = [str(w.message) for w in rec]
    assert any("seg-000000000010-000000000020" in m for m in messages), messages
    assert any("seg-000000000030-000000000040" in m for m in messages), messages
    assert not any(".tmp-" in m for m in messages)    # in-flight files are not an error
    assert table.column("step").to_pylist() == list(range(10)) + list(range(20, 30))
    with pytest.warns(expman.ExpmanWarning, match="seg-000000000030-000000000040"):
        assert expman.load_metrics(crashed, since_row=25).column("step").to_pylist() == \
            [25, 26, 27, 28, 29]
    assert expman.metric_keys(crashed) == ["x"]


def test_garbled_run_yaml_fails_load_run_but_not_list_runs(root):
    good, bad = make(root, run_name="good"), make(root, run_name="bad")
    for exp in (good, bad):
        exp.log_metrics({"x": 1.0})
        exp.close()
    (bad.run_dir / "run.yaml").write_text("name: [unclosed\n  status: : :\n")
    with pytest.raises(expman.ExpmanError, match="run.yaml"):
        expman.load_run(bad.run_dir)
    rows = {r["name"]: r for r in expman.list_runs(root, "exp")}
    assert set(rows) == {"good", "bad"}
    assert rows["good"]["status"] == "finished"
    assert rows["bad"]["status"] == "crashed" and "run.yaml" in rows["bad"]["error"]
    assert expman.list_experiments(root)[0]["runs"] == 2
    assert expman.load_metrics(bad.run_dir).num_rows == 1      # the data is still there
    (bad.run_dir / "run.yaml").write_text("")
    assert {r["name"]: r["status"] for r in expman.list_runs(root, "exp")}["bad"] == "crashed"
    (root / "exp" / "not_a_run").mkdir()                        # a stray directory
    assert {r["name"] for r in expman.list_runs(root, "exp")} == {"good", "bad"}


def test_readers_reject_paths_that_are_not_runs(root):
    with pytest.raises(expman.InvalidInputError, match="no such directory"):
        expman.load_metrics(root / "nope")
    with pytest.raises(expman.InvalidInputError, match="not a run directory"):
        expman.load_run(root)
    with pytest.raises(expman.InvalidInputError):
        expman.list_runs(root, "missing")


# -- many runs at once -----------------------------------------------------------------------

def test_load_experiment_and_load_runs(root):
    with make(root, run_name="a", config={"lr": 0.1, "opt": {"name": "sgd"}},
              tags=["base"]) as a:
        for step in range(3):
            a.log_metrics({"loss": 1.0 - step / 10}, step=step)
        a.log_scalar("best", 0.9)
    with make(root, run_name="b", config={"lr": 0.01}) as b:
        b.log_metrics({"loss": 0.5, "acc": 0.7}, step=0)
    failed = make(root, run_name="c")
    failed.close("failed")
    with make(root, name="other", run_name="x") as other:
        other.log_metrics({"z": 1.0})

    table = expman.load_experiment(root, "exp")
    assert table.column_names[:4] == ["experiment", "run", "step", "timestamp"]
    assert set(table.column_names[4:]) == {"loss", "acc"}
    assert table.num_rows == 4
    assert set(table.column("experiment").to_pylist()) == {"exp"}
    by_run = {}
    for r, loss in zip(table.column("run").to_pylist(), table.column("loss").to_pylist()):
        by_run.setdefault(r, []).append(loss)
    assert by_run == {"a": [1.0, 0.9, 0.8], "b": [0.5]}
    assert expman.load_experiment(root, "exp", keys=["acc"]).column_names == [
        "experiment", "run", "step", "timestamp", "acc"]

    runs = expman.load_runs(root)
    assert runs.num_rows == 4
    rows = {(r["experiment"], r["run"]): r for r in runs.to_pylist()}
    assert rows[("exp", "a")]["params.lr"] == 0.1
    assert rows[("exp", "a")]["params.opt.name"] == "sgd"
    assert rows[("exp", "a")]["best"] == 0.9
    assert rows[("exp", "a")]["loss"] == pytest.approx(0.8)
    assert rows[("exp", "a")]["tags"] == "base"
    assert rows[("exp", "b")]["acc"] == 0.7
    assert rows[("exp", "c")]["status"] == "failed"
    assert rows[("other", "x")]["z"] == 1.0
    finished = expman.load_runs(root, "exp", status="FINISHED")
    assert sorted(finished.column("run").to_pylist()) == ["a", "b"]
    df = expman.load_runs(root, "exp", status=["failed"], to_pandas=True)
    assert list(df["run"]) == ["c"]
    with pytest.raises(ValueError):
        expman.load_runs(root, status="bogus")


# -- the segment log: deleted folders, short runs, many keys -----------------------------------

def test_metrics_folder_deleted_mid_run_is_recreated_with_one_warning(root):
    """Issue 20 #9: metrics/ deleted mid-run closed `finished` with 0 rows, rows logged after
    the deletion lost with only repeated warnings. Now: one clear warning, the folder is made
    again, and every row still in memory or logged later is kept."""
    exp = make(root, flush_interval_ms=20)
    for i in range(100):
        exp.log_metrics({"x": float(i)}, step=i)
    assert exp.flush()
    shutil.rmtree(exp.run_dir / "metrics")   # the user cleans up the wrong folder
    with pytest.warns(expman.ExpmanWarning) as rec:
        for i in range(100, 250):
            exp.log_metrics({"x": float(i)}, step=i)
            if i == 180:
                assert exp.flush()
        exp.close()
    lost = [w for w in rec if "deleted while the run was live" in str(w.message)]
    assert len(lost) == 1, [str(w.message) for w in rec]
    assert "100 rows" in str(lost[0].message)
    assert not [w for w in rec if "cannot write" in str(w.message)]
    table = expman.load_metrics(exp.run_dir)
    assert table.column("step").to_pylist() == list(range(100, 250))
    assert table.column("x").to_pylist() == [float(i) for i in range(100, 250)]
    assert (exp.run_dir / "run.log").read_text().count("deleted while the run was live") == 1
    assert expman.load_run(exp.run_dir)["status"] == "finished"


def test_metrics_folder_deleted_after_the_last_flush_warns_at_close(root):
    exp = make(root, flush_interval_ms=20)
    for i in range(30):
        exp.log_metrics({"x": float(i)}, step=i)
    assert exp.flush()
    shutil.rmtree(exp.run_dir / "metrics")
    with pytest.warns(expman.ExpmanWarning, match="30 rows in 1 segments .* were deleted"):
        exp.close()
    assert "were deleted" in (exp.run_dir / "run.log").read_text()


def test_close_of_a_one_segment_run_renames_it_instead_of_rewriting(root):
    """Issue 19: a short run's close() paid a full read + write of its only segment."""
    exp = make(root, flush_interval_ms=60_000)
    for i in range(300):
        exp.log_metrics({"loss": 1.0 / (i + 1)}, step=i)
    assert exp.flush()
    (name,) = segment_names(exp.run_dir)
    inode = os.stat(exp.run_dir / "metrics" / name).st_ino
    exp.close()
    final = exp.run_dir / "metrics.parquet"
    assert os.stat(final).st_ino == inode          # the same file: renamed, not rewritten
    assert not (exp.run_dir / "metrics").exists()
    assert expman.load_metrics(exp.run_dir).column("step").to_pylist() == list(range(300))
    assert pq.read_table(final).num_rows == 300


def test_every_file_records_its_row_range_and_readers_hide_it(root, monkeypatch):
    monkeypatch.setattr(expman, "SEGMENT_FAN_IN", 2)
    exp = make(root, flush_interval_ms=60_000)
    for i in range(5):
        exp.log_metrics({"a": float(i)}, step=i)
        assert exp.flush()
    ranges = {n: pq.read_schema(exp.run_dir / "metrics" / n).metadata[b"expman.rows"]
              for n in segment_names(exp.run_dir)}
    assert ranges == {"seg-000000000000-000000000004.parquet": b"0 4",
                      "seg-000000000004-000000000005.parquet": b"4 5"}
    exp.close()
    assert pq.read_schema(exp.run_dir / "metrics.parquet").metadata[b"expman.rows"] == b"0 5"
    assert not (expman.load_metrics(exp.run_dir).schema.metadata or {}).get(b"expman.rows")


def test_compaction_never_replaces_the_final_file_with_fewer_rows(root):
    """Leftover segments beside a complete metrics.parquet (a close killed mid-clean-up) are
    deleted by reap --compact, not compacted over it; the final file is left as it was."""
    exp = make(root, flush_interval_ms=60_000)
    for i in range(40):
        exp.log_metrics({"a": float(i)}, step=i)
        if i % 10 == 9:
            assert exp.flush()
    seg_dir = exp.run_dir / "metrics"
    saved = {n: (seg_dir / n).read_bytes() for n in segment_names(exp.run_dir)}
    exp.close()
    before = (exp.run_dir / "metrics.parquet").read_bytes()
    seg_dir.mkdir()
    for name in sorted(saved)[1:]:   # what a kill after the first deletion leaves
        (seg_dir / name).write_bytes(saved[name])
    log = expman._SegmentLog.metrics(expman._LOCAL_STORE, str(exp.run_dir))
    assert log.compact() == 0
    assert (exp.run_dir / "metrics.parquet").read_bytes() == before
    assert not seg_dir.exists()
    assert expman.load_metrics(exp.run_dir).column("step").to_pylist() == list(range(40))


def test_a_run_with_thousands_of_sparse_keys_closes_and_reads_back(root):
    """Issue 20 #10: one distinct key per row (close was O(rows x keys) in Python)."""
    n = 3000
    with make(root, flush_interval_ms=60_000) as exp:
        for i in range(n):
            exp.log_metrics({f"k{i}": float(i), "every": 1.0}, step=i)
    table = expman.load_metrics(exp.run_dir)
    assert table.num_rows == n and table.num_columns == n + 3
    for i in (0, 1, 1234, n - 1):
        col = table.column(f"k{i}").to_pylist()
        assert col[i] == float(i) and col.count(None) == n - 1
    assert table.column("every").to_pylist() == [1.0] * n


@pytest.mark.parametrize("chunk_bytes", [1, 5_000, 1 << 26])
def test_streamed_batches_hold_every_row_in_order_cut_at_the_step(tmp_path, monkeypatch,
                                                                   chunk_bytes):
    """_group_batches reads a file a few row groups at a time (bounded memory) yet gives the
    batches one reader would: every row once, in order, each batch `step` rows but the last,
    whatever the row groups and chunks (a chunk's short end is joined to the next)."""
    n = 10_007
    table = pa.table({"step": pa.array(range(n), pa.int64()),
                      "v": pa.array([i * 0.5 for i in range(n)], pa.float64())})
    path = str(tmp_path / "f.parquet")
    pq.write_table(table, path, row_group_size=333)
    monkeypatch.setattr(expman, "_STREAM_CHUNK_BYTES", chunk_bytes)
    pf = expman._LOCAL_STORE.parquet_file(path, stream=True)
    batches = list(expman._group_batches(pf, 1000, ["step", "v"]))
    assert [b.num_rows for b in batches] == [1000] * 10 + [7]
    assert pa.Table.from_batches(batches).equals(table)
