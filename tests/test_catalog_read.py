"""The read side of the run catalog at scale: what a listing of many closed runs does with the
catalog's rows (checked against the runs with the same stats, links told apart by them, sorted
and printed column by column) gives exactly what the row-by-row reading gave."""
import io
import math
import os
import random
import contextlib
import shutil
import threading
import gc

import pytest
import yaml

import expman
from _util import get_json, serving

SECRET = "hunter2-read13"


def make_run(root, name, exp="sweep", config=None, status="finished", metrics=None):
    run = expman.Experiment(exp, base_dir=str(root), run_name=name,
                            config=config if config is not None else {"lr": 0.1},
                            capture_git=False)
    run.log_metrics(metrics or {"loss": 0.5}, step=0)
    run.close(status=status)
    return root / exp / name


def listed_twice(root, exp="sweep"):
    """List an experiment twice: the first listing writes the catalog rows of what it read,
    the second takes them from the catalog (and checks them against the runs' stats)."""
    expman.list_runs(str(root), exp)
    return expman.list_runs(str(root), exp)


# -- links: the catalog rows' own stats tell them, and the server still confines them ----------

def test_window_names_the_catalog_rows_whose_files_are_no_links(tmp_path):
    outside = tmp_path / "outside.yaml"
    outside.write_text(f"password: {SECRET}\n")
    make_run(tmp_path / "root", "plain")
    linked = make_run(tmp_path / "root", "linked_config")
    (linked / "config.yaml").unlink()
    os.symlink(outside, linked / "config.yaml")
    meta_linked = make_run(tmp_path / "root", "linked_meta")
    real = tmp_path / "meta.yaml"
    real.write_bytes((meta_linked / "run.yaml").read_bytes())
    (meta_linked / "run.yaml").unlink()
    os.symlink(real, meta_linked / "run.yaml")
    root = tmp_path / "root"
    listed_twice(root)   # every row is in the catalog now, made from the links' targets
    store, exp_path = expman._open_store(str(root / "sweep"))
    unlinked = set()
    rows, beyond, _cached = expman._scan_window(store, exp_path, 0, True, unlinked=unlinked)
    assert sorted(r["name"] for r in rows) == ["linked_config", "linked_meta", "plain"]
    assert unlinked == {"plain"}   # fails if links went unnoticed (a stat follows them)
    # the rows came from the catalog: the stats matched the targets' stamps (nothing was re-read)
    assert {r["name"]: r["params"] for r in rows}["linked_config"] == {"password": SECRET}


def test_catalog_rows_whose_files_link_out_are_confined_when_served(tmp_path):
    outside = tmp_path / "outside.yaml"
    outside.write_text(f"password: {SECRET}\nname: x\nstatus: finished\n")
    root = tmp_path / "root"
    make_run(root, "plain", config={"lr": 0.3})
    linked = make_run(root, "linked", config={"lr": 0.2})
    (linked / "config.yaml").unlink()
    os.symlink(outside, linked / "config.yaml")
    meta = make_run(root, "meta")
    (meta / "run.yaml").unlink()
    os.symlink(outside, meta / "run.yaml")
    listed_twice(root)   # the catalog holds the links' targets' rows, stamps matching
    with serving(str(root)) as server:
        for path in ("/api/experiments/sweep/runs",
                     "/api/experiments/sweep/runs?sort=p:lr&limit=10",
                     "/api/experiments/sweep/runs?limit=2"):
            for _ in range(2):   # the list made, then the list kept
                answer, _size = get_json(server, path)
                rows = {r["name"]: r for r in answer["runs"]}
                assert SECRET not in str(answer)
                assert rows["plain"]["params"] == {"lr": 0.3}
                if "linked" in rows:
                    assert rows["linked"]["params"] == {}
                if "meta" in rows:
                    assert rows["meta"]["corrupt"] and rows["meta"]["status"] == "crashed"


# -- edits after the catalog was written still show -----------------------------------------------

def test_runs_edited_or_deleted_after_the_catalog_show_as_they_are(tmp_path):
    for i in range(6):
        make_run(tmp_path, f"r{i}", config={"lr": i / 10, "seed": i})
    listed_twice(tmp_path)
    # in place (no rename: the run folder's mtime does not move)
    path = tmp_path / "sweep" / "r1" / "run.yaml"
    meta = yaml.safe_load(path.read_text())
    meta["description"] = "edited in place after the catalog was written"
    with open(path, "r+") as fh:
        fh.write(yaml.safe_dump(meta))
        fh.truncate()
    with open(tmp_path / "sweep" / "r2" / "config.yaml", "w") as fh:
        fh.write("lr: 9.5\nseed: 2\n")
    metrics = tmp_path / "sweep" / "r3" / "metrics.parquet"
    with open(metrics, "r+b") as fh:
        fh.truncate(metrics.stat().st_size - 10)
    import shutil
    shutil.rmtree(tmp_path / "sweep" / "r4")
    rows = {r["name"]: r for r in expman.list_runs(str(tmp_path), "sweep")}
    assert sorted(rows) == ["r0", "r1", "r2", "r3", "r5"]
    assert rows["r1"]["description"] == "edited in place after the catalog was written"
    assert rows["r2"]["params"] == {"lr": 9.5, "seed": 2}
    assert "truncated" in rows["r3"]["metrics_error"]
    assert "metrics_error" not in rows["r0"] or rows["r0"]["metrics_error"] is None
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert expman.main(["list", str(tmp_path), "-e", "sweep"]) == 0
    text = out.getvalue()
    assert "9.5" in text and "r4" not in text


# -- the runs table to a pipe, column by column, is the table row by row --------------------------

def odd_runs():
    """Run rows with every kind of value a column may hold."""
    rng = random.Random(7)
    values = [0.0, -0.0, 1.0, 1, True, False, float("nan"), math.inf, -math.inf, None, "text",
              12345678901234567890, 2.5e-12, [1, 2], {"a": 1}]
    runs = []
    for i in range(60):
        run = {"name": f"run{i}" if i % 7 else f"Other-{i}", "status": rng.choice(
                   ["finished", "failed", "running", "crashed", "interrupted"]),
               "started_at": rng.choice([None, "2026-11-01T00:00:00+00:00",
                                         f"2026-11-{1 + i % 28:02d}T10:00:{i % 60:02d}+00:00",
                                         "garbled"]),
               "duration_secs": rng.choice([None, 12.5, 3600, 0.0, 90061.0]),
               "last_step": rng.choice([None, 0, 199, 10 ** 9]),
               "rows": rng.choice([0, 200, 10 ** 6]),
               "summary": {k: rng.choice(values) for k in rng.sample(["m0", "val/acc", "loss"],
                                                                       rng.randint(0, 3))},
               "summary_min": rng.choice([None, {"loss": rng.choice(values)}]),
               "summary_max": rng.choice([None, {"val/acc": rng.choice(values)}]),
               "params": {k: rng.choice(values) for k in rng.sample(["lr", "seed", "m0", "tag"],
                                                                      rng.randint(0, 4))}}
        if i % 13 == 5:
            run.update(corrupt=True, error="unreadable")
        runs.append(run)
    return runs


@pytest.mark.parametrize("runs", [odd_runs(), odd_runs()[:1], [
    {"name": f"run{i:03d}", "status": "finished", "started_at": f"2026-11-01T00:{i // 60:02d}:"
     f"{i % 60:02d}+00:00", "duration_secs": 12.5, "last_step": 199, "rows": 200,
     "summary": {"m0": 0.5, "m1": i / 7}, "summary_min": None, "summary_max": None,
     "params": {"lr": 0.1, "seed": i}} for i in range(200)]])
def test_the_piped_runs_table_equals_the_table_made_row_by_row(runs):
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        expman._print_run_table(runs, False, None)
    rows, columns, _hidden = expman._runs_layout(runs, False, None)
    right = {3, 4} | {len(expman._RUN_FIXED) + i for i, c in enumerate(columns)
                      if c[2] != "param"}
    expected = expman._table(expman._RUN_FIXED + [c[0] for c in columns],
                             [row + [c[1][i] for c in columns] for i, row in enumerate(rows)],
                             right=right)
    assert out.getvalue().splitlines() == expected
    # and each cell as the formatters give it, one value at a time
    fixed = expman._plain_run_columns(runs)
    assert fixed[2] == ["unreadable run.yaml" if r.get("corrupt") else
                        expman._fmt_time(r["started_at"]) for r in runs]
    for header, cells, kind, _rank in expman._run_columns(runs):
        key = header.split(":", 1)[-1]
        if kind == "param":
            assert cells == [expman._param_text(r["params"].get(key, expman._MISSING))
                             for r in runs]
        elif kind == "metric" and header.split(":", 1)[0] not in ("min", "max"):
            assert cells == [expman._metric_text(r["summary"].get(key)) for r in runs]


def test_memo_texts_keeps_kinds_zeros_and_nans_apart():
    rng = random.Random(11)
    pools = [[0.0, -0.0, 1.0, 2.5, float("nan"), math.inf], [1, 2, 0], [True, False, 1, 0.0, 1.0],
             ["a", "", "b"], [None, 1.0, -0.0], [[1], {"a": 1}, 1], [expman._MISSING, 1, "x"]]
    for _ in range(500):
        values = [rng.choice(rng.choice(pools)) for _ in range(rng.randint(0, 12))]
        for fmt in (expman._metric_text, expman._param_text, repr):
            assert expman._memo_texts(values, fmt) == [fmt(v) for v in values], values


def test_start_times_format_as_strftime_did():
    import datetime as dt
    for text in ("2026-11-01T00:00:00+00:00", "2026-11-01T00:00:00.999999+00:00",
                 "2026-03-29T01:30:00.5+01:00", "1970-01-01T00:00:00Z", "0999-01-01T00:00:00",
                 "garbled", None):
        ts = expman._parse_iso(text)
        want = "-" if ts is None else \
            dt.datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S")
        assert expman._fmt_time(text) == want


# -- orders made without a key per row equal the keyed ones ---------------------------------------

def test_newest_first_without_a_parse_each_equals_the_parsed_order():
    rng = random.Random(5)
    for _ in range(1500):
        shape = rng.choice(["%04d-%02d-%02dT%02d:%02d:%02d+00:00",
                            "%04d-%02d-%02dT%02d:%02d:%02dZ",
                            "%04d-%02d-%02dT%02d:%02d:%02d.000001+05:30",
                            "%04d-%02d-%02dT%02d:%02d:%02d"])
        rows = []
        for _ in range(rng.randint(0, 10)):
            text = shape % (rng.choice([999, 2025, 2026]), rng.randint(1, 13), rng.randint(1, 28),
                            rng.randint(0, 23), rng.randint(0, 2), 0)
            rows.append({"name": rng.choice(["a", "b", "run1", "Run1"]) + str(rng.randint(0, 3)),
                         "started_at": None if rng.random() < 0.05 else text})
        fast = list(rows)
        expman._sort_newest_first(fast)
        assert fast == sorted(rows, key=expman._newest_first_key, reverse=True)


def test_name_order_without_natural_keys_equals_the_natural_order():
    rng = random.Random(9)
    for _ in range(500):
        kind = rng.random()
        if kind < 0.4:
            names = [f"run{rng.randint(0, 99999):05d}" for _ in range(rng.randint(0, 30))]
        elif kind < 0.6:
            names = [f"2026{rng.randint(1000, 1299)}_{rng.randint(0, 235959):06d}"
                     for _ in range(rng.randint(0, 30))]
        else:
            names = [rng.choice(["run", "Run", "r_", "x1y", ""]) + str(rng.randint(0, 120))
                     for _ in range(rng.randint(0, 30))]
        rows = [{"name": n} for n in names]
        want = sorted(rows, key=lambda r: expman._natural_key(str(r["name"])))
        assert expman._by_natural_name(rows) == want


def reference_extremes(rows):
    """_run_extremes as it was written value by value."""
    out = {}
    for prefix, field in (("m:", "summary"), ("min:", "summary_min"), ("max:", "summary_max")):
        columns = {}
        for row in rows:
            for key, value in (row.get(field) or {}).items():
                columns.setdefault(key, []).append(value)
        for key, column in columns.items():
            found = [v for v in map(expman._sort_number, column) if v is not None]
            found = [v for v in found if v == v and v not in (math.inf, -math.inf)]
            if found:
                out[prefix + key] = [min(found), max(found)]
    return out


def test_extremes_gathered_by_column_equal_the_value_by_value_ones():
    runs = odd_runs()
    for size in (0, 1, 5, len(runs)):
        got = expman._run_extremes(runs[:size])
        assert repr(got) == repr(reference_extremes(runs[:size]))
    assert expman._run_extremes([{"summary": {"a": "1.5", "b": "x", "c": True}}]) == \
        {"m:a": [1.5, 1.5]}


# -- the collector pause around a list build ------------------------------------------------------

def test_collector_pause_nests_across_threads_and_restores_the_collector():
    was = gc.isenabled()
    gc.enable()
    try:
        inside, release = threading.Event(), threading.Event()

        def other():
            with expman._collector_paused():
                inside.set()
                release.wait(10)

        thread = threading.Thread(target=other)
        with expman._collector_paused():
            assert not gc.isenabled()
            thread.start()
            assert inside.wait(10)
        assert not gc.isenabled()   # the other build is still under way
        release.set()
        thread.join(10)
        assert gc.isenabled()
        gc.disable()   # paused while off: stays off after
        with expman._collector_paused():
            pass
        assert not gc.isenabled()
    finally:
        (gc.enable if was else gc.disable)()


# -- a base file's parse is kept while the file is the same ----------------------------------------

def base_files(root, exp="sweep"):
    folder = root / exp / expman.CATALOG_DIR
    return sorted(p for p in folder.iterdir() if p.name.endswith(expman._CATALOG_BASE))


def test_a_kept_base_parse_is_used_only_while_the_file_is_unchanged(tmp_path):
    for i in range(expman._CATALOG_BASE_MIN + 2):   # enough runs for a listing to write a base
        path = tmp_path / "sweep" / f"r{i:03d}"
        path.mkdir(parents=True)
        (path / "run.yaml").write_text(yaml.safe_dump({
            "name": f"r{i:03d}", "status": "finished", "description": "first",
            "started_at": f"2026-01-01T00:{i // 60:02d}:{i % 60:02d}+00:00"}))
        (path / "config.yaml").write_text(yaml.safe_dump({"lr": i}))
    expman.list_runs(str(tmp_path), "sweep")
    (base,) = base_files(tmp_path)
    store, _ = expman._open_store(str(base))
    first = expman._parsed_base(store, str(base))
    assert first is expman._parsed_base(store, str(base))   # the same parse, not read again
    # the same name, other content (a hand-made copy): read again, its rows win
    entries = list(first.entries().values())
    for entry in entries:
        entry["row"]["description"] = "from the replaced base"
    data = expman._ColumnBase.encode(entries)
    st = base.stat()
    base.write_bytes(data)
    os.utime(base, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    again = expman._parsed_base(store, str(base))
    assert again is not first
    rows = expman.list_runs(str(tmp_path), "sweep")
    assert {r["description"] for r in rows} == {"from the replaced base"}
    base.unlink()
    assert expman._parsed_base(store, str(base)) is expman._MISSING


def test_kept_base_parses_stay_under_their_bound(tmp_path, monkeypatch):
    monkeypatch.setattr(expman, "_PARSED_BASES_BYTES", 3000)
    monkeypatch.setattr(expman, "_PARSED_BASES", expman.collections.OrderedDict())
    entry = {"name": "r", "v": expman.CATALOG_ROW_VERSION, "stamp": None, "config": None,
             "metrics": None, "row": {"name": "r", "status": "finished"}}
    store, _ = expman._open_store(str(tmp_path))
    paths = []
    for i in range(6):
        path = tmp_path / f"base-{i:020d}-1-00000000.cols"
        path.write_bytes(expman._ColumnBase.encode([dict(entry, name=f"r{i}")] * 3))
        paths.append(path)
        assert expman._parsed_base(store, str(path)) is not None
        kept = expman._PARSED_BASES
        assert sum(size for _stamp, size, _base in kept.values()) <= 3000
        assert list(kept)[-1] == store.display(str(path))   # the newest is kept
    big = tmp_path / "base-00000000000000000099-1-00000000.cols"
    big.write_bytes(expman._ColumnBase.encode([dict(entry, name=f"r{i}") for i in range(200)]))
    assert expman._parsed_base(store, str(big)) is not None
    assert store.display(str(big)) not in expman._PARSED_BASES   # over the bound alone


def test_a_list_build_runs_with_the_collector_paused_and_collects_once_after(tmp_path,
                                                                               monkeypatch):
    for i in range(3):
        make_run(tmp_path, f"r{i}")
    app = expman.make_app(str(tmp_path), live=False)
    api = app.config["expman.api"]
    seen, collected = [], []
    real_rows, real_prepare = api.run_rows, api.prepare_list
    monkeypatch.setattr(api, "run_rows", lambda exp: seen.append(gc.isenabled()) or
                        real_rows(exp))
    monkeypatch.setattr(api, "prepare_list", lambda runs: (seen.append(gc.isenabled()),
                                                           real_prepare(runs)))
    monkeypatch.setattr(expman, "RUNS_FIRST_WINDOW", 1)   # a list big enough to be prepared
    real_collect = gc.collect
    monkeypatch.setattr(gc, "collect", lambda *a: collected.append(gc.isenabled()) or
                        real_collect(*a))
    was = gc.isenabled()
    gc.enable()
    try:
        runs = api.scan_list("sweep", str(tmp_path / "sweep"), None)
        assert len(runs.rows) == 3
        assert seen == [False, False] and collected == [False]
        assert gc.isenabled()
    finally:
        (gc.enable if was else gc.disable)()
        app.config["expman.hub"].close()


# -- every run to a pipe, from the catalog base's columns: the table the rows make -------------

def _yaml_text(value):
    return yaml.safe_dump(value, sort_keys=False, allow_unicode=True)


def random_sweep(root, rng, names, exp="sweep"):
    """Runs written straight into the layout, with the mixes a base's columns must carry:
    keys some runs lack, keys in an order of a run's own, values of every kind (1 and 1.0
    and True apart, NaN, lists), a summary_min of None, a garbled run.yaml, a live run."""
    values = [0.0, -0.0, 1.0, 1, True, False, float("nan"), math.inf, None, "text", [1, 2],
              2.5e-12, 12345678901234567890, "it's"]
    for name in names:
        run = root / exp / name
        run.mkdir(parents=True, exist_ok=True)
        keys = rng.sample(["lr", "seed", "model.depth", "opt", "note"], rng.randint(0, 5))
        if rng.random() < 0.9:
            keys.sort()   # most runs share one order; the others have one of their own
        config = {k: rng.choice(values) if k != "seed" else rng.randrange(4) for k in keys}
        metrics = rng.sample(["loss", "val/acc", "m0", "lr"], rng.randint(0, 4))
        if rng.random() < 0.9:
            metrics.sort()
        meta = {"name": name, "status": rng.choice(["finished"] * 6 + ["failed", "running"]),
                "started_at": f"2026-11-{1 + rng.randrange(28):02d}T10:00:"
                              f"{rng.randrange(60):02d}+00:00",
                "duration_secs": rng.choice([12.5, 3600, 0.0]),
                "rows": rng.choice([0, 200]), "last_step": rng.choice([None, 199]),
                "summary": {k: rng.choice(values[:9]) for k in metrics}}
        if rng.random() < 0.8:
            meta["summary_min"] = {k: rng.choice([-1.0, 0.5]) for k in metrics}
            meta["summary_max"] = {k: rng.choice([2.0, 0.5]) for k in metrics}
        if meta["status"] == "running":
            meta["heartbeat_at"] = "2026-11-01T00:00:00+00:00"
        (run / "run.yaml").write_text(_yaml_text(meta) if rng.random() > 0.02 else "[garbled")
        (run / "config.yaml").write_text(_yaml_text(config))


def piped_tables(root, exp="sweep"):
    """(the table printed from a _RunTable of every run, the one from list_runs' rows, the
    table) : the first listing of the two is the table's, so both see one catalog."""
    store, exp_path = expman._open_store(str(root / exp))
    table = expman._scan_window(store, exp_path, expman.time.time(), True, table=True)[0]
    rows = expman.list_runs(str(root), exp)
    printed = []
    for runs in (table, rows):
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            expman._print_run_table(runs, False, None)
        printed.append(out.getvalue())
    return printed[0], printed[1], table


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_every_run_from_the_base_s_columns_prints_as_the_rows_do(tmp_path, seed):
    """`expman list -e` to a pipe prints every run from the catalog base's columns (no row
    decoded) and the few other runs' rows. Its table is the one list_runs' rows make, as
    the runs change: a base of every closed run, then runs edited in place, deleted, added
    (rows from files and from a part) and bases merged."""
    rng = random.Random(seed)
    names = [f"r{i:03d}" for i in range(150)]
    random_sweep(tmp_path, rng, names)
    expman.list_runs(str(tmp_path), "sweep")   # the catalog: a base of the closed runs
    got, expected, table = piped_tables(tmp_path)
    assert got == expected and got.count("\n") == 151
    (base, at), = table.bases   # every closed run in its own order, from the columns
    assert len(at) == len(base.names) - len(base.disordered) > 100 and base.disordered
    exp = tmp_path / "sweep"
    for name in rng.sample(names, 5):   # edited in place: the folder's mtime stays
        config = exp / name / "config.yaml"
        config.write_text(_yaml_text({**(yaml.safe_load(config.read_text()) or {}),
                                      "lr": 0.25, "extra": 7}))
    for name in rng.sample(names, 5):
        shutil.rmtree(exp / name, ignore_errors=True)
    random_sweep(tmp_path, rng, [f"new{i}" for i in range(5)])
    for _ in range(2):   # the new runs from their files, then from the part written
        got, expected, table = piped_tables(tmp_path)
        assert got == expected and "new4" in got
    for _ in range(expman.CATALOG_MAX_PARTS + 1):   # parts pile up: merged into a new base
        random_sweep(tmp_path, rng, [f"more{rng.randrange(10 ** 6)}"])
        got, expected, table = piped_tables(tmp_path)
        assert got == expected
    assert table.bases and sum(len(at) for _b, at in table.bases) > 100


def test_a_run_s_own_key_order_comes_from_its_row(tmp_path):
    """A run whose params come in an order of its own is marked in the base, and the table
    takes it from its row: with it newest, its order is the table's."""
    rng = random.Random(5)
    names = [f"r{i:03d}" for i in range(80)]
    random_sweep(tmp_path, rng, names)
    for i, name in enumerate(names):
        (tmp_path / "sweep" / name / "run.yaml").write_text(_yaml_text({
            "name": name, "status": "finished", "rows": 1,
            "started_at": f"2026-11-01T10:{i // 60:02d}:{i % 60:02d}+00:00"}))
        (tmp_path / "sweep" / name / "config.yaml").write_text(
            "b: 1\na: 2\n" if name == names[-1] else f"a: {i}\nb: {i % 3}\n")
    expman.list_runs(str(tmp_path), "sweep")
    got, expected, table = piped_tables(tmp_path)
    assert got == expected and got.splitlines()[0].split()[-2:] == ["b", "a"]
    assert [row["name"] for row in table.rows] == [names[-1]]
    assert sum(len(at) for _b, at in table.bases) == len(names) - 1


def _random_entries(rng, n):
    values = [0.0, -0.0, 1.0, 1, True, None, "text", [1, 2], {"a": 1}, 2.5e-12, "it's"]
    entries = []
    for i in range(n):
        row = {"name": f"r{i}", "status": rng.choice(["finished", "failed"]),
               "started_at": f"2026-11-01T00:00:{i % 60:02d}+00:00", "rows": i,
               "duration_secs": rng.choice([None, 1.5]), "last_step": rng.choice([None, i])}
        for field in expman._CATALOG_NESTED:
            shape = rng.random()
            if shape < 0.05:
                continue   # the field absent (an older writer's row)
            if shape < 0.1:
                row[field] = None
                continue
            keys = rng.sample(["lr", "seed", "a.b", "tab\tkey", "é", "loss", "x"],
                              rng.randint(0, 5))
            if rng.random() < 0.85:
                keys.sort()
            row[field] = {k: rng.choice(values) for k in keys}
        entries.append({"name": row["name"], "v": expman.CATALOG_ROW_VERSION,
                        "stamp": [i, 1.5], "config": [i, 2.5], "metrics": None, "row": row})
    return entries


@pytest.mark.parametrize("seed", range(6))
def test_a_slim_base_gives_back_the_rows_it_was_made_of(seed):
    """A base keeps each row's mappings in its columns and not in the row: every row is
    made back whole (each key in its row's order; a field that was None, absent or in an
    order of its own as it was), one at a time and all at once."""
    import json
    rng = random.Random(seed)
    entries = _random_entries(rng, rng.choice([1, 5, 200]))
    data = expman._ColumnBase.encode(entries)
    base = expman._ColumnBase.parse(data)
    assert base.slim and set(base.nested) == set(expman._CATALOG_NESTED)

    def text(entry):   # the key order counts too
        return json.dumps(entry, default=str)
    everything = base.entries()
    for i, entry in enumerate(entries):
        assert text(base.entry(i)) == text(entry)
        assert text(everything[entry["name"]]) == text(entry)
    assert list(everything) == [e["name"] for e in entries]
    # the mappings are in the columns, not twice in the file: a row in the common order
    # holds a 0 where each was (or its None, or nothing where it had none)
    assert len(base.disordered) < len(entries) // 2 + 1
    for i, line in enumerate(base.rows):
        if i not in base.disordered:
            row = json.loads(line)
            assert all(row.get(f, 0) in (0, None) for f in expman._CATALOG_NESTED), row


def test_merged_order_keeps_subsets_of_one_order_in_it():
    rng = random.Random(3)
    for _ in range(300):
        order = rng.sample("abcdefghij", 10)
        seqs = [[k for k in order if rng.random() < 0.4] for _ in range(rng.randint(1, 8))]
        merged = expman._merged_order(seqs)
        assert sorted(merged) == sorted({k for s in seqs for k in s})
        place = {k: i for i, k in enumerate(merged)}
        for s in seqs:   # every sequence in the merged order
            assert [place[k] for k in s] == sorted(place[k] for k in s), (seqs, merged)


def test_a_base_of_whole_rows_is_still_read():
    """A base written before the columns carried the mappings (whole rows, the older
    format name) reads as it did: its rows as they are, and no _RunTable columns."""
    entries = _random_entries(random.Random(9), 30)
    names = [e["name"] for e in entries]
    rows = [e["row"] for e in entries]
    encode = expman._catalog_json().encode
    lines = []
    for field in ("status", "started_at", "finished_at", "heartbeat_at", "project"):
        values = [row.get(field, expman._MISSING) for row in rows]
        at = [i for i, v in enumerate(values) if v is not expman._MISSING]
        lines.append(encode([at, [values[i] for i in at]]))
    lines += map(encode, rows)
    body = "\n".join(lines).encode()
    header = {"format": "expman-catalog-columns", "v": expman.CATALOG_ROW_VERSION,
              "names": names, "stamp": [e["stamp"] for e in entries],
              "config": [e["config"] for e in entries], "metrics": [None] * 30,
              "columns": ["status", "started_at", "finished_at", "heartbeat_at", "project"],
              "crc32": expman.zlib.crc32(body)}
    base = expman._ColumnBase.parse(expman.json.dumps(header).encode() + b"\n" + body)
    assert base is not None and not base.slim and not base.columnar()
    assert [base.entry(i)["row"] for i in range(30)] == rows
    assert [e["row"] for e in base.entries().values()] == rows


def test_values_differ_by_kind_equals_the_value_by_value_answer():
    """Whether a param tells runs apart, decided from the kinds of its values (two kinds of
    JSON scalar never print alike; ints, texts and bools by a set), is what comparing each
    value's JSON text says."""
    import json

    def by_text(values):
        texts = {json.dumps(None if v is expman._MISSING else v, sort_keys=True, default=str)
                 for v in values}
        return len(texts) > 1
    rng = random.Random(4)
    pools = [[1, 2], [1, 1.0], [True, 1], [0.0, -0.0], [float("nan")] * 2, ["1", 1],
             [None, expman._MISSING], [expman._MISSING, 0], ["a", "a"], [[1], [1]],
             [{"a": 1}, {"a": 1.0}], [False, False], [3, 3, 3], [2.5, 2.5]]
    for _ in range(2000):
        pool = rng.choice(pools) + (rng.choice(pools) if rng.random() < 0.3 else [])
        values = [rng.choice(pool) for _ in range(rng.randint(1, 6))]
        assert expman._values_differ(values) == by_text(values), values


@pytest.mark.parametrize("zone", ["UTC", "America/New_York", "Asia/Kolkata",
                                  "Australia/Lord_Howe", "Europe/Berlin"])
def test_a_column_of_start_times_formats_as_each_time_alone(zone, monkeypatch):
    """_fmt_times cuts each text from its hour's local text: in a zone an hour or a half
    hour off, across the days clocks change, and with garbled texts mixed in, every cell is
    what _fmt_time makes of that time alone."""
    import time as time_module
    monkeypatch.setenv("TZ", zone)
    time_module.tzset()
    try:
        rng = random.Random(zone)
        cut = 0
        for _ in range(40):
            texts = []
            offsets = rng.sample(["+00:00", "-05:00", "+05:30", "+01:00"], rng.randint(1, 2))
            for _ in range(rng.randint(1, 300)):
                day = rng.choice(["2026-03-08", "2026-03-29", "2026-10-25", "2026-11-01",
                                  "2026-04-05", "2026-10-04", "2026-06-15"])
                texts.append(f"{day}T{rng.randrange(24):02d}:{rng.randrange(60):02d}:"
                             f"{rng.randrange(60):02d}{rng.choice(offsets)}")
            if rng.random() < 0.3:
                texts[rng.randrange(len(texts))] = rng.choice(
                    ["2026-11-01T10:61:00+00:00", "2026-13-01T10:00:00+00:00", "garbled",
                     None, "2026-11-01T10:00:60+00:00", "2026-11-01 10:00:00+00:00"])
            real = expman._memo_texts
            monkeypatch.setattr(expman, "_memo_texts", lambda *a: ["one by one"])
            fast = expman._fmt_times(texts)
            monkeypatch.setattr(expman, "_memo_texts", real)
            cut += fast != ["one by one"]
            assert expman._fmt_times(texts) == [expman._fmt_time(t) for t in texts], texts
        # columns are cut from their hours where the clocks are whole hours apart
        # (Lord Howe's winter clock is half an hour off every offset here: never cut)
        assert cut >= {"Asia/Kolkata": 1, "Australia/Lord_Howe": 0}.get(zone, 5)
    finally:
        monkeypatch.undo()
        time_module.tzset()
