"""Coming from expman-rs: its runs read natively, its scripts and TensorBoard code unchanged.

The runs read here are written by the real expman-rs (0.5.3 and 1.3.0 from PyPI), installed
with ``pip install --target`` into a folder under the temp dir (made once per machine, reused)
and run in child processes whose ``import expman`` is expman-rs's package. Nothing is skipped:
a failed install fails the tests that need it.
"""
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
import warnings

import pytest
from _util import REPO, Child, child_env, run_python, wait_for

import expman

RS_VERSIONS = ("0.5.3", "1.3.0")


def _expman_rs_path(version):
    """A folder holding expman-rs==version (its ``expman`` package), installed once."""
    base = pathlib.Path(tempfile.gettempdir()) / "expman-rs-for-tests"
    target = base / version
    if (target / ".complete").exists():
        return target
    base.mkdir(parents=True, exist_ok=True)
    partial = base / f"{version}.partial-{os.getpid()}"
    shutil.rmtree(partial, ignore_errors=True)
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps",
                           "--disable-pip-version-check", "--target", str(partial),
                           f"expman-rs=={version}"], capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, f"cannot install expman-rs=={version}:\n{proc.stderr}"
    (partial / ".complete").write_text(version)
    try:
        partial.rename(target)
    except OSError:  # another test process got there first
        shutil.rmtree(partial, ignore_errors=True)
    return target


def _rs_env(version):
    return child_env(pythonpath=str(_expman_rs_path(version)))


def _run_rs(version, code, cwd, timeout=120):
    proc = run_python(code, cwd=cwd, env=_rs_env(version), timeout=timeout)
    return proc


# What an expman-rs user's script does: params, metrics with and without a step, summaries of
# every kind, log lines, a relative artifact, and a run that fails.
WRITE_RUNS = """
    import os, expman
    assert expman.__file__.startswith({target!r}), expman.__file__   # expman-rs, not ours
    os.makedirs("sub", exist_ok=True)
    with open("sub/rel.txt", "w") as fh:
        fh.write("hello")
    exp = expman.Experiment("exp", run_name="r1", base_dir="runs", redirect_console=False)
    exp.log_params({{"lr": 0.1, "opt": "adam"}})
    for i in range(120):
        row = {{"loss": 1.0 / (i + 1), "acc": i / 120}}
        if i % 10 == 0:
            row["val/loss"] = 2.0 / (i + 1)
        exp.log_vector(row, step=i)
    exp.log_vector({{"nostep": 5.0}})
    exp.log_scalar("best", 0.9)
    exp.log_scalar("optimizer", "adam")
    exp.info("hello info")
    exp.warn("a warning")
    exp.save_artifact("sub/rel.txt")
    exp.close()
    try:
        with expman.Experiment("exp", run_name="bad", base_dir="runs",
                               redirect_console=False) as bad:
            bad.log_vector({{"x": 1.0}}, step=0)
            raise RuntimeError("boom")
    except RuntimeError:
        pass
"""


@pytest.fixture(scope="module", params=RS_VERSIONS)
def rs_runs(request, tmp_path_factory):
    """(version, root) of closed runs written by expman-rs==version."""
    version = request.param
    cwd = tmp_path_factory.mktemp(f"rs{version}")
    _run_rs(version, WRITE_RUNS.format(target=str(_expman_rs_path(version))), cwd)
    return version, cwd / "runs"


def test_closed_runs_read_natively(rs_runs):
    version, root = rs_runs
    r1 = root / "exp" / "r1"
    assert (r1 / "vectors.parquet").exists() and not (r1 / "metrics.parquet").exists()
    table = expman.load_metrics(r1)
    assert table.num_rows == 121
    assert table.column("step").to_pylist() == list(range(120)) + [None]
    assert table.column("loss").to_pylist()[:120] == [1.0 / (i + 1) for i in range(120)]
    assert table.column("val/loss").null_count == 121 - 12
    assert table.column("nostep").to_pylist()[-1] == 5.0
    assert set(expman.metric_keys(r1)) == {"loss", "acc", "val/loss", "nostep"}
    assert expman.load_metrics(r1, keys=["acc"], since_row=100).column_names == \
        ["step", "timestamp", "acc"]

    run = expman.load_run(r1)
    assert (run["status"], run["recorded_status"]) == ("finished", "FINISHED")
    assert run["rows"] == 121
    assert run["summary"]["optimizer"] == "adam"          # scalars: section
    assert run["summary"]["best"] == 0.9
    assert run["summary"]["loss"] == 1.0 / 120            # vectors: section
    assert run["config"] == {"lr": 0.1, "opt": "adam"}
    assert "hello info" in expman.load_log(r1)[0]
    assert [a["path"] for a in expman.list_artifacts(r1)] == ["sub/rel.txt"]

    assert expman.load_run(root / "exp" / "bad")["status"] == "failed"
    rows = {r["name"]: r for r in expman.list_runs(root, "exp")}
    assert {n: r["status"] for n, r in rows.items()} == {"r1": "finished", "bad": "failed"}
    assert rows["r1"]["summary"]["optimizer"] == "adam"
    (exp_row,) = expman.list_experiments(root)
    assert exp_row["status_counts"] == {"finished": 1, "failed": 1}
    many = expman.load_experiments(root)
    assert many.num_rows == 122
    assert sorted(set(many.column("run").to_pylist())) == ["bad", "r1"]


def test_cli_inspects_and_exports_their_runs(rs_runs, capsys, tmp_path):
    _version, root = rs_runs
    r1 = root / "exp" / "r1"
    assert expman.main(["inspect", str(r1)]) == 0
    out = capsys.readouterr().out
    assert "run.yaml says" not in out     # FINISHED is finished, not a crashed run
    assert expman.main(["inspect", str(r1), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["metrics"]["loss"]["count"] == 120 and data["rows"] == 121
    target = tmp_path / "r1.csv"
    assert expman.main(["export", str(r1), "--format", "csv", "-o", str(target)]) == 0
    lines = target.read_text().splitlines()
    assert len(lines) == 122 and "loss" in lines[0]


def _serve(root):
    server = Child(f"""
        import sys, expman
        sys.exit(expman.main(["serve", {str(root)!r}, "--port", "0"]))
    """, cwd=root)
    line = server.wait_line(lambda l: "http://127.0.0.1:" in l, timeout=60)
    url = line[line.index("http://"):].split()[0].rstrip("/")

    def get(path):
        with urllib.request.urlopen(url + path, timeout=10) as resp:
            return json.loads(resp.read())
    wait_for(lambda: _ok(get, "/api/health"), 30)
    return server, get


def _ok(get, path):
    try:
        return get(path)
    except OSError:
        return None


def test_serve_shows_their_curves(rs_runs, tmp_path):
    _version, original = rs_runs
    root = tmp_path / "runs"
    shutil.copytree(original, root)
    linked = root / "exp" / "linked"        # its vectors.parquet is a link out of the run
    linked.mkdir()
    shutil.copy(root / "exp" / "r1" / "run.yaml", linked / "run.yaml")
    os.symlink(root / "exp" / "r1" / "vectors.parquet", linked / "vectors.parquet")
    server, get = _serve(root)
    try:
        runs = get("/api/experiments/exp/runs")["runs"]
        assert {r["name"]: r["status"] for r in runs} == {"r1": "finished", "bad": "failed",
                                                          "linked": "finished"}
        data = get("/api/experiments/exp/runs/r1/metrics?keys=loss")
        assert data["rows"] == 121
        assert data["series"]["loss"]["step"] == list(range(120))
        assert data["series"]["loss"]["value"][-1] == 1.0 / 120
        with pytest.raises(urllib.error.HTTPError) as err:
            get("/api/experiments/exp/runs/linked/metrics")
        err.value.close()   # an HTTPError holds the response (its socket) open
        assert err.value.code == 403
    finally:
        server.kill()


LIVE_RUN = """
    import time, expman
    exp = expman.Experiment("exp", run_name="live", base_dir="runs", redirect_console=False,
                            flush_interval_rows=10, flush_interval_ms=50)
    for i in range(300):
        row = {"loss": 1.0 / (i + 1)}
        if i > 150:
            row["late"] = float(i)
        exp.log_vector(row, step=i)
        if i % 50 == 0:
            time.sleep(0.2)     # several flushes: several segments
    exp.log_scalar("best", 1.0)
    print("ready", flush=True)
    time.sleep(120)
"""


def test_live_and_killed_1_3_run_segments(tmp_path):
    """expman-rs 1.3's live layout: Arrow IPC stream segments vectors-NNNN.arrow, the last one
    appended to; after a kill -9 they stay, with run.yaml saying RUNNING."""
    child = Child(LIVE_RUN, cwd=tmp_path, env=_rs_env("1.3.0"))
    run_dir = tmp_path / "runs" / "exp" / "live"
    try:
        child.wait_line(lambda l: l == "ready", timeout=60)
        wait_for(lambda: expman.load_metrics(run_dir).num_rows == 300, 30,
                 message="expman-rs's 300 rows never all showed")
        segments = sorted(p.name for p in run_dir.glob("vectors-*.arrow"))
        assert len(segments) > 1 and not (run_dir / "vectors.parquet").exists()
        table = expman.load_metrics(run_dir)
        assert table.column("step").to_pylist() == list(range(300))
        assert table.column("late").null_count == 151
        tail = expman.load_metrics(run_dir, since_row=250)
        assert tail.column("step").to_pylist() == list(range(250, 300))
        assert set(expman.metric_keys(run_dir)) == {"loss", "late"}
        run = expman.load_run(run_dir)
        assert (run["recorded_status"], run["status"], run["rows"]) == ("RUNNING", "running",
                                                                       300)
        assert expman.load_experiments(tmp_path / "runs").num_rows == 300
    finally:
        child.kill()
    assert expman.load_metrics(run_dir).num_rows == 300     # what was flushed survives

    # reaped as crashed in the file's own case, so expman-rs still reads the run.yaml
    entry = expman._reap_run(expman._LOCAL_STORE, str(run_dir), stale=0)
    assert entry["action"] == "reaped"
    proc = run_python(f"""
        import json, expman
        run = expman.load_run({str(run_dir)!r})
        print(json.dumps([run["status"], run["name"], run["scalars"]]))
    """, cwd=tmp_path, env=_rs_env("1.3.0"))
    assert json.loads(proc.stdout) == ["CRASHED", "live", {"best": 1.0}]   # parsed, not a
    # default: a run.yaml it cannot parse reads as CRASHED with empty scalars
    assert expman.load_run(run_dir)["status"] == "crashed"

    # a segment cut mid-message (a kill during a write): its complete batches still read
    last = sorted(run_dir.glob("vectors-*.arrow"))[-1]
    data = last.read_bytes()
    last.write_bytes(data[:-40])
    with warnings.catch_warnings():
        warnings.simplefilter("error")     # a torn tail is expected: no warning, no error
        steps = expman.load_metrics(run_dir).column("step").to_pylist()
    assert 150 < len(steps) < 300 and steps == list(range(len(steps)))

    # a segment that is a link out of the run is not read, as the server refuses other files
    first = sorted(run_dir.glob("vectors-*.arrow"))[0]
    outside = tmp_path / "outside.arrow"
    first.rename(outside)
    os.symlink(outside, first)
    with pytest.warns(expman.ExpmanWarning, match="a link out of the run"):
        steps = expman.load_metrics(run_dir).column("step").to_pylist()
    assert steps and steps[0] > 0


def test_their_example_scripts_run_against_expman(tmp_path):
    """The calls of expman-rs's Python examples (basic training and the TensorBoard migration),
    written here as a user's script, run unchanged against expman.py and exit 0."""
    proc = run_python("""
        import math
        import expman
        from expman.tensorboard import SummaryWriter

        writer = SummaryWriter(log_dir="runs/tb_migration_demo")
        writer.add_hparams(hparam_dict={"lr": 0.001, "batch_size": 64, "optimizer": "adam"},
                           metric_dict={"hparam/final_loss": 0.0})
        for epoch in range(50):
            writer.add_scalar("train/loss", 2.0 * math.exp(-0.05 * epoch), epoch)
            writer.add_scalar("train/accuracy", 1.0 - math.exp(-0.08 * epoch), epoch)
            writer.add_scalars("validation", {"loss": 1.0 / (epoch + 1), "accuracy": 0.5},
                               epoch)
            if epoch % 10 == 0:
                writer.add_text("notes", f"Epoch {epoch}: lr warmup complete", epoch)
        writer.add_histogram("weights", [1.0, 2.0, 3.0], 0)
        writer.add_image("sample", [[[0]]], 0)          # unusable: warned, skipped
        writer.close()
        with SummaryWriter(log_dir="experiments/ctx_manager_demo") as w:
            for step in range(20):
                w.add_scalar("metric", step * 0.1, step)

        exp = expman.Experiment("basic", base_dir="experiments")
        exp.log_params({"lr": 0.01, "model": "mlp"})
        for step in range(10):
            exp.log_vector({"loss": 1.0 / (step + 1)}, step=step)
        exp.log_scalar("optimizer", "adam")
        exp.close("FINISHED")
    """, cwd=tmp_path)
    assert proc.returncode == 0
    assert "SummaryWriter.add_image skipped input it cannot use" in proc.stderr
    (demo,) = [p.parent for p in (tmp_path / "runs" / "tb_migration_demo").glob("*/run.yaml")]
    table = expman.load_metrics(demo)
    assert table.num_rows == 50
    assert {"train/loss", "validation/loss", "validation/accuracy"} <= set(table.column_names)
    assert expman.load_config(demo)["optimizer"] == "adam"
    assert expman.load_run(demo)["summary"]["hparam/final_loss"] == 0.0
    assert [h["tag"] for h in expman.read_histograms(demo).to_pylist()] == ["weights"]
    assert [r["name"] for r in expman.list_runs(tmp_path / "runs", "tb_migration_demo")] == \
        [demo.name]
    (ctx,) = expman.list_runs(tmp_path / "experiments", "ctx_manager_demo")
    assert ctx["status"] == "finished"
    (basic,) = expman.list_runs(tmp_path / "experiments", "basic")
    assert basic["summary"]["optimizer"] == "adam" and basic["status"] == "finished"


# -- expman.tensorboard and the SummaryWriter ------------------------------------------------

def test_tensorboard_submodule_import_paths(tmp_path):
    proc = run_python("""
        import sys
        from expman.tensorboard import SummaryWriter
        import expman, expman.tensorboard
        assert SummaryWriter is expman.SummaryWriter is expman.tensorboard.SummaryWriter
        import importlib
        assert importlib.import_module("expman.tensorboard").SummaryWriter is SummaryWriter
        print("ok")
    """, cwd=tmp_path)
    assert proc.stdout.strip() == "ok"
    # vendored as mypkg.expman: its own mypkg.expman.tensorboard, no top-level expman
    pkg = tmp_path / "vendor" / "mypkg"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    shutil.copy(os.path.join(REPO, "expman.py"), pkg / "expman.py")
    proc = run_python("""
        import sys
        from mypkg.expman.tensorboard import SummaryWriter
        from mypkg import expman
        assert SummaryWriter is expman.SummaryWriter
        assert "expman" not in sys.modules and "expman.tensorboard" not in sys.modules
        print("ok")
    """, cwd=tmp_path, env=child_env(pythonpath=str(tmp_path / "vendor")))
    assert proc.stdout.strip() == "ok"


def test_summary_writer_log_dir_is_where_the_run_goes(tmp_path):
    absolute = tmp_path / "abs" / "x"
    with expman.SummaryWriter(str(absolute)) as writer:
        writer.add_scalar("loss", 1.0, 0)
    assert writer.experiment.run_dir.parent == absolute
    assert writer.log_dir == str(writer.experiment.run_dir)
    (row,) = expman.list_runs(tmp_path / "abs", "x")
    assert row["status"] == "finished"
    with expman.SummaryWriter(pathlib.Path("rel") / "y", base_dir=tmp_path) as writer:
        writer.add_scalar("loss", 1.0, 0)
    assert writer.experiment.run_dir.parent == tmp_path / "rel" / "y"
    # relative to the working directory, as torch's: a child in its own cwd
    run_python("""
        from expman.tensorboard import SummaryWriter
        w = SummaryWriter("runs/exp1")
        w.add_scalar("loss", 0.5, 1)
        w.close()
    """, cwd=tmp_path, env=child_env(EXPMAN_DIR=str(tmp_path / "elsewhere")))
    (run,) = [p.parent for p in (tmp_path / "runs" / "exp1").glob("*/run.yaml")]
    assert expman.load_metrics(run).column("loss").to_pylist() == [0.5]
    assert not (tmp_path / "elsewhere").exists()


def test_add_hparams_accepts_none_metrics(root):
    with expman.SummaryWriter("hp", base_dir=root) as writer:
        writer.add_hparams({"lr": 0.1, "opt": "sgd"}, None)
    assert expman.load_config(writer.experiment.run_dir) == {"lr": 0.1, "opt": "sgd"}


def test_unusable_image_and_histogram_warn_once_and_never_raise(root):
    with expman.SummaryWriter("media", base_dir=root) as writer:
        with pytest.warns(expman.ExpmanWarning, match="add_image skipped input") as rec:
            for step in range(3):
                writer.add_image("img", [[[0]]], step)          # a nested list: unusable
                writer.add_image("img", object(), step)
                writer.add_scalar("loss", float(step), step)
        assert len(rec) == 1
        with pytest.warns(expman.ExpmanWarning, match="add_histogram skipped input") as rec:
            writer.add_histogram("h", "not numbers", 0)
            writer.add_histogram("h", {"a": 1}, 1)
        assert len(rec) == 1
        writer.add_histogram("h", [1.0, 2.0, 3.0], 2)           # a usable one still lands
    run_dir = writer.experiment.run_dir
    assert expman.load_metrics(run_dir).column("loss").to_pylist() == [0.0, 1.0, 2.0]
    assert [h["step"] for h in expman.read_histograms(run_dir).to_pylist()] == [2]
    assert expman.load_run(run_dir)["status"] == "finished"


# -- summaries -------------------------------------------------------------------------------

def test_log_scalar_keeps_text_and_run_yaml_has_scalars_and_vectors(root):
    import yaml
    with expman.Experiment("s", base_dir=root, capture_git=False) as exp:
        exp.log_metrics({"loss": 2.0, "acc": 0.1}, step=0)
        exp.log_metrics({"loss": 1.0}, step=1)
        exp.log_scalar("optimizer", "adam")
        exp.log_scalar("nesterov", True)
        exp.log_scalar("epochs", 3)
        exp.log_scalar("best", 0.9)
    meta = yaml.safe_load((exp.run_dir / "run.yaml").read_text())
    assert meta["scalars"] == {"optimizer": "adam", "nesterov": 1.0, "epochs": 3.0, "best": 0.9}
    assert meta["vectors"] == {"loss": 1.0, "acc": 0.1}           # the last value of each
    assert meta["summary"] == {**meta["vectors"], **meta["scalars"]}
    assert expman.load_run(exp.run_dir)["summary"]["optimizer"] == "adam"


# -- artifacts -------------------------------------------------------------------------------

def test_save_artifact_keeps_relative_paths_inside_the_run(root, tmp_path, monkeypatch):
    work = tmp_path / "work"
    (work / "sub").mkdir(parents=True)
    (work / "sub" / "rel.txt").write_text("rel")
    (tmp_path / "outside.txt").write_text("out")
    monkeypatch.chdir(work)
    with expman.Experiment("a", base_dir=root, capture_git=False) as exp:
        assert exp.save_artifact("sub/rel.txt") == exp.run_dir / "artifacts" / "sub" / "rel.txt"
        exp.save_artifact("./sub/../sub/rel.txt")                  # normalised: the same
        exp.save_artifact(pathlib.Path("sub/rel.txt"), pathlib.Path("other/x.txt"))
        exp.save_artifact(b"sub/rel.txt", b"bytes/y.txt")
        exp.save_artifact("../outside.txt")       # climbs out of the cwd: its name alone
        exp.save_artifact(tmp_path / "outside.txt", "abs/outside.txt")
        exp.save_artifact("sub")                                   # a directory, as given
    art = exp.run_dir / "artifacts"
    files = sorted(str(p.relative_to(art)) for p in art.rglob("*") if p.is_file())
    assert files == ["abs/outside.txt", "bytes/y.txt", "other/x.txt", "outside.txt",
                     "sub/rel.txt"]
    assert not (exp.run_dir.parent / "outside.txt").exists()


def test_save_artifact_of_a_tree_with_a_symlink_loop(root, tmp_path):
    tree = tmp_path / "tree"
    (tree / "inner").mkdir(parents=True)
    (tree / "inner" / "f.txt").write_text("f")
    (tree / "top.txt").write_text("t")
    os.symlink("..", tree / "inner" / "up")             # back to tree: a loop
    os.symlink(str(tree), tree / "self")                  # the same, absolute
    os.symlink("missing", tree / "dangling")
    os.symlink("top.txt", tree / "alias.txt")             # a link to a file: copied
    with expman.Experiment("a", base_dir=root, capture_git=False) as exp:
        with pytest.warns(expman.ExpmanWarning) as rec:
            exp.save_artifact(tree)
        messages = sorted(str(w.message) for w in rec)
        assert len(messages) == 3, messages
        assert "dangling: a broken symbolic link" in messages[0]
        assert "inner/up: a symbolic link" in messages[1] and "(a loop)" in messages[1]
        assert "self: a symbolic link" in messages[2] and "(a loop)" in messages[2]
    art = exp.run_dir / "artifacts" / "tree"
    files = sorted(str(p.relative_to(art)) for p in art.rglob("*"))
    assert files == ["alias.txt", "inner", "inner/f.txt", "top.txt"]


def test_failed_artifact_copy_leaves_no_junk(root, tmp_path):
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "a.txt").write_text("a")
    os.mkfifo(tree / "pipe")                               # copytree cannot copy a FIFO
    with expman.Experiment("a", base_dir=root, capture_git=False) as exp:
        with pytest.raises(expman.ExpmanError, match="cannot copy"):
            exp.save_artifact(tree)
        exp.log_metrics({"x": 1.0})                         # the run goes on
    assert not (exp.run_dir / "artifacts" / "tree").exists()
    assert expman.load_metrics(exp.run_dir).num_rows == 1


def test_expman_rs_reads_our_runs_only_as_crashed(tmp_path):
    """The reverse direction, pinned so a change shows: expman-rs 1.3 parses run.yaml with an
    upper-case status enum and reads vectors.parquet, so it sees our runs as CRASHED with no
    metrics (README: "Coming from expman-rs")."""
    with expman.Experiment("e", base_dir=tmp_path, run_name="r", capture_git=False) as exp:
        exp.log_metrics({"loss": 1.0}, step=0)
    proc = run_python(f"""
        import json, expman
        run = expman.load_run({str(exp.run_dir)!r})
        print(json.dumps([run["status"], len(expman.read_metrics({str(exp.run_dir)!r}))]))
    """, cwd=tmp_path, env=_rs_env("1.3.0"))
    assert json.loads(proc.stdout) == ["CRASHED", 0]
