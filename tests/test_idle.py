"""An idle server does nothing; a watched one scans what changed. Start-up reads no run.

The watcher's work is counted by the hub itself (GET /api/health -> "watch": {"scans",
"streams"}), so these tests look at what the real server did, over real sockets."""
import os
import shutil
import sys
import time

import pytest

import expman
from _util import wait_for
from test_server import Client, SSEReader, start_server


def make_run(root, exp="sweep", run="r1", rows=3):
    with expman.Experiment(exp, base_dir=str(root), run_name=run, capture_git=False,
                           config={"lr": 0.1}) as e:
        for i in range(rows):
            e.log_metrics({"loss": 1.0 / (i + 1)}, step=i)
    return root / exp / run


@pytest.fixture
def fast_watch(monkeypatch):
    # 20 scans a second: a watcher that scanned while idle would show it within the window
    monkeypatch.setattr(expman, "WATCH_SECS", 0.05)


@pytest.fixture
def serve(root, fast_watch):
    """Start the server when the test says (the runs made before it are its baseline)."""
    started = []

    def start():
        started.append(start_server(root))
        return started[-1][0]
    yield start
    for srv, thread in started:
        srv.close()
        thread.join(5)


def watch(client):
    return client.json("/api/health")["watch"]


def test_no_stream_no_scan_then_scans_while_watched(root, serve):
    server = serve()
    make_run(root)
    client = Client(server.url)
    assert len(client.json("/api/experiments/sweep/runs")["runs"]) == 1
    window = expman.WATCH_SECS * 20
    t0 = time.monotonic()
    while time.monotonic() - t0 < window:   # a second of 20 scan periods, nobody watching
        assert watch(client) == {"scans": 0, "streams": 0, "watching": False}
        time.sleep(expman.WATCH_SECS)
    reader = SSEReader(server.url + "/api/stream")
    try:
        wait_for(lambda: watch(client)["scans"] >= 3, message="no scans while watched")
        assert watch(client)["streams"] == 1
    finally:
        reader.close()
    wait_for(lambda: watch(client)["streams"] == 0, message="stream never dropped")
    time.sleep(expman.WATCH_SECS * 2)   # a scan under way when the stream went may finish
    settled = watch(client)["scans"]
    t0 = time.monotonic()
    while time.monotonic() - t0 < window:
        assert watch(client)["scans"] == settled
        time.sleep(expman.WATCH_SECS)


def test_new_and_deleted_runs_reach_an_open_stream(root, serve):
    make_run(root, run="old")
    gone = make_run(root, run="doomed")
    server = serve()
    client = Client(server.url)
    reader = SSEReader(server.url + "/api/stream")
    try:
        wait_for(lambda: watch(client)["scans"] >= 2, message="watcher never scanned")
        make_run(root, run="new")
        wait_for(lambda: [d["run"]["name"] for d in reader.of("runs")] == ["new"],
                 message="runs event for the new run (and only for it)")
        [event] = reader.of("runs")
        assert event["experiment"] == "sweep"

        def latest_new():  # announced when its run.yaml appeared; its close comes as status
            rows = [e[1]["run"] if e[0] == "runs" else e[1] for e in reader.events
                    if e[0] in ("runs", "status")]
            return [r for r in rows if r["name"] == "new"][-1]
        wait_for(lambda: latest_new()["status"] == "finished", message="new run closed")
        assert latest_new()["params"] == {"lr": 0.1}
        shutil.rmtree(gone)
        wait_for(lambda: reader.of("removed") == [{"experiment": "sweep", "run": "doomed"}],
                 message="removed event for the deleted run")
        names = {r["name"] for r in client.json("/api/experiments/sweep/runs")["runs"]}
        assert names == {"old", "new"}
        # a new experiment, and a run folder whose run.yaml comes later (a writer starting)
        (root / "other" / "slow").mkdir(parents=True)
        make_run(root, exp="other", run="fast")
        wait_for(lambda: any(d["run"]["name"] == "fast" for d in reader.of("runs")),
                 message="runs event for a run of a new experiment")
        scans = watch(client)["scans"]
        wait_for(lambda: watch(client)["scans"] >= scans + 3)
        text = (root / "other" / "fast" / "run.yaml").read_text()
        (root / "other" / "slow" / "run.yaml").write_text(text.replace("fast", "slow"))
        wait_for(lambda: any(d["run"]["name"] == "slow" for d in reader.of("runs")),
                 message="runs event once the folder's run.yaml arrived")
        assert len(reader.of("runs")) == 3
    finally:
        reader.close()


def test_an_edit_made_elsewhere_reaches_the_stream(root, serve):
    run = make_run(root, run="a")
    for i in range(5):
        make_run(root, run=f"b{i}")
    server = serve()
    client = Client(server.url)
    reader = SSEReader(server.url + "/api/stream")
    try:
        wait_for(lambda: watch(client)["scans"] >= 2, message="watcher never scanned")
        meta = expman._read_yaml(expman._open_store(str(run))[0], str(run / "run.yaml"))
        meta["tags"] = ["edited"]
        (run / "run.yaml").write_bytes(expman._yaml_dump(meta))  # in place: the folder's
        # mtime does not move; the sweep of closed runs finds it
        wait_for(lambda: any(d["name"] == "a" and d["tags"] == ["edited"]
                             for d in reader.of("status")), message="edited tags")
        assert reader.of("runs") == []
    finally:
        reader.close()


def test_a_page_opened_first_costs_the_watcher_no_catalog_read_and_no_false_events(
        root, serve, monkeypatch):
    """The page asks for the runs before it opens its stream: the watcher's first look at
    the experiment takes its closed runs from the list kept for those queries (the catalog
    is not parsed a second time), announces none of them, and still sees a later edit."""
    run = make_run(root, run="a")
    for i in range(5):
        make_run(root, run=f"b{i}")
    for path in (root / "sweep").glob("*/run.yaml"):   # written a minute ago, not just now
        os.utime(path, (time.time() - 60, time.time() - 60))
    server = serve()
    client = Client(server.url)
    assert client.json("/api/experiments/sweep/runs?format=columns&limit=2")["total"] == 6
    loads = []
    load = expman._Catalog.load

    def counted(self):   # the real load, counted
        loads.append(self.folder)
        return load(self)
    monkeypatch.setattr(expman._Catalog, "load", counted)
    reader = SSEReader(server.url + "/api/stream")
    try:
        wait_for(lambda: watch(client)["scans"] >= 3, message="watcher never scanned")
        assert loads == []
        assert reader.of("status") == [] and reader.of("runs") == []
        meta = expman._read_yaml(expman._open_store(str(run))[0], str(run / "run.yaml"))
        meta["tags"] = ["edited"]
        (run / "run.yaml").write_bytes(expman._yaml_dump(meta))   # in place, as elsewhere
        wait_for(lambda: any(d["name"] == "a" and d["tags"] == ["edited"]
                             for d in reader.of("status")), message="edited tags")
        assert {d["name"] for d in reader.of("status")} == {"a"}
    finally:
        reader.close()


def test_an_edit_between_the_page_and_its_stream_is_announced(root, serve, monkeypatch):
    """A closed run edited after the page's runs query made the list, before the watcher's
    first look: the watcher does not take the edited file for the listed one."""
    monkeypatch.setattr(expman, "LOCAL_SWEEP_RUNS", 1)   # one closed run a scan: in turn
    run = make_run(root, run="a")
    for i in range(5):
        make_run(root, run=f"b{i}")
    server = serve()
    client = Client(server.url)
    assert client.json("/api/experiments/sweep/runs?format=columns&limit=2")["total"] == 6
    # that first page is answered from a window and the list made beside it; the page then
    # asks for every run's counts and keys, which waits for the list: the edit comes after
    assert "partial" not in client.json("/api/experiments/sweep/runs?format=columns&limit=0")
    meta = expman._read_yaml(expman._open_store(str(run))[0], str(run / "run.yaml"))
    meta["tags"] = ["edited"]
    (run / "run.yaml").write_bytes(expman._yaml_dump(meta))   # in place
    reader = SSEReader(server.url + "/api/stream")
    try:
        wait_for(lambda: any(d["name"] == "a" and d["tags"] == ["edited"]
                             for d in reader.of("status")), message="edited tags")
    finally:
        reader.close()


def test_startup_reads_no_run_file(root, serve):
    """A run.yaml that is a FIFO blocks whoever reads it: the server must answer anyway
    (the watcher's baseline lists names; it reads nothing until a stream opens)."""
    make_run(root, run="ok")
    trap = root / "sweep" / "trap"
    trap.mkdir()
    os.mkfifo(trap / "run.yaml")
    srv = serve()
    client = Client(srv.url)
    health = client.json("/api/health")
    assert health["watch"] == {"scans": 0, "streams": 0, "watching": False}
    wait_for(lambda: srv.app.config["expman.hub"].known is not None, message="no baseline")
    assert srv.app.config["expman.hub"].names == {"sweep": {"ok", "trap"}}


def test_a_closed_run_lists_with_no_footer_read(tmp_path):
    """The catalog entry keeps metrics.parquet's stamp and verdict: listing a closed,
    unchanged run checks no footer; a file cut short after closing is still caught."""
    for i in range(3):
        make_run(tmp_path, run=f"r{i}")
    expman.list_runs(str(tmp_path), "sweep")   # the rows made at close: stamped
    expman._FOOTER_CHECKS.clear()
    rows = expman.list_runs(str(tmp_path), "sweep")
    assert expman._FOOTER_CHECKS == {} and all("metrics_error" not in r for r in rows)
    bad = tmp_path / "sweep" / "r1" / expman.METRICS_FILE
    bad.write_bytes(bad.read_bytes()[:40])    # in place: run.yaml and the folder unchanged
    rows = {r["name"]: r for r in expman.list_runs(str(tmp_path), "sweep")}
    assert rows["r1"]["metrics_error"].startswith("metrics.parquet is truncated")
    assert "metrics_error" not in rows["r0"] and "metrics_error" not in rows["r2"]
    assert list(expman._FOOTER_CHECKS) == [(str(bad), 40, bad.stat().st_mtime)]


# -- the listing's YAML reader: PyYAML's result, or PyYAML itself ------------------------------

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import yaml  # noqa: E402

TRICKY = ["yes", "No", "ON", "off", "y", "n", "null", "Null", "~", "", " ", "1e5", "1.0e-05",
          "0x1F", "0o17", "010", "1_000", "2026-01-01", "2026-01-01 10:00:00", "12:30",
          ".5", "5.", "-.inf", ".NaN", "+1", "-0", "-0.0", "=", "<<", "- x", "a: b", "a:b",
          "'q'", "it's", "#x", "a #b", "[1]", "{}", "[]", "!tag", "&a", "*a", "|", ">", "%",
          "@x", "`x", "?x", ":x", "-x", "a\tb", "line\nbreak", "é ü 日本", "\u2028", "\x85",
          "trailing ", " leading", "a''b", "'", "''", "a'", "x" * 120 + " " + "y" * 50]
scalars = (st.none() | st.booleans() | st.integers() |
           st.floats(allow_nan=False) | st.sampled_from(TRICKY) | st.text(max_size=30))
keys = st.sampled_from(TRICKY) | st.text(min_size=1, max_size=12) | st.integers()
values = st.recursive(scalars | st.lists(scalars, max_size=4),
                      lambda inner: st.dictionaries(keys, inner, max_size=4), max_leaves=20)


def pyyaml(data):
    return yaml.load(data, Loader=yaml.CSafeLoader)


@settings(max_examples=400, deadline=None)
@given(st.dictionaries(keys, values, max_size=6))
def test_simple_yaml_reads_what_the_dumper_writes_as_pyyaml_does(doc):
    data = expman._yaml_dump(doc)
    try:
        fast = expman._simple_yaml(data)
    except expman._NotSimple:
        return   # left to PyYAML
    expected = pyyaml(data)
    assert fast == expected and repr(fast) == repr(expected)   # -0.0, 1 vs 1.0 vs True


@settings(max_examples=400, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("ab:'- \n#\"[]{}01.e~?|>yn")), max_size=40))
def test_simple_yaml_never_differs_on_any_text(text):
    try:
        fast = expman._simple_yaml(text.encode())
    except expman._NotSimple:
        return
    try:
        expected = pyyaml(text)
    except yaml.YAMLError:
        raise AssertionError(f"PyYAML refuses {text!r}; _simple_yaml read {fast!r}")
    assert repr(fast) == repr(expected)


# the command a run records is this process's sys.argv: a pytest run with a long -k (an
# argument with spaces, longer than the dumper's 80 columns) had run.yaml fold it over lines
@pytest.mark.parametrize("argv,fast", [
    (["train.py", "--lr=0.1", "--data=/tmp/some/where"], True),
    (["pytest", "-k", " or ".join(["test_something_long"] * 8)], False)])
def test_run_files_listed_through_the_fast_reader_equal_pyyaml(tmp_path, monkeypatch, argv,
                                                               fast):
    """What expman writes takes the fast path (_simple_yaml), equal to PyYAML; a value the
    dumper folds over lines is left to PyYAML (_NotSimple), and the listing's reader equals
    PyYAML either way."""
    monkeypatch.setattr(sys, "argv", argv)
    monkeypatch.chdir(tmp_path)   # the cwd is recorded too
    run = make_run(tmp_path, run="r")
    for name in ("run.yaml", "config.yaml"):
        data = (run / name).read_bytes()
        assert expman._read_listed_yaml(expman._LOCAL_STORE, str(run / name)) == pyyaml(data)
        if fast or name == "config.yaml":
            assert expman._simple_yaml(data) == pyyaml(data)
        else:
            with pytest.raises(expman._NotSimple):
                expman._simple_yaml(data)
    data = b"command:\n- python\n- -q\n- --lr=0.1\n- no:cache\n- '-1'\n"
    assert expman._simple_yaml(data) == pyyaml(data)


# -- the page: a deleted run leaves the table --------------------------------------------------

class _NotFoundApart(list):
    """ui.problems without Chromium's 404 and 400 lines (the test checks those answers' URLs)."""

    def append(self, message):
        if "status of 404 (Not Found)" not in message and "status of 400 (Bad Request)" not in message:
            super().append(message)


def test_page_drops_a_deleted_run(root, serve, ui):
    from _util import open_page
    from playwright.sync_api import expect
    make_run(root, run="keep")
    gone = make_run(root, run="gone")
    server = serve()
    # a request for the gone run still in flight when it is deleted answers 404 (or 400: a name
    # that is no run), and Chromium logs each without its URL: expected for the gone run only
    not_found = []
    ui.page.on("response", lambda r: r.status in (400, 404) and not_found.append(r.url))
    ui.problems = _NotFoundApart(ui.problems)
    page = open_page(ui, server, "#exp=sweep&runs=sweep/keep,sweep/gone")
    wait_for(lambda: "sweep/gone" in page.evaluate("location.hash"), message="not selected")
    expect(page.locator("tr[data-run='gone']")).to_be_visible()
    expect(page.locator("#live-indicator")).to_have_attribute("data-state", "live")
    wait_for(lambda: watch(Client(server.url))["scans"] >= 2, message="watcher never scanned")
    shutil.rmtree(gone)
    expect(page.locator("tr[data-run='gone']")).to_have_count(0)
    expect(page.locator("tr[data-run='keep']")).to_be_visible()
    # the gone run left the selection too: the stream reopened without it, still live
    wait_for(lambda: "sweep/gone" not in page.evaluate("location.hash"),
             message="still selected")
    expect(page.locator("#live-indicator")).to_have_attribute("data-state", "live")
    assert all("gone" in url for url in not_found), not_found
