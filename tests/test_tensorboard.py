"""TensorBoard migration: `expman import` of real event files, `expman export --format
tensorboard` read back by TensorBoard's own EventAccumulator, and the SummaryWriter shim.

Event files are written by the real torch.utils.tensorboard / tensorboard writers, in child
processes (torch is heavy to import and this process keeps warnings as errors)."""
import importlib.util
import json
import math
import os
import struct

import pyarrow as pa
import pytest
from _util import child_env, run_python

import expman

if importlib.util.find_spec("tensorboard") is None and not os.environ.get(
        "EXPMAN_REQUIRE_INTEGRATIONS"):   # CI installs it: there a missing package fails
    pytest.skip("tensorboard is not installed (pip install -r requirements-integrations.txt)",
                allow_module_level=True)
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.util import tensor_util

GEN_TORCH = """
    import sys, torch
    from torch.utils.tensorboard import SummaryWriter
    logdir = sys.argv[1] if len(sys.argv) > 1 else "tb"
    for lr in (0.1, 0.01):
        w = SummaryWriter(f"{logdir}/lr_{lr}")
        for s in range(30):
            w.add_scalar("train/loss", 1 / (s + 1), s)
            w.add_scalar("train/acc", s / 32, s, new_style=True)          # TB2 float tensor
            w.add_scalar("train/lr", lr * 0.99 ** s, s, new_style=True,
                         double_precision=True)                            # TB2 double tensor
            if s % 10 == 9:
                w.add_scalar("val/loss", 2 / (s + 1), s)
        w.add_text("note", "hello from torch", 3)
        w.add_histogram("weights", torch.arange(10.0), 3)              # not imported
        w.add_hparams({"lr": lr, "batch_size": 32, "optimizer": "adam", "nesterov": True},
                      {"hp/best_acc": 0.9})
        w.close()
"""


def _require_torch():
    if importlib.util.find_spec("torch") is None:
        if os.environ.get("EXPMAN_REQUIRE_INTEGRATIONS"):
            pytest.fail("torch is not installed (pip install -r requirements-integrations.txt)")
        pytest.skip("torch is not installed")


def _cli(*argv):
    return expman.main([str(a) for a in argv])


def _accumulate(path):
    acc = EventAccumulator(str(path), size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    return acc


def _rows(table):
    """Rows as tuples, NaN as a string (NaN != NaN would fail any comparison)."""
    return [tuple("nan" if isinstance(v, float) and math.isnan(v) else v for v in row.values())
            for row in table.to_pylist()]


def _micros(table):
    return table.column("timestamp").cast(pa.int64()).to_pylist()


@pytest.fixture(scope="module")
def torch_logdir(tmp_path_factory):
    _require_torch()
    cwd = tmp_path_factory.mktemp("tb")
    run_python(GEN_TORCH, cwd=cwd, timeout=120)
    return cwd / "tb"


# -- import ----------------------------------------------------------------------------------

def test_import_torch_event_files(torch_logdir, root, capsys):
    assert _cli("import", torch_logdir, "--dir", root, "--json") == 0
    out = json.loads(capsys.readouterr().out)
    assert sorted(r["run"] for r in out["runs"]) == ["lr_0.01", "lr_0.1"]
    assert [r["ignored"] for r in out["runs"]] == [{"histo": 1}, {"histo": 1}]
    # torch's add_hparams sub-runs (lr_0.1/<time>/) were folded into their runs
    assert sorted(os.listdir(root / "tb")) == [".catalog", "experiment.yaml", "lr_0.01", "lr_0.1"]
    run = root / "tb" / "lr_0.1"
    table = expman.load_metrics(run)
    assert table.column_names == ["step", "timestamp", "train/loss", "train/acc", "train/lr",
                                  "val/loss"]
    assert table.column("step").to_pylist() == list(range(30))   # one row per step
    rows = table.to_pylist()
    assert rows[3]["train/loss"] == pytest.approx(1 / 4, rel=1e-6)       # float32 in TB1
    assert rows[3]["train/acc"] == 3 / 32
    assert rows[3]["train/lr"] == pytest.approx(0.1 * 0.99 ** 3, rel=1e-12)   # the double
    assert [r["step"] for r in rows if r["val/loss"] is not None] == [9, 19, 29]

    # timestamps are the events' wall times (to the microsecond), not the import time
    acc = _accumulate(torch_logdir / "lr_0.1")
    walls = {e.step: e.wall_time for e in acc.Scalars("train/loss")}
    assert _micros(table) == [round(walls[s] * 1e6) for s in range(30)]

    meta = expman.load_run(run)
    assert meta["status"] == "finished"
    assert meta["tags"] == ["tensorboard"]
    first, last = min(walls.values()), max(walls.values())
    assert abs(expman._parse_iso(meta["started_at"]) - first) < 1e-3
    assert expman._parse_iso(meta["finished_at"]) >= last
    assert meta["summary"]["hp/best_acc"] == pytest.approx(0.9)
    assert expman.load_config(run) == {"lr": 0.1, "batch_size": 32, "optimizer": "adam",
                                       "nesterov": True}
    log = (run / "run.log").read_text()
    assert "note (step 3): hello from torch" in log


def test_imported_runs_are_served_like_any_run(torch_logdir, root, capsys):
    import threading
    import urllib.request
    assert _cli("import", torch_logdir, "--dir", root) == 0
    capsys.readouterr()
    server = expman.make_server(root, host="127.0.0.1", port=0)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        def get(path):
            with urllib.request.urlopen(server.url + path, timeout=10) as resp:
                return json.loads(resp.read())
        runs = get("/api/experiments/tb/runs")["runs"]
        assert sorted((r["name"], r["status"]) for r in runs) == [("lr_0.01", "finished"),
                                                                  ("lr_0.1", "finished")]
        metrics = get("/api/experiments/tb/runs/lr_0.1/metrics?keys=val/loss")
        assert metrics["rows"] == 30
        assert metrics["series"]["val/loss"]["step"] == [9, 19, 29]
        assert get("/api/experiments/tb/runs/lr_0.1/config")["config"]["batch_size"] == 32
    finally:
        server.close()
        thread.join(5)


def test_import_human_output_progress_and_collisions(torch_logdir, root, capsys):
    assert _cli("import", torch_logdir, "--dir", root, "-e", "sweep") == 0
    captured = capsys.readouterr()
    # progress goes to a terminal only (a bar: tests/test_export_import.py); piped, nothing
    assert "lr_0.1" in captured.out and captured.err == ""
    assert "not imported from lr_0.1 (not scalars, hparams or text): 1 histo" in captured.out
    assert _cli("import", torch_logdir, "--dir", root, "-e", "sweep") == 0
    capsys.readouterr()
    runs = sorted(p.name for p in (root / "sweep").iterdir()
                  if p.is_dir() and p.name != ".catalog")
    assert runs == ["lr_0.01", "lr_0.01_2", "lr_0.1", "lr_0.1_2"]   # never overwritten
    assert (expman.load_metrics(root / "sweep" / "lr_0.1_2").to_pylist()
            == expman.load_metrics(root / "sweep" / "lr_0.1").to_pylist())


def test_import_without_event_files_is_a_clean_error(tmp_path, root, capsys):
    (tmp_path / "empty").mkdir()
    assert _cli("import", tmp_path / "empty", "--dir", root) == 1
    err = capsys.readouterr().err
    assert err.startswith("expman: error: no TensorBoard event files") and "\n" == err[-1]
    assert _cli("import", tmp_path / "missing", "--dir", root) == 1
    assert "is not a directory" in capsys.readouterr().err
    assert os.listdir(root) == []


def test_import_without_tensorboard_names_the_package(tmp_path, torch_logdir):
    code = f"""
        import sys
        for name in ("tensorboard", "tensorboardX"):
            sys.modules[name] = None          # as if neither were installed
        import expman
        sys.exit(expman.main(["import", {str(torch_logdir)!r}, "--dir", "exps"]))
    """
    proc = run_python(code, cwd=tmp_path, check=False)
    assert proc.returncode == 1
    assert "pip install tensorboard" in proc.stderr
    assert not (tmp_path / "exps").exists()


def test_import_reads_a_live_file_with_a_partial_last_record(tmp_path, root, capsys):
    logdir = tmp_path / "live"
    run_python("""
        from tensorboard.summary.writer.event_file_writer import EventFileWriter
        from tensorboard.compat.proto import event_pb2, summary_pb2
        w = EventFileWriter("live")
        for s in range(5):
            summary = summary_pb2.Summary(value=[
                summary_pb2.Summary.Value(tag="loss", simple_value=float(s)),
                summary_pb2.Summary.Value(tag="acc", simple_value=s / 4)])
            w.add_event(event_pb2.Event(wall_time=1700000000.25 + s, step=s * 10,
                                        summary=summary))
        w.close()
    """, cwd=tmp_path)
    (path,) = logdir.iterdir()
    with open(path, "ab") as fh:          # a writer in the middle of its next record
        fh.write(b"\x40\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00partial")
    assert _cli("import", logdir, "--dir", root) == 0
    capsys.readouterr()
    table = expman.load_metrics(root / "live" / "live")
    assert table.column("step").to_pylist() == [0, 10, 20, 30, 40]
    assert table.column("loss").to_pylist() == [0.0, 1.0, 2.0, 3.0, 4.0]
    assert _micros(table) == [1700000000250000 + s * 1_000_000 for s in range(5)]
    meta = expman.load_run(root / "live" / "live")
    assert meta["started_at"].startswith("2023-11-14T22:13:20.25")
    assert meta["duration_secs"] == 4.0


def test_import_restarted_job_keeps_both_values_of_a_step(tmp_path, root, capsys):
    run_python("""
        from tensorboard.summary.writer.event_file_writer import EventFileWriter
        from tensorboard.compat.proto import event_pb2, summary_pb2
        w = EventFileWriter("restart")
        for wall, s, v in [(1.0, 0, 1.0), (2.0, 1, 2.0), (3.0, 1, 5.0), (4.0, 2, 6.0)]:
            summary = summary_pb2.Summary(value=[
                summary_pb2.Summary.Value(tag="loss", simple_value=v)])
            w.add_event(event_pb2.Event(wall_time=1700000000 + wall, step=s, summary=summary))
        w.close()
    """, cwd=tmp_path)
    assert _cli("import", tmp_path / "restart", "--dir", root, "-e", "r") == 0
    capsys.readouterr()
    table = expman.load_metrics(root / "r" / "restart")
    assert table.column("step").to_pylist() == [0, 1, 1, 2]
    assert table.column("loss").to_pylist() == [1.0, 2.0, 5.0, 6.0]


def test_import_of_a_long_run_prints_no_progress_when_piped(tmp_path, root, capsys):
    # the bar on a terminal is tested in tests/test_export_import.py (a real pty)
    with expman.Experiment("big", base_dir=tmp_path / "src", run_name="r",
                           capture_git=False) as exp:
        for s in range(25_000):
            exp.log_metrics({"loss": s / 8}, step=s)
    assert _cli("export", exp.run_dir, "--format", "tensorboard", "-o", tmp_path / "tb") == 0
    capsys.readouterr()
    assert _cli("import", tmp_path / "tb", "--dir", root) == 0
    assert capsys.readouterr().err == ""
    assert expman.load_metrics(root / "tb" / "tb").num_rows == 25_000


# -- export and the round trip ---------------------------------------------------------------

def test_round_trip_run_to_tensorboard_and_back(tmp_path, root, capsys):
    config = {"lr": 0.001, "optimizer": {"name": "adam", "betas": [0.9, 0.999]},
              "layers": 3, "amp": False, "note": None}
    with expman.Experiment("rt", base_dir=tmp_path / "src", run_name="orig", config=config,
                           capture_git=False) as exp:
        for s in range(0, 200, 2):
            row = {"train/loss": 1 / (s + 1) if s else float("nan"), "train/acc": s / 256}
            if s % 50 == 0:
                row["val/loss"] = float("inf") if s == 100 else s / 1024
            exp.log_metrics(row, step=s)
    original = expman.load_metrics(exp.run_dir)

    out = tmp_path / "tb_out"
    assert _cli("export", exp.run_dir, "--format", "tensorboard", "-o", out) == 0
    assert "wrote 100 rows (3 metrics)" in capsys.readouterr().err

    # TensorBoard's own reader sees the same steps, wall times and values (float64 scalars,
    # as torch's add_scalar(..., new_style=True, double_precision=True) writes them)
    acc = _accumulate(out)
    assert sorted(acc.Tags()["tensors"]) == ["config", "expman/config", "train/acc",
                                             "train/loss", "val/loss"]
    assert acc.summary_metadata["train/loss"].plugin_data.plugin_name == "scalars"
    events = acc.Tensors("train/loss")
    assert [e.step for e in events] == original.column("step").to_pylist()
    assert [round(e.wall_time * 1e6) for e in events] == _micros(original)
    values = [tensor_util.make_ndarray(e.tensor_proto).item() for e in events]
    expected = original.column("train/loss").to_pylist()
    assert math.isnan(values[0]) and math.isnan(expected[0])
    assert values[1:] == expected[1:]
    assert [tensor_util.make_ndarray(e.tensor_proto).item() for e in acc.Tensors("val/loss")] \
        == [0.0, 50 / 1024, math.inf, 150 / 1024]
    hparams = [k for k in acc.summary_metadata if k.startswith("_hparams_")]
    assert "_hparams_/session_start_info" in hparams

    # ... and importing it again gives the same table, config and times
    assert _cli("import", out, "--dir", root, "-e", "back") == 0
    capsys.readouterr()
    back = root / "back" / "tb_out"
    imported = expman.load_metrics(back)
    assert imported.schema == original.schema
    assert _rows(imported) == _rows(original)
    assert expman.load_config(back) == config
    meta, orig_meta = expman.load_run(back), expman.load_run(exp.run_dir)
    assert meta["started_at"] == orig_meta["started_at"]
    assert meta["finished_at"] == orig_meta["finished_at"]
    assert meta["status"] == "finished"
    # every reader agrees: the CLI lists and inspects it like any run
    assert _cli("inspect", back, "--json") == 0
    assert json.loads(capsys.readouterr().out)["name"] == "tb_out"


def test_round_trip_with_tensorboardX_alone(tmp_path):
    """Without the tensorboard package, tensorboardX's writer and protos do the same job."""
    if importlib.util.find_spec("tensorboardX") is None:
        pytest.skip("tensorboardX is not installed")
    proc = run_python("""
        import sys
        sys.modules["tensorboard"] = None            # as if only tensorboardX were installed
        import expman
        with expman.Experiment("x", base_dir="src", run_name="r", config={"a": {"b": 1}},
                               capture_git=False) as exp:
            for s in range(5):
                exp.log_metrics({"l": s / 3, "m": float(s)}, step=s * 2)
        assert expman.main(["export", str(exp.run_dir), "--format", "tensorboard",
                            "-o", "tb"]) == 0
        assert expman.main(["import", "tb", "--dir", "back"]) == 0
        assert expman.load_metrics("back/tb/tb").equals(expman.load_metrics(exp.run_dir))
        assert expman.load_config("back/tb/tb") == {"a": {"b": 1}}
        print("tensorboardX" in sys.modules, "tensorboard" in sys.modules and
              sys.modules["tensorboard"] is not None)
    """, cwd=tmp_path)
    assert proc.stdout.split()[-2:] == ["True", "False"]


def test_export_default_output_and_no_mixing(tmp_path, capsys, monkeypatch):
    with expman.Experiment("e", base_dir=tmp_path / "src", run_name="r1",
                           capture_git=False) as exp:
        exp.log_metrics({"x": 1.0}, step=5)
    monkeypatch.chdir(tmp_path)
    assert _cli("export", exp.run_dir, "--format", "tensorboard") == 0
    capsys.readouterr()
    target = tmp_path / "tensorboard" / "e" / "r1"
    assert [e.step for e in _accumulate(target).Tensors("x")] == [5]
    assert _cli("export", exp.run_dir, "--format", "tensorboard") == 1
    assert "already holds TensorBoard event files" in capsys.readouterr().err


# -- SummaryWriter shim ----------------------------------------------------------------------

def test_shim_merges_one_step_into_one_row(root):
    with expman.SummaryWriter("runs/exp1", base_dir=root) as writer:
        # log_dir is a directory (relative to base_dir here): the run is written under it
        assert writer.experiment.experiment == "exp1"
        assert writer.experiment.run_dir.parent == root / "runs" / "exp1"
        run_dir = writer.experiment.run_dir
        for step in range(100):
            writer.add_scalar("train/loss", 1 / (step + 1), step)
            writer.add_scalar("train/acc", step / 100, global_step=step)
            if step % 10 == 0:
                writer.add_scalars("loss", {"train": 1.0, "val": 2.0}, step)
    table = expman.load_metrics(run_dir)
    assert table.column_names == ["step", "timestamp", "train/loss", "train/acc", "loss/train",
                                  "loss/val"]
    assert table.column("step").to_pylist() == list(range(100))
    assert table.column("loss/val").null_count == 90
    assert expman.load_run(run_dir)["status"] == "finished"


def test_shim_without_steps_walltime_text_hparams(root):
    writer = expman.SummaryWriter("plain", base_dir=root)     # one part: the experiment
    assert writer.experiment.experiment == "plain"
    for _ in range(3):
        writer.add_scalar("a", 1.0)
        writer.add_scalar("b", 2.0)          # no step: one row until a tag repeats
    writer.add_scalar("t", 7.0, 100, walltime=1700000000.5)
    writer.add_text("notes", "first epoch done", 1)
    writer.add_hparams({"lr": 0.1, "bs": 8}, {"hparam/acc": 0.75})
    writer.flush()
    run = writer.experiment.run_dir
    assert expman.load_metrics(run).num_rows == 4       # flush wrote the buffered row
    writer.close()
    table = expman.load_metrics(run)
    assert table.column("a").to_pylist() == [1.0, 1.0, 1.0, None]
    assert table.column("step").to_pylist() == [0, 1, 2, 100]
    assert _micros(table)[-1] == 1700000000500000
    assert expman.load_config(run) == {"lr": 0.1, "bs": 8}
    assert expman.load_run(run)["summary"]["hparam/acc"] == 0.75
    assert "notes (step 1): first epoch done" in (run / "run.log").read_text()


def test_shim_failed_status_and_unsupported_methods(root):
    with pytest.raises(RuntimeError), expman.SummaryWriter("runs/bad", base_dir=root) as w:
        w.add_scalar("loss", 1.0, 0)
        with pytest.warns(expman.ExpmanWarning, match="add_graph is not supported"):
            w.add_graph(object())
        w.add_graph(object())                  # warned once
        w.add_scalar("loss", 2.0, 1)
        raise RuntimeError("boom")
    assert w.experiment.run_dir.parent == root / "runs" / "bad"
    meta = expman.load_run(w.experiment.run_dir)
    assert meta["status"] == "failed" and "boom" in meta["error"]
    assert expman.load_metrics(w.experiment.run_dir).column("loss").to_pylist() == [1.0, 2.0]


def test_shim_logs_into_a_given_run_without_closing_it(root):
    with expman.Experiment("mine", base_dir=root, run_name="r", capture_git=False) as exp:
        writer = expman.SummaryWriter(run=exp)
        writer.add_scalar("x", 3.0, 0)
        writer.close()
        assert not exp.closed
        exp.log_metrics({"y": 1.0}, step=1)
    assert expman.load_metrics(exp.run_dir).num_rows == 2


def test_shim_keeps_the_last_row_when_the_script_never_closes(tmp_path):
    run_python("""
        import expman
        w = expman.SummaryWriter("runs/noclose", base_dir="exps")
        for s in range(10):
            w.add_scalar("loss", float(s), s)
            w.add_scalar("acc", s / 10, s)
    """, cwd=tmp_path)
    (run,) = [p.parent for p in (tmp_path / "exps" / "runs" / "noclose").glob("*/run.yaml")]
    table = expman.load_metrics(run)
    assert table.column("step").to_pylist() == list(range(10))
    assert table.column("acc").to_pylist()[-1] == 0.9
    assert expman.load_run(run)["status"] == "finished"


def test_shim_is_a_drop_in_for_a_torch_script(tmp_path):
    """The same script with torch's writer and with expman's: the same scalars."""
    _require_torch()
    script = """
        import sys, torch
        if sys.argv[1] == "tb":
            from torch.utils.tensorboard import SummaryWriter
        else:
            from expman import SummaryWriter
        writer = SummaryWriter("runs/drop_in")
        for step in range(20):
            loss = torch.tensor(1.0 / (step + 1))
            writer.add_scalar("loss", loss, step)
            writer.add_scalar("loss_item", loss.item(), step)
        writer.close()
    """
    env = child_env(EXPMAN_DIR=str(tmp_path / "exps"))   # not used: log_dir is a path
    for mode in ("tb", "expman"):
        proc = run_python(script.replace("sys.argv[1]", repr(mode)), cwd=tmp_path, env=env,
                          timeout=120)
        assert proc.returncode == 0
    acc = _accumulate(tmp_path / "runs" / "drop_in")
    # the run is written under torch's log_dir, beside its event file
    (run,) = [p.parent for p in (tmp_path / "runs" / "drop_in").glob("*/run.yaml")]
    assert not (tmp_path / "exps").exists()
    table = expman.load_metrics(run)
    assert table.column("step").to_pylist() == [e.step for e in acc.Scalars("loss")]
    assert table.column("loss").to_pylist() == pytest.approx(
        [e.value for e in acc.Scalars("loss")], rel=1e-7)


def test_importing_expman_imports_no_framework(tmp_path):
    proc = run_python("""
        import json, sys
        from expman import *                      # star import must not build the classes
        import expman
        assert expman.LightningLogger.__doc__ and "LightningLogger" in expman.__all__
        heavy = ("torch", "lightning", "pytorch_lightning", "transformers", "keras",
                 "tensorboard", "tensorboardX", "numpy")
        print(json.dumps([m for m in heavy if m in sys.modules]))
    """, cwd=tmp_path)
    assert json.loads(proc.stdout) == []


def test_missing_framework_names_the_package(tmp_path):
    proc = run_python("""
        import sys
        for name in ("lightning", "pytorch_lightning", "transformers", "keras"):
            sys.modules[name] = None
        import expman
        for cls in (expman.LightningLogger, expman.TransformersCallback, expman.KerasCallback):
            try:
                cls()
            except expman.ExpmanError as exc:
                print(exc)
    """, cwd=tmp_path)
    assert proc.stdout.splitlines() == [
        "expman.LightningLogger needs PyTorch Lightning: pip install lightning",
        "expman.TransformersCallback needs transformers: pip install transformers",
        "expman.KerasCallback needs Keras 3: pip install keras"]


def test_shim_hands_images_and_histograms_to_the_run(root):
    """add_image/add_histogram land in the run's media and histograms, as TensorBoard's writer
    takes them: a CHW float image and raw values."""
    np = pytest.importorskip("numpy")
    image = np.zeros((3, 8, 16), dtype=np.float32)   # CHW, TensorBoard's default layout
    image[0] = 1.0                                    # pure red
    with expman.SummaryWriter("media/r", base_dir=root) as writer:
        writer.add_scalar("loss", 0.5, 3)
        writer.add_image("sample", image, 3)
        writer.add_histogram("weights", np.linspace(-1, 1, 101), global_step=4)
    run_dir = writer.experiment.run_dir
    assert run_dir.parent == root / "media" / "r"
    (item,) = expman.read_media(run_dir)
    assert (item["tag"], item["kind"], item["step"]) == ("sample", "image", 3)
    assert (item["width"], item["height"]) == (16, 8)
    assert expman.read_media_bytes(run_dir, item)[:8] == b"\x89PNG\r\n\x1a\n"
    hist = expman.read_histograms(run_dir).to_pylist()
    assert [(h["tag"], h["step"], h["count"]) for h in hist] == [("weights", 4, 101)]
    assert sum(hist[0]["counts"]) == 101


# -- the plain scalar decoder against protobuf ------------------------------------------------
from hypothesis import example, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from tensorboard.compat.proto import event_pb2, summary_pb2  # noqa: E402
from tensorboard.plugins.hparams import plugin_data_pb2 as hparams_pb2  # noqa: E402

_TAGS = ["loss", "acc", "val/l\u00f6ss", "t" * 130]


@st.composite
def _event_records(draw):
    """Serialized events: scalars of every kind TensorBoard writers use, with and without a
    plugin named, texts, histograms, other fields; two events' bytes one after the other (a
    field twice: protobuf merges them); a few bytes changed in some."""
    data = draw(_event_bytes())
    if draw(st.integers(0, 5)) == 0:
        data += draw(_event_bytes())
    data = bytearray(data)
    for _ in range(draw(st.sampled_from([0, 0, 0, 1, 2]))):   # damaged bytes
        if data:
            data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    return bytes(data)


@st.composite
def _event_bytes(draw):
    event = event_pb2.Event()
    if draw(st.booleans()):
        event.wall_time = draw(st.floats(allow_nan=False, allow_infinity=False))
    if draw(st.booleans()):
        event.step = draw(st.one_of(st.integers(-2 ** 63, 2 ** 63 - 1), st.just(0)))
    kind = draw(st.sampled_from(["summary", "summary", "summary", "file_version", "empty"]))
    if kind == "file_version":
        event.file_version = "brain.Event:2"
    elif kind == "summary":
        summary = event.summary
        summary.SetInParent()
        for _ in range(draw(st.integers(0, 3))):
            value = summary.value.add(tag=draw(st.sampled_from(_TAGS)))
            shape = draw(st.sampled_from(["simple", "double", "float", "shaped", "text",
                                          "histo", "double2"]))
            number = draw(st.floats(width=32))
            if shape == "simple":
                value.simple_value = number
            elif shape in ("double", "float", "shaped", "double2"):
                value.tensor.dtype = 2 if shape != "float" else 1
                if shape == "shaped":
                    value.tensor.tensor_shape.dim.add(size=1)
                if draw(st.booleans()):
                    value.tensor.tensor_shape.SetInParent()   # an empty shape written out
                (value.tensor.float_val if shape == "float" else
                 value.tensor.double_val).extend([number] * (2 if shape == "double2" else 1))
            elif shape == "text":
                value.tensor.dtype = 7
                value.tensor.string_val.append(b"hello")
                value.metadata.plugin_data.plugin_name = "text"
            else:
                value.histo.num = 3
            if shape != "text" and draw(st.booleans()):
                value.metadata.plugin_data.plugin_name = draw(st.sampled_from(
                    ["scalars", "scalars", "images"]))
    return event.SerializeToString()


def _exactly(value):
    """value with each float as its bits (NaN equal to NaN, -0.0 apart from 0.0)."""
    if isinstance(value, float):
        return "nan" if math.isnan(value) else struct.pack("<d", value)
    if isinstance(value, (list, tuple)):
        return [_exactly(v) for v in value]
    return value


def _named_event(step, plugin, histogram=False):
    event = event_pb2.Event(wall_time=1.0, step=step)
    value = event.summary.value.add(tag="x")
    if histogram:
        value.histo.num = 3
    else:
        value.tensor.dtype = 2
        value.tensor.double_val.append(0.5)
    if plugin is not None:
        value.metadata.plugin_data.plugin_name = plugin
    return event.SerializeToString()


def _scalar_event(wall, step, tag, number):
    return event_pb2.Event(wall_time=wall, step=step, summary=summary_pb2.Summary(
        value=[summary_pb2.Summary.Value(tag=tag, simple_value=number)])).SerializeToString()


@pytest.mark.filterwarnings("ignore:expman.*unreadable event record")   # damaged on purpose
@settings(max_examples=300, deadline=None)
@given(records=st.lists(_event_records(), max_size=12))
@example(records=[_scalar_event(1.0, 1, "a", 1.0) + _scalar_event(2.0, 2, "b", 2.0)])  # merged
@example(records=[_named_event(1, "scalars"), _named_event(2, "scalars"),   # one layout, its
                  _named_event(3, "images", histogram=True),                # tag named another
                  _named_event(4, "scalars")])                              # plugin between
@example(records=[_named_event(1, "scalars"), _named_event(2, None), _named_event(3, None),
                  _named_event(4, "images", histogram=True), _named_event(5, None)])
@example(records=[_scalar_event(1.0, 1, "a", 1.0),    # the same length and tag, but the value
                  _scalar_event(1.0, 2, "a", 1.0).replace(b"a\x15", b"a\x0d")])   # is no float
def test_plain_scalar_events_are_read_as_protobuf_reads_them(records, tmp_path_factory):
    # the import's own decoder of scalar events, against protobuf on the same records: every
    # record it takes must give what protobuf gives, tags, plugins and times included
    path = tmp_path_factory.mktemp("tb") / "events.out.tfevents.0.host"
    path.write_bytes(b"".join(len(r).to_bytes(8, "little") + b"\0" * 4 + r + b"\0" * 4
                              for r in records))
    got, want = [], []
    fast = expman._TBRun(str(path.parent), lambda *p: got.append(p))
    fast.read([str(path)], event_pb2, hparams_pb2)
    slow = expman._TBRun(str(path.parent), lambda *p: want.append(p))
    for record in records:
        try:
            event = event_pb2.Event.FromString(record)
        except Exception:  # noqa: BLE001 - DecodeError: skipped by the import too
            continue
        slow.events += 1
        if event.HasField("summary"):
            slow._summary(event, hparams_pb2)
    assert _exactly(got) == _exactly(want)
    for field in ("events", "points", "tags", "plugins", "first", "last", "texts"):
        assert _exactly(getattr(fast, field)) == _exactly(getattr(slow, field)), field
    assert fast.ignored == slow.ignored


def test_plain_scalar_events_take_the_plain_way():
    # the events torch and expman write most often are read without protobuf
    plugins = {"acc": "scalars"}
    simple = event_pb2.Event(wall_time=1.5, step=-3, summary=summary_pb2.Summary(
        value=[summary_pb2.Summary.Value(tag="loss", simple_value=0.25)]))
    assert expman._tb_scalar_event(simple.SerializeToString(), plugins) == (1.5, -3,
                                                                           [("loss", 0.25)])
    assert plugins == {"acc": "scalars", "loss": None}
    tensor = event_pb2.Event(wall_time=2.0, step=7)
    value = tensor.summary.value.add(tag="acc")
    value.tensor.dtype = 2
    value.tensor.double_val.append(0.125)
    assert expman._tb_scalar_event(tensor.SerializeToString(), plugins) == (2.0, 7,
                                                                           [("acc", 0.125)])
    value.tag = "lr"                                      # a tensor naming its plugin, as
    value.metadata.plugin_data.plugin_name = "scalars"    # torch's new_style writes it
    assert expman._tb_scalar_event(tensor.SerializeToString(), plugins) == (2.0, 7,
                                                                           [("lr", 0.125)])
    assert plugins["lr"] == "scalars"
    value.metadata.plugin_data.plugin_name = "images"     # another plugin: protobuf's way
    assert expman._tb_scalar_event(tensor.SerializeToString(), plugins) is None
