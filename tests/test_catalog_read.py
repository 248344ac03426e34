"""The read side of the run catalog at scale: what a listing of many closed runs does with the
catalog's rows (checked against the runs with the same stats, links told apart by them, sorted
and printed column by column) gives exactly what the row-by-row reading gave."""
import io
import math
import os
import random
import contextlib
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
