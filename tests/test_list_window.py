"""`expman list -e` at scale (issue 13): a terminal shows the newest runs and says how many
more there are, a window of rows checks only the rows it shows, and whatever happened to
the runs (new, deleted, edited, live, crashed) or to the catalog's compacted base, what is
listed equals a fresh scan of the runs' own files."""
import json
import os
import shutil
import subprocess
import sys

import pytest
import yaml

import expman
from _util import REPO, child_env, run_on_pty
from test_catalog import comparable, fresh_rows

EXPMAN_PY = os.path.join(REPO, "expman.py")
N = 80   # more than _CATALOG_BASE_MIN: the first listing writes a columnar base


def write_run(exp, i, status="finished", **meta):
    """A run written straight into the layout (as a finished sweep leaves it)."""
    path = exp / f"r{i:04d}"
    path.mkdir(parents=True)
    (path / "run.yaml").write_text(yaml.safe_dump({
        "name": f"r{i:04d}", "experiment": exp.name, "status": status,
        "started_at": f"2026-01-01T{i // 3600:02d}:{i // 60 % 60:02d}:{i % 60:02d}+00:00",
        "summary": {"loss": 1.0 / (i + 1)}, **meta}))
    (path / "config.yaml").write_text(yaml.safe_dump({"lr": i / 1000, "seed": i}))
    return path


@pytest.fixture
def sweep(tmp_path):
    exp = tmp_path / "sweep"
    for i in range(N):
        write_run(exp, i, status="failed" if i % 9 == 0 else "finished")
    expman.list_runs(str(tmp_path), "sweep")   # builds the catalog
    assert any(n.endswith(expman._CATALOG_BASE) for n in os.listdir(exp / ".catalog"))
    return tmp_path


def window(root, limit):
    model = expman._runs_model(str(root), "sweep", limit=limit)
    return model["runs"], model["total"]


def assert_window_fresh(root, limit=10):
    rows, total = window(root, limit)
    fresh = fresh_rows(root)
    assert comparable(rows) == comparable(fresh[:limit])
    assert total == len(fresh)


def test_a_window_equals_the_newest_rows_of_a_fresh_scan(sweep):
    assert_window_fresh(sweep)
    assert_window_fresh(sweep, limit=1)
    assert_window_fresh(sweep, limit=N + 5)   # more than there are: every run


def test_a_window_sees_new_deleted_and_edited_runs(sweep):
    exp = sweep / "sweep"
    write_run(exp, N + 1)                       # a new run, the newest
    assert window(sweep, 3)[0][0]["name"] == f"r{N + 1:04d}"
    assert_window_fresh(sweep)
    shutil.rmtree(exp / f"r{N - 1:04d}")        # a deleted run, one of those shown
    assert f"r{N - 1:04d}" not in [r["name"] for r in window(sweep, 10)[0]]
    assert_window_fresh(sweep)
    path = exp / f"r{N - 2:04d}"                # a closed run edited in place, shown
    meta = yaml.safe_load((path / "run.yaml").read_text())
    meta["description"] = "edited by hand, in place"
    (path / "run.yaml").write_text(yaml.safe_dump(meta))
    rows, _ = window(sweep, 10)
    assert {r["name"]: r["description"] for r in rows}[f"r{N - 2:04d}"] == \
        "edited by hand, in place"
    assert_window_fresh(sweep)


def test_a_window_reads_live_runs_from_their_run_yaml(sweep):
    exp = sweep / "sweep"
    # live: this process on this host; crashed: a pid that is gone
    live = write_run(exp, N + 2, status="running", hostname=expman._HOSTNAME, pid=os.getpid(),
                     heartbeat_at=expman._iso())
    write_run(exp, N + 3, status="running", hostname=expman._HOSTNAME, pid=2 ** 22 + 12345,
              heartbeat_at="2026-01-01T00:00:00+00:00")
    rows, total = window(sweep, 5)
    status = {r["name"]: r["status"] for r in rows}
    assert status[f"r{N + 2:04d}"] == "running" and status[f"r{N + 3:04d}"] == "crashed"
    assert total == N + 2
    meta = yaml.safe_load((live / "run.yaml").read_text())
    meta.update(description="a live run's new description", summary={"loss": 0.001})
    (live / "run.yaml").write_text(yaml.safe_dump(meta))
    (row,) = [r for r in window(sweep, 5)[0] if r["name"] == f"r{N + 2:04d}"]
    assert row["description"] == "a live run's new description"
    assert row["summary"] == {"loss": 0.001}
    meta["status"] = "finished"   # it closes: read once more, then from the catalog
    (live / "run.yaml").write_text(yaml.safe_dump(meta))
    for _ in range(2):
        (row,) = [r for r in window(sweep, 5)[0] if r["name"] == f"r{N + 2:04d}"]
        assert row["status"] == "finished"
    assert comparable(expman.list_runs(str(sweep), "sweep")) == comparable(fresh_rows(sweep))


def test_a_window_decodes_only_the_rows_it_shows(sweep, monkeypatch):
    """The point of the window: 10 rows of the base are made, not N (counted at the one place
    a base's row is decoded)."""
    made = []
    real = expman._ColumnBase._row

    def counting(self, i):
        made.append(i)
        return real(self, i)

    monkeypatch.setattr(expman._ColumnBase, "_row", counting)
    rows, total = window(sweep, 10)
    assert len(rows) == 10 and total == N
    assert len(made) == 10


@pytest.mark.parametrize("damage", ["byte", "truncate", "header"])
def test_a_damaged_base_is_rebuilt_from_the_runs(sweep, damage):
    folder = sweep / "sweep" / ".catalog"
    (base,) = [f for f in folder.iterdir() if f.name.endswith(expman._CATALOG_BASE)]
    data = bytearray(base.read_bytes())
    if damage == "byte":      # one byte of one row: the CRC no longer matches
        at = data.rindex(b'"experiment"')
        data[at + 1] = ord("L")
    elif damage == "truncate":
        data = data[:len(data) * 2 // 3]
    else:
        data[:10] = b"#not json "
    base.write_bytes(bytes(data))
    assert expman._ColumnBase.parse(bytes(data)) is None
    assert comparable(expman.list_runs(str(sweep), "sweep")) == comparable(fresh_rows(sweep))
    assert_window_fresh(sweep)
    names = [f.name for f in folder.iterdir()]
    assert any(n.endswith(expman._CATALOG_BASE) and n != base.name for n in names)  # rebuilt


def test_list_experiments_counts_from_the_catalog_columns(sweep):
    exp = sweep / "sweep"
    write_run(exp, N + 1, status="running", hostname=expman._HOSTNAME, pid=os.getpid(),
              heartbeat_at=expman._iso())
    write_run(exp, N + 2, status="running", hostname=expman._HOSTNAME, pid=2 ** 22 + 12345)
    shutil.rmtree(exp / "r0000")   # a failed one (0 % 9 == 0)
    (row,) = expman.list_experiments(str(sweep))
    fresh = fresh_rows(sweep)
    counts = {}
    for r in fresh:
        counts[r["status"]] = counts.get(r["status"], 0) + 1
    assert row["runs"] == len(fresh) == N + 1
    assert row["status_counts"] == counts
    assert counts["running"] == 1 and counts["crashed"] == 1


def on_pty(*argv, columns=200):
    code, out, err = run_on_pty([sys.executable, EXPMAN_PY, *map(str, argv)],
                                env=child_env(COLUMNS=str(columns), NO_COLOR="1"))
    assert code == 0, err.decode()
    return out.decode().replace("\r\n", "\n")


def piped(*argv):
    proc = subprocess.run([sys.executable, EXPMAN_PY, *map(str, argv)], capture_output=True,
                          text=True, env=child_env(), timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def run_lines(text):
    return [line.split()[0] for line in text.splitlines() if line.startswith("r0")]


def test_a_terminal_shows_the_newest_runs_and_says_how_many_more(sweep):
    limit = expman._TTY_RUNS
    out = on_pty("list", sweep, "-e", "sweep")
    assert run_lines(out) == [f"r{i:04d}" for i in range(N - 1, N - 1 - limit, -1)]
    assert out.rstrip().splitlines()[-1] == \
        f"\u2026 {N - limit} more runs (the newest {limit} of {N} shown): --all or --limit N"
    everything = on_pty("list", sweep, "-e", "sweep", "--all")
    assert len(run_lines(everything)) == N and "more run" not in everything
    five = on_pty("list", sweep, "-e", "sweep", "--limit", "5")
    assert len(run_lines(five)) == 5 and f"{N - 5} more runs" in five


def test_a_pipe_gets_every_run_unless_limited(sweep):
    out = piped("list", sweep, "-e", "sweep")
    assert len(run_lines(out)) == N and "more run" not in out
    out = piped("list", sweep, "-e", "sweep", "--limit", "3")
    assert run_lines(out) == [f"r{N - 1:04d}", f"r{N - 2:04d}", f"r{N - 3:04d}"]
    assert out.rstrip().splitlines()[-1].startswith(f"\u2026 {N - 3} more runs")
    one = piped("list", sweep, "-e", "sweep", "--limit", "1", "--where", "seed<10")
    assert run_lines(one) == ["r0009"] and "9 more runs (the newest 1 of 10" in one


def test_list_json_is_every_row_one_a_line(sweep):
    run = expman.Experiment("sweep", base_dir=str(sweep), run_name="zz_nan", capture_git=False)
    run.log_metrics({"loss": float("nan")}, step=0)
    run.close()
    out = piped("list", sweep, "-e", "sweep", "--json")
    data = json.loads(out)
    assert set(data) == {"root", "experiment", "runs"}   # no "total": nothing left out
    rows = expman.list_runs(str(sweep), "sweep")
    assert data["runs"] == expman._json_safe(rows)
    assert {r["name"]: r["summary"]["loss"] for r in data["runs"]}["zz_nan"] == "NaN"
    lines = out.splitlines()
    assert len(lines) == 3 + len(rows) + 3   # {, root, experiment, "runs": [, rows, ], }
    assert all(json.loads(line.rstrip(",")) for line in lines[4:4 + len(rows)])
    limited = json.loads(piped("list", sweep, "-e", "sweep", "--json", "--limit", "2"))
    assert [r["name"] for r in limited["runs"]] == [r["name"] for r in rows[:2]]
    assert limited["total"] == len(rows)


def test_limit_needs_an_experiment_and_is_not_all(sweep, capsys):
    assert expman.main(["list", str(sweep), "--limit", "3"]) == 2
    assert "--limit limits the runs of one experiment" in capsys.readouterr().err
    assert expman.main(["list", str(sweep), "-e", "sweep", "--limit", "3", "--all"]) == 2
    assert expman.main(["list", str(sweep), "-e", "sweep", "--limit", "0"]) == 2
