"""The run catalog checked against the runs themselves, through public surfaces only
(expman.list_runs, expman.load_runs, `expman list --json` in another process), so these tests
hold whatever the catalog's files look like inside.

The reference is always a fresh scan: the experiment folder copied without its .catalog
folder and listed cold in the copy (the copy keeps every file's bytes and mtimes; only the
paths differ). Covered (issue 13, Tests):
- random histories of create / open / log / close / crash (SIGKILL) / delete / edit / list /
  damage, played by several long-lived writer processes at once (each closing, listing and
  compacting the catalog from its own process), then catalog == fresh scan;
- a catalog deleted, damaged, or restored from an older copy (stale) is rebuilt, also when
  the reader is the CLI in another process, and on the S3 server of tests/_s3.py;
- concurrent writers and listers on one experiment on that S3 server.
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
import urllib.request

import pytest
import yaml
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st

import expman
from _util import REPO, child_env, serving

EXP = "sweep"
# fields that differ between two reads of the same run by design: where it is (the copy is
# elsewhere), and a live run's clock-driven duration and heartbeat
VOLATILE_RUNNING = ("duration_secs", "heartbeat_at")


def comparable(rows):
    out = []
    for r in rows:
        r = {k: v for k, v in r.items() if k != "path"}
        if r.get("status") == "running":
            for k in VOLATILE_RUNNING:
                r.pop(k, None)
        out.append(r)
    return sorted(out, key=lambda r: r["name"])


def fresh_copy(root, scratch):
    """The experiment copied without its catalog into a new root: listing it is a fresh
    scan of the same files."""
    if scratch.exists():
        shutil.rmtree(scratch)
    shutil.copytree(root / EXP, scratch / EXP,
                    ignore=lambda d, names: [n for n in names if n == expman.CATALOG_DIR])
    return scratch


def cli_list(root, exp=EXP, env=None):
    """`expman list ROOT -e EXP --json` in a new process: its runs."""
    proc = subprocess.run([sys.executable, os.path.join(REPO, "expman.py"), "list", str(root),
                           "-e", exp, "--json"], env=env or child_env(), capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)["runs"]


def load_runs_rows(root):
    table = expman.load_runs(str(root), EXP)
    rows = [{k: v for k, v in r.items() if k not in ("duration_secs",)}
            for r in table.to_pylist()]
    return sorted(rows, key=lambda r: r["run"]), sorted(table.column_names)


def assert_lists_like_a_fresh_scan(root, scratch, with_cli=True):
    fresh = fresh_copy(root, scratch)
    want = comparable(expman.list_runs(str(fresh), EXP))
    for _ in range(2):   # the listing that may rebuild the catalog, then one that reads it
        assert comparable(expman.list_runs(str(root), EXP)) == want
    if with_cli:
        listed = cli_list(root)
        assert comparable(listed) == comparable(json.loads(json.dumps(want))), \
            "expman list --json in another process differs from a fresh scan"
    assert load_runs_rows(root) == load_runs_rows(fresh)
    return want


# -- writers in their own processes ------------------------------------------------------------

WORKER = textwrap.dedent("""
    import json, os, sys
    import expman
    runs = {}
    print("ready", flush=True)
    for line in sys.stdin:
        cmd = json.loads(line)
        op, root, name = cmd["op"], cmd.get("root"), cmd.get("name")
        if op == "create":       # a whole run: open, log, close
            run = expman.Experiment("sweep", base_dir=root, run_name=name, capture_git=False,
                                    config={"k": cmd["k"], "nested": {"who": cmd["k"] % 2}},
                                    tags=["t%d" % (cmd["k"] % 2)])
            for step in range(cmd["rows"]):
                run.log_metrics({"loss": 1.0 / (step + 1), "acc": cmd["k"] + step}, step=step)
            run.log_scalar("best", cmd["k"] * 0.5)
            run.close(status=cmd["status"])
        elif op == "open":       # a live run that stays open in this process
            run = expman.Experiment("sweep", base_dir=root, run_name=name, capture_git=False,
                                    config={"k": cmd["k"]}, heartbeat_secs=3600,
                                    flush_interval_ms=20)
            run.log_metrics({"loss": 9.0}, step=0)
            assert run.flush(30)
            runs[(root, name)] = run
        elif op == "log":
            run = runs[(root, name)]
            for step in range(cmd["rows"]):
                run.log_metrics({"loss": 1.0 / (step + 2), "acc": float(step)},
                                step=step + 1000 * cmd["k"])
            assert run.flush(30)
        elif op == "close":
            runs.pop((root, name)).close(status=cmd["status"])
        elif op == "closeall":
            for key in list(runs):
                runs.pop(key).close()
        elif op == "list":
            expman.list_runs(root, "sweep")
        print("ok", flush=True)
""")


class Worker:
    def __init__(self):
        self.proc = subprocess.Popen([sys.executable, "-c", WORKER], env=child_env(),
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout.readline().strip() == "ready"

    def do(self, **cmd):
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline().strip()
        assert line == "ok", f"worker failed on {cmd}: {line!r}"

    def kill(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)
        for pipe in (self.proc.stdin, self.proc.stdout):
            pipe.close()

    def stop(self):
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        if self.proc.wait(30) != 0:
            raise AssertionError(f"worker exited with {self.proc.returncode}")
        self.proc.stdout.close()


@pytest.fixture(scope="module")
def workers():
    pool = [Worker(), Worker()]
    yield pool
    for w in pool:
        if w.proc.poll() is None:
            w.stop()


NAMES = 4
ACTION = st.one_of(
    st.tuples(st.just("create"), st.integers(0, 1), st.integers(0, 7)),
    st.tuples(st.just("open"), st.integers(0, 1), st.integers(0, 7)),
    st.tuples(st.just("log"), st.just(0), st.integers(0, 7)),
    st.tuples(st.just("close"), st.integers(0, 2), st.integers(0, 7)),
    st.tuples(st.just("crash"), st.integers(0, 1), st.just(0)),
    st.tuples(st.just("delete"), st.just(0), st.integers(0, 7)),
    st.tuples(st.just("edit"), st.integers(0, 2), st.integers(0, 7)),
    st.tuples(st.just("list"), st.integers(0, 2), st.just(0)),
    st.tuples(st.just("damage"), st.integers(0, 3), st.just(0)),
)
STATUSES = ("finished", "failed", "interrupted")


@example(actions=[  # closed runs cached, then edited, deleted and made again by the other
    ("create", 0, 0), ("create", 1, 1), ("list", 0, 0), ("edit", 0, 0), ("edit", 2, 1),
    ("list", 1, 0), ("delete", 0, 0), ("create", 1, 0), ("edit", 1, 0)])
@example(actions=[  # live runs logged, listed, closed or killed between listings
    ("open", 0, 0), ("open", 1, 0), ("log", 0, 0), ("list", 2, 0), ("close", 1, 0),
    ("list", 0, 0), ("log", 0, 0), ("crash", 0, 0), ("list", 1, 0), ("damage", 1, 0)])
@example(actions=[  # a writer killed right after another process listed its live run
    ("open", 0, 0), ("open", 1, 0), ("list", 1, 0), ("crash", 0, 0), ("list", 2, 0),
    ("close", 1, 0)])
@settings(max_examples=12, deadline=None, derandomize=True,
          phases=[Phase.explicit, Phase.generate],   # shrinking respawns processes: minutes
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(actions=st.lists(ACTION, min_size=4, max_size=14))
def test_any_history_across_processes_lists_like_a_fresh_scan(tmp_path_factory, workers,
                                                              actions):
    """Two writer processes (and this one) play a random history on one experiment; the
    listing (here, again here, and in a third process) equals a fresh scan, and so does
    load_runs. derandomize=True: the same 12 random histories (and the 3 written out) on
    every run, so a failure reproduces (hypothesis prints the failing list of actions)."""
    base = tmp_path_factory.mktemp("hist")
    root, scratch = base / "root", base / "fresh"
    root_s = str(root)
    owner = {}        # name -> index of the worker holding it open
    exists = set()
    try:
        for action, a, k in actions:
            # k picks among the runs the action can apply to, so few actions are no-ops
            free = sorted({f"r{i}" for i in range(NAMES)} - exists)
            live, done = sorted(owner), sorted(exists - set(owner))
            pool = free if action in ("create", "open") else live if action in (
                "log", "close") else done if action in ("edit", "delete") else ["-"]
            if not pool:
                continue
            name = pool[k % len(pool)]
            path = root / EXP / name
            if action == "create":
                workers[a].do(op="create", root=root_s, name=name, k=k, rows=3 + k,
                              status=STATUSES[k % 3])
                exists.add(name)
            elif action == "open":
                workers[a].do(op="open", root=root_s, name=name, k=k)
                exists.add(name)
                owner[name] = a
            elif action == "log":
                workers[owner[name]].do(op="log", root=root_s, name=name, k=k, rows=5)
            elif action == "close":
                workers[owner.pop(name)].do(op="close", root=root_s, name=name,
                                            status=STATUSES[a])
            elif action == "crash":
                # the writer dies with its runs open: they read as crashed from now on
                workers[a].kill()
                workers[a] = Worker()
                for n in [n for n, w in owner.items() if w == a]:
                    del owner[n]
            elif action == "delete":
                shutil.rmtree(path)
                exists.discard(name)
            elif action == "edit":
                # a hand edit of run.yaml, as a user or another tool makes it
                meta = yaml.safe_load((path / "run.yaml").read_text()) or {}
                if a == 0:
                    meta["description"] = f"edited {time.time_ns()}"
                elif a == 1:
                    meta["tags"] = list(meta.get("tags") or []) + ["edited"]
                else:
                    meta["status"] = "failed" if meta.get("status") == "finished" \
                        else "finished"
                (path / "run.yaml").write_text(yaml.safe_dump(meta, sort_keys=False))
            elif action == "list" and (root / EXP).is_dir():
                if a < 2:
                    workers[a].do(op="list", root=root_s)
                else:
                    expman.list_runs(root_s, EXP)
            elif action == "damage" and (root / EXP / expman.CATALOG_DIR).is_dir():
                files = sorted((root / EXP / expman.CATALOG_DIR).iterdir())
                if files:
                    victim = files[a % len(files)]
                    data = victim.read_bytes()
                    if a == 3:
                        victim.unlink()
                    else:
                        victim.write_bytes(data[:len(data) * a // 3] + b"\x00{oops")
        if (root / EXP).is_dir():
            rows = assert_lists_like_a_fresh_scan(root, scratch)
            assert {r["name"] for r in rows} == exists
            for r in rows:
                if r["name"] in owner:
                    assert r["status"] == "running", r
    finally:
        for w in workers:
            if w.proc.poll() is None:
                w.do(op="closeall")


# -- (b) a catalog deleted, damaged or stale is rebuilt ------------------------------------------

def make_run(root, name, status="finished", lr=0.1, steps=3, tags=None):
    run = expman.Experiment(EXP, base_dir=str(root), run_name=name, config={"lr": lr},
                            capture_git=False, tags=tags)
    for step in range(steps):
        run.log_metrics({"loss": lr / (step + 1)}, step=step)
    run.close(status=status)


def catalog_folder(root):
    return root / EXP / expman.CATALOG_DIR


def test_an_older_copy_of_the_catalog_put_back_is_not_trusted(tmp_path):
    """The catalog is restored from a backup (or rsync'd from another machine) after the runs
    changed: deleted, made again under the same name, edited, closed. Every listing, in this
    process and in another, is a fresh scan."""
    root, scratch = tmp_path / "root", tmp_path / "fresh"
    for i, name in enumerate(("a", "b", "c")):
        make_run(root, name, lr=i / 10)
    expman.list_runs(str(root), EXP)
    old = tmp_path / "catalog-backup"
    shutil.copytree(catalog_folder(root), old)
    shutil.rmtree(root / EXP / "b")
    make_run(root, "b", status="failed", lr=0.9, steps=7)        # same name, another run
    meta = yaml.safe_load((root / EXP / "a" / "run.yaml").read_text())
    meta.update(description="edited after the backup", tags=["late"])
    (root / EXP / "a" / "run.yaml").write_text(yaml.safe_dump(meta))
    shutil.rmtree(root / EXP / "c")
    make_run(root, "d", status="interrupted", lr=0.4)
    # the backup put back over the catalog, and beside it
    for replace in (True, False):
        if replace:
            shutil.rmtree(catalog_folder(root))
        shutil.copytree(old, catalog_folder(root), dirs_exist_ok=True)
        rows = assert_lists_like_a_fresh_scan(root, scratch)
        got = {r["name"]: r for r in rows}
        assert sorted(got) == ["a", "b", "d"]
        assert got["b"]["params"] == {"lr": 0.9} and got["b"]["status"] == "failed"
        assert got["a"]["description"] == "edited after the backup"


def test_deleted_or_damaged_catalog_rebuilt_by_the_cli(tmp_path):
    """`expman list --json` in a new process, after each kind of damage: the runs as a fresh
    scan sees them, and a catalog written again for the next listing."""
    root, scratch = tmp_path / "root", tmp_path / "fresh"
    for i in range(6):
        make_run(root, f"r{i}", status=STATUSES[i % 3], lr=i / 10, tags=[f"t{i % 2}"])
    want = assert_lists_like_a_fresh_scan(root, scratch)
    damages = {
        "deleted": lambda folder: shutil.rmtree(folder),
        "emptied": lambda folder: [f.unlink() for f in folder.iterdir()],
        "truncated": lambda folder: [f.write_bytes(f.read_bytes()[:len(f.read_bytes()) // 2])
                                     for f in folder.iterdir()],
        "garbage": lambda folder: [f.write_bytes(b"\xff\xfe garbage \x00\n{]\n")
                                   for f in folder.iterdir()],
        "foreign rows": lambda folder: [f.write_text(
            '{"name": "r1", "row": "not a row"}\n{"name": 7, "row": {}}\n[1, 2]\nnull\n'
            '{"name": "ghost", "v": 999, "row": {"name": "ghost"}}\n')
            for f in folder.iterdir()],
        "a file in its place": lambda folder: (shutil.rmtree(folder),
                                               folder.write_text("not a folder")),
    }
    for what, damage in damages.items():
        folder = catalog_folder(root)
        if not folder.is_dir():
            expman.list_runs(str(root), EXP)       # written again for the next damage
        damage(folder)
        assert comparable(cli_list(root)) == comparable(json.loads(json.dumps(want))), what
        assert comparable(expman.list_runs(str(root), EXP)) == want, what
        if what != "a file in its place":
            assert folder.is_dir() and any(folder.iterdir()), f"not rewritten after {what}"
        else:
            folder.unlink()


def test_a_hand_edit_of_config_yaml_is_seen(tmp_path):
    root, scratch = tmp_path / "root", tmp_path / "fresh"
    make_run(root, "a", lr=0.1)
    expman.list_runs(str(root), EXP)
    (root / EXP / "a" / "config.yaml").write_text("lr: 0.5\nextra: yes\n")
    rows = assert_lists_like_a_fresh_scan(root, scratch, with_cli=False)
    assert rows[0]["params"] == {"lr": 0.5, "extra": True}


def test_tags_edited_on_the_dashboard_reach_every_listing(tmp_path):
    """Locally (see test_s3.py for the object-store case): the dashboard's PATCH of a closed
    run's tags reaches the same server's list, a new server's, list_runs and the CLI."""
    root, scratch = tmp_path / "root", tmp_path / "fresh"
    make_run(root, "r0", tags=["old"])
    make_run(root, "r1", tags=["old"])
    assert [r["tags"] for r in expman.list_runs(str(root), EXP)] == [["old"], ["old"]]
    body = json.dumps({"tags": ["new"], "description": "edited"}).encode()
    for again in (False, True):
        with serving(root, live=False) as srv:
            kept_url = srv.url + f"/api/experiments/{EXP}/runs?limit=50"
            if not again:   # the runs table's query keeps the list a moment: filled first
                with urllib.request.urlopen(kept_url, timeout=30) as resp:
                    assert {r["name"]: r["tags"] for r in json.loads(resp.read())["runs"]} == \
                        {"r0": ["old"], "r1": ["old"]}
                req = urllib.request.Request(srv.url + f"/api/experiments/{EXP}/runs/r0/metadata",
                                             data=body, method="PATCH",
                                             headers={"Content-Type": "application/json"})
                with urllib.request.urlopen(req, timeout=30) as resp:
                    assert resp.status == 200
            with urllib.request.urlopen(srv.url + f"/api/experiments/{EXP}/runs",
                                        timeout=30) as resp:
                listed = {r["name"]: r for r in json.loads(resp.read())["runs"]}
            assert (listed["r0"]["tags"], listed["r0"]["description"]) == (["new"], "edited")
            assert listed["r1"]["tags"] == ["old"]
            with urllib.request.urlopen(kept_url, timeout=30) as resp:
                kept = {r["name"]: r for r in json.loads(resp.read())["runs"]}
            assert (kept["r0"]["tags"], kept["r0"]["description"]) == (["new"], "edited")
    rows = assert_lists_like_a_fresh_scan(root, scratch)
    assert [r["tags"] for r in rows] == [["new"], ["old"]]
    assert expman.load_runs(str(root), EXP, tags="new").column("run").to_pylist() == ["r0"]
