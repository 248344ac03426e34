"""The public surface of expman: names, signatures, import cost, and the README quick start."""
import inspect
import json
import os
import re

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

import expman
from _util import REPO, child_env, only_run_dir, run_python

EXPECTED_ALL = [
    "Experiment", "init", "log_params", "log_metrics", "log_vector", "log_scalar", "info",
    "warn", "save_artifact", "flush", "close", "get_run", "is_primary",
    "log_image", "log_figure", "log_histogram", "log_audio", "log_video", "log_text",
    "list_experiments", "list_runs", "load_run", "load_config", "load_metrics", "metric_keys",
    "metric_stats", "load_log", "list_artifacts", "load_experiment", "load_experiments",
    "load_runs", "read_media", "read_media_bytes", "read_histograms",
    "make_app", "make_server", "serve",
    "SummaryWriter", "LightningLogger", "TransformersCallback", "KerasCallback",
    "ExpmanError", "InvalidInputError", "ExpmanWarning", "STATUSES", "main",
]

# name -> signature text; changing one of these breaks users' scripts, so it must be deliberate
SIGNATURES = {
    # expman-rs's positional order (issue 15): name, run_name, base_dir, flush_interval_rows,
    # flush_interval_ms, redirect_console, project, tags, description; every earlier keyword
    # (config, capture_output, ...) is still accepted by name
    "init": "(name, run_name=None, base_dir=None, flush_interval_rows=None, "
            "flush_interval_ms=500, redirect_console=False, project=None, tags=None, "
            "description=None, *, config=None, **kwargs)",
    "log_params": "(params)",
    "log_metrics": "(metrics, step=None)",
    "log_vector": "(metrics, step=None)",
    "log_scalar": "(key, value)",
    "info": "(message)",
    "warn": "(message)",
    "save_artifact": "(path, name=None)",
    "flush": "(timeout=30.0)",
    "close": "(status='finished')",
    "get_run": "()",
    "log_image": "(tag, image, step=None)",
    "log_figure": "(tag, fig, step=None)",
    "log_histogram": "(tag, values=None, step=None, bins=64, edges=None, counts=None)",
    "log_audio": "(tag, data, step=None, ext='wav')",
    "log_video": "(tag, data, step=None, ext='mp4')",
    "log_text": "(tag, text, step=None)",
    "read_media": "(run_dir, tag=None, kind=None)",
    "read_media_bytes": "(run_dir, item)",
    "read_histograms": "(run_dir, tag=None)",
    "list_experiments": "(root=None, project=None)",
    "is_primary": "()",
    "load_experiments": "(root=None, experiments=None, keys=None, project=None)",
    "list_runs": "(root=None, experiment=None)",
    "load_run": "(run_dir)",
    "load_config": "(run_dir)",
    "load_metrics": "(run_dir, keys=None, since_row=0)",
    "metric_keys": "(run_dir)",
    "metric_stats": "(run_dir)",
    "load_log": "(run_dir, since=0, max_bytes=262144)",
    "list_artifacts": "(run_dir)",
    "load_experiment": "(root=None, experiment=None, keys=None)",
    "load_runs": "(root=None, experiment=None, status=None, tags=None, project=None, "
                 "to_pandas=False, where=None)",
    "main": "(argv=None)",
    "make_app": "(root=None, live=True, token=None)",
    "make_server": "(root=None, host='127.0.0.1', port=8000, live=True, token=None, threads=48)",
    "serve": "(root=None, host='127.0.0.1', port=8000, live=True, token=None, "
             "open_browser=False, out=None)",
    "SummaryWriter": "(log_dir=None, comment='', purge_step=None, max_queue=10, "
                     "flush_secs=120, filename_suffix='', *, base_dir=None, experiment=None, "
                     "run_name=None, run=None, config=None)",
    "Experiment": "(name, run_name=None, base_dir=None, flush_interval_rows=None, "
                  "flush_interval_ms=500, redirect_console=False, project=None, tags=None, "
                  "description=None, *, config=None, system_metrics=False, "
                  "capture_output=False, rank=None, group=None, provenance=True, "
                  "save_git_diff=False, heartbeat_secs=5.0, capture_git=True, clock=None, "
                  "heartbeat_interval_secs=None, system_metrics_interval_secs=None, "
                  "capture_provenance=None, capture_diff=None)",
}

METHOD_SIGNATURES = {
    "log_metrics": "(self, metrics, step=None)",
    "log_vector": "(self, metrics, step=None)",
    "log_params": "(self, params)",
    "log_scalar": "(self, key, value)",
    "info": "(self, message)",
    "warn": "(self, message)",
    "save_artifact": "(self, path, name=None)",
    "flush": "(self, timeout=30.0)",
    "close": "(self, status='finished')",
    "log_image": "(self, tag, image, step=None)",
    "log_figure": "(self, tag, fig, step=None)",
    "log_histogram": "(self, tag, values=None, step=None, bins=64, edges=None, counts=None)",
    "log_audio": "(self, tag, data, step=None, ext='wav')",
    "log_video": "(self, tag, data, step=None, ext='mp4')",
    "log_text": "(self, tag, text, step=None)",
}


def test_all_is_pinned_and_every_name_exists():
    assert expman.__all__ == EXPECTED_ALL
    for name in expman.__all__:
        assert not name.startswith("_")
        assert hasattr(expman, name), name


@pytest.mark.parametrize("name", sorted(SIGNATURES))
def test_public_signatures(name):
    obj = getattr(expman, name)
    assert str(inspect.signature(obj)) == SIGNATURES[name]
    assert inspect.getdoc(obj), f"{name} has no docstring"


@pytest.mark.parametrize("name", sorted(METHOD_SIGNATURES))
def test_experiment_method_signatures(name):
    method = getattr(expman.Experiment, name)
    assert str(inspect.signature(method)) == METHOD_SIGNATURES[name]
    assert inspect.getdoc(method)


def test_aliases_errors_and_constants():
    assert expman.log_vector is expman.log_metrics
    assert expman.Experiment.log_vector is expman.Experiment.log_metrics
    assert expman.STATUSES == ("running", "finished", "failed", "interrupted", "crashed")
    assert issubclass(expman.InvalidInputError, expman.ExpmanError)
    assert issubclass(expman.InvalidInputError, ValueError)
    assert issubclass(expman.ExpmanWarning, UserWarning)
    assert isinstance(expman.Experiment.run_dir, property)
    assert isinstance(expman.Experiment.closed, property)


def test_expman_rs_positional_order_and_keywords(tmp_path, capsys):
    """Experiment/init take expman-rs's positional order and keyword names (issue 15)."""
    root = str(tmp_path / "exps")
    exp = expman.Experiment("exp", "myrun", root, 50, 200, False, "proj", ["t1"], "about",
                            capture_git=False)
    try:
        assert exp.run_name == "myrun" and exp.project == "proj"
        assert str(exp.run_dir) == os.path.join(root, "exp", "myrun")
        assert exp._writer.interval == 0.2 and exp._writer.flush_rows == 50
    finally:
        exp.close()
    meta = expman.load_run(os.path.join(root, "exp", "myrun"))
    assert meta["tags"] == ["t1"] and meta["description"] == "about"
    # expman-rs's keyword names, honoured
    exp = expman.Experiment("exp", run_name="kw", base_dir=root, redirect_console=True,
                            heartbeat_interval_secs=7, capture_provenance=False,
                            capture_diff=False, system_metrics_interval_secs=0)
    try:
        print("hello from the console")
        assert exp._capture is not None and exp._writer.sampler is None
    finally:
        exp.close()
    with open(exp.run_dir / "run.yaml") as fh:
        meta = yaml.safe_load(fh)
    assert meta["heartbeat_secs"] == 7 and "command" not in meta   # provenance off
    assert "OUT   hello from the console" in expman.load_log(exp.run_dir)[0]
    assert "hello from the console" in capsys.readouterr().out       # still on the console
    # and expman's own keywords keep working, by name
    run = expman.init("exp", base_dir=root, run_name="old", config={"lr": 1},
                      description="d", tags="a,b", flush_interval_ms=100, capture_git=False)
    try:
        assert run.run_name == "old"
    finally:
        expman.close()
    assert expman.load_config(os.path.join(root, "exp", "old")) == {"lr": 1}
    run = expman.init("exp", "pos", root, capture_git=False)    # init: the same order
    expman.close()
    assert run.run_dir == os.path.join(root, "exp", "pos")


def test_run_dir_is_a_str_that_also_works_as_a_path(tmp_path):
    with expman.Experiment("exp", base_dir=tmp_path, capture_git=False) as exp:
        run_dir = exp.run_dir
        assert isinstance(run_dir, str) and isinstance(run_dir, os.PathLike)
        assert os.path.exists(run_dir + "/run.yaml")                # expman-rs style
        assert (run_dir / "run.yaml").exists()                     # pathlib style
        assert run_dir.name == exp.run_name and run_dir.parent == tmp_path / "exp"
        assert run_dir == tmp_path / "exp" / exp.run_name           # equal to its Path
        assert run_dir == str(tmp_path / "exp" / exp.run_name)      # and to its str
        assert json.loads(json.dumps({"d": run_dir}))["d"] == str(run_dir)
        assert os.path.join(run_dir, "x") == str(tmp_path / "exp" / exp.run_name / "x")


def test_version_is_a_plain_string_literal():
    assert type(expman.__version__) is str
    assert re.fullmatch(r"\d+\.\d+\.\d+([.-]?\w+)?", expman.__version__)
    with open(os.path.join(REPO, "expman.py"), encoding="utf-8") as fh:
        source = fh.read()
    # packaging and the binary build read the literal: it must not be computed
    match = re.search(r'^__version__ = "([^"]+)"$', source, re.M)
    assert match and match.group(1) == expman.__version__
    assert "importlib.metadata" not in source


def test_import_is_cheap_and_has_no_side_effects(tmp_path):
    code = """
        import atexit, json, os, signal, sys, threading
        before_threads = threading.active_count()
        before_atexit = atexit._ncallbacks()
        term = signal.getsignal(signal.SIGTERM)
        hook = sys.excepthook
        import expman
        print(json.dumps({
            # not needed to log (issue 19): yaml, logging, socket, subprocess and platform are
            # imported by init(), the CLI or the server, not by `import expman`
            "heavy": [m for m in ("bottle", "waitress", "pyarrow", "pandas", "yaml", "logging",
                                  "socket", "subprocess", "platform") if m in sys.modules],
            "threads": threading.active_count() - before_threads,
            "atexit": atexit._ncallbacks() - before_atexit,
            "sigterm_unchanged": signal.getsignal(signal.SIGTERM) is term,
            "excepthook_unchanged": sys.excepthook is hook,
            "files": sorted(os.listdir(".")),
            "module": expman.__file__,
        }))
    """
    out = json.loads(run_python(code, cwd=tmp_path).stdout)
    assert out["heavy"] == []
    assert out["threads"] == 0
    assert out["atexit"] == 0
    assert out["sigterm_unchanged"] and out["excepthook_unchanged"]
    assert out["files"] == []          # no ./experiments or anything else
    assert os.path.dirname(out["module"]) == REPO


QUICK_START = {
    "init": """\
import expman
expman.init("resnet_cifar10")
expman.log_params({"lr": 0.001})
expman.log_metrics({"loss": 0.5}, step=0)
# auto-closes on script exit
""",
    "with": """\
from expman import Experiment
with Experiment("resnet_cifar10") as exp:
    exp.log_metrics({"loss": 0.5}, step=0)
""",
}


@pytest.mark.parametrize("snippet", sorted(QUICK_START))
def test_quick_start_snippets_work_as_written(tmp_path, snippet):
    proc = run_python(QUICK_START[snippet], cwd=tmp_path)
    assert proc.returncode == 0
    assert "Warning" not in proc.stderr, proc.stderr

    exp_dir = tmp_path / "experiments" / "resnet_cifar10"
    exp_meta = yaml.safe_load((exp_dir / "experiment.yaml").read_text())
    assert exp_meta["display_name"] == "resnet_cifar10"
    assert "created_at" in exp_meta

    run = only_run_dir(tmp_path / "experiments", "resnet_cifar10")
    assert re.fullmatch(r"\d{8}_\d{6}(_\d+)?", run.name)
    assert (run / "artifacts").is_dir()
    assert (run / "run.log").is_file()
    assert not (run / "metrics").exists()   # segments are compacted away on close

    table = pq.read_table(run / "metrics.parquet")
    assert table.schema.field("step").type == pa.int64()
    assert table.schema.field("timestamp").type == pa.timestamp("us", tz="UTC")
    assert table.schema.field("loss").type == pa.float64()
    assert table.column("step").to_pylist() == [0]
    assert table.column("loss").to_pylist() == [0.5]

    import pandas as pd
    df = pd.read_parquet(run / "metrics.parquet")
    assert list(df.columns) == ["step", "timestamp", "loss"]
    assert str(df["step"].dtype) == "int64"
    assert str(df["loss"].dtype) == "float64"
    assert isinstance(df["timestamp"].dtype, pd.DatetimeTZDtype)
    assert str(df["timestamp"].dt.tz) == "UTC"

    meta = yaml.safe_load((run / "run.yaml").read_text())
    assert meta["status"] == "finished"
    assert meta["name"] == run.name and isinstance(meta["name"], str)
    assert meta["experiment"] == "resnet_cifar10"
    assert meta["summary"]["loss"] == 0.5
    assert meta["rows"] == 1
    for field in ("started_at", "finished_at", "duration_secs", "hostname", "pid", "command",
                  "python", "heartbeat_at", "description", "tags"):
        assert field in meta, field
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config == ({"lr": 0.001} if snippet == "init" else {})


def test_expman_dir_environment_variable_sets_the_default_root(tmp_path):
    target = tmp_path / "elsewhere"
    env = child_env(EXPMAN_DIR=str(target))
    run_python('import expman\nexpman.init("e")\nexpman.log_metrics({"x": 1})\n',
               cwd=tmp_path, env=env)
    assert not (tmp_path / "experiments").exists()
    run = only_run_dir(target, "e")
    assert expman.load_metrics(run).column("x").to_pylist() == [1.0]


def test_module_shortcuts_relay_to_the_current_run(root):
    with pytest.raises(expman.ExpmanError, match="init"):
        expman.log_metrics({"x": 1})
    run = expman.init("short", base_dir=root, capture_git=False, flush_interval_ms=50)
    try:
        assert expman.get_run() is run
        expman.log_params({"a": 1})
        expman.log_vector({"x": 2.0})
        expman.log_scalar("best", 3.0)
        expman.info("hello")
        assert expman.flush() is True
        second = expman.init("short", base_dir=root, capture_git=False)  # closes the first
        assert run.closed and run.status == "finished"
        assert expman.get_run() is second
    finally:
        expman.close()
    assert expman.get_run() is None
    assert expman.load_run(run.run_dir)["summary"] == {"x": 2.0, "best": 3.0}
    assert expman.load_config(run.run_dir) == {"a": 1}
