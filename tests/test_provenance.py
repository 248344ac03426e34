"""Provenance captured at init (git, packages, scheduler ids, command line), projects and the
EXPMAN_* overrides, and `expman reap`."""
import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import pytest
import yaml

import expman
from _util import Child, child_env, make_experiment, run_python
from test_server import Client, start_server


def git(cwd, *args):
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True,
                   env={**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@x",
                        "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@x"})


@pytest.fixture
def repo(tmp_path):
    path = tmp_path / "repo"
    path.mkdir()
    git(path, "init", "-q", "-b", "main")
    (path / "train.py").write_text("lr = 0.1\n")
    git(path, "add", "train.py")
    git(path, "commit", "-q", "-m", "first")
    git(path, "remote", "add", "origin", "https://user:s3cret@example.com/team/repo.git")
    (path / "train.py").write_text("lr = 0.2  # tuned\n")  # a dirty tree
    return path


def read_meta(run_dir):
    return yaml.safe_load((run_dir / "run.yaml").read_text())


def test_git_dirty_tree_and_diff_artifact(root, repo):
    code = f"""
        import numpy, expman
        exp = expman.init("prov", base_dir={str(root)!r}, save_git_diff=True)
        exp.log_metrics({{"x": 1}})
        print(exp.run_dir)
    """
    out = run_python(code, cwd=repo, env=child_env(SLURM_JOB_ID="777", SLURM_JOB_NAME="sweep"))
    run_dir = type(root)(out.stdout.strip().splitlines()[-1])
    meta = read_meta(run_dir)
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True,
                          text=True, check=True).stdout.strip()
    assert meta["git"]["commit"] == head and meta["git"]["branch"] == "main"
    assert meta["git"]["dirty"] is True
    assert meta["git"]["remote"] == "https://example.com/team/repo.git"  # no credentials
    assert meta["git"]["diff_artifact"] == "git.diff"
    diff = (run_dir / "artifacts" / "git.diff").read_text()
    assert "-lr = 0.1" in diff and "+lr = 0.2  # tuned" in diff
    import numpy
    assert meta["packages"]["numpy"] == numpy.__version__  # imported by the script
    import pyarrow
    assert meta["packages"]["pyarrow"] == pyarrow.__version__
    assert "torch" not in meta["packages"]  # not imported: not recorded, never imported
    assert meta["scheduler"] == {"SLURM_JOB_ID": "777", "SLURM_JOB_NAME": "sweep"}
    assert meta["command"][1:] == ["-c"]
    assert meta["hostname"] and meta["user"] and meta["python"]
    # inspect shows it
    proc = subprocess.run([sys.executable, "-m", "expman", "inspect", str(run_dir)],
                          cwd=os.path.dirname(expman.__file__), capture_output=True,
                          text=True, env=child_env())
    assert proc.returncode == 0, proc.stderr
    assert "artifacts/git.diff" in proc.stdout and "SLURM_JOB_ID=777" in proc.stdout
    assert f"numpy {numpy.__version__}" in proc.stdout and "dirty" in proc.stdout
    # the dashboard previews the diff as text
    server, thread = start_server(root, live=False)
    try:
        preview = Client(server.url).json(f"/api/experiments/prov/runs/{run_dir.name}/artifacts/"
                                          f"content?path=git.diff")
        assert preview["kind"] == "text" and "+lr = 0.2" in preview["text"]
    finally:
        server.close()
        thread.join(5)


def test_clean_tree_saves_no_diff_and_init_does_not_wait_for_git(root, repo):
    git(repo, "checkout", "--", "train.py")
    with make_experiment(root, capture_git=True, save_git_diff=True) as exp:
        pass
    meta = read_meta(exp.run_dir)
    # the test process runs from the repo checkout of expman, or not in a repo at all
    assert "diff_artifact" not in meta.get("git", {}) or meta["git"]["dirty"]
    # git runs on the writer thread: init returns before any git call is made
    code = f"""
        import os, time, expman
        os.environ["PATH"] = {str(repo)!r} + os.pathsep + os.environ["PATH"]
        t = time.perf_counter()
        exp = expman.init("prov", base_dir={str(root)!r}, save_git_diff=True)
        print(round((time.perf_counter() - t) * 1000, 1))
        exp.close()
        print(exp.run_dir)
    """
    slow_git = repo / "git"  # a git that takes 1.5 s
    slow_git.write_text("#!/bin/sh\nsleep 1.5\nexec /usr/bin/git \"$@\"\n")
    slow_git.chmod(0o755)
    out = run_python(code, cwd=repo).stdout.split()
    assert float(out[0]) < 500, f"init took {out[0]} ms with a slow git"
    assert read_meta(type(root)(out[1]))["git"]["commit"]


def test_provenance_false_keeps_only_what_status_needs(root, repo):
    out = run_python(f"""
        import expman
        exp = expman.init("prov", base_dir={str(root)!r}, provenance=False, save_git_diff=True)
        exp.close()
        print(exp.run_dir)
    """, cwd=repo, env=child_env(SLURM_JOB_ID="1"))
    run_dir = type(root)(out.stdout.split()[-1])
    meta = read_meta(run_dir)
    for key in ("command", "cwd", "user", "platform", "git", "packages", "scheduler"):
        assert key not in meta, key
    assert meta["hostname"] and meta["pid"] and meta["status"] == "finished"
    assert not (run_dir / "artifacts" / "git.diff").exists()


def test_projects_env_overrides_and_filters(root, monkeypatch, capsys):
    monkeypatch.setenv("EXPMAN_PROJECT", "vision")
    monkeypatch.setenv("EXPMAN_TAGS", "nightly, gpu")
    monkeypatch.setenv("EXPMAN_RUN_NAME", "from-env")
    with make_experiment(root, "resnet", tags=["base", "gpu"]) as a:
        pass
    assert a.project == "vision" and a.run_name == "from-env"
    meta = read_meta(a.run_dir)
    assert meta["project"] == "vision" and meta["tags"] == ["base", "gpu", "nightly"]
    assert yaml.safe_load((root / "resnet" / "experiment.yaml").read_text())["project"] == "vision"
    monkeypatch.delenv("EXPMAN_TAGS")
    monkeypatch.delenv("EXPMAN_RUN_NAME")
    with make_experiment(root, "bert", project="nlp"):
        pass
    monkeypatch.delenv("EXPMAN_PROJECT")
    with make_experiment(root, "loose"):
        pass
    assert [e["name"] for e in expman.list_experiments(root, project="nlp")] == ["bert"]
    rows = {e["name"]: e for e in expman.list_experiments(root)}
    assert rows["resnet"]["project"] == "vision" and rows["loose"]["project"] is None
    assert rows["loose"]["projects"] == []
    assert expman.load_runs(root, project="vision").column("run").to_pylist() == ["from-env"]
    with pytest.raises(expman.InvalidInputError, match="project"):
        expman.list_experiments(root, project=3)
    with pytest.raises(expman.InvalidInputError, match="project"):
        make_experiment(root, project="/")
    # CLI
    assert expman.main(["list", str(root), "--project", "nlp"]) == 0
    out = capsys.readouterr().out
    assert "bert" in out and "resnet" not in out and "PROJECT" in out
    assert expman.main(["list", str(root), "--project", "nope", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["experiments"] == []
    assert expman.main(["list", str(root), "-e", "resnet", "--project", "nlp"]) == 0
    assert "no runs matching" in capsys.readouterr().out
    # API: a real server
    server, thread = start_server(root, live=False)
    try:
        client = Client(server.url)
        names = [e["name"] for e in client.json("/api/experiments?project=vision")["experiments"]]
        assert names == ["resnet"]
        assert len(client.json("/api/experiments")["experiments"]) == 3
        projects = client.json("/api/projects")
        assert [(p["name"], p["experiments"], p["runs"]) for p in projects["projects"]] == [
            ("nlp", 1, 1), ("vision", 1, 1)]
        assert projects["unassigned"] == 1
        run = client.json("/api/experiments/resnet/runs")["runs"][0]
        assert run["project"] == "vision"
    finally:
        server.close()
        thread.join(5)


def test_project_added_to_an_older_experiment(root):
    with make_experiment(root, "old"):
        pass
    assert "project" not in yaml.safe_load((root / "old" / "experiment.yaml").read_text())
    with make_experiment(root, "old", project="p"):
        pass
    assert yaml.safe_load((root / "old" / "experiment.yaml").read_text())["project"] == "p"
    assert expman.list_experiments(root, project="p")[0]["runs"] == 2


LIVE_CHILD = """
import sys, expman
exp = expman.init({name!r}, base_dir={root!r}, run_name={run!r}, capture_git=False,
                  flush_interval_ms=50, heartbeat_secs=0.2)
for step in range(100):
    exp.log_metrics({{"loss": 1.0 / (step + 1)}}, step=step)
exp.flush()
print("ready", flush=True)
import threading
threading.Event().wait(300)  # alive until the test kills it
"""


def test_reap_marks_a_killed_run_and_leaves_a_live_one(root, capsys):
    dead = Child(LIVE_CHILD.format(name="exp", root=str(root), run="dead"), cwd=root)
    live = Child(LIVE_CHILD.format(name="exp", root=str(root), run="live"), cwd=root)
    try:
        dead.wait_line(lambda line: line == "ready")
        live.wait_line(lambda line: line == "ready")
        os.kill(dead.proc.pid, signal.SIGKILL)
        dead.wait()
        assert read_meta(root / "exp" / "dead")["status"] == "running"  # what the file says
        # dry run: says what it would do, writes nothing
        assert expman.main(["reap", str(root), "--stale", "0", "--dry-run"]) == 0
        out = capsys.readouterr().out
        assert "would mark crashed" in out and "dead" in out and "live" not in out.split(
            "would mark")[1].split("\n")[0]
        assert read_meta(root / "exp" / "dead")["status"] == "running"
        # without --force it is a dry run too (as clean is; expman-rs's reap is the same)
        assert expman.main(["reap", str(root), "--stale", "0"]) == 0
        out = capsys.readouterr().out
        assert "would mark crashed" in out and "add --force" in out
        assert read_meta(root / "exp" / "dead")["status"] == "running"
        assert expman.main(["reap", str(root), "--force", "--dry-run"]) == 2
        assert "contradict" in capsys.readouterr().err
        # the default staleness (6 heartbeats of 0.2 s + 5 s) has not passed yet: nothing
        assert expman.main(["reap", str(root), "--json"]) == 0
        report = json.loads(capsys.readouterr().out)
        assert {r["name"]: r["action"] for r in report["runs"]} == {"dead": "alive",
                                                                    "live": "alive"}
        assert expman.main(["reap", str(root), "--stale", "0", "--compact", "--json",
                            "--force"]) == 0
        report = {r["name"]: r for r in json.loads(capsys.readouterr().out)["runs"]}
        assert report["dead"]["action"] == "reaped" and "gone" in report["dead"]["reason"]
        assert report["dead"]["compacted_segments"] >= 1
        assert report["live"]["action"] == "alive"
        meta = read_meta(root / "exp" / "dead")
        assert meta["status"] == "crashed" and meta["reaped_at"] and meta["finished_at"]
        assert not list((root / "exp" / "dead" / "metrics").glob("seg-*"))
        assert expman.load_metrics(root / "exp" / "dead").num_rows == 100
        assert read_meta(root / "exp" / "live")["status"] == "running"
        # reaping again does nothing to the reaped run
        assert expman.main(["reap", str(root / "exp"), "--stale", "0", "--force"]) == 0
        assert "0 runs marked crashed; 1 running left alone; 2 runs checked" in \
            capsys.readouterr().out
    finally:
        for child in (dead, live):
            child.kill()
    assert expman.load_run(root / "exp" / "live")["status"] == "crashed"  # killed above


def test_reap_a_run_from_another_host_by_heartbeat_alone(root, capsys):
    run = root / "exp" / "remote"
    run.mkdir(parents=True)
    beat = time.time() - 120
    meta = {"name": "remote", "experiment": "exp", "status": "running",
            "started_at": expman._iso(beat - 60), "heartbeat_at": expman._iso(beat),
            "heartbeat_secs": 5.0, "hostname": "some-other-node", "pid": os.getpid()}
    (run / "run.yaml").write_text(yaml.safe_dump(meta))
    assert expman.main(["reap", str(run), "--stale", "300", "--force"]) == 0
    assert "0 runs marked" in capsys.readouterr().out
    assert read_meta(run)["status"] == "running"
    assert expman.main(["reap", str(run), "--force"]) == 0  # default: 35 s
    assert "some-other-node" in capsys.readouterr().out
    got = read_meta(run)
    assert got["status"] == "crashed" and got["duration_secs"] == pytest.approx(60, abs=1)
    assert expman.main(["reap", str(root), "--stale", "-1"]) == 2
    assert "--stale" in capsys.readouterr().err


def test_package_versions_that_are_str_subclasses_are_recorded(tmp_path):
    """torch.__version__ is a TorchVersion, a str subclass YAML's safe dumper refuses: init()
    raised RepresenterError in every script that imported torch first."""
    code = """
    import sys, types, expman
    class TorchVersion(str):
        pass
    sys.modules["torch"] = types.SimpleNamespace(__version__=TorchVersion("2.13.0+cpu"))
    with expman.Experiment("prov", base_dir="experiments") as exp:
        pass
    print(exp.run_dir)
    """
    run_dir = run_python(code, cwd=tmp_path).stdout.strip().splitlines()[-1]
    meta = read_meta(pathlib.Path(run_dir))
    assert meta["packages"]["torch"] == "2.13.0+cpu"
