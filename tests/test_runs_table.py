"""The paged runs API and the runs table on a 2,000-run experiment: the query form of
/api/experiments/<exp>/runs (sort, order, offset, limit, names, format=columns) against the
plain full list, and the page in headless Chromium (paging by scrolling, server-side sort,
filter, selection across pages, live updates while scrolled) against a real Waitress server.
"""
import json
import os
import re
import urllib.parse
import time
import urllib.request

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

import expman
from _util import Page, decode_columns, get_json as get, serving, wait_for

RUNS = 2000
BASE_T = 1_760_000_000   # run i started BASE_T + 60 i: newest first is the highest i


def _name(i):
    return f"r{i:05d}"


def _acc(i):
    """A metric with ties (250 distinct values) and gaps (every 97th run has none)."""
    return None if i % 97 == 0 else (i * 7919 % 250) / 250


def _write_run(exp_dir, i, status=None, table=None):
    path = os.path.join(exp_dir, _name(i))
    os.makedirs(path, exist_ok=True)
    started = expman._dt.datetime.fromtimestamp(BASE_T + 60 * i, expman._dt.timezone.utc)
    summary = {"loss": 1.0 / (i + 1)}
    if _acc(i) is not None:
        summary["acc"] = _acc(i)
    meta = {"name": _name(i), "experiment": os.path.basename(exp_dir),
            "status": status or ("failed" if i % 50 == 49 else "finished"),
            "started_at": started.isoformat(), "finished_at": started.isoformat(),
            "duration_secs": 10.0 + i % 7, "hostname": "h", "pid": 1, "rows": 5,
            "last_step": 4, "tags": ["odd"] if i % 2 else ["even"], "summary": summary,
            "summary_min": {"loss": 0.5 / (i + 1)}, "summary_max": {"loss": float(i % 13)}}
    with open(os.path.join(path, "run.yaml.tmp"), "w") as f:
        yaml.safe_dump(meta, f, sort_keys=False)
    config = {"lr": [0.1, 0.01, 0.001, 0.0001][i % 4], "seed": i,
              "opt": ["adam", "sgd", "Adamw"][i % 3]}
    if i % 10 == 0:
        config["extra"] = i   # a param only some runs have: a sparse column
    with open(os.path.join(path, "config.yaml"), "w") as f:
        yaml.safe_dump(config, f)
    if table is not None:
        pq.write_table(table, os.path.join(path, "metrics.parquet"))
    os.replace(os.path.join(path, "run.yaml.tmp"), os.path.join(path, "run.yaml"))


def _make_experiment(root):
    exp_dir = os.path.join(root, "big")
    table = pa.table({"step": pa.array(range(5), pa.int64()),
                      "timestamp": pa.array([BASE_T * 10**6 + s for s in range(5)],
                                            pa.timestamp("us", tz="UTC")),
                      "loss": [1.0, 0.8, 0.6, 0.5, 0.4]})
    for i in range(RUNS):
        _write_run(exp_dir, i, table=table)
    return exp_dir


@pytest.fixture(scope="module")
def big_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs_table") / "experiments"
    root.mkdir()
    _make_experiment(str(root))
    return root


@pytest.fixture(scope="module")
def api_server(big_root):
    with serving(big_root, live=False) as srv:
        yield srv


def expected_order(rows, key, descending):
    """The table's order written out plainly: values (numbers, then text) in order, empty
    values last either way, ties by run name (names here are zero-padded: plain order)."""
    full = [r for r in rows if key(r) is not None]
    empty = sorted((r for r in rows if key(r) is None), key=lambda r: r["name"])
    full.sort(key=lambda r: r["name"])
    full.sort(key=lambda r: key(r), reverse=descending)
    return [r["name"] for r in full + empty]


# -- the API ---------------------------------------------------------------------------------

def test_plain_answer_is_unchanged_and_queries_page_the_same_rows(api_server):
    full, full_bytes = get(api_server, "/api/experiments/big/runs")
    assert set(full) == {"experiment", "runs"}          # old clients see what they saw
    assert len(full["runs"]) == RUNS
    by_name = {r["name"]: r for r in full["runs"]}

    cases = [("name", "asc", lambda r: r["name"]),
             ("started", "desc", lambda r: r["started_at"]),
             ("p:seed", "asc", lambda r: r["params"]["seed"]),
             ("m:acc", "desc", lambda r: r["summary"].get("acc")),
             ("m:acc", "asc", lambda r: r["summary"].get("acc")),
             ("p:extra", "desc", lambda r: r["params"].get("extra")),
             ("duration", "asc", lambda r: r["duration_secs"]),
             ("min:loss", "asc", lambda r: r["summary_min"]["loss"]),
             ("max:loss", "desc", lambda r: r["summary_max"]["loss"])]
    for sort, order, key in cases:
        want = expected_order(full["runs"], key, order == "desc")
        got, offset = [], 0
        while offset < RUNS:
            page, _ = get(api_server, f"/api/experiments/big/runs?sort={sort}&order={order}"
                                      f"&offset={offset}&limit=300")
            assert (page["total"], page["matched"], page["offset"]) == (RUNS, RUNS, offset)
            got += page["runs"]
            offset += 300
        assert [r["name"] for r in got] == want, sort
        assert all(r == by_name[r["name"]] for r in got)   # the same rows, field for field

    # text sorts without case, numbers before text: opt has adam < Adamw < sgd
    page, _ = get(api_server, "/api/experiments/big/runs?sort=p:opt&limit=2000")
    opts = [r["params"]["opt"] for r in page["runs"]]
    assert opts == sorted(opts, key=lambda o: ["adam", "Adamw", "sgd"].index(o))
    assert page["param_keys"] == ["extra", "lr", "opt", "seed"]
    assert page["metric_keys"] == ["acc", "loss"]
    assert page["order"] == "asc"   # a param's default order, as the table's header has it


def test_columnar_form_is_the_rows_and_much_smaller(api_server):
    full, full_bytes = get(api_server, "/api/experiments/big/runs")
    cols, cols_bytes = get(api_server, "/api/experiments/big/runs?format=columns&sort=name")
    assert cols["format"] == "columns" and cols["count"] == RUNS
    assert cols["columns"]["params"]["fields"]["extra"]["sparse"] == list(range(0, RUNS, 10))
    assert "sparse" in cols["columns"]["summary"]["fields"]["acc"]
    assert decode_columns(cols) == sorted(full["runs"], key=lambda r: r["name"])
    assert cols_bytes < 0.6 * full_bytes, (cols_bytes, full_bytes)
    window, window_bytes = get(api_server, "/api/experiments/big/runs?format=columns&limit=200")
    assert decode_columns(window) == full["runs"][:200]   # started, newest first: the default
    assert window_bytes < 0.06 * full_bytes, (window_bytes, full_bytes)   # 10 % of the rows


def test_where_filters_the_query_as_it_filters_the_plain_list(api_server):
    for where in ("lr=0.01 status=failed", "m:acc>0.9 OR tag:even", "p:extra>=1000"):
        q = urllib.parse.quote(where)
        plain, _ = get(api_server, f"/api/experiments/big/runs?where={q}")
        want = expected_order(plain["runs"], lambda r: r["params"]["seed"], True)
        page, _ = get(api_server, f"/api/experiments/big/runs?where={q}&sort=p:seed"
                                  f"&order=desc&format=columns&limit=50&offset=10")
        assert (page["total"], page["matched"]) == (RUNS, len(plain["runs"]))
        assert [r["name"] for r in decode_columns(page)] == want[10:60], where
    err, _ = get(api_server, "/api/experiments/big/runs?where=lr%3E&limit=5", expect=400)
    assert "position" in err


def test_names_picks_runs_and_bad_queries_are_400(api_server):
    got, _ = get(api_server, "/api/experiments/big/runs?names=r00007,r01999,nope&sort=name")
    assert [r["name"] for r in got["runs"]] == ["r00007", "r01999"]
    assert (got["total"], got["matched"]) == (RUNS, 2)
    for query in ("sort=bogus", "sort=p:", "order=up", "format=xml", "offset=-1", "limit=x"):
        err, _ = get(api_server, "/api/experiments/big/runs?" + query, expect=400)
        assert err["error"]
    get(api_server, "/api/experiments/nope/runs?limit=5", expect=404)


def test_a_new_run_is_counted_at_once(tmp_path):
    """The list a query reuses is dropped when a run directory comes or goes."""
    root = tmp_path / "experiments"
    exp_dir = str(root / "small")
    for i in range(3):
        _write_run(exp_dir, i)
    with serving(root, live=False) as srv:
        first, _ = get(srv, "/api/experiments/small/runs?limit=1")
        assert first["total"] == 3 and first["runs"][0]["name"] == "r00002"
        _write_run(exp_dir, 3)
        again, _ = get(srv, "/api/experiments/small/runs?limit=1")
        assert again["total"] == 4 and again["runs"][0]["name"] == "r00003"


def test_experiments_list_and_runs_query_share_one_scan(tmp_path, monkeypatch):
    """The page asks for the experiments and the first runs page at once: the sidebar's rows
    come from the catalog's columns and each experiment's list of every run is made once,
    beside them (one scan each), which the runs query and the sidebar's next question reuse
    while nothing changed; a new run, a run that closes and an edited experiment.yaml show
    at once."""
    scans = []
    scan = expman._scan_runs

    def counted(store, exp_path, *args, **kwargs):   # the real scan, counted
        scans.append(os.path.basename(exp_path))
        return scan(store, exp_path, *args, **kwargs)
    monkeypatch.setattr(expman, "_scan_runs", counted)
    root = tmp_path / "experiments"
    for i in range(30):
        _write_run(str(root / "small"), i)
    _write_run(str(root / "other"), 0)
    with serving(root, live=False) as srv:
        exps, _ = get(srv, "/api/experiments")
        assert [(e["name"], e["runs"]) for e in exps["experiments"]] == [("other", 1),
                                                                         ("small", 30)]
        assert exps["experiments"][1]["status_counts"] == {"finished": 30 - 30 // 50}
        wait_for(lambda: len(scans) >= 2, 30, message="the lists were not made beside")
        assert sorted(scans) == ["other", "small"]
        page, _ = get(srv, "/api/experiments/small/runs?format=columns&limit=5")
        assert page["total"] == 30 and decode_columns(page)[0]["name"] == "r00029"
        again, _ = get(srv, "/api/experiments")
        assert again == exps
        assert sorted(scans) == ["other", "small"], "a second scan for the same answer"

        _write_run(str(root / "small"), 30)                    # a new run folder
        got, _ = get(srv, "/api/experiments")
        assert got["experiments"][1]["runs"] == 31
        with expman.Experiment("small", base_dir=str(root), run_name="live",
                               capture_git=False) as run:   # a live run: counted as running
            run.log_metrics({"loss": 1.0}, step=0)
            got, _ = get(srv, "/api/experiments")
            assert got["experiments"][1]["status_counts"].get("running") == 1
        got, _ = get(srv, "/api/experiments")                   # closed: at once
        assert got["experiments"][1]["status_counts"] == {"finished": 32}
        assert got["experiments"][1]["runs"] == 32
        (root / "other" / "experiment.yaml").write_text("display_name: Other one\n")
        got, _ = get(srv, "/api/experiments")
        assert got["experiments"][0]["display_name"] == "Other one"


def test_an_old_list_answers_at_once_and_is_made_again_beside(tmp_path, monkeypatch):
    """Past RUNS_LIST_SECS a list of closed runs whose folders did not change still answers
    at once (the page does not wait for a scan of every run), and is made again in the
    background: an edit in place made by another process shows a moment later."""
    import threading
    monkeypatch.setattr(expman, "RUNS_LIST_SECS", 0.2)
    gate, scanning = threading.Event(), threading.Event()
    gate.set()
    scan = expman._scan_runs

    def gated(*args, **kwargs):   # the real scan, held while the test closes the gate
        scanning.set()
        assert gate.wait(30)
        return scan(*args, **kwargs)
    monkeypatch.setattr(expman, "_scan_runs", gated)
    root = tmp_path / "experiments"
    for i in range(20):
        _write_run(str(root / "small"), i)
    with serving(root, live=False) as srv:
        url = "/api/experiments/small/runs?format=columns&sort=name&where=tag:edited"
        first, _ = get(srv, url)
        made = time.monotonic()
        assert first["matched"] == 0
        run = root / "small" / _name(3)
        meta = yaml.safe_load((run / "run.yaml").read_text())
        meta["tags"] = ["edited"]
        (run / "run.yaml").write_text(yaml.safe_dump(meta))   # in place: no folder moves
        wait_for(lambda: time.monotonic() - made > 0.3, message="the list never aged")
        gate.clear()
        scanning.clear()
        with urllib.request.urlopen(srv.url + url, timeout=10) as resp:   # the scan is held
            stale = json.loads(resp.read())
        assert stale["matched"] == 0
        assert scanning.wait(10), "no scan beside the old answer"
        gate.set()
        wait_for(lambda: get(srv, url)[0]["matched"] == 1, timeout=20,
                 message="the edit never showed")
        assert get(srv, url)[0]["columns"]["name"] == [_name(3)]


def test_asking_for_missing_experiments_keeps_nothing_per_name(tmp_path):
    """A 404 leaves no per-experiment lock or list behind: a client making up names cannot
    grow the server."""
    root = tmp_path / "experiments"
    _write_run(str(root / "small"), 0)
    with serving(root, live=False) as srv:
        for i in range(50):
            get(srv, f"/api/experiments/nope{i}/runs?format=columns&limit=5", expect=404)
        get(srv, "/api/experiments/small/runs?format=columns&limit=5")
        api = srv.app.config["expman.api"]
        assert set(api.list_locks) == {"small"} and set(api.run_lists) == {"small"}


def test_a_kept_list_answers_every_sort_and_filter_as_a_fresh_one(api_server):
    """Sort values and filter picks are kept with the list: a column sorted one way, then the
    other, then filtered, then sorted again, answers what the plain list says."""
    full, _ = get(api_server, "/api/experiments/big/runs")
    for sort, order, key in [("m:acc", "asc", lambda r: r["summary"].get("acc")),
                             ("m:acc", "desc", lambda r: r["summary"].get("acc")),
                             ("p:opt", "desc", lambda r: r["params"]["opt"].lower()),
                             ("m:acc", "asc", lambda r: r["summary"].get("acc"))]:
        for where in ("", "tag:odd", "m:acc>0.5"):
            plain, _ = get(api_server, "/api/experiments/big/runs?where="
                           + urllib.parse.quote(where)) if where else (full, 0)
            want = expected_order(plain["runs"], key, order == "desc")
            page, _ = get(api_server, f"/api/experiments/big/runs?sort={sort}&order={order}"
                                      f"&format=columns&limit=2000&where="
                                      + urllib.parse.quote(where))
            assert [r["name"] for r in decode_columns(page)] == want, (sort, order, where)


# -- the page --------------------------------------------------------------------------------

ROW_H = 30
RUNS_ROUTE = re.compile(r"/api/experiments/[^/]+/runs(\?|$)")   # the list, not one run


@pytest.fixture(scope="module")
def live_root(tmp_path_factory, big_root):
    """A copy of the big experiment that the live test may change."""
    import shutil
    root = tmp_path_factory.mktemp("runs_table_live") / "experiments"
    shutil.copytree(big_root, root)
    return root


@pytest.fixture(scope="module")
def page_server(live_root):
    with serving(live_root) as srv:
        yield srv


@pytest.fixture
def page(browser, page_server):
    ui = Page(browser)
    p = ui.page
    urls = []
    p.on("request", lambda r: RUNS_ROUTE.search(r.url) and urls.append(r.url))
    p.runs_requests = urls
    p.expect_400 = 0
    p.goto(page_server.url + "/#exp=big")
    p.locator("#runs-table tbody tr[data-run]").first.wait_for()
    yield p
    if p.expect_400:   # the browser logs the answer to a malformed filter: once, no more
        bad = [m for m in ui.problems if "status of 400" in m]
        assert len(bad) == p.expect_400, ui.problems
    ui.check(allowed=("status of 400",) if p.expect_400 else ())


def shown_rows(p):
    """(index of the row, run name) of every rendered run row, from its place in the table."""
    return p.evaluate("""() => {
      const sc = document.querySelector('#runs-scroll');
      const body = document.querySelector('#runs-table tbody').getBoundingClientRect().top;
      return Array.from(document.querySelectorAll('#runs-table tbody tr[data-run]')).map(tr =>
        [Math.round((tr.getBoundingClientRect().top - body) / 30), tr.getAttribute('data-run')]);
    }""")


def scroll_to(p, index):
    p.evaluate("i => { document.querySelector('#runs-scroll').scrollTop = i * 30; }", index)


def wait_rows(p, want, at):
    """Wait until the rows rendered from index `at` are `want` (run names, in order)."""
    def check():
        got = dict(shown_rows(p))
        return all(got.get(at + k) == name for k, name in enumerate(want))
    wait_for(check, timeout=30, message=f"rows {at}..: {want[:3]}.. not shown; "
                                        f"shown {shown_rows(p)[:5]}")


def count_text(p):
    return p.text_content("#runs-count")


def test_scrolling_shows_the_right_rows_a_page_at_a_time(page):
    newest = [_name(i) for i in range(RUNS - 1, -1, -1)]        # started, newest first
    wait_rows(page, newest[:10], 0)
    assert count_text(page).startswith(f"{RUNS} runs")
    rendered = page.locator("#runs-table tbody tr[data-run]").count()
    assert rendered < 100, rendered                              # only what is on screen
    height = page.evaluate("() => document.querySelector('#runs-table').scrollHeight")
    assert abs(height - RUNS * ROW_H) < 200, height              # room for every run
    for at in (1234, 1990, 640):
        scroll_to(page, at)
        wait_rows(page, newest[at:at + 5], at)
    # the first answer was a window, and no request ever asked for every run
    assert all("limit=" in u for u in page.runs_requests), page.runs_requests


def test_sort_is_done_by_the_server_on_every_page(page):
    full = [(i, _acc(i)) for i in range(RUNS)]
    want = [_name(i) for i, _a in sorted((x for x in full if x[1] is not None),
                                         key=lambda x: (-x[1], x[0]))]
    want += [_name(i) for i, a in full if a is None]
    page.locator("th[data-col='m:acc']").click()                # metrics sort high first
    wait_rows(page, want[:8], 0)
    scroll_to(page, 1500)
    wait_rows(page, want[1500:1505], 1500)
    scroll_to(page, RUNS - 5)                                   # runs without acc come last
    wait_rows(page, want[-3:], RUNS - 3)
    assert any("sort=m%3Aacc" in u or "sort=m:acc" in u for u in page.runs_requests)
    page.locator("th[data-col='m:acc']").click()                # again: low first, empty last
    want_up = [_name(i) for i, _a in sorted((x for x in full if x[1] is not None),
                                            key=lambda x: (x[1], x[0]))]
    scroll_to(page, 0)
    wait_rows(page, want_up[:5], 0)


def test_filter_is_done_by_the_server(page):
    page.fill("#filter", "lr=0.01 status=failed")
    want = [_name(i) for i in range(RUNS - 1, -1, -1) if i % 4 == 1 and i % 50 == 49]
    wait_for(lambda: count_text(page).startswith(f"{len(want)} of {RUNS} runs"), timeout=30,
             message=f"count is {count_text(page)!r}")
    wait_rows(page, want, 0)
    assert page.locator("#runs-table tbody tr[data-run]").count() == len(want)
    asked = [u for u in page.runs_requests if "where=" in u]
    assert asked and all("limit=" in u for u in page.runs_requests), page.runs_requests
    # a filter the server cannot read: its message under the box, the table left as it was
    page.expect_400 = 1
    page.fill("#filter", "lr>")
    error = page.locator("#filter-error")
    wait_for(lambda: error.is_visible() and "position" in error.text_content(), timeout=30,
             message=error.text_content())
    assert count_text(page).startswith(f"{len(want)} of {RUNS} runs")
    assert len([u for u in page.runs_requests if "where=lr%3E&" in u]) == 1   # asked once
    page.fill("#filter", "")
    wait_for(lambda: count_text(page).startswith(f"{RUNS} runs"), timeout=30)
    assert not error.is_visible()


def test_a_link_with_a_filter_opens_filtered(page, page_server):
    page.goto("about:blank")                                    # a fresh load, not a hash change
    page.goto(page_server.url + "/#exp=big&q=" + urllib.parse.quote("seed<=3 OR seed>=1998"))
    want = [_name(i) for i in (1999, 1998, 3, 2, 1, 0)]
    wait_for(lambda: count_text(page).startswith(f"6 of {RUNS} runs"), timeout=30,
             message=f"count is {count_text(page)!r}")
    wait_rows(page, want, 0)
    assert page.locator("#runs-table tbody tr[data-run]").count() == 6


def test_min_and_max_columns_are_chosen_and_sorted_by_the_server(page):
    assert page.locator("th[data-col='max:loss']").count() == 0     # not shown by default
    page.locator("#columns-button").click()
    box = page.locator("#columns-popover label[data-col='max:loss'] input")
    assert page.locator("#columns-popover label[data-col='min:loss']").count() == 1
    box.check()
    page.keyboard.press("Escape")
    header = page.locator("th[data-col='max:loss']")
    assert "loss (max)" in header.text_content()
    header.click()                                                  # highest max first
    want = [_name(i) for i in sorted(range(RUNS), key=lambda i: (-(i % 13), i))]
    wait_rows(page, want[:6], 0)
    cell = page.locator(f"tr[data-run='{want[0]}'] td[data-col='max:loss']")
    assert cell.text_content() == "12"
    assert any("sort=max%3Aloss" in u for u in page.runs_requests), page.runs_requests


def test_selection_survives_paging_sorting_and_select_all_says_its_cap(page):
    def tick(name):
        page.locator(f"tr[data-run='{name}'] input.run-select").click()

    def selected():
        return page.evaluate("() => window.expman.selected()")

    page.locator("#legend .chip").first.wait_for()
    base = selected()                                          # the 5 newest, chosen for us
    assert base == [f"big/{_name(i)}" for i in range(RUNS - 1, RUNS - 6, -1)]
    wait_rows(page, [_name(RUNS - 1 - 10)], 10)
    tick(_name(RUNS - 11))
    scroll_to(page, 1700)
    wait_rows(page, [_name(RUNS - 1 - 1700)], 1700)
    tick(_name(RUNS - 1701))
    assert selected() == base + [f"big/{_name(RUNS - 11)}", f"big/{_name(RUNS - 1701)}"]
    page.locator("th[data-col='p:seed']").click()              # seed ascending: r00000 first
    scroll_to(page, RUNS - 1701)
    wait_rows(page, [_name(RUNS - 1701)], RUNS - 1701)
    row = page.locator(f"tr[data-run='{_name(RUNS - 1701)}']")
    assert "selected" in row.get_attribute("class")
    assert row.locator("input.run-select").is_checked()
    assert f"{len(base) + 2} selected" in count_text(page)
    # select all: the first 100 in table order (seed ascending), and the page says so
    scroll_to(page, 0)
    page.locator("th input.select-all").click()
    wait_for(lambda: len(selected()) == 100, timeout=30, message=str(len(selected())))
    banner = page.locator("#banner")
    assert banner.is_visible()
    assert f"of {RUNS} matching runs" in banner.text_content()
    assert set(selected()) >= {f"big/{_name(i)}" for i in range(100 - len(base) - 2)}
    page.locator("th input.select-all").click()               # and none again
    wait_for(lambda: selected() == [], timeout=30)


def test_live_updates_arrive_while_scrolled(page, live_root):
    exp_dir = os.path.join(live_root, "big")
    newest = [_name(i) for i in range(RUNS - 1, -1, -1)]
    at = 1000
    scroll_to(page, at)
    wait_rows(page, newest[at:at + 5], at)
    before = len(page.runs_requests)
    # a run on screen fails, and a new run starts (at the top, out of sight)
    target = RUNS - 1 - (at + 2)
    _write_run(exp_dir, target, status="failed")
    status = page.locator(f"tr[data-run='{_name(target)}'] [data-status]")
    wait_for(lambda: status.get_attribute("data-status") == "failed", timeout=30)
    _write_run(exp_dir, RUNS)
    wait_for(lambda: count_text(page).startswith(f"{RUNS + 1} runs"), timeout=30,
             message=f"count is {count_text(page)!r}")
    # the rows on screen moved down by one, fetched as a window, not as the whole list
    wait_rows(page, newest[at - 1:at + 4], at)
    new = page.runs_requests[before:]
    assert new and all("limit=" in u for u in new), new
    assert page.locator(f"tr[data-run='{_name(target)}'] [data-status]").get_attribute(
        "data-status") == "failed"


def test_best_values_are_marked_among_every_matching_run(page, api_server, page_server):
    accs = [a for a in map(_acc, range(RUNS)) if a is not None]
    got, _ = get(api_server, "/api/experiments/big/runs?limit=1")
    assert got["extremes"]["m:acc"] == [min(accs), max(accs)]
    assert got["extremes"]["max:loss"] == [0.0, 12.0]
    # loss: lower is better; the lowest last loss is the newest run's, on the first page (the
    # live test may have added a newer run: ask the page's server which one)
    lowest, _ = get(page_server, "/api/experiments/big/runs?sort=m:loss&order=asc&limit=1")
    best = page.locator(f"tr[data-run='{lowest['runs'][0]['name']}'] td[data-col='m:loss']")
    wait_for(lambda: "best" in best.get_attribute("class"), timeout=30)
    assert page.locator("td.best[data-col='m:loss']").count() == 1
    # acc: higher is better; the best runs are not on the first page until sorted by it
    top = next(i for i in range(RUNS) if _acc(i) == max(accs))
    assert RUNS - 1 - top >= 200
    page.locator("th[data-col='m:acc']").click()
    wait_rows(page, [_name(top)], 0)
    cell = page.locator(f"tr[data-run='{_name(top)}'] td[data-col='m:acc']")
    assert "best" in cell.get_attribute("class")


def test_a_few_hundred_runs_are_held_whole_and_sorted_in_the_page(browser, tmp_path):
    """Past one page (200) but within PAGE_ALL (500): a second answer brings the rest, and
    sorting and filtering are the page's own (no request), as for a small experiment."""
    root = tmp_path / "experiments"
    for i in range(300):
        _write_run(str(root / "mid"), i)
    with serving(root, live=False) as srv:
        ui = Page(browser)
        p = ui.page
        urls = []
        p.on("request", lambda r: RUNS_ROUTE.search(r.url) and urls.append(r.url))
        p.goto(srv.url + "/#exp=mid")
        wait_for(lambda: count_text(p).startswith("300 runs"), timeout=30)
        assert len(urls) == 2 and "limit=200" in urls[0] and "limit=" not in urls[1], urls
        p.locator("th[data-col='p:seed']").click()
        wait_rows(p, [_name(i) for i in range(5)], 0)
        p.fill("#filter", "seed>=297")
        wait_for(lambda: count_text(p).startswith("3 of 300 runs"), timeout=30)
        assert len(urls) == 2, urls
        ui.check()


def test_a_linked_experiment_fills_its_table_before_the_experiments_list(browser, page_server):
    """The page asks for the experiments and a linked experiment's first runs page at once,
    and shows the runs as soon as they are in: the experiments list (held back here by the
    test, as a slow answer) fills the sidebar when it comes."""
    ui = Page(browser)
    p = ui.page
    held = []
    p.route(re.compile(r"/api/experiments$"), lambda route: held.append(route))
    p.goto(page_server.url + "/#exp=big")
    p.locator("#runs-table tbody tr[data-run]").first.wait_for()
    assert len(held) == 1 and p.locator("#experiments [data-exp]").count() == 0
    assert p.locator("#experiments").inner_text().strip() == "Loading\u2026"
    count = re.match(r"(\d+) runs", p.locator("#runs-count").inner_text())
    assert count and int(count.group(1)) >= RUNS   # (the live test may have added one)
    held[0].continue_()
    p.locator("#experiments [data-exp='big']").wait_for()
    assert p.evaluate("expman.experiment()") == "big"
    wait_for(lambda: len(p.evaluate("expman.selected()")) > 0, message="no auto-selection")
    ui.check()


def test_the_sidebar_without_lists_skips_other_folders_and_reads_each_experiment_once(
        tmp_path, monkeypatch):
    """Experiments whose run lists are not kept (more than RUNS_LIST_EXPERIMENTS of them) get
    their sidebar rows from the catalog's columns: a folder that is no experiment is not
    listed, and asking again while nothing changed reads nothing again."""
    monkeypatch.setattr(expman, "RUNS_LIST_EXPERIMENTS", 1)
    reads = []
    real = expman._experiment_window

    def counted(store, exp_path, now):   # the real read, counted
        reads.append(os.path.basename(exp_path))
        return real(store, exp_path, now)
    monkeypatch.setattr(expman, "_experiment_window", counted)
    root = tmp_path / "experiments"
    for exp in ("a", "b", "c"):
        for i in range(3):
            _write_run(str(root / exp), i)
    (root / "notes").mkdir()
    (root / "notes" / "todo.txt").write_text("not an experiment\n")
    with serving(root, live=False) as srv:
        first, _ = get(srv, "/api/experiments")
        assert [(e["name"], e["runs"]) for e in first["experiments"]] == \
            [("a", 3), ("b", 3), ("c", 3)]
        assert sorted(reads) == ["a", "b", "c", "notes"]
        again, _ = get(srv, "/api/experiments")
        assert again == first
        assert sorted(reads) == ["a", "b", "c", "notes"], "read again with nothing changed"
        _write_run(str(root / "b"), 3)                      # a new run: b is read again
        got, _ = get(srv, "/api/experiments")
        assert [(e["name"], e["runs"]) for e in got["experiments"]] == \
            [("a", 3), ("b", 4), ("c", 3)]
        assert sorted(reads) == ["a", "b", "b", "c", "notes"]


# -- group=: the fold kept across sorts equals a fresh one -----------------------------------

_GROUP_VALUES = (1, 1.0, True, False, 0.0, -0.0, float("nan"), "a", "", None, [1], {"x": 1},
                 2 ** 60, 2 ** 60 + 1)
_METRIC_VALUES = (1, 2.5, -0.0, float("nan"), float("inf"), "3", True, None, 2 ** 60 + 1)


def _group_rows(draw_values):
    rows = []
    for i, (value, seed, acc, low, tags) in enumerate(draw_values):
        params = {"seed": seed}
        if value != "missing":
            params["p"] = value
        rows.append({"name": f"r{i:03d}", "status": ("running", "finished", "failed")[i % 3],
                     "started_at": f"2026-11-{1 + i % 28:02d}T00:00:00+00:00",
                     "duration_secs": i % 5 or None, "last_step": i, "rows": i % 4,
                     "tags": tags, "params": params,
                     "summary": {} if acc is None else {"acc": acc},
                     "summary_min": {"acc": low}, "summary_max": {}})
    return rows


def test_groups_folded_once_are_the_groups_made_for_each_order():
    """_run_groups with a fold made from the rows in another order (the server keeps one fold
    per group-by and filter, and sorts it for each order) equals groups made afresh, and both
    follow the rules: one group per JSON text of the value, names in table order, params
    shared by JSON text, metric means over finite numbers (a run of its own: its value)."""
    import math
    from hypothesis import given, settings, strategies as st

    entry = st.tuples(st.sampled_from(_GROUP_VALUES + ("missing",)), st.sampled_from((1, 2, 1.0)),
                      st.sampled_from(_METRIC_VALUES), st.sampled_from(_METRIC_VALUES),
                      st.lists(st.sampled_from(("a", "b", 3)), max_size=2))

    @settings(max_examples=150, deadline=None)
    @given(st.lists(entry, min_size=1, max_size=25), st.randoms(use_true_random=False),
           st.sampled_from(("name", "m:acc", "p:seed", "started", "tags", "min:acc")),
           st.booleans(), st.sampled_from(("p:p", "tags")))
    def check(entries, rnd, sort, descending, by):
        rows = _group_rows(entries)
        first, table = rows[:], rows[:]
        rnd.shuffle(first)
        rnd.shuffle(table)
        key = expman._run_sort_key(sort)
        fresh = expman._run_groups(table, by, key, descending)
        kept = expman._run_groups(table, by, key, descending, expman._fold_groups(first, by))
        assert json.dumps(kept, sort_keys=True) == json.dumps(fresh, sort_keys=True)
        # the rules, against the rows themselves
        def text(v):
            return json.dumps(v, sort_keys=True)
        members = {}
        for row in table:
            members.setdefault(text(expman._run_group_value(row, by)), []).append(row)
        assert sorted(text(g["value"]) for g in fresh) == sorted(members)
        for g in fresh:
            runs = members[text(g["value"])]
            assert g["names"] == [r["name"] for r in runs] and g["count"] == len(runs)
            assert g["params"] == {k: v for k, v in runs[0]["params"].items() if all(
                k in r["params"] and text(r["params"][k]) == text(v) for r in runs)}
            for field in ("summary", "summary_min"):
                finite = [n for n in (expman._sort_number(r[field].get("acc")) for r in runs)
                          if n is not None and not math.isinf(n)]
                if finite:
                    assert g[field]["acc"] == math.fsum(finite) / len(finite)
                    assert type(g[field]["acc"]) is float
                else:
                    assert "acc" not in g[field]

    check()
