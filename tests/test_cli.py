"""The command line: every command, every flag, every error path (section 12).

Most tests call ``expman.main([...])`` in-process with capsys; a few run ``python expman.py``
as a real process (a live run followed by ``tail``, ``serve`` on a free port, colours on a pty,
a closed pipe, the console-script entry point).
"""
import csv
import io
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request

import pyarrow.parquet as pq
import pytest
import yaml

import expman
from _util import REPO, child_env, run_on_pty, wait_for

EXPMAN_PY = os.path.join(REPO, "expman.py")
ANSI = re.compile(r"\x1b\[[0-9;]*m")


# -- helpers ---------------------------------------------------------------------------------

def cli(capsys, *argv):
    """(exit code, stdout, stderr) of expman.main(argv)."""
    rc = expman.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def one_error_line(err, *needles):
    """stderr is exactly one 'expman: error: ...' line containing every needle."""
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("expman: error: "), err
    for needle in needles:
        assert str(needle) in lines[0], (needle, err)
    assert "Traceback" not in err
    return lines[0]


def make_run(root, exp="resnet", name=None, config=None, rows=(), status="finished",
             log=(), scalars=None, artifacts=None, tags=None, description=None):
    """A closed run written through the real library; returns its directory."""
    run = expman.Experiment(exp, base_dir=root, run_name=name, config=config, tags=tags,
                            description=description, flush_interval_ms=50, capture_git=False)
    try:
        for step, row in rows:
            run.log_metrics(row, step=step)
        for line in log:
            run.info(line)
        for key, value in (scalars or {}).items():
            run.log_scalar(key, value)
        src_dir = root.parent / "artifact-src"
        src_dir.mkdir(exist_ok=True)
        for rel, data in (artifacts or {}).items():
            src = src_dir / os.path.basename(rel)
            src.write_bytes(data)
            run.save_artifact(src, rel)
    finally:
        run.close(status)
    return run.run_dir


def open_run(root, exp="resnet", name=None, **kwargs):
    return expman.Experiment(exp, base_dir=root, run_name=name, flush_interval_ms=50,
                             capture_git=False, **kwargs)


def edit_meta(run_dir, **fields):
    path = run_dir / "run.yaml"
    meta = yaml.safe_load(path.read_text())
    meta.update(fields)
    path.write_text(yaml.safe_dump(meta))


def dead_pid():
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def dir_size(path):
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


LOSSES = [2.0, 1.0, 0.5, 0.75]


@pytest.fixture
def runs(root):
    """resnet: three closed runs (old -> new: a, b failed, c) and mnist: one run."""
    a = make_run(root, name="a", config={"lr": 0.1, "opt": {"name": "sgd", "momentum": 0.9},
                                         "seed": 1},
                 rows=[(i, {"train/loss": v, "val/acc": 0.5 + i / 10}) for i, v in
                       enumerate(LOSSES)],
                 log=["epoch 1", "epoch 2", "done"], scalars={"best_acc": 0.8},
                 artifacts={"model.bin": b"x" * 2048, "plots/curve.png": b"\x89PNG" + b"0" * 10},
                 tags=["baseline"], description="first try")
    b = make_run(root, name="b", config={"lr": 0.01, "opt": {"name": "adam", "momentum": 0.9},
                                         "seed": 1},
                 rows=[(0, {"train/loss": 3.0}), (1, {"train/loss": float("nan")}),
                       (2, {"train/loss": float("inf"), "val/acc": 0.25})],
                 status="failed")
    c = make_run(root, name="c", config={"lr": 0.001, "opt": {"name": "adam", "momentum": 0.9},
                                         "seed": 1},
                 rows=[(i * 10, {"train/loss": 1.0 / (i + 1)}) for i in range(20)])
    m = make_run(root, exp="mnist", name="only", rows=[(0, {"loss": 1.0})])
    return {"a": a, "b": b, "c": c, "mnist": m}


# -- general ---------------------------------------------------------------------------------

def test_version(capsys):
    rc, out, err = cli(capsys, "--version")
    assert (rc, out, err) == (0, f"expman {expman.__version__}\n", "")


def test_no_command_prints_help_and_exits_2(capsys):
    rc, out, err = cli(capsys)
    assert rc == 2 and out == ""
    for name in ("list", "inspect", "compare", "tail", "export", "clean", "serve", "demo"):
        assert name in err


@pytest.mark.parametrize("argv", [["bogus"], ["list", "--bogus"], ["inspect"],
                                  ["export", "x", "--format", "xml"], ["clean"],
                                  ["clean", "e", "--keep", "-1"], ["clean", "e", "--keep", "x"],
                                  ["tail", "x", "--interval", "0"], ["serve", "--port", "70000"],
                                  ["inspect", "x", "--log-lines", "-2"], ["compare"]])
def test_bad_usage_is_one_line_and_exit_2(capsys, argv):
    rc, out, err = cli(capsys, *argv)
    assert rc == 2 and out == ""
    one_error_line(err)


@pytest.mark.parametrize("argv,hint", [(["lsit"], "did you mean 'list'?"),
                                       (["inspct", "x"], "did you mean 'inspect'?"),
                                       (["export", "x", "-f", "jsno"], "did you mean 'json'?")])
def test_a_mistyped_choice_suggests_the_closest(capsys, argv, hint):
    rc, out, err = cli(capsys, *argv)
    assert rc == 2 and out == ""
    line = one_error_line(err, "invalid choice")
    assert hint in line or "maybe you meant" in line  # Python 3.14's argparse says it itself
    rc, _, err = cli(capsys, "zzzzz")
    assert rc == 2 and "did you mean" not in err and "maybe you meant" not in err


def test_bad_format_names_the_choices(capsys, runs):
    rc, out, err = cli(capsys, "export", runs["a"], "--format", "xml")
    assert rc == 2
    one_error_line(err, "xml", "csv", "json", "parquet")


@pytest.mark.parametrize("command", ["list", "inspect", "compare", "tail", "export", "clean",
                                     "serve", "demo"])
def test_every_command_has_help(capsys, command):
    rc, out, _ = cli(capsys, command, "--help")
    assert rc == 0 and out.startswith(f"usage: expman {command}")


# -- list ------------------------------------------------------------------------------------

def test_list_experiments(capsys, root, runs):
    rc, out, err = cli(capsys, "list", root)
    assert rc == 0 and err == ""
    lines = out.splitlines()
    assert lines[0].split()[:3] == ["EXPERIMENT", "RUNS", "STATUS"]
    assert [line.split()[0] for line in lines[1:]] == ["mnist", "resnet"]
    assert lines[1].split()[1:3] == ["1", "1"] and "1 finished" in lines[1]
    assert lines[2].split()[1] == "3" and "2 finished, 1 failed" in lines[2]
    assert "s ago" in lines[2]
    assert not ANSI.search(out)  # not a terminal: no colour


def test_list_experiments_json(capsys, root, runs):
    rc, out, _ = cli(capsys, "list", root, "--json")
    data = json.loads(out)
    assert data["root"] == str(root)
    exps = {e["name"]: e for e in data["experiments"]}
    assert exps["resnet"]["runs"] == 3
    assert exps["resnet"]["status_counts"] == {"finished": 2, "failed": 1}
    assert exps["mnist"]["status_counts"] == {"finished": 1}
    assert exps["resnet"]["last_activity"]


def test_list_defaults_to_experiments_dir_and_expman_dir(capsys, root, runs, monkeypatch,
                                                         tmp_path):
    monkeypatch.delenv("EXPMAN_DIR", raising=False)
    monkeypatch.chdir(root.parent)  # root is <tmp>/experiments
    rc, out, _ = cli(capsys, "list")
    assert rc == 0 and "resnet" in out
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    rc, _, err = cli(capsys, "list")
    assert rc == 1
    one_error_line(err, "no such directory", os.path.join(str(elsewhere), "experiments"))
    monkeypatch.setenv("EXPMAN_DIR", str(root))
    rc, out, _ = cli(capsys, "list", "-e", "resnet")
    assert rc == 0 and out.splitlines()[1].split()[0] == "c"


def test_list_runs_newest_first_with_metrics_and_params(capsys, root, runs):
    rc, out, err = cli(capsys, "list", root, "-e", "resnet")
    assert rc == 0 and err == ""
    header, *rows = out.splitlines()
    cols = header.split()
    assert cols[:6] == ["RUN", "STATUS", "STARTED", "DURATION", "STEP", "ROWS"]
    # metrics (last values) and the params that tell runs apart; constant ones are left out
    assert {"train/loss", "val/acc", "best_acc", "lr", "opt.name"} <= set(cols)
    assert "seed" not in cols and "opt.momentum" not in cols
    assert [r.split()[0] for r in rows] == ["c", "b", "a"]
    assert [r.split()[1] for r in rows] == ["finished", "failed", "finished"]
    by_name = {r.split()[0]: dict(zip(cols[:2] + cols[3:], r.split()[:2] + r.split()[4:]))
               for r in rows}  # STARTED spans two words
    assert by_name["a"]["STEP"] == "3" and by_name["a"]["ROWS"] == "4"
    assert by_name["a"]["train/loss"] == "0.75" and by_name["a"]["val/acc"] == "0.8"
    assert by_name["a"]["best_acc"] == "0.8" and by_name["c"]["best_acc"] == "-"
    assert by_name["b"]["train/loss"] == "inf" and by_name["b"]["val/acc"] == "0.25"
    assert by_name["c"]["STEP"] == "190" and by_name["c"]["ROWS"] == "20"
    assert by_name["b"]["lr"] == "0.01" and by_name["b"]["opt.name"] == "adam"
    started = expman.load_run(runs["a"])["started_at"]
    assert expman._fmt_time(started) in rows[2]


def test_list_runs_json(capsys, root, runs):
    rc, out, _ = cli(capsys, "list", root, "-e", "resnet", "--json")
    data = json.loads(out)  # strict JSON: NaN/inf are strings
    assert data["experiment"] == "resnet"
    rows = {r["name"]: r for r in data["runs"]}
    assert [r["name"] for r in data["runs"]] == ["c", "b", "a"]
    assert rows["b"]["summary"]["train/loss"] == "Infinity"
    assert rows["a"]["params"] == {"lr": 0.1, "opt.name": "sgd", "opt.momentum": 0.9, "seed": 1}
    assert rows["a"]["tags"] == ["baseline"] and rows["a"]["description"] == "first try"
    assert rows["a"]["rows"] == 4 and rows["c"]["last_step"] == 190


def test_list_a_single_run_shows_all_its_params(capsys, root):
    make_run(root, exp="solo", name="r", config={"lr": 0.5, "batch": 32})
    rc, out, _ = cli(capsys, "list", root, "-e", "solo")
    assert rc == 0 and {"lr", "batch"} <= set(out.splitlines()[0].split())


def test_list_an_experiment_directory_lists_its_runs(capsys, root, runs):
    rc, out, _ = cli(capsys, "list", root / "resnet")
    assert rc == 0 and [l.split()[0] for l in out.splitlines()[1:]] == ["c", "b", "a"]


def test_list_a_run_directory_says_use_inspect(capsys, runs):
    rc, out, err = cli(capsys, "list", runs["a"])
    assert rc == 1 and out == ""
    one_error_line(err, "is a run directory", "expman inspect")


def test_list_empty_root_and_empty_experiment(capsys, root):
    rc, out, _ = cli(capsys, "list", root)
    assert rc == 0 and out == f"no experiments in {root}\n"
    (root / "empty").mkdir()
    (root / "empty" / "experiment.yaml").write_text("name: empty\n")
    rc, out, _ = cli(capsys, "list", root, "-e", "empty")
    assert rc == 0 and "no runs" in out
    rc, out, _ = cli(capsys, "list", root, "-e", "empty", "--json")
    assert json.loads(out)["runs"] == []


def test_list_errors(capsys, root, tmp_path):
    rc, out, err = cli(capsys, "list", tmp_path / "missing")
    assert rc == 1 and out == ""
    one_error_line(err, "no such directory", tmp_path / "missing")
    rc, out, err = cli(capsys, "list", root, "-e", "nope")
    assert rc == 1 and out == ""
    one_error_line(err, "no experiment 'nope'")
    rc, _, err = cli(capsys, "list", tmp_path / "missing", "-e", "resnet", "--json")
    assert rc == 1
    one_error_line(err, "no such directory")


def test_a_garbled_run_yaml_does_not_hide_the_other_runs(capsys, root, runs):
    (runs["b"] / "run.yaml").write_text("name: b\nstatus: [finished\n  : : {{\n")
    rc, out, err = cli(capsys, "list", root, "-e", "resnet")
    assert rc == 0
    rows = out.splitlines()[1:]
    assert sorted(r.split()[0] for r in rows) == ["a", "b", "c"]
    broken = next(r for r in rows if r.split()[0] == "b")
    assert "crashed" in broken and "unreadable run.yaml" in broken
    assert "warning" in err and str(runs["b"] / "run.yaml") in err and "Traceback" not in err
    rc, out, _ = cli(capsys, "list", root)
    assert rc == 0 and "resnet" in out and "3" in out.splitlines()[2]
    (runs["b"] / "run.yaml").write_text("")
    rc, out, err = cli(capsys, "list", root, "-e", "resnet")
    assert rc == 0 and len(out.splitlines()) == 4 and "empty run.yaml" in err


def test_list_colours_status_only_on_a_terminal(capsys, root, runs, monkeypatch):
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    rc, out, _ = cli(capsys, "list", root, "-e", "resnet")
    assert "\x1b[32mfinished\x1b[0m" in out and "\x1b[31mfailed\x1b[0m" in out
    # colour does not break the alignment: columns line up once escapes are removed
    plain = ANSI.sub("", out).splitlines()
    starts = [re.search(r"\d{4}-\d\d-\d\d", line).start() for line in plain[1:]]
    assert len(set(starts)) == 1 and plain[0].index("STARTED") == starts[0]
    rc, out, _ = cli(capsys, "list", root)
    assert "\x1b[31m1 failed\x1b[0m" in out
    monkeypatch.setenv("NO_COLOR", "1")
    rc, out, _ = cli(capsys, "list", root, "-e", "resnet")
    assert not ANSI.search(out)


def test_list_on_a_narrow_terminal_drops_columns_and_says_so(capsys, root, runs, monkeypatch):
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    monkeypatch.setenv("NO_COLOR", "1")
    monkeypatch.setenv("COLUMNS", "70")
    rc, out, _ = cli(capsys, "list", root, "-e", "resnet")
    lines = out.splitlines()
    assert rc == 0 and all(len(line) <= 70 for line in lines[:-1])
    assert "not shown to fit the terminal" in lines[-1]
    monkeypatch.setenv("COLUMNS", "400")
    rc, out, _ = cli(capsys, "list", root, "-e", "resnet")
    assert "not shown" not in out and "opt.name" in out


def wide_runs(root):
    """Runs with many metrics and params and long values: wider than 80 columns."""
    for i in range(3):
        make_run(root, exp="a_rather_long_experiment_name_for_a_sweep", name=f"20261203_08181{i}",
                 config={"lr": 10.0 ** -i, "model": {"name": f"resnet{18 + i}_with_a_long_suffix"},
                         "batch_size": 32 * (i + 1), "notes": "x" * (30 + i)},
                 rows=[(s, {"train/loss": 1.0 / (s + 1), "train/lr": 0.1, "grad_norm": 2.0,
                            "train/tokens_per_sec": 41000.5 + i, "val/acc": 0.5 + i / 10,
                            "val/loss": 999.999 - i}) for s in range(3)],
                 status=("finished", "failed", "interrupted")[i])


def test_80_column_terminals(capsys, root, monkeypatch):
    """list (87 wide), list -e (no metric at all) and compare (one long value set a column's
    width) wrapped at 80 columns: cells are cut with an ellipsis, the useful columns stay."""
    wide_runs(root)
    make_run(root, exp="tiny")
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    monkeypatch.setenv("NO_COLOR", "1")
    monkeypatch.setenv("COLUMNS", "80")
    rc, out, _ = cli(capsys, "list", root)
    assert rc == 0 and all(len(line) <= 80 for line in out.splitlines()), out
    assert "1 finished, 1 failed, 1 interrupted" in out or "\u2026" in out
    exp = "a_rather_long_experiment_name_for_a_sweep"
    rc, out, _ = cli(capsys, "list", root, "-e", exp)
    lines = out.splitlines()
    assert rc == 0 and all(len(line) <= 80 for line in lines), out
    header = lines[0].split()
    assert "val/acc" in header and "val/loss" in header  # metrics with a goal survive
    assert "train/lr" not in header and "not shown to fit the terminal" in lines[-1]
    rc, out, _ = cli(capsys, "compare", f"{exp}/-1", f"{exp}/-2", f"{exp}/-3", "--dir", root)
    assert rc == 0 and all(len(line) <= 80 for line in out.splitlines()), out
    assert "\u2026" in out and "0.01" in out
    # not a terminal: whole lines, nothing cut
    monkeypatch.setattr(sys.stdout, "isatty", lambda: False)
    rc, out, _ = cli(capsys, "compare", f"{exp}/-1", f"{exp}/-2", "--dir", root)
    assert "\u2026" not in out and "x" * 31 in out


def test_list_shows_999_999_as_999_999(capsys, root):
    """The 5-digit format rounded 999.999 to '1000', which reads as exactly 1000."""
    make_run(root, exp="n", name="r", rows=[(0, {"val/x": 999.999, "val/y": 1000.0,
                                                 "val/z": 0.123456789})])
    rc, out, _ = cli(capsys, "list", root, "-e", "n")
    header, row = out.splitlines()
    values = dict(zip(header.split()[-3:], row.split()[-3:]))
    assert values == {"val/x": "999.999", "val/y": "1000", "val/z": "0.12346"}
    assert expman._fmt_num(999.9999996) == "999.9999996" and expman._fmt_num(2.5) == "2.5"


def test_list_does_not_import_pyarrow(root, runs):
    code = ("import sys, expman; rc = expman.main(['list', sys.argv[1], '-e', 'resnet']); "
            "rc2 = expman.main(['list', sys.argv[1]]); "
            "print('PYARROW', 'pyarrow' in sys.modules, rc, rc2)")
    proc = subprocess.run([sys.executable, "-c", code, str(root)], env=child_env(),
                          capture_output=True, text=True, timeout=60)
    assert proc.stdout.splitlines()[-1] == "PYARROW False 0 0", proc.stderr


# -- inspect ---------------------------------------------------------------------------------

def test_inspect_shows_everything(capsys, runs):
    rc, out, err = cli(capsys, "inspect", runs["a"])
    assert rc == 0 and err == ""
    assert re.search(r"^run\s+resnet/a$", out, re.M)
    assert re.search(r"^status\s+finished$", out, re.M)
    assert re.search(r"^rows\s+4 \(last step 3\)$", out, re.M)
    assert re.search(r"^tags\s+baseline$", out, re.M)
    assert re.search(r"^description\s+first try$", out, re.M)
    assert "\nparams\n  lr: 0.1\n  opt:\n    name: sgd\n    momentum: 0.9\n  seed: 1\n" in out
    loss = next(l for l in out.splitlines() if l.strip().startswith("train/loss"))
    assert loss.split() == ["train/loss", "0.75", "0.5", "2", "4", "3"]
    acc = next(l for l in out.splitlines() if l.strip().startswith("val/acc"))
    assert acc.split() == ["val/acc", "0.8", "0.5", "0.8", "4", "3"]
    assert re.search(r"^\s+best_acc\s+0\.8$", out, re.M)  # a log_scalar value
    assert "artifacts (2 files, 2.0 KB)" in out
    assert re.search(r"^\s+model\.bin\s+2\.0 KB\s+binary$", out, re.M)
    assert re.search(r"^\s+plots/curve\.png\s+14 B\s+image$", out, re.M)
    log = out.split("(last 5 lines of run.log)\n", 1)[1].splitlines()
    assert [l.split(None, 2)[1:] for l in log] == [
        ["INFO", "epoch 1"], ["INFO", "epoch 2"], ["INFO", "done"],
        ["INFO", "saved artifact model.bin"], ["INFO", "saved artifact plots/curve.png"]]


def test_inspect_json(capsys, runs):
    rc, out, _ = cli(capsys, "inspect", runs["b"], "--json", "--log-lines", "5")
    data = json.loads(out)
    assert data["name"] == "b" and data["status"] == "failed" and data["experiment"] == "resnet"
    assert data["config"] == {"lr": 0.01, "opt": {"name": "adam", "momentum": 0.9}, "seed": 1}
    loss = data["metrics"]["train/loss"]
    assert loss == {"last": "Infinity", "min": 3.0, "max": 3.0, "count": 3, "last_step": 2}
    assert data["metrics"]["val/acc"]["count"] == 1
    assert data["artifacts"] == [] and data["scalars"] == {}
    assert isinstance(data["log_tail"], list)


def test_inspect_log_lines(capsys, root):
    run = make_run(root, name="chatty", log=[f"line {i}" for i in range(50)])
    rc, out, _ = cli(capsys, "inspect", run, "--log-lines", "2")
    tail = out.split("(last 2 lines of run.log)\n", 1)[1].splitlines()
    assert [l.split()[-2:] for l in tail] == [["line", "48"], ["line", "49"]]
    rc, out, _ = cli(capsys, "inspect", run)  # default: 20 lines
    assert "last 20 lines" in out and "line 30" in out and "line 29" not in out
    rc, out, _ = cli(capsys, "inspect", run, "--log-lines", "0")
    assert rc == 0 and "run.log" not in out and "line 49" not in out
    rc, out, _ = cli(capsys, "inspect", run, "--log-lines", "0", "--json")
    assert json.loads(out)["log_tail"] == []


def test_inspect_log_tail_reads_only_the_end_of_a_big_log(capsys, root):
    run = make_run(root, name="big", log=["x" * 500 + f" {i}" for i in range(2000)])
    rc, out, _ = cli(capsys, "inspect", run, "--log-lines", "30", "--json")
    tail = json.loads(out)["log_tail"]
    assert [l.split()[-1] for l in tail] == [str(i) for i in range(1970, 2000)]


def test_inspect_empty_run(capsys, root):
    run = make_run(root, name="empty")
    rc, out, _ = cli(capsys, "inspect", run)
    assert rc == 0
    for line in ("params: none", "metrics: none", "artifacts: none", "log: empty"):
        assert line in out.splitlines()


def test_inspect_errors(capsys, root, runs, tmp_path):
    rc, out, err = cli(capsys, "inspect", tmp_path / "nope")
    assert rc == 1 and out == ""
    one_error_line(err, "no such directory", tmp_path / "nope")
    rc, out, err = cli(capsys, "inspect", root / "resnet")
    assert rc == 1 and out == ""
    one_error_line(err, "not a run directory", root / "resnet")
    (runs["a"] / "run.yaml").write_text("status: finished\n  bad: [indent\n")
    rc, out, err = cli(capsys, "inspect", runs["a"])
    assert rc == 1 and out == ""
    one_error_line(err, str(runs["a"] / "run.yaml"), "invalid YAML")
    (runs["c"] / "config.yaml").write_text("{{{{ not yaml")
    rc, out, err = cli(capsys, "inspect", runs["c"], "--json")
    assert rc == 1 and out == ""
    one_error_line(err, "config.yaml")


# -- naming runs: EXP/RUN, EXP/latest, EXP/-2, paths, everywhere ----------------------------

def test_every_command_takes_exp_run_relative_to_the_root(capsys, root, runs, monkeypatch):
    """`expman inspect logreg/20261203_081811` from the folder holding experiments/ said
    "no such directory": names are looked up under --dir, $EXPMAN_DIR or ./experiments."""
    monkeypatch.delenv("EXPMAN_DIR", raising=False)
    monkeypatch.chdir(root.parent)  # root is <tmp>/experiments
    rc, out, err = cli(capsys, "inspect", "resnet/a", "--json")
    assert rc == 0 and json.loads(out)["path"] == str(runs["a"]), err
    elsewhere = root.parent / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    rc, out, _ = cli(capsys, "inspect", "resnet/b", "--dir", root, "--json")
    assert rc == 0 and json.loads(out)["name"] == "b"
    monkeypatch.setenv("EXPMAN_DIR", str(root))
    rc, out, _ = cli(capsys, "compare", "resnet/a", "resnet/c", "--json")
    assert rc == 0 and [r["name"] for r in json.loads(out)["runs"]] == ["a", "c"]
    rc, out, _ = cli(capsys, "export", "mnist/only", "-f", "json")
    assert rc == 0 and json.loads(out)[0]["loss"] == 1.0
    rc, out, _ = cli(capsys, "tail", "resnet/c")
    assert rc == 0 and "step 190" in out
    rc, out, _ = cli(capsys, "reap", "resnet/a", "--json")
    assert rc == 0 and [r["name"] for r in json.loads(out)["runs"]] == ["a"]
    rc, out, _ = cli(capsys, "reap", "resnet", "--json")
    assert rc == 0 and sorted(r["name"] for r in json.loads(out)["runs"]) == ["a", "b", "c"]


def test_latest_and_negative_indexes_name_runs_by_start_time(capsys, root, runs):
    def name(spec, *extra):
        rc, out, err = cli(capsys, "inspect", spec, "--dir", root, "--json", *extra)
        assert rc == 0, err
        return json.loads(out)["name"]
    assert name("resnet/latest") == name("resnet/-1") == "c"  # a, b, c were started in turn
    assert name("resnet/-2") == "b" and name("resnet/-3") == "a"
    assert name(str(root / "resnet" / "latest")) == "c"      # after a directory too
    rc, out, _ = cli(capsys, "compare", "resnet/-1", "resnet/-2", "--dir", root, "--json")
    assert [r["name"] for r in json.loads(out)["runs"]] == ["c", "b"]
    rc, out, err = cli(capsys, "inspect", "resnet/-4", "--dir", root)
    assert rc == 1 and out == ""
    one_error_line(err, "has 3 runs", "no run -4")


def test_unknown_run_names_say_what_was_looked_up(capsys, root, runs, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rc, out, err = cli(capsys, "inspect", "resnet/zzz", "--dir", root)
    assert rc == 1 and out == ""
    one_error_line(err, "no run 'zzz' in experiment 'resnet'", str(root), "no such directory")
    rc, out, err = cli(capsys, "tail", "nope/latest", "--dir", root)
    assert rc == 1
    one_error_line(err, "no experiment 'nope'", str(root))
    rc, out, err = cli(capsys, "inspect", "resnet", "--dir", root)  # one word: a path only
    assert rc == 1
    one_error_line(err, "no such directory", tmp_path / "resnet")


def test_experiments_by_name_or_by_directory(capsys, root, many, monkeypatch):
    """clean took a name and refused ./experiments/resnet; list -e took only a name."""
    monkeypatch.chdir(root.parent)
    by_name = cli(capsys, "clean", "resnet", "--keep", "3", "--json")[1]
    rc, by_path, err = cli(capsys, "clean", "./experiments/resnet", "--keep", "3", "--json")
    assert rc == 0 and json.loads(by_path) == json.loads(by_name), err
    assert [e["name"] for e in json.loads(by_path)["delete"]] == ["r3", "r2", "r1", "r0"]
    rc, out, _ = cli(capsys, "clean", root / "resnet", "--keep", "6", "--force")
    assert rc == 0 and not many[0].exists() and many[1].exists()
    rc, out, _ = cli(capsys, "list", "-e", root / "resnet", "--json")
    assert rc == 0 and len(json.loads(out)["runs"]) == 6
    rc, out, err = cli(capsys, "clean", many[3], "--keep", "1")
    assert rc == 1
    one_error_line(err, "is a run directory, not an experiment")


def crashed_copy_with_truncated_segment(root):
    """A run killed mid-write: two segments, the newer one truncated, the process gone."""
    live = open_run(root, name="live", config={"lr": 0.1})
    try:
        for i in range(5):
            live.log_metrics({"loss": 1.0 / (i + 1)}, step=i)
        assert live.flush()
        for i in range(5, 8):
            live.log_metrics({"loss": 1.0 / (i + 1)}, step=i)
        live.info("about to die")
        assert live.flush()
        copy = root / "resnet" / "killed"
        shutil.copytree(live.run_dir, copy)
    finally:
        live.close()
    edit_meta(copy, name="killed", pid=dead_pid())
    segs = sorted((copy / "metrics").iterdir())
    assert len(segs) == 2, segs
    data = segs[1].read_bytes()
    segs[1].write_bytes(data[: len(data) // 2])
    return copy


def test_inspect_crashed_run_with_truncated_segment(capsys, root):
    run = crashed_copy_with_truncated_segment(root)
    rc, out, err = cli(capsys, "inspect", run)
    assert rc == 0
    assert re.search(r"^status\s+crashed \(run\.yaml says running: the process is gone\)$",
                     out, re.M)
    loss = next(l for l in out.splitlines() if l.strip().startswith("loss"))
    assert loss.split() == ["loss", "0.2", "0.2", "1", "5", "4"]  # the 5 readable rows
    assert "expman: warning:" in err and "seg-000000000005-000000000008" in err
    assert "Traceback" not in err


# -- compare ---------------------------------------------------------------------------------

def test_compare_params_that_differ_and_last_best(capsys, runs):
    rc, out, err = cli(capsys, "compare", runs["a"], runs["b"], runs["c"])
    assert rc == 0 and err == ""
    lines = out.splitlines()
    assert lines[0].split() == ["a", "b", "c"]
    assert lines[1].split() == ["status", "finished", "failed", "finished"]
    params = out.split("params that differ", 1)[1].split("\n\n", 1)[0]
    assert "(2; 2 the same)" in params
    rows = {l.split()[0]: l.split()[1:] for l in params.splitlines()[2:]}
    assert rows == {"lr": ["0.1", "0.01", "0.001"], "opt.name": ["sgd", "adam", "adam"]}
    metrics = out.split("metrics (", 1)[1].splitlines()[2:]
    loss_last, loss_best, loss_max = (m.split() for m in metrics[0:3])
    assert loss_last == ["train/loss", "last", "0.75", "inf", "0.05"]
    assert loss_best[:2] == ["best", "(min)"] and loss_best[2:] == ["0.5", "3", "0.05", "*"]
    assert loss_max == ["max", "2", "3", "1"]       # finite values: b's inf is its last only
    acc_last, acc_min, acc_best = (m.split() for m in metrics[3:6])
    assert acc_last == ["val/acc", "last", "0.8", "0.25", "-"]
    assert acc_min == ["min", "0.5", "0.25", "-"]
    assert acc_best == ["best", "(max)", "0.8", "*", "0.25", "-"]


def test_compare_min_max_and_best_in_a_real_subprocess(runs):
    """`expman compare` run as a user runs it: each metric's last, min and max per run, the
    goal's extreme labelled best with the best run starred; --json holds the same numbers."""
    cmd = [sys.executable, EXPMAN_PY, "compare", str(runs["a"]), str(runs["b"]), str(runs["c"])]
    proc = subprocess.run(cmd, env=child_env(), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    metrics = proc.stdout.split("metrics (", 1)[1].splitlines()[2:]
    table = [m.split() for m in metrics[:6]]
    assert table == [["train/loss", "last", "0.75", "inf", "0.05"],
                     ["best", "(min)", "0.5", "3", "0.05", "*"],
                     ["max", "2", "3", "1"],
                     ["val/acc", "last", "0.8", "0.25", "-"],
                     ["min", "0.5", "0.25", "-"],
                     ["best", "(max)", "0.8", "*", "0.25", "-"]], proc.stdout
    proc = subprocess.run(cmd + ["--json", "--maximize", "train/loss"], env=child_env(),
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    loss = json.loads(proc.stdout)["metrics"]["train/loss"]
    assert [(c["min"], c["max"], c["best"]) for c in loss["runs"]] == \
        [(0.5, 2.0, 2.0), (3.0, 3.0, 3.0), (0.05, 1.0, 1.0)]
    assert loss["best_is"] == "max" and loss["best_run"] == "b"


def test_compare_json(capsys, runs):
    rc, out, _ = cli(capsys, "compare", runs["a"], runs["b"], "--json")
    data = json.loads(out)
    assert [r["name"] for r in data["runs"]] == ["a", "b"]
    assert [r["status"] for r in data["runs"]] == ["finished", "failed"]
    assert data["params"] == {"lr": [0.1, 0.01], "opt.name": ["sgd", "adam"]}
    assert data["same_params"] == {"opt.momentum": 0.9, "seed": 1}
    loss = data["metrics"]["train/loss"]
    assert loss["best_is"] == "min"
    assert loss["runs"][0] == {"last": 0.75, "min": 0.5, "max": 2.0, "best": 0.5, "count": 4,
                               "last_step": 3}
    assert loss["runs"][1]["last"] == "Infinity" and loss["runs"][1]["best"] == 3.0
    assert data["metrics"]["val/acc"]["best_is"] == "max"
    assert data["metrics"]["val/acc"]["runs"][1]["best"] == 0.25


@pytest.mark.parametrize("key,goal", [("train/loss", "min"), ("val_error", "min"),
                                      ("top1_err", "min"), ("Perplexity", "min"),
                                      ("val/acc", "max"), ("reward", "max"),
                                      ("val/f1", "max"), ("auc", "max"), ("bleu4", "max"),
                                      ("train/lr", None), ("grad_norm", None), ("m", None),
                                      ("train/tokens_per_sec", None), ("acc_loss", None)])
def test_best_direction(key, goal):
    """One rule, shared with the dashboard: only obvious names get a goal; the rest none."""
    assert expman._metric_goal(key) == goal
    assert expman._metric_goal(key, maximize=[key]) == "max"
    assert expman._metric_goal(key, minimize=[key]) == "min"


def test_compare_has_no_best_for_a_metric_without_a_goal(capsys, root):
    """train/lr used to be called best where highest; now no best unless the user says."""
    one = make_run(root, name="p", rows=[(0, {"train/lr": 0.1, "val/acc": 0.5})])
    two = make_run(root, name="q", rows=[(0, {"train/lr": 0.3, "val/acc": 0.7})])
    rc, out, _ = cli(capsys, "compare", one, two)
    metrics = out.split("metrics (", 1)[1].splitlines()[2:]
    assert [l.split()[:2] for l in metrics[:6]] == [["train/lr", "last"], ["min", "0.1"],
                                                    ["max", "0.1"], ["val/acc", "last"],
                                                    ["min", "0.5"], ["best", "(max)"]]
    data = json.loads(cli(capsys, "compare", one, two, "--json")[1])["metrics"]
    assert data["train/lr"]["best_is"] is None and data["train/lr"]["best_run"] is None
    assert data["train/lr"]["runs"][1]["best"] is None
    assert data["val/acc"]["best_run"] == "q"
    rc, out, _ = cli(capsys, "compare", one, two, "--minimize", "train/lr")
    assert rc == 0 and re.search(r"best \(min\)\s+0\.1 \*\s+0\.3", out)
    data = json.loads(cli(capsys, "compare", one, two, "--maximize", "train/lr",
                          "--minimize", "val/acc", "--json")[1])["metrics"]
    assert data["train/lr"]["best_run"] == "q" and data["val/acc"]["best_run"] == "p"
    rc, _, err = cli(capsys, "compare", one, two, "--minimize", "x", "--maximize", "x")
    assert rc == 2
    one_error_line(err, "'x'")


def test_compare_runs_of_different_experiments_with_the_same_name(capsys, root):
    one = make_run(root, exp="x", name="r1", config={"k": 1}, rows=[(0, {"m": 1.0})])
    two = make_run(root, exp="y", name="r1", config={"k": 2}, rows=[(0, {"m": 2.0})])
    rc, out, _ = cli(capsys, "compare", one, two, "--maximize", "m")
    assert rc == 0 and out.splitlines()[0].split() == ["x/r1", "y/r1"]
    assert "m" in out and re.search(r"best \(max\)\s+1\s+2 \*", out)


def test_compare_identical_params_and_missing_params(capsys, root):
    one = make_run(root, name="p", config={"k": 1}, rows=[(0, {"m": 1.0})])
    two = make_run(root, name="q", config={"k": 1})
    rc, out, _ = cli(capsys, "compare", one, two)
    assert rc == 0 and "params: all 1 the same" in out
    three = make_run(root, name="s", config={"k": 1, "extra": "yes"})
    rc, out, _ = cli(capsys, "compare", one, three, "--json")
    assert json.loads(out)["params"] == {"extra": [None, "yes"]}


def test_compare_errors(capsys, runs, tmp_path):
    rc, _, err = cli(capsys, "compare", runs["a"])
    assert rc == 2
    one_error_line(err, "at least two")
    rc, out, err = cli(capsys, "compare", runs["a"], tmp_path)
    assert rc == 1 and out == ""
    one_error_line(err, "not a run directory", tmp_path)


# -- tail ------------------------------------------------------------------------------------

def test_tail_a_finished_run_prints_the_end_and_stops(capsys, root):
    run = make_run(root, name="done", rows=[(i, {"loss": i / 2, "acc": 0.5} if i % 2 else
                                            {"loss": i / 2}) for i in range(25)],
                   log=[f"note {i}" for i in range(15)])
    rc, out, err = cli(capsys, "tail", run, "--interval", "0.01")
    assert rc == 0 and err == ""
    lines = out.splitlines()
    assert lines[0].startswith("-- resnet/done (finished)")
    rows = [l for l in lines if l.startswith("step ")]
    assert rows[0] == "step 15  loss=7.5 acc=0.5" and rows[1] == "step 16  loss=8"
    assert [int(r.split()[1]) for r in rows] == list(range(15, 25))
    notes = [l for l in lines if "INFO" in l]
    assert [n.split()[-1] for n in notes] == [str(i) for i in range(5, 15)]
    assert lines[-1] == "-- resnet/done finished"


def test_tail_follows_a_live_run_in_process_until_it_closes(capsys, root):
    run = open_run(root, name="inproc")
    result = {}
    try:
        run.log_metrics({"loss": 1.0}, step=0)
        assert run.flush()
        thread = threading.Thread(target=lambda: result.setdefault(
            "rc", expman.main(["tail", str(run.run_dir), "--interval", "0.02"])))
        thread.start()
        seen = []
        wait_for(lambda: seen.append(capsys.readouterr().out) or "step 0" in "".join(seen))
        for step in range(1, 30):
            run.log_metrics({"loss": 1.0 / (step + 1)}, step=step)
        run.info("half way")
        assert run.flush()
    finally:
        run.close()
    thread.join(30)
    assert not thread.is_alive() and result["rc"] == 0
    out = "".join(seen) + capsys.readouterr().out
    steps = [int(l.split()[1]) for l in out.splitlines() if l.startswith("step ")]
    assert steps == list(range(30))
    assert "INFO  half way" in out and out.splitlines()[-1] == "-- resnet/inproc finished"


def test_tail_a_crashed_run_stops_at_once(capsys, root, runs):
    edit_meta(runs["c"], status="running", pid=dead_pid(), finished_at=None)
    rc, out, _ = cli(capsys, "tail", runs["c"])
    assert rc == 0 and out.splitlines()[-1] == "-- resnet/c crashed"


def test_tail_errors(capsys, root, tmp_path):
    rc, out, err = cli(capsys, "tail", tmp_path / "nope")
    assert rc == 1 and out == ""
    one_error_line(err, "no such directory")
    rc, _, err = cli(capsys, "tail", root, "--interval", "abc")
    assert rc == 2
    one_error_line(err, "--interval")


WRITER = r"""
import os, sys, time
import expman
root, go = sys.argv[1], sys.argv[2]
exp = expman.Experiment("live", base_dir=root, run_name="run1", flush_interval_ms=50,
                        capture_git=False)
exp.log_metrics({"train/loss": 1.0}, step=0)
exp.info("started")
exp.flush()
print(exp.run_dir, flush=True)
deadline = time.monotonic() + 60
while not os.path.exists(go) and time.monotonic() < deadline:
    time.sleep(0.01)
for step in range(1, 30):
    row = {"train/loss": round(1.0 / (step + 1), 4)}
    if step % 10 == 0:
        row["val/acc"] = step / 100
        exp.info(f"epoch {step // 10} done")
    exp.log_metrics(row, step=step)
    if step % 3 == 0:
        exp.flush()
exp.close()
"""


class Proc:
    """A child process whose stdout lines are collected by a thread (poll them, no sleeps)."""

    def __init__(self, args, cwd, env=None):
        self.proc = subprocess.Popen(args, cwd=cwd, env=env or child_env(), text=True,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.lines, self.err = [], []
        self.threads = [threading.Thread(target=self._pump, args=(s, l), daemon=True)
                        for s, l in ((self.proc.stdout, self.lines),
                                     (self.proc.stderr, self.err))]
        for t in self.threads:
            t.start()

    @staticmethod
    def _pump(stream, into):
        for line in stream:
            into.append(line.rstrip("\n"))

    def wait_for_line(self, predicate, timeout=30):
        def found():
            hit = next((l for l in self.lines if predicate(l)), None)
            if hit is None and self.proc.poll() is not None:
                raise AssertionError(f"exited {self.proc.returncode}: {self.lines} {self.err}")
            return hit
        return wait_for(found, timeout, message=f"no such line in {self.lines} {self.err}")

    def wait(self, timeout=60):
        rc = self.proc.wait(timeout)
        for t in self.threads:
            t.join(timeout)
        self.proc.stdout.close()
        self.proc.stderr.close()
        return rc

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.wait()


def test_tail_follows_a_live_subprocess_until_it_closes(root, tmp_path):
    go = tmp_path / "go"
    writer = Proc([sys.executable, "-c", WRITER, str(root), str(go)], cwd=tmp_path)
    tail = None
    try:
        run_dir = writer.wait_for_line(lambda l: l.endswith("run1"))
        tail = Proc([sys.executable, EXPMAN_PY, "tail", run_dir, "--interval", "0.05"],
                    cwd=tmp_path)
        tail.wait_for_line(lambda l: l.startswith("step 0"))
        go.write_text("go")
        assert tail.wait(60) == 0, tail.err  # it stops by itself when the run closes
        assert writer.wait(60) == 0, writer.err
    finally:
        for proc in (tail, writer):
            if proc is not None:
                proc.stop()
    lines = tail.lines
    assert lines[0] == "-- live/run1 (running); following metrics and run.log, Ctrl-C to stop"
    rows = [l for l in lines if l.startswith("step ")]
    assert [int(r.split()[1]) for r in rows] == list(range(30))  # each row once, in order
    assert rows[0] == "step 0  train/loss=1"
    assert rows[10] == "step 10  train/loss=0.0909 val/acc=0.1"
    logs = [l for l in lines if " INFO " in l]
    assert [l.split("INFO", 1)[1].strip() for l in logs] == ["started", "epoch 1 done",
                                                              "epoch 2 done"]
    assert lines[-1] == "-- live/run1 finished"
    assert tail.err == []


def test_tail_ctrl_c_exits_0(root, tmp_path):
    run = open_run(root, name="forever")
    try:
        run.log_metrics({"loss": 0.5}, step=0)
        assert run.flush()
        tail = Proc([sys.executable, EXPMAN_PY, "tail", str(run.run_dir), "--interval", "0.05"],
                    cwd=tmp_path)
        try:
            tail.wait_for_line(lambda l: l == "step 0  loss=0.5")
            assert tail.proc.poll() is None  # the run is alive: still following
            tail.proc.send_signal(signal.SIGINT)
            assert tail.wait(30) == 0
        finally:
            tail.stop()
    finally:
        run.close()
    assert not any("Traceback" in l for l in tail.err)


# -- export ----------------------------------------------------------------------------------

def test_export_csv_to_stdout(capsys, runs):
    rc, out, err = cli(capsys, "export", runs["b"])  # csv is the default
    assert rc == 0 and err == ""
    rows = list(csv.reader(io.StringIO(out)))
    assert rows[0] == ["step", "timestamp", "train/loss", "val/acc"]
    assert [r[0] for r in rows[1:]] == ["0", "1", "2"]
    assert [r[2] for r in rows[1:]] == ["3", "nan", "inf"]
    assert [r[3] for r in rows[1:]] == ["", "", "0.25"]
    assert all(re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{6}Z$", r[1]) for r in rows[1:])


def test_export_json_records(capsys, runs):
    rc, out, _ = cli(capsys, "export", runs["b"], "--format", "json")
    assert rc == 0
    records = json.loads(out)  # strict JSON
    assert [r["step"] for r in records] == [0, 1, 2]
    assert [r["train/loss"] for r in records] == [3.0, "NaN", "Infinity"]
    assert [r["val/acc"] for r in records] == [None, None, 0.25]
    table = expman.load_metrics(runs["b"])
    for record, ts in zip(records, table.column("timestamp").to_pylist()):
        assert record["timestamp"].endswith("+00:00")
        assert expman._dt.datetime.fromisoformat(record["timestamp"]) == ts
    assert math.isnan(float(records[1]["train/loss"]))  # Python reads the strings back


def test_export_parquet_to_file_and_to_a_pipe(capsysbinary, runs, tmp_path):
    target = tmp_path / "out" / "a.parquet"
    target.parent.mkdir()
    rc = expman.main(["export", str(runs["a"]), "--format", "parquet", "-o", str(target)])
    out, err = capsysbinary.readouterr()
    assert rc == 0 and out == b"" and b"wrote 4 rows (2 metrics)" in err
    assert pq.read_table(target).equals(expman.load_metrics(runs["a"]))
    assert [p.name for p in target.parent.iterdir()] == ["a.parquet"]  # no temp file left
    rc = expman.main(["export", str(runs["a"]), "--format", "parquet"])
    out, _ = capsysbinary.readouterr()
    assert rc == 0 and out.startswith(b"PAR1")
    assert pq.read_table(io.BytesIO(out)).equals(expman.load_metrics(runs["a"]))


def test_export_parquet_refuses_a_terminal(capsys, runs, monkeypatch):
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    rc, out, err = cli(capsys, "export", runs["a"], "--format", "parquet")
    assert rc == 2 and out == ""
    one_error_line(err, "-o FILE")


def test_export_csv_and_json_to_files(capsys, runs, tmp_path):
    rc, out, err = cli(capsys, "export", runs["c"], "-o", tmp_path / "c.csv")
    assert rc == 0 and out == "" and "wrote 20 rows" in err
    with (tmp_path / "c.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [int(r["step"]) for r in rows] == [i * 10 for i in range(20)]
    rc, out, _ = cli(capsys, "export", runs["c"], "--format", "json", "--output",
                     tmp_path / "c.json")
    assert rc == 0 and len(json.loads((tmp_path / "c.json").read_text())) == 20
    rc, out, _ = cli(capsys, "export", runs["c"], "-o", "-")
    assert rc == 0 and out.startswith('"step","timestamp","train/loss"')


def test_export_a_run_without_metrics(capsys, root, tmp_path):
    # issue 15 item 6: a clear error naming the run, exit 1 (it was a bare header or [])
    run = make_run(root, name="nothing")
    for fmt in ("csv", "json", "parquet"):
        rc, out, err = cli(capsys, "export", run, "--format", fmt, "-o", tmp_path / f"x.{fmt}")
        assert rc == 1 and out == ""
        one_error_line(err, "run nothing")
        assert "no metric rows" in err
        assert not (tmp_path / f"x.{fmt}").exists()
    rc, out, err = cli(capsys, "export", run, "--format", "json")
    assert rc == 1 and out == "" and "run nothing" in err


def test_export_a_live_run_includes_every_flushed_row(capsys, root):
    run = open_run(root, name="live")
    try:
        for i in range(7):
            run.log_metrics({"loss": float(i)}, step=i)
        assert run.flush()
        rc, out, _ = cli(capsys, "export", run.run_dir, "--format", "json")
        assert rc == 0 and [r["loss"] for r in json.loads(out)] == [float(i) for i in range(7)]
        run.log_metrics({"loss": 7.0, "acc": 1.0}, step=7)
        assert run.flush()
        rc, out, _ = cli(capsys, "export", run.run_dir)
        rows = list(csv.DictReader(io.StringIO(out)))
        assert len(rows) == 8 and rows[-1]["acc"] == "1" and rows[0]["acc"] == ""
    finally:
        run.close()


def test_export_truncated_segment_exports_the_rest_and_fails(capsys, root, tmp_path):
    run = crashed_copy_with_truncated_segment(root)
    rc, out, err = cli(capsys, "export", run, "--format", "json")
    assert rc == 1
    assert [r["step"] for r in json.loads(out)] == [0, 1, 2, 3, 4]
    lines = err.splitlines()
    assert lines[0].startswith("expman: warning:") and "seg-000000000005" in lines[0]
    assert lines[-1].startswith("expman: error:") and "5 readable rows" in lines[-1]
    assert "Traceback" not in err


def test_export_errors(capsys, root, runs, tmp_path):
    rc, out, err = cli(capsys, "export", tmp_path / "nope")
    assert rc == 1 and out == ""
    one_error_line(err, "no such directory")
    rc, out, err = cli(capsys, "export", root / "resnet", "--format", "json")
    assert rc == 1 and out == ""
    one_error_line(err, "not a run directory")
    rc, out, err = cli(capsys, "export", runs["a"], "-o", tmp_path)
    assert rc == 1
    one_error_line(err, "is a directory")
    rc, out, err = cli(capsys, "export", runs["a"], "-o", tmp_path / "no" / "such" / "x.csv")
    assert rc == 1
    one_error_line(err, "no such file or directory")
    seg = runs["a"] / "metrics.parquet"
    seg.write_bytes(b"PAR1 garbage")
    rc, out, err = cli(capsys, "export", runs["a"])
    assert rc == 1 and "metrics.parquet" in err and "Traceback" not in err


# -- clean -----------------------------------------------------------------------------------

@pytest.fixture
def many(root):
    """resnet with 7 closed runs r0 (oldest) .. r6 (newest) of different sizes."""
    dirs = [make_run(root, name=f"r{i}", rows=[(s, {"loss": 1.0}) for s in range(i * 50 + 1)],
                     status="failed" if i == 1 else "finished") for i in range(7)]
    return dirs


def test_clean_dry_run_lists_exactly_what_would_go(capsys, root, many):
    rc, out, err = cli(capsys, "clean", "resnet", "--dir", root, "--keep", "3")
    assert rc == 0 and err == ""
    doomed = many[:4]
    listed = [l.split()[0] for l in out.splitlines() if l.startswith("  r")]
    assert listed == ["r3", "r2", "r1", "r0"]
    total = sum(dir_size(d) for d in doomed)
    assert f"would delete 4 runs, {expman._human_bytes(total)}:" in out
    assert "dry run: nothing deleted" in out
    assert all(d.exists() for d in many)
    row = next(l for l in out.splitlines() if l.startswith("  r1"))
    assert row.split()[1] == "failed" and row.split()[-2:] == \
        expman._human_bytes(dir_size(many[1])).split()


def test_clean_default_keep_is_5_and_json(capsys, root, many, monkeypatch):
    monkeypatch.setenv("EXPMAN_DIR", str(root))
    rc, out, _ = cli(capsys, "clean", "resnet", "--json")
    data = json.loads(out)
    assert data["dry_run"] is True and data["keep"] == 5
    assert [d["name"] for d in data["delete"]] == ["r1", "r0"]
    assert data["kept"] == ["r6", "r5", "r4", "r3", "r2"]
    assert data["freed_bytes"] == dir_size(many[0]) + dir_size(many[1])
    assert [d["size_bytes"] for d in data["delete"]] == [dir_size(many[1]), dir_size(many[0])]
    assert all(d.exists() for d in many)


def test_clean_force_deletes_and_never_touches_a_running_run(capsys, root, many):
    live = open_run(root, name="running")
    try:
        live.log_metrics({"loss": 1.0}, step=0)
        assert live.flush()
        edit_meta(many[5], status="running", pid=dead_pid(), finished_at=None)  # crashed
        rc, out, err = cli(capsys, "clean", "resnet", "--dir", root, "--keep", "2", "--force")
        assert rc == 0 and err == ""
        assert "1 running left alone" in out
        assert re.search(r"deleted 5 runs, .* freed:", out)
        listed = [l.split()[0] for l in out.splitlines() if l.startswith("  r")]
        assert listed == ["r4", "r3", "r2", "r1", "r0"]
        remaining = sorted(p.name for p in (root / "resnet").iterdir() if p.is_dir()
                           and not p.name.startswith("."))  # .catalog is a cache
        assert remaining == ["r5", "r6", "running"]  # the crashed r5 is one of the 2 kept
        rc, out, _ = cli(capsys, "clean", "resnet", "--dir", root, "--keep", "0", "--force",
                         "--json")
        data = json.loads(out)
        assert [(d["name"], d["status"]) for d in data["delete"]] == [("r6", "finished"),
                                                                      ("r5", "crashed")]
        assert all(d["deleted"] for d in data["delete"]) and data["running"] == ["running"]
        assert data["kept"] == [] and live.run_dir.exists()
    finally:
        live.close()
    assert (live.run_dir / "metrics.parquet").exists()


def test_clean_nothing_to_delete(capsys, root, many):
    rc, out, _ = cli(capsys, "clean", "resnet", "--dir", root, "--keep", "7", "--force")
    assert rc == 0 and "nothing to delete (keep 7)" in out
    assert all(d.exists() for d in many)


def test_clean_a_corrupt_run_only_when_it_has_been_quiet(capsys, root, many):
    (many[0] / "run.yaml").write_text(": : [")
    rc, out, err = cli(capsys, "clean", "resnet", "--dir", root, "--keep", "6", "--force")
    assert rc == 0 and many[0].exists()  # written just now: it might be live
    assert "skipping r0: run.yaml is unreadable" in out and "nothing to delete" in out
    old = time.time() - 3600
    for path in [many[0], *many[0].rglob("*")]:
        os.utime(path, (old, old))
    rc, out, err = cli(capsys, "clean", "resnet", "--dir", root, "--keep", "6", "--force")
    assert rc == 0 and not many[0].exists() and "deleted 1 run" in out


def test_clean_errors(capsys, root, many, tmp_path):
    rc, out, err = cli(capsys, "clean", "nope", "--dir", root)
    assert rc == 1 and out == ""
    one_error_line(err, "no experiment 'nope'")
    rc, out, err = cli(capsys, "clean", "resnet", "--dir", tmp_path / "missing")
    assert rc == 1
    one_error_line(err, "no such directory")


class TtyText(io.StringIO):
    """A text stream that says it is a terminal (what stderr is in an interactive shell)."""

    def isatty(self):
        return True


@pytest.mark.parametrize("command", ["clean", "reap"])
def test_long_operations_show_progress_on_a_terminal_only(capsys, root, many, monkeypatch,
                                                          command):
    monkeypatch.setattr(expman._Progress, "INTERVAL", 0.0)  # draw at every step
    monkeypatch.setenv("EXPMAN_DIR", str(root))
    # (flags, stderr a terminal, progress expected, runs the pass works through)
    passes = [(["--json"], True, False, 2), ([], False, False, 1), ([], True, True, 4)]
    for keep, (flags, tty, shown, count) in zip((5, 4, 0), passes):
        argv = ["clean", "resnet", "--keep", keep, "--force"] if command == "clean" else [
            "reap", "resnet"]
        count = count if command == "clean" else 7
        err = TtyText() if tty else io.StringIO()
        monkeypatch.setattr(sys, "stderr", err)
        assert expman.main([str(a) for a in argv + flags]) == 0
        capsys.readouterr()
        text = err.getvalue()
        if not shown:
            assert "\r" not in text and command + ":" not in text, (flags, tty, text)
            continue
        draws = [d for d in text.split("\r") if d.startswith(command + ": [")]
        assert draws and f"{count}/{count} runs" in draws[-1] and "runs/s" in draws[-1]
        assert "ETA" in draws[0] and text.endswith("\r\x1b[K")  # the line is cleared
    left = [p for p in many if p.exists()]
    assert left == ([] if command == "clean" else many)


def test_clean_reports_a_deletion_that_fails(capsys, root, many, monkeypatch):
    def refuse(self, path):
        raise PermissionError(13, "Permission denied", path)
    monkeypatch.setattr(type(expman._LOCAL_STORE), "delete_tree", refuse)
    rc, out, err = cli(capsys, "clean", "resnet", "--dir", root, "--keep", "6", "--force")
    assert rc == 1 and many[0].exists()
    one_error_line(err, "could not delete", "r0", "Permission denied")
    assert "NOT deleted: Permission denied" in out


# -- serve / demo ----------------------------------------------------------------------------

@pytest.fixture
def fake_serve(monkeypatch):
    calls = []

    def serve(root, host="127.0.0.1", port=8000, live=True, token=None):
        calls.append({"root": root, "host": host, "port": port, "live": live, "token": token})
        return 0
    monkeypatch.setattr(expman, "serve", serve, raising=False)
    return calls


def test_serve_passes_its_flags(capsys, root, fake_serve, monkeypatch):
    assert cli(capsys, "serve", root)[0] == 0
    assert fake_serve[-1] == {"root": str(root), "host": "127.0.0.1", "port": 8000,
                              "live": True, "token": None}
    assert cli(capsys, "serve", root, "--host", "0.0.0.0", "--port", "0", "--no-live",
               "--token", "s3cret")[0] == 0
    assert fake_serve[-1] == {"root": str(root), "host": "0.0.0.0", "port": 0, "live": False,
                              "token": "s3cret"}
    monkeypatch.setenv("EXPMAN_DIR", str(root))
    assert cli(capsys, "serve")[0] == 0 and fake_serve[-1]["root"] == str(root)


def test_serve_errors(capsys, root, tmp_path, fake_serve, monkeypatch):
    rc, _, err = cli(capsys, "serve", tmp_path / "missing")
    assert rc == 1 and fake_serve == []
    one_error_line(err, "no such directory")

    def busy(*args, **kwargs):
        raise OSError(98, "Address already in use")
    monkeypatch.setattr(expman, "serve", busy)
    rc, _, err = cli(capsys, "serve", root, "--port", "8123")
    assert rc == 1
    one_error_line(err, "cannot serve on 127.0.0.1:8123", "address already in use")
    monkeypatch.delattr(expman, "serve")
    rc, _, err = cli(capsys, "serve", root)
    assert rc == 1
    one_error_line(err, "server is not part of this build")


@pytest.mark.parametrize("absent,named", [(["bottle", "waitress"], "bottle and waitress"),
                                          (["waitress"], "waitress")])
def test_serve_names_every_missing_package_in_one_line(root, tmp_path, absent, named):
    """A vendored expman.py beside pyarrow and pyyaml only: one line, one pip command."""
    code = ("import sys\n" + "".join(f"sys.modules[{n!r}] = None\n" for n in absent) +
            "import expman\nsys.exit(expman.main(['serve', sys.argv[1], '--port', '0']))")
    proc = subprocess.run([sys.executable, "-c", code, str(root)], cwd=tmp_path,
                          env=child_env(), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1 and proc.stdout == ""
    one_error_line(proc.stderr, f"needs {named}", f"pip install {' '.join(absent)}")


def test_serve_for_real_on_a_free_port(root, runs, tmp_path):
    server = Proc([sys.executable, EXPMAN_PY, "serve", str(root), "--port", "0"], cwd=tmp_path)
    try:
        line = server.wait_for_line(lambda l: "http://127.0.0.1:" in l)
        url = re.search(r"http://127\.0\.0\.1:\d+", line).group(0)
        assert url.endswith(":8000") is False

        def health():
            try:
                with urllib.request.urlopen(url + "/api/health", timeout=5) as resp:
                    return json.loads(resp.read())
            except OSError:
                return None
        data = wait_for(health, 30)
        assert data["status"] == "ok" and data["root"] == str(root)
        server.proc.send_signal(signal.SIGINT)  # Ctrl-C is how a server is stopped: exit 0
        assert server.wait(30) == 0
    finally:
        server.stop()
    assert not any("Traceback" in l for l in server.err)


def test_demo_without_serving_writes_runs_you_can_list(capsys, tmp_path, fake_serve):
    target = tmp_path / "demo"
    rc, out, err = cli(capsys, "demo", target, "--no-serve")
    assert rc == 0 and f"demo runs written to {target}" in out and fake_serve == []
    rc, out, _ = cli(capsys, "list", target, "--json")
    exps = json.loads(out)["experiments"]
    assert exps and all(e["runs"] > 0 for e in exps)
    assert not [t for t in threading.enumerate() if t.name == "expman-demo" and t.is_alive()]
    # every run's duration agrees with its rows: the failed one said 0.0s for 299 steps
    for exp in exps:
        rc, out, _ = cli(capsys, "list", target, "-e", exp["name"], "--json")
        for run in json.loads(out)["runs"]:
            assert run["duration_secs"] >= 0.1 * run["rows"], run
    failed = expman.load_run(target / "resnet_cifar10" / "sgd_lr1.0")
    assert failed["status"] == "failed" and failed["last_step"] == 299


def test_demo_writes_then_serves(capsys, root, monkeypatch, fake_serve):
    order = []
    monkeypatch.setattr(expman, "_demo_data", lambda path: order.append(("data", path)),
                        raising=False)
    monkeypatch.setattr(expman, "serve", lambda *a, **k: order.append(("serve", a, k)) or 0)
    rc, out, _ = cli(capsys, "demo", root, "--port", "8765")
    assert rc == 0
    assert order == [("data", str(root)), ("serve", (str(root),),
                                           {"host": "127.0.0.1", "port": 8765, "live": True,
                                            "token": None})]


def test_demo_without_demo_data_is_a_clear_error(capsys, root, monkeypatch, fake_serve):
    monkeypatch.delattr(expman, "_demo_data", raising=False)
    rc, out, err = cli(capsys, "demo", root)
    assert rc == 1 and out == "" and fake_serve == []
    one_error_line(err, "demo data is not available")


# -- the top level: no tracebacks, the right exit codes ---------------------------------------

@pytest.mark.parametrize("exc,code,needles", [
    (RuntimeError("boom"), 1, ["unexpected RuntimeError: boom", "EXPMAN_DEBUG"]),
    (PermissionError(13, "Permission denied", "/x/run.yaml"), 1,
     ["permission denied: /x/run.yaml"]),
    (expman.ExpmanError("bad thing\nsecond line"), 1, ["bad thing"]),
    (KeyboardInterrupt(), 130, []),
])
def test_failures_map_to_exit_codes_without_traceback(capsys, root, monkeypatch, exc, code,
                                                      needles):
    def explode(*args, **kwargs):
        raise exc
    monkeypatch.setattr(expman, "list_experiments", explode)
    rc, out, err = cli(capsys, "list", root)
    assert rc == code and out == "" and "Traceback" not in err
    if needles:
        line = one_error_line(err, *needles)
        assert "second line" not in line


def test_arrow_errors_are_one_line(capsys, runs, monkeypatch):
    import pyarrow as pa

    def explode(*args, **kwargs):
        raise pa.ArrowInvalid("Parquet magic bytes not found")
    monkeypatch.setattr(expman, "metric_stats", explode)
    rc, _, err = cli(capsys, "inspect", runs["a"])
    assert rc == 1
    one_error_line(err, "cannot read the metrics", "magic bytes")


def test_expman_debug_shows_the_traceback(capsys, root, monkeypatch):
    monkeypatch.setattr(expman, "list_experiments", lambda *a: 1 / 0)
    monkeypatch.setenv("EXPMAN_DEBUG", "1")
    rc, _, err = cli(capsys, "list", root)
    assert rc == 1 and "Traceback" in err and err.splitlines()[-1].startswith("expman: error:")


def test_main_leaves_no_log_handler_behind(capsys, root):
    before = list(expman._log.handlers)
    cli(capsys, "list", root)
    cli(capsys, "list", root / "missing")
    assert expman._log.handlers == before


# -- real processes --------------------------------------------------------------------------

def run_cli(*args, cwd, **env):
    return subprocess.run([sys.executable, EXPMAN_PY, *map(str, args)], cwd=cwd,
                          env=child_env(**env), capture_output=True, text=True, timeout=60)


def test_python_expman_py_with_cwd_and_env(root, runs, tmp_path):
    proc = run_cli("list", "-e", "resnet", cwd=root.parent)  # ./experiments by default
    assert proc.returncode == 0 and [l.split()[0] for l in proc.stdout.splitlines()[1:]] == \
        ["c", "b", "a"]
    proc = run_cli("list", cwd=tmp_path, EXPMAN_DIR=str(root))
    assert proc.returncode == 0 and "resnet" in proc.stdout
    proc = run_cli("inspect", "experiments/resnet/a", "--json", cwd=root.parent)
    assert proc.returncode == 0 and json.loads(proc.stdout)["name"] == "a"
    proc = run_cli("--version", cwd=tmp_path)
    assert proc.stdout == f"expman {expman.__version__}\n"


def test_subprocess_errors_are_one_line(root, tmp_path):
    proc = run_cli("inspect", tmp_path / "nope", cwd=tmp_path)
    assert proc.returncode == 1 and proc.stdout == ""
    one_error_line(proc.stderr, "no such directory")
    proc = run_cli("export", "x", "--format", "xml", cwd=tmp_path)
    assert proc.returncode == 2
    one_error_line(proc.stderr, "invalid choice")


def test_console_script_entry_point(root, runs, tmp_path):
    import tomllib
    with open(os.path.join(REPO, "pyproject.toml"), "rb") as fh:
        scripts = tomllib.load(fh)["project"]["scripts"]
    # `exp` too: expman-rs's command name, so its users' shell scripts run unchanged
    assert scripts["expman"] == scripts["exp"] == "expman:main"
    # what the generated `expman` script does: sys.exit(main()) with sys.argv
    code = "import sys, expman; sys.argv[0] = 'expman'; sys.exit(expman.main())"
    proc = subprocess.run([sys.executable, "-c", code, "list", str(root), "-e", "mnist"],
                          cwd=tmp_path, env=child_env(), capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0 and proc.stdout.splitlines()[1].split()[0] == "only"
    installed = shutil.which("expman")
    if installed:  # when `pip install .` has been run, the real command too
        proc = subprocess.run([installed, "list", str(root)], capture_output=True, text=True,
                              timeout=60, env=child_env(pythonpath=None))
        assert proc.returncode == 0 and "resnet" in proc.stdout


@pytest.mark.parametrize("argv0,prog", [("exp", "exp"), ("/usr/local/bin/exp", "exp"),
                                        ("expman", "expman"), (EXPMAN_PY, "expman")])
def test_the_command_answers_to_exp_and_expman(root, runs, tmp_path, argv0, prog):
    code = (f"import sys, expman; sys.argv[0] = {argv0!r}; sys.exit(expman.main())")
    proc = subprocess.run([sys.executable, "-c", code, "--help"], cwd=tmp_path,
                          env=child_env(), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stdout.startswith(f"usage: {prog} ")
    proc = subprocess.run([sys.executable, "-c", code, "export", "x", "-f", "xml"],
                          cwd=tmp_path, env=child_env(), capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 2
    one_error_line(proc.stderr, f"see '{prog} export --help'")


def test_closed_pipe_is_not_a_traceback(root, tmp_path):
    run = make_run(root, name="long", rows=[(i, {"loss": float(i)}) for i in range(20000)])
    proc = subprocess.Popen([sys.executable, EXPMAN_PY, "export", str(run), "--format", "json"],
                            cwd=tmp_path, env=child_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    assert proc.stdout.read(10)
    proc.stdout.close()  # like `| head -c 10`
    err = proc.stderr.read().decode()
    proc.stderr.close()
    assert proc.wait(60) in (0, 1) and "Traceback" not in err and "Broken pipe" not in err


def test_colours_on_a_real_terminal(root, runs, tmp_path):
    def on_pty(*env):
        code, out, _err = run_on_pty([sys.executable, EXPMAN_PY, "list", str(root), "-e",
                                      "resnet"], cwd=tmp_path,
                                     env=child_env(COLUMNS="300", **dict(env)))
        assert code == 0
        return out.decode()

    coloured = on_pty()
    assert "\x1b[32mfinished\x1b[0m" in coloured and "\x1b[31mfailed\x1b[0m" in coloured
    plain = on_pty(("NO_COLOR", "1"))
    assert "finished" in plain and not ANSI.search(plain)
    piped = run_cli("list", root, "-e", "resnet", cwd=tmp_path)
    assert "finished" in piped.stdout and not ANSI.search(piped.stdout)
