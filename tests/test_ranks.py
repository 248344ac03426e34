"""Distributed jobs: rank and group detection with real child processes, is_primary, and the
group/rank fields readers and the API carry."""
import json
import subprocess
import sys
import textwrap

import pytest
import yaml

import expman
from _util import child_env, make_experiment
from test_server import Client, start_server

# What each child does: start a run, say what it is, log a few rows, close.
CHILD = """
import json, expman
exp = expman.init("ddp", base_dir={root!r}, capture_git=False, flush_interval_ms=50)
for step in range(5):
    exp.log_metrics({{"loss": 1.0 / (step + 1 + exp.rank)}}, step=step)
print(json.dumps({{"run": exp.run_name, "rank": exp.rank, "group": exp.group,
                  "world": exp.world_size, "primary": exp.is_primary,
                  "module_primary": expman.is_primary()}}))
"""

LAUNCHER_VARS = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "SLURM_PROCID", "SLURM_NTASKS",
                 "SLURM_JOB_ID", "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "PMI_RANK",
                 "PMIX_RANK", "PMI_SIZE", "TORCHELASTIC_RUN_ID", "LSB_JOBID", "PBS_JOBID",
                 "FLUX_JOB_ID", "COBALT_JOBID", "PMIX_NAMESPACE", "MASTER_ADDR", "MASTER_PORT",
                 "LOCAL_WORLD_SIZE", "SLURM_LOCALID")


def clean_env(**extra):
    env = child_env()
    for name in LAUNCHER_VARS:
        env.pop(name, None)
    env.update({k: str(v) for k, v in extra.items()})
    return env


def launch(root, envs, code=CHILD):
    """Start one child per environment at once (like a launcher), wait for all."""
    procs = [subprocess.Popen([sys.executable, "-c", textwrap.dedent(code.format(root=str(root)))],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for env in envs]
    out = []
    for proc in procs:
        stdout, stderr = proc.communicate(timeout=60)
        assert proc.returncode == 0, stderr
        out.append(json.loads(stdout.strip().splitlines()[-1]))
    return out


def test_four_slurm_ranks_write_four_runs_named_by_job(root):
    envs = [clean_env(SLURM_JOB_ID="4711", SLURM_PROCID=r, SLURM_NTASKS=4, SLURM_LOCALID=r % 2)
            for r in range(4)]
    got = launch(root, envs)
    assert [g["run"] for g in got] == [f"4711-rank{r}" for r in range(4)]
    assert [g["rank"] for g in got] == [0, 1, 2, 3]
    assert {g["group"] for g in got} == {"4711"} and {g["world"] for g in got} == {4}
    assert [g["primary"] for g in got] == [True, False, False, False]
    assert [g["module_primary"] for g in got] == [True, False, False, False]
    runs = {r["name"]: r for r in expman.list_runs(root, "ddp")}
    assert set(runs) == {f"4711-rank{r}" for r in range(4)}
    for r in range(4):
        row = runs[f"4711-rank{r}"]
        assert (row["group"], row["rank"], row["world_size"]) == ("4711", r, 4)
        assert row["status"] == "finished" and row["rows"] == 5
        meta = yaml.safe_load((root / "ddp" / f"4711-rank{r}" / "run.yaml").read_text())
        assert meta["group"] == "4711" and meta["rank"] == r and meta["world_size"] == 4
        assert meta["local_rank"] == r % 2
        assert meta["scheduler"]["SLURM_JOB_ID"] == "4711"
    table = expman.load_runs(root, "ddp")
    assert sorted(zip(table.column("rank").to_pylist(), table.column("group").to_pylist())) \
        == [(r, "4711") for r in range(4)]


def test_torchrun_rank_wins_and_a_second_launch_gets_new_names(root):
    # torchrun inside a SLURM task: RANK is the global rank, SLURM_PROCID counts nodes
    envs = [clean_env(RANK=r, WORLD_SIZE=2, LOCAL_RANK=r, SLURM_PROCID=0, SLURM_NTASKS=1,
                      SLURM_JOB_ID="99", TORCHELASTIC_RUN_ID="none") for r in range(2)]
    assert [g["run"] for g in launch(root, envs)] == ["99-rank0", "99-rank1"]
    # the same job id again (a requeued job): existing names are not reused
    again = launch(root, envs)
    assert sorted(g["run"] for g in again) == ["99-rank0_2", "99-rank1_2"]


def test_expman_rank_and_group_override_the_launcher(root):
    envs = [clean_env(RANK=r, WORLD_SIZE=2, SLURM_JOB_ID="5", EXPMAN_RANK=10 + r,
                      EXPMAN_GROUP="sweep/a b") for r in range(2)]
    got = launch(root, envs)
    assert [g["run"] for g in got] == ["sweep_a_b-rank10", "sweep_a_b-rank11"]
    assert [g["primary"] for g in got] == [False, False]


def test_torchrun_without_job_id_groups_one_launch(root, tmp_path):
    """No job id at all: ranks that share a launcher process agree on one group."""
    launcher = tmp_path / "launcher.py"
    launcher.write_text(textwrap.dedent("""
        import os, subprocess, sys
        code = sys.argv[1]
        procs = []
        for r in range(3):
            env = dict(os.environ, RANK=str(r), WORLD_SIZE="3", LOCAL_WORLD_SIZE="3",
                       MASTER_ADDR="127.0.0.1", MASTER_PORT="29500", TORCHELASTIC_RUN_ID="none")
            procs.append(subprocess.Popen([sys.executable, "-c", code], env=env))
        sys.exit(max(p.wait() for p in procs))
    """))
    code = textwrap.dedent(CHILD.format(root=str(root)))
    for _launch in range(2):
        subprocess.run([sys.executable, str(launcher), code], env=clean_env(), check=True,
                       timeout=90, capture_output=True)
    runs = expman.list_runs(root, "ddp")
    groups = {}
    for r in runs:
        groups.setdefault(r["group"], []).append(r["rank"])
    assert len(groups) == 2, groups
    assert all(sorted(v) == [0, 1, 2] for v in groups.values())
    assert all(g.startswith("launch-") for g in groups)


def test_single_task_job_is_an_ordinary_run(root, monkeypatch):
    for name in LAUNCHER_VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SLURM_PROCID", "0")
    monkeypatch.setenv("SLURM_NTASKS", "1")
    monkeypatch.setenv("SLURM_JOB_ID", "12")
    with make_experiment(root, run_name="plain") as exp:
        assert exp.rank is None and exp.group is None and exp.is_primary
        assert expman.is_primary()
    assert exp.run_name == "plain"
    row = expman.list_runs(root, "exp")[0]
    assert row["group"] is None and row["rank"] is None
    # but the job id is still recorded as provenance
    assert expman.load_run(exp.run_dir)["scheduler"]["SLURM_JOB_ID"] == "12"


def test_rank_and_group_arguments(root, monkeypatch):
    for name in LAUNCHER_VARS:
        monkeypatch.delenv(name, raising=False)
    assert expman.is_primary()
    with make_experiment(root, rank=2, group="g1", run_name="trial") as exp:
        assert (exp.rank, exp.group, exp.is_primary) == (2, "g1", False)
    assert exp.run_name == "trial-rank2"  # a given run name keeps one run per rank too
    with make_experiment(root, group="g1") as exp0:
        assert exp0.rank == 0 and exp0.is_primary and exp0.run_name == "g1-rank0"
    with pytest.raises(expman.InvalidInputError, match="rank"):
        make_experiment(root, rank=-1)
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("WORLD_SIZE", "4")
    assert not expman.is_primary()
    monkeypatch.setenv("EXPMAN_RANK", "0")
    assert expman.is_primary()


def test_is_primary_follows_the_current_run(root, monkeypatch):
    for name in LAUNCHER_VARS:
        monkeypatch.delenv(name, raising=False)
    expman.init("exp", base_dir=root, capture_git=False, rank=1, group="j")
    try:
        assert not expman.is_primary() and expman.get_run().is_primary is False
    finally:
        expman.close()
    assert expman.is_primary()


def test_api_rows_carry_group_and_rank(root, monkeypatch):
    for name in LAUNCHER_VARS:
        monkeypatch.delenv(name, raising=False)
    for r in range(2):
        with make_experiment(root, rank=r, group="job7") as exp:
            exp.log_metrics({"x": r})
    with make_experiment(root, run_name="solo"):
        pass
    server, thread = start_server(root, live=False)
    try:
        rows = {r["name"]: r for r in Client(server.url).json("/api/experiments/exp/runs")["runs"]}
    finally:
        server.close()
        thread.join(5)
    assert rows["job7-rank1"]["group"] == "job7" and rows["job7-rank1"]["rank"] == 1
    assert rows["solo"]["group"] is None and rows["solo"]["rank"] is None


@pytest.mark.parametrize("environ, expected", [
    ({}, None),
    ({"RANK": "0", "WORLD_SIZE": "1"}, None),                       # one process: not a job
    ({"SLURM_PROCID": "0", "SLURM_NTASKS": "1", "SLURM_JOB_ID": "5"}, None),
    ({"SLURM_PROCID": "2", "SLURM_NTASKS": "4", "SLURM_JOB_ID": "5"}, (2, 4, "5")),
    ({"SLURM_PROCID": "1", "SLURM_NTASKS": "2", "SLURM_JOB_ID": "5", "SLURM_STEP_ID": "3"},
     (1, 2, "5.3")),                                                # a later srun step
    ({"OMPI_COMM_WORLD_RANK": "3", "OMPI_COMM_WORLD_SIZE": "8", "LSB_JOBID": "77"},
     (3, 8, "77")),
    ({"PMI_RANK": "1", "PMI_SIZE": "2", "PBS_JOBID": "12.server"}, (1, 2, "12.server")),
    ({"RANK": "1", "WORLD_SIZE": "2", "TORCHELASTIC_RUN_ID": "abc-123"}, (1, 2, "abc-123")),
    ({"RANK": "5", "WORLD_SIZE": "8", "SLURM_PROCID": "1", "SLURM_JOB_ID": "9"}, (5, 8, "9")),
    ({"EXPMAN_RANK": "4"}, (4, None, None)),                        # group made up below
    ({"EXPMAN_GROUP": "g"}, (0, None, "g")),
])
def test_detection_table(environ, expected):
    got = expman._distributed(environ)
    if expected is None:
        assert got is None
        return
    rank, world, group = expected
    assert got["rank"] == rank and got["world_size"] == world
    if group is not None:
        assert got["group"] == group
    else:
        assert got["group"].startswith("launch-")


def test_multi_node_without_job_id_names_the_master_and_rank_false_opts_out():
    got = expman._distributed({"RANK": "1", "WORLD_SIZE": "16", "LOCAL_WORLD_SIZE": "8",
                               "MASTER_ADDR": "node7", "MASTER_PORT": "29500",
                               "TORCHELASTIC_RUN_ID": "none"})
    assert got["group"].startswith("launch-node7-29500-")
    assert expman._distributed({"RANK": "1", "WORLD_SIZE": "2"}, rank=False) is None
