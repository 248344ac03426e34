"""The run catalog (<experiment>/.catalog/): listings read it instead of every closed run's
files, and whatever happens to the runs or to the catalog, a listing equals a fresh scan."""
import json
import os
import shutil
import subprocess
import sys
import time

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import expman

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)


def make_run(root, name, status="finished", exp="sweep", lr=0.1, steps=3):
    run = expman.Experiment(exp, base_dir=str(root), run_name=name, config={"lr": lr},
                            capture_git=False)
    for step in range(steps):
        run.log_metrics({"loss": 1.0 / (step + 1)}, step=step)
    run.close(status=status)
    return root / exp / name


def fresh_rows(root, exp="sweep"):
    """What a listing must equal: every run read from its own files, as before the catalog."""
    store, exp_path = expman._open_store(str(root / exp))
    rows = []
    for entry in store.listdir(exp_path):
        if not entry.is_dir or entry.name.startswith("."):
            continue
        run_path = store.join(exp_path, entry.name)
        found = expman._read_run_files(store, run_path, entry.name, True)
        if found is not None:
            rows.append(expman._listed_run_row(store, run_path, entry.name, *found))
    rows.sort(key=lambda r: (expman._parse_iso(r["started_at"]) or 0, r["name"]), reverse=True)
    return rows


def comparable(rows):
    # a live run's duration is the clock's, not the files': the one field two reads differ in
    return [{k: v for k, v in r.items() if not (r["status"] == "running" and k == "duration_secs")}
            for r in rows]


def blank_config(run_path):
    """config.yaml emptied of its params (a YAML comment of the same length) with its size
    and mtime kept: a listing that reads it lists no params, while nothing a stat sees has
    changed, so a listing that shows the params took them from the catalog row. (Deleting
    config.yaml is a change a listing sees: the row is read again.)"""
    path = os.path.join(run_path, "config.yaml")
    st = os.stat(path)
    with open(path, "r+b") as fh:
        fh.write(b"#" * (st.st_size - 1) + b"\n")
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert (os.stat(path).st_size, os.stat(path).st_mtime) == (st.st_size, st.st_mtime)


def catalog_files(root, exp="sweep"):
    folder = root / exp / expman.CATALOG_DIR
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


def catalog_entries(root, exp="sweep"):
    """Every entry of every catalog file, oldest file first: part files are JSON lines of
    entries, bases hold theirs by column (read with the catalog's own decoder)."""
    folder = root / exp / expman.CATALOG_DIR
    out = []
    for name in catalog_files(root, exp):
        data = (folder / name).read_bytes()
        if name.endswith(expman._CATALOG_BASE):
            out += list(expman._ColumnBase.parse(data).entries().values())
        else:
            out += [json.loads(line) for line in data.splitlines()]
    return out


def test_second_listing_reads_the_catalog_not_the_runs(tmp_path):
    for i in range(5):
        make_run(tmp_path, f"r{i}", status="failed" if i == 3 else "finished", lr=i / 10)
    first = expman.list_runs(str(tmp_path), "sweep")
    assert {f.split("-")[0] for f in catalog_files(tmp_path)} == {"part"}
    # with every config.yaml blanked (size and mtime kept), only the catalog still knows the
    # params
    for i in range(5):
        blank_config(tmp_path / "sweep" / f"r{i}")
    second = expman.list_runs(str(tmp_path), "sweep")
    assert second == first
    assert {r["name"]: r["params"]["lr"] for r in second} == {f"r{i}": i / 10 for i in range(5)}
    assert [r["status"] for r in second if r["name"] == "r3"] == ["failed"]


def test_listing_equals_a_fresh_scan_with_live_and_crashed_runs(tmp_path):
    make_run(tmp_path, "done")
    live = expman.Experiment("sweep", base_dir=str(tmp_path), run_name="live", capture_git=False)
    live.log_metrics({"loss": 1.0}, step=0)
    live.flush()
    # a crashed run: run.yaml still says running, its pid is gone
    child = subprocess.run([sys.executable, "-c", (
        "import expman, os\n"
        f"r = expman.Experiment('sweep', base_dir={str(tmp_path)!r}, run_name='dead', "
        "capture_git=False)\n"
        "r.log_metrics({'loss': 2.0}, step=0); r.flush(); os._exit(0)\n")],
        cwd=REPO, env={**os.environ, "PYTHONPATH": REPO}, timeout=60)
    assert child.returncode == 0
    try:
        for _ in range(2):  # the cold listing and the one served from the catalog
            rows = expman.list_runs(str(tmp_path), "sweep")
            assert comparable(rows) == comparable(fresh_rows(tmp_path))
            assert {r["name"]: r["status"] for r in rows} == {
                "done": "finished", "live": "running", "dead": "crashed"}
        # only the closed run is in the catalog: the others can still change by themselves
        assert [e["name"] for e in catalog_entries(tmp_path)] == ["done"]
    finally:
        live.close()
    rows = expman.list_runs(str(tmp_path), "sweep")
    assert {r["name"]: r["status"] for r in rows}["live"] == "finished"


def test_an_edited_run_yaml_is_read_again(tmp_path):
    path = make_run(tmp_path, "r0")
    expman.list_runs(str(tmp_path), "sweep")
    meta = yaml.safe_load((path / "run.yaml").read_text())
    meta["description"] = "edited by hand, a longer text than before"
    (path / "run.yaml").write_text(yaml.safe_dump(meta))
    (row,) = expman.list_runs(str(tmp_path), "sweep")
    assert row["description"] == "edited by hand, a longer text than before"
    assert comparable([row]) == comparable(fresh_rows(tmp_path))


def test_deleted_and_recreated_runs(tmp_path):
    make_run(tmp_path, "a")
    make_run(tmp_path, "b", lr=0.5)
    expman.list_runs(str(tmp_path), "sweep")
    shutil.rmtree(tmp_path / "sweep" / "b")
    assert [r["name"] for r in expman.list_runs(str(tmp_path), "sweep")] == ["a"]
    make_run(tmp_path, "b", lr=0.7, status="failed")  # same name, another run
    rows = {r["name"]: r for r in expman.list_runs(str(tmp_path), "sweep")}
    assert rows["b"]["params"]["lr"] == 0.7 and rows["b"]["status"] == "failed"


def test_damaged_or_deleted_catalog_is_rebuilt(tmp_path):
    for i in range(3):
        make_run(tmp_path, f"r{i}")
    expected = comparable(expman.list_runs(str(tmp_path), "sweep"))
    folder = tmp_path / "sweep" / ".catalog"
    for name in catalog_files(tmp_path):
        data = (folder / name).read_bytes()
        (folder / name).write_bytes(b"\x00garbage\n{\"no\": \"name\"}\n[1,2]\n" +
                                    data[:len(data) // 2])
    garbage = "part-99999999999999999999-1-zz" + expman._CATALOG_PART
    (folder / garbage).write_text("not json at all\n")
    assert comparable(expman.list_runs(str(tmp_path), "sweep")) == expected
    shutil.rmtree(folder)
    assert comparable(expman.list_runs(str(tmp_path), "sweep")) == expected
    assert catalog_files(tmp_path)  # written again


def test_parts_are_compacted_and_deleted_runs_dropped(tmp_path):
    n = expman.CATALOG_MAX_PARTS + 3
    for i in range(n):  # one closed run per listing: one part file per listing
        make_run(tmp_path, f"r{i:02d}", steps=1)
        expman.list_runs(str(tmp_path), "sweep")
        if i == 1:
            shutil.rmtree(tmp_path / "sweep" / "r00")
    files = catalog_files(tmp_path)
    assert len(files) <= expman.CATALOG_MAX_PARTS + 1
    assert any(f.startswith("base-") for f in files)
    names = {e["name"] for e in catalog_entries(tmp_path)}
    assert "r00" not in names and len(names) == n - 1
    assert comparable(expman.list_runs(str(tmp_path), "sweep")) == comparable(fresh_rows(tmp_path))


def test_a_compaction_sweeps_the_temp_files_of_dead_writers(tmp_path, monkeypatch):
    """A closer killed between writing its part's temp file and renaming it leaves the temp
    (<part>.tmp-<pid>-<thread>, never read). A compaction deletes it once that pid is gone
    from this host and it is ten minutes old (another host's closer may be writing one, its
    pid unknown here); it leaves the one of a process still running, and a recent one."""
    make_run(tmp_path, "a")
    folder = tmp_path / "sweep" / expman.CATALOG_DIR
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        part = "part-01796427629544957625-1-d4a439c6.ndjson"
        old = time.time() - 601
        for pid, thread in ((dead, 1), (alive.pid, 1), (dead, 2)):
            temp = folder / f"{part}.tmp-{pid}-{thread}"
            temp.write_text('{"name": "x"}\n')
            if thread == 1:
                os.utime(temp, (old, old))
        monkeypatch.setattr(expman, "CATALOG_MAX_PARTS", 0)   # this listing compacts
        make_run(tmp_path, "b")
        assert [r["name"] for r in expman.list_runs(str(tmp_path), "sweep")] == ["b", "a"]
        temps = sorted(n for n in os.listdir(folder) if ".tmp-" in n)
        assert temps == sorted([f"{part}.tmp-{alive.pid}-1", f"{part}.tmp-{dead}-2"])
        assert any(n.endswith(expman._CATALOG_BASE) for n in os.listdir(folder))
    finally:
        alive.kill()
        alive.wait()


def test_list_experiments_reads_the_catalog_too(tmp_path):
    for i in range(3):
        make_run(tmp_path, f"r{i}", status="failed" if i else "finished")
    first = expman.list_experiments(str(tmp_path))
    for i in range(3):
        os.remove(tmp_path / "sweep" / f"r{i}" / "config.yaml")
    assert expman.list_experiments(str(tmp_path)) == first
    assert first[0]["status_counts"] == {"finished": 1, "failed": 2}


def test_concurrent_listers_and_closers_agree_with_a_fresh_scan(tmp_path):
    """Four processes close runs while four others list (and so write and compact the
    catalog) at the same time; afterwards the listing is exactly a fresh scan."""
    make_run(tmp_path, "seed")
    closer = ("import expman, sys\n"
              "for i in range(12):\n"
              "    r = expman.Experiment('sweep', base_dir=sys.argv[1], "
              "run_name=f'w{sys.argv[2]}_{i}', capture_git=False, config={'i': i})\n"
              "    r.log_metrics({'loss': i}, step=0); r.close()\n")
    lister = ("import expman, sys, time\n"
              "end = time.monotonic() + 60\n"
              "for _ in range(40):\n"
              "    expman.list_runs(sys.argv[1], 'sweep')\n"
              "    if time.monotonic() > end: break\n")
    env = {**os.environ, "PYTHONPATH": REPO}
    procs = [subprocess.Popen([sys.executable, "-c", closer, str(tmp_path), str(k)], env=env)
             for k in range(4)]
    procs += [subprocess.Popen([sys.executable, "-c", lister, str(tmp_path)], env=env)
              for _ in range(4)]
    for p in procs:
        assert p.wait(timeout=300) == 0
    rows = expman.list_runs(str(tmp_path), "sweep")
    assert len(rows) == 1 + 4 * 12
    assert comparable(rows) == comparable(fresh_rows(tmp_path))


_ACTIONS = st.lists(st.tuples(st.sampled_from(["create", "list", "delete", "edit", "crash",
                                               "damage"]),
                              st.integers(0, 5)), min_size=1, max_size=25)


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(actions=_ACTIONS)
def test_any_history_lists_like_a_fresh_scan(tmp_path_factory, actions):
    root = tmp_path_factory.mktemp("cat")
    exp = root / "sweep"
    for action, k in actions:
        name = f"r{k}"
        path = exp / name
        if action == "create" and not path.exists():
            make_run(root, name, status=("finished", "failed", "interrupted")[k % 3], lr=k,
                     steps=1)
        elif action == "crash" and not path.exists():
            path.mkdir(parents=True)
            (path / "run.yaml").write_text(yaml.safe_dump({
                "name": name, "status": "running", "hostname": expman._HOSTNAME,
                "pid": 2 ** 22 + 12345, "started_at": "2026-01-01T00:00:00+00:00"}))
        elif action == "delete" and path.exists():
            shutil.rmtree(path)
        elif action == "edit" and (path / "run.yaml").exists():
            meta = yaml.safe_load((path / "run.yaml").read_text()) or {}
            meta["description"] = f"edit {time.time_ns()}"
            (path / "run.yaml").write_text(yaml.safe_dump(meta))
        elif action == "damage" and (exp / ".catalog").is_dir():
            for f in sorted((exp / ".catalog").iterdir())[:1]:
                f.write_bytes(f.read_bytes()[: k * 7])
        elif action == "list" and exp.is_dir():
            expman.list_runs(str(root), "sweep")
    if exp.is_dir():
        assert comparable(expman.list_runs(str(root), "sweep")) == comparable(fresh_rows(root))
        assert comparable(expman.list_runs(str(root), "sweep")) == comparable(fresh_rows(root))


def test_unwritable_catalog_still_lists(tmp_path):
    # root writes through permission bits: a file where the folder should be refuses writes
    (tmp_path / "sweep").mkdir()
    (tmp_path / "sweep" / ".catalog").write_text("a file where the folder should be")
    make_run(tmp_path, "r0")  # the close cannot add its row: the run is closed all the same
    assert expman.load_run(str(tmp_path / "sweep" / "r0"))["status"] == "finished"
    rows = expman.list_runs(str(tmp_path), "sweep")
    assert [r["name"] for r in rows] == ["r0"]
    assert comparable(rows) == comparable(fresh_rows(tmp_path))


@pytest.mark.parametrize("n", [300])
def test_many_runs_list_from_one_file(tmp_path, n):
    """Closed runs written straight into the layout (as an older expman or another machine
    would leave them): the first listing builds the catalog, the next reads one file."""
    exp = tmp_path / "sweep"
    for i in range(n):
        path = exp / f"r{i:04d}"
        path.mkdir(parents=True)
        (path / "run.yaml").write_text(yaml.safe_dump({
            "name": f"r{i:04d}", "experiment": "sweep", "status": "finished",
            "started_at": f"2026-01-01T00:{i // 60:02d}:{i % 60:02d}+00:00",
            "summary": {"loss": i / n}}))
        (path / "config.yaml").write_text(yaml.safe_dump({"lr": i}))
    first = expman.list_runs(str(tmp_path), "sweep")
    assert len(catalog_files(tmp_path)) == 1
    opened = []
    real = expman._read_run_files

    def counting(*args, **kwargs):
        opened.append(args[2])
        return real(*args, **kwargs)

    expman._read_run_files = counting
    try:
        second = expman.list_runs(str(tmp_path), "sweep")
    finally:
        expman._read_run_files = real
    assert second == first and opened == []


def test_nan_and_odd_values_survive_the_catalog(tmp_path):
    run = expman.Experiment("sweep", base_dir=str(tmp_path), run_name="nan", capture_git=False,
                            config={"when": "2026-01-01", "nested": {"x": [1, 2]}})
    run.log_metrics({"loss": float("nan"), "acc": float("inf")}, step=0)
    run.log_scalar("note", 1.5)
    run.close()
    first = expman.list_runs(str(tmp_path), "sweep")
    (again,) = expman.list_runs(str(tmp_path), "sweep")
    assert again["summary"]["loss"] != again["summary"]["loss"]  # NaN, still a float
    assert again["summary"]["acc"] == float("inf")
    assert again["params"] == first[0]["params"]


def test_a_closing_run_adds_its_own_row(tmp_path):
    make_run(tmp_path, "r0", lr=0.3)
    (name,) = catalog_files(tmp_path)  # written by close(), before any listing
    (entry,) = [json.loads(line) for line in
                (tmp_path / "sweep" / ".catalog" / name).read_text().splitlines()]
    assert entry["name"] == "r0" and entry["row"]["params"] == {"lr": 0.3}
    assert entry["row"]["status"] == "finished"
    blank_config(tmp_path / "sweep" / "r0")  # the listing needs only the row
    (row,) = expman.list_runs(str(tmp_path), "sweep")
    assert row["params"] == {"lr": 0.3}


def test_entries_of_an_older_catalog_version_are_read_again(tmp_path):
    """A catalog written before RUN_ROW gained summary_min/summary_max (no "v") is not trusted:
    the run is read from its files once and listed with the new fields."""
    with expman.Experiment("vers", base_dir=str(tmp_path), run_name="r", capture_git=False) as e:
        for i in range(5):
            e.log_metrics({"loss": 5.0 - i}, step=i)
    assert expman.list_runs(str(tmp_path), "vers")[0]["summary_min"] == {"loss": 1.0}
    folder = tmp_path / "vers" / expman.CATALOG_DIR
    entries = [json.loads(line) for f in sorted(folder.iterdir())
               for line in f.read_text().splitlines()]
    assert entries and all(e["v"] == expman.CATALOG_ROW_VERSION for e in entries)
    for f in folder.iterdir():   # as an older expman left it: no version, no min/max
        f.unlink()
    old = {k: v for k, v in entries[-1].items() if k != "v"}
    old["row"] = {k: v for k, v in old["row"].items() if k not in ("summary_min", "summary_max")}
    older = "part-00000000000000000001-1-old" + expman._CATALOG_PART
    (folder / older).write_text(json.dumps(old) + "\n")
    assert expman.list_runs(str(tmp_path), "vers")[0]["summary_min"] == {"loss": 1.0}


def _pyarrow_min_max(path):
    """What pyarrow's column statistics say: the reference for the hand-read footer."""
    import pyarrow.parquet as pq
    meta = pq.ParquetFile(path).metadata
    low, high = {}, {}
    for g in range(meta.num_row_groups):
        for c in range(meta.row_group(g).num_columns):
            col = meta.row_group(g).column(c)
            if col.path_in_schema in expman.RESERVED_COLUMNS or col.physical_type != "DOUBLE":
                continue
            if col.statistics is None:
                return None, None
            if col.statistics.has_min_max:
                key, stats = col.path_in_schema, col.statistics
                low[key] = min(low.get(key, stats.min), stats.min)
                high[key] = max(high.get(key, stats.max), stats.max)
    return low, high


@pytest.mark.parametrize("case", ["plain", "groups", "nan_and_null", "no_stats", "ints",
                                  "run"])
def test_min_max_read_off_the_footer_by_hand_equals_pyarrow(tmp_path, case):
    """A catalog rebuild reads the min/max of older runs' metrics off their Parquet footers
    by hand (pyarrow per file cost most of the rebuild): it must say what pyarrow says."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    path = tmp_path / "metrics.parquet"
    if case == "run":   # what expman's own writer leaves at close
        make_run(tmp_path, "r", steps=40)
        path = tmp_path / "sweep" / "r" / "metrics.parquet"
    else:
        n = 1000
        cols = {"step": pa.array(range(n), pa.int64()),
                "train/loss": pa.array([1.0 / (i + 1) - 0.3 for i in range(n)]),
                "val/acc": pa.array([None if i % 3 else float(i) for i in range(n)]),
                "weird key.with dots": pa.array([-0.0 if i == 5 else i * 1e300
                                                 for i in range(n)])}
        if case == "nan_and_null":
            cols["all_nan"] = pa.array([float("nan")] * n)
            cols["all_null"] = pa.array([None] * n, pa.float64())
            cols["some_nan"] = pa.array([float("nan") if i % 2 else -float(i)
                                         for i in range(n)])
        if case == "ints":
            cols["count"] = pa.array(range(n), pa.int64())
        pq.write_table(pa.table(cols), path, row_group_size=128 if case == "groups" else n,
                       write_statistics=case != "no_stats")
    mine = expman._footer_min_max(expman._parquet_footer(str(path)))
    assert repr(mine) == repr(_pyarrow_min_max(str(path)))
    if case == "no_stats":
        assert mine == (None, None)
    elif case != "run":
        assert mine[0]["train/loss"] == pytest.approx(1.0 / n - 0.3)


def test_a_part_written_during_a_compaction_keeps_winning_over_its_base(tmp_path, monkeypatch):
    """A compaction reads the catalog, and before it writes its base another process writes a
    newer row for a run (the dashboard's PATCH of a closed run, a run closing under the name
    of a deleted one). The base holds the older row it read; named with the time it was
    written it sorted after that part and won for good (locally a stat hid it, on an object
    store nothing would). Interleaved by hand: read, other writer, compaction's write."""
    run = make_run(tmp_path, "a")
    make_run(tmp_path, "b")
    assert [r["tags"] for r in expman.list_runs(str(tmp_path), "sweep")] == [[], []]
    store, exp_path = expman._open_store(str(tmp_path / "sweep"))
    compactor = expman._Catalog(store, exp_path)
    cached = compactor.load()                      # the compaction's read
    read = set(compactor.files)
    assert read and cached["a"]["row"]["tags"] == []
    # meanwhile, another process: a's tags edited in run.yaml and its fresh row added
    meta = yaml.safe_load((run / "run.yaml").read_text())
    meta["tags"] = ["new"]
    store.write_atomic(str(run / "run.yaml"), expman._yaml_dump(meta))
    expman._catalog_closed_run(store, str(run), meta, {"lr": 0.1})
    edit = set(catalog_files(tmp_path)) - read
    assert len(edit) == 1
    monkeypatch.setattr(expman, "CATALOG_MAX_PARTS", 0)   # this update compacts
    compactor.update([], keep=["a", "b"], cached=cached)
    files = set(catalog_files(tmp_path))
    assert not files & read and edit <= files      # the read files went, the edit stayed
    assert any(f.endswith(expman._CATALOG_BASE) for f in files)
    entries = expman._Catalog(store, exp_path).load()
    assert entries["a"]["row"]["tags"] == ["new"]
    assert entries["b"]["row"]["tags"] == []
    assert {r["name"]: r["tags"] for r in expman.list_runs(str(tmp_path), "sweep")} == \
        {"a": ["new"], "b": []}


def test_a_part_written_during_a_listing_keeps_winning_over_its_reads(tmp_path):
    """A listing reads a run from its files, and before it writes its part another process
    writes a newer row for that run (the dashboard's PATCH). The listing's part holds what
    it read before the edit: named with the time it was written it won over the edit's row
    (locally a stat hid it, on an object store nothing would). Interleaved by hand."""
    run = make_run(tmp_path, "a")
    store, exp_path = expman._open_store(str(tmp_path / "sweep"))
    lister = expman._Catalog(store, exp_path)
    cached = lister.load()                         # the listing's read of the catalog ...
    found = expman._read_run_files(store, str(run), "a")
    stale = expman._catalog_entry(found[0], expman._listed_run_row(store, str(run), "a", *found),
                                  None)            # ... and of the run's files
    meta = dict(found[0], tags=["new"])            # meanwhile, another process edits a's tags
    store.write_atomic(str(run / "run.yaml"), expman._yaml_dump(meta))
    expman._catalog_closed_run(store, str(run), meta, found[1])
    lister.update([stale], keep=["a"], cached=cached)
    assert len(catalog_files(tmp_path)) == 3 and \
        not any(f.endswith(expman._CATALOG_BASE) for f in catalog_files(tmp_path))
    assert expman._Catalog(store, exp_path).load()["a"]["row"]["tags"] == ["new"]
