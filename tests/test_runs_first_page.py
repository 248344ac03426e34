"""The runs table's first page at scale: the first query of an experiment (newest first, a
page from the top) is answered from a window of the newest runs (_scan_window with a limit)
before the list of every run is made, and that list is then made beside it (issue 13: a
10,000-run table painted in 1.78 s, most of it the list). Against a real Waitress server,
with the list's scan held at a gate to show what answers without it, and in Chromium.
"""
import os
import threading
import urllib.parse

import yaml

import expman
from _util import Page, decode_columns, get_json as get, serving, wait_for

RUNS = 700
BASE_T = 1_760_000_000   # run i started at BASE_T + 60 i (unless tied): newest is the highest i
FIRST = "/api/experiments/e/runs?format=columns&sort=started&order=desc&limit=200"


def _name(i):
    return f"r{i:05d}"


def _write_run(exp_dir, i, started=None):
    path = os.path.join(exp_dir, _name(i))
    os.makedirs(path, exist_ok=True)
    started = started if started is not None else BASE_T + 60 * i
    at = expman._dt.datetime.fromtimestamp(started, expman._dt.timezone.utc).isoformat()
    meta = {"name": _name(i), "experiment": "e", "status": "finished", "started_at": at,
            "finished_at": at, "duration_secs": 10.0, "hostname": "h", "pid": 1, "rows": 5,
            "last_step": 4, "tags": ["t"], "summary": {"loss": 1.0 + (i * 7919 % 500) / 100}}
    config = {"seed": i, "lr": [0.1, 0.01][i % 2]}
    if i < 50:
        config["old_only"] = i   # a param only the oldest runs have: not on the first page
    with open(os.path.join(path, "config.yaml"), "w") as f:
        yaml.safe_dump(config, f)
    with open(os.path.join(path, "run.yaml.tmp"), "w") as f:
        yaml.safe_dump(meta, f, sort_keys=False)
    os.replace(os.path.join(path, "run.yaml.tmp"), os.path.join(path, "run.yaml"))


def _make(tmp_path, started=None):
    """An experiment "e" of RUNS closed runs, its catalog made (as any listing leaves it)."""
    root = tmp_path / "experiments"
    for i in range(RUNS):
        _write_run(str(root / "e"), i, (started or {}).get(i))
    expman.list_runs(root, "e")
    return root


def _order(rows, key, descending):
    """The table's order: values in order, ties by name, empty values last."""
    full = sorted((r for r in rows if key(r) is not None), key=lambda r: r["name"])
    full.sort(key=key, reverse=descending)
    return [r["name"] for r in full] + sorted(r["name"] for r in rows if key(r) is None)


class HeldScan:
    """_scan_runs, which makes the list of every run, held at a gate: the real scan runs once
    the gate opens (or, with after=True, runs at once and its answer waits at the gate)."""

    def __init__(self, monkeypatch, after=False):
        self.gate, self.scanning = threading.Event(), threading.Event()
        self.scanned = threading.Event()
        real = expman._scan_runs

        def held(*args, **kwargs):
            self.scanning.set()
            if after:
                rows = real(*args, **kwargs)
                self.scanned.set()
                assert self.gate.wait(60), "the test never opened the gate"
                return rows
            assert self.gate.wait(60), "the test never opened the gate"
            return real(*args, **kwargs)
        monkeypatch.setattr(expman, "_scan_runs", held)


def _plain(srv):
    """Every run as the plain list gives it (a scan of its own, no kept list)."""
    return get(srv, "/api/experiments/e/runs")[0]["runs"]


def _asking(srv, path):
    """A GET in a thread: (thread, {"answer": ...} once it answers)."""
    out = {}
    thread = threading.Thread(target=lambda: out.update(answer=get(srv, path)[0]), daemon=True)
    thread.start()
    return thread, out


def test_first_page_answers_before_the_list_and_is_its_first_page(tmp_path, monkeypatch):
    root = _make(tmp_path)
    held = HeldScan(monkeypatch)
    with serving(root, live=False) as srv:
        first, _ = get(srv, FIRST)               # the list's scan is held: this cannot wait
        assert first["partial"] is True
        assert (first["total"], first["matched"], first["offset"]) == (RUNS, RUNS, 0)
        rows = decode_columns(first)
        assert [r["name"] for r in rows] == [_name(i) for i in range(RUNS - 1, RUNS - 201, -1)]
        assert rows[0]["params"] == {"seed": RUNS - 1, "lr": 0.01}
        assert "old_only" not in first["param_keys"] and first["extremes"] == {}
        assert held.scanning.wait(30), "the list was not made beside the first page"
        held.gate.set()
        counts, _ = get(srv, FIRST.replace("limit=200", "limit=0"))
        assert "partial" not in counts and counts["total"] == RUNS
        assert counts["param_keys"] == ["lr", "old_only", "seed"]
        losses = [1.0 + (i * 7919 % 500) / 100 for i in range(RUNS)]
        assert counts["extremes"]["m:loss"] == [min(losses), max(losses)]
        again, _ = get(srv, FIRST)               # from the list now: the same rows
        assert "partial" not in again
        assert decode_columns(again) == rows
        plain = _plain(srv)
        assert [r["name"] for r in plain[:200]] == [r["name"] for r in rows]
        assert {r["name"]: r for r in plain[:200]} == {r["name"]: r for r in rows}


def test_a_page_lower_down_and_other_queries_wait_for_the_list(tmp_path, monkeypatch):
    """A page from the top of the newest-first order (up to RUNS_FIRST_WINDOW rows) is a
    window too; a sort, a filter, a group and names= asked while the list is being made
    wait for it, and answer what the list says."""
    root = _make(tmp_path)
    held = HeldScan(monkeypatch)
    with serving(root, live=False) as srv:
        assert get(srv, FIRST)[0]["partial"] is True
        second, _ = get(srv, FIRST + "&offset=200")
        assert second["partial"] is True and second["offset"] == 200
        assert held.scanning.wait(30)
        asked = {
            "sort": "/api/experiments/e/runs?format=columns&sort=p:seed&order=asc&limit=50",
            "sort desc": "/api/experiments/e/runs?format=columns&sort=m:loss&order=desc"
                         "&limit=100",
            "filter": FIRST + "&where=" + urllib.parse.quote("seed<30 OR seed>=690"),
            "group": "/api/experiments/e/runs?group=p:lr&sort=name",
            "names": FIRST + "&names=r00001,r00699",
        }
        pending = {label: _asking(srv, path) for label, path in asked.items()}
        held.gate.set()
        for thread, _out in pending.values():
            thread.join(60)
        got = {label: out["answer"] for label, (_t, out) in pending.items()}
        plain = _plain(srv)
        newest = _order(plain, lambda r: expman._parse_iso(r["started_at"]), True)
        assert [r["name"] for r in decode_columns(second)] == newest[200:400]
        assert [r["name"] for r in decode_columns(got["sort"])] == \
            _order(plain, lambda r: r["params"]["seed"], False)[:50]
        assert [r["name"] for r in decode_columns(got["sort desc"])] == \
            _order(plain, lambda r: r["summary"]["loss"], True)[:100]
        want = [n for n in newest if int(n[1:]) < 30 or int(n[1:]) >= 690]
        assert [r["name"] for r in decode_columns(got["filter"])] == want
        assert got["filter"]["matched"] == 40 and got["filter"]["total"] == RUNS
        assert [g["value"] for g in got["group"]["groups"]] == [0.01, 0.1]
        assert [g["count"] for g in got["group"]["groups"]] == [RUNS // 2, RUNS // 2]
        assert [r["name"] for r in decode_columns(got["names"])] == ["r00699", "r00001"]
        for answer in got.values():
            assert "partial" not in answer


def test_start_times_tied_across_the_window_edge_are_answered_by_the_list(tmp_path):
    """The window is the newest runs by the catalog's start times; the table breaks ties by
    name. Tied runs inside the window keep the table's order; ties across its edge (here runs
    480-520 at one time, the edge at the 200th newest) are left to the list."""
    tied = {i: BASE_T + 60 * 500 for i in range(480, 521)}
    tied.update({i: BASE_T + 60 * 650 for i in range(640, 661)})
    root = _make(tmp_path, tied)
    with serving(root, live=False) as srv:   # a fresh server: no list made yet
        across, _ = get(srv, FIRST)
        assert "partial" not in across                           # the list answered
    with serving(root, live=False) as srv:
        inside, _ = get(srv, FIRST.replace("limit=200", "limit=100"))
        assert inside["partial"] is True
        plain = _plain(srv)
        newest = _order(plain, lambda r: expman._parse_iso(r["started_at"]), True)
        assert [r["name"] for r in decode_columns(inside)] == newest[:100]
        assert [r["name"] for r in decode_columns(across)] == newest[:200]
        assert newest[:3] == ["r00699", "r00698", "r00697"]
        assert newest[38:40] == ["r00661", "r00640"]             # the tie, by name


def test_a_run_added_while_the_list_is_made_is_counted(tmp_path, monkeypatch):
    """A run that comes while the list is being made (after its scan listed the folder) is in
    the next answer: the first page asked again (a window listing the folder afresh), and
    every query once the list is made (it is kept with the folder's stamp from before)."""
    root = _make(tmp_path)
    held = HeldScan(monkeypatch, after=True)
    with serving(root, live=False) as srv:
        assert get(srv, FIRST)[0]["total"] == RUNS
        assert held.scanned.wait(30)                             # listed and read, held
        _write_run(str(root / "e"), RUNS)                        # the newest run
        again, _ = get(srv, FIRST)
        assert again["partial"] is True and again["total"] == RUNS + 1
        assert decode_columns(again)[0]["name"] == _name(RUNS)
        held.gate.set()
        wait_for(lambda: not srv.app.config["expman.api"].building, timeout=30,
                 message="the list was never made")
        counts, _ = get(srv, FIRST.replace("limit=200", "limit=0"))
        assert counts["total"] == RUNS + 1 and "partial" not in counts
        by_seed, _ = get(srv, "/api/experiments/e/runs?format=columns&sort=p:seed"
                              "&order=desc&limit=3")
        assert [r["name"] for r in decode_columns(by_seed)] == [_name(RUNS), _name(RUNS - 1),
                                                                 _name(RUNS - 2)]


def test_the_page_shows_the_first_page_while_the_list_is_made(tmp_path, monkeypatch, browser):
    """In Chromium: the first rows and the exact count are on screen while the list of every
    run is held; a sort clicked then shows the right order once the list is made, and the
    column chooser then offers a param only runs beyond the first page have."""
    root = _make(tmp_path)
    held = HeldScan(monkeypatch)
    with serving(root) as srv:
        ui = Page(browser)
        p = ui.page
        try:
            answered = []
            p.on("response", lambda r: "limit=0" in r.url and answered.append(r.status))
            p.goto(srv.url + "/#exp=e")
            p.locator(f"#runs-table tbody tr[data-run='{_name(RUNS - 1)}']").wait_for()
            assert not held.gate.is_set()
            assert p.text_content("#runs-count").startswith(f"{RUNS} runs")
            names = p.eval_on_selector_all("#runs-table tbody tr[data-run]",
                                           "trs => trs.map(t => t.getAttribute('data-run'))")
            assert names[:5] == [_name(i) for i in range(RUNS - 1, RUNS - 6, -1)]
            p.locator("#columns-button").click()
            assert p.locator("#columns-popover label[data-col='p:seed']").count() == 1
            assert p.locator("#columns-popover label[data-col='p:old_only']").count() == 0
            p.locator("#columns-button").click()
            p.locator("th[data-col='p:seed']").click()           # asked while the list is held
            held.gate.set()
            first = "#runs-table tbody tr[data-run]:first-child"
            wait_for(lambda: p.get_attribute(first, "data-run") == _name(0), timeout=30,
                     message="the sort never showed")
            names = p.eval_on_selector_all("#runs-table tbody tr[data-run]",
                                           "trs => trs.map(t => t.getAttribute('data-run'))")
            assert names[:5] == [_name(i) for i in range(5)]
            wait_for(lambda: answered == [200], timeout=30, message=str(answered))
            p.locator("#columns-button").click()
            wait_for(lambda: p.locator("#columns-popover label[data-col='p:old_only']")
                     .count() == 1, timeout=10, message="the keys of every run never came")
        finally:
            ui.check()



def test_the_experiments_list_answers_before_the_run_list_and_equals_it(tmp_path, monkeypatch):
    """The sidebar's row of an experiment without a kept list comes from the catalog's
    columns (as `expman list` makes it), not from a scan of every run: with that scan held,
    /api/experiments still answers, with the counts the list gives once it is made. A run
    that is live (read from its files, not the catalog) is counted as running in both."""
    root = _make(tmp_path)
    live = expman.Experiment("e", run_name="zz-live", base_dir=str(root))
    try:
        held = HeldScan(monkeypatch)
        with serving(root, live=False) as srv:
            quick, _ = get(srv, "/api/experiments")     # the list's scan is held: no wait
            (row,) = quick["experiments"]
            assert row["name"] == "e" and row["runs"] == RUNS + 1
            assert row["status_counts"] == {"finished": RUNS, "running": 1}
            assert held.scanning.wait(30), "the list was not made beside the sidebar"
            held.gate.set()
            counts, _ = get(srv, FIRST.replace("limit=200", "limit=0"))   # waits for the list
            assert "partial" not in counts and counts["total"] == RUNS + 1
            listed, _ = get(srv, "/api/experiments")    # from the list now
            (from_list,) = listed["experiments"]
            moving = ("last_activity",)   # the live run's heartbeat moves it
            assert {k: v for k, v in from_list.items() if k not in moving} == \
                {k: v for k, v in row.items() if k not in moving}
            assert expman._parse_iso(from_list["last_activity"]) >= \
                expman._parse_iso(row["last_activity"])
    finally:
        live.close()
