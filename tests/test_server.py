"""The JSON API and the SSE stream against a real Waitress server on an ephemeral port."""
import http.client
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import expman
from _util import serving, start_server, wait_for  # start_server: imported from here too

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class Client:
    def __init__(self, url):
        self.url = url

    def request(self, path, method="GET", body=None, headers=None):
        req = urllib.request.Request(self.url + path, data=body, method=method,
                                     headers=headers or {})
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                return resp.status, dict(resp.headers), resp.read()
        except urllib.error.HTTPError as err:
            return err.code, dict(err.headers), err.read()

    def json(self, path, expect=200, **kw):
        status, _headers, body = self.request(path, **kw)
        assert status == expect, (status, body[:500])
        return json.loads(body)


@pytest.fixture
def live_server(root):
    with serving(root) as server:
        yield server


@pytest.fixture
def client(live_server):
    return Client(live_server.url)


def make_run(root, exp="resnet", run="r1", rows=50, **kw):
    with expman.Experiment(exp, base_dir=root, run_name=run, capture_git=False,
                           **kw) as e:
        e.log_params({"lr": 0.01, "opt": {"name": "adam"}})
        for i in range(rows):
            row = {"train/loss": 1.0 / (i + 1)}
            if i % 10 == 9:
                row["val/acc"] = i / rows
            e.log_metrics(row, step=i)
        e.log_metrics({"train/loss": float("nan")}, step=rows)
        e.info("hello <b>world</b>")
    return e


# -- read endpoints ------------------------------------------------------------------------

def test_health_and_page(client):
    health = client.json("/api/health")
    assert health["status"] == "ok" and health["version"] == expman.__version__
    status, headers, body = client.request("/")
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    # one inline script, and every absolute URL in the page is the SVG namespace name (an
    # identifier, never fetched): nothing is loaded from another host
    assert body.count(b"<script") == 1 and b"<script>" in body
    assert set(re.findall(rb"https?://[^\s\"'<>)]+", body)) <= {b"http://www.w3.org/2000/svg"}
    # the page needs nothing from any other host (no CDN)
    assert not re.search(rb"""(src|href)=["']https?://""", body)
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert "frame-ancestors 'none'" in headers["Content-Security-Policy"]


def test_experiments_runs_and_metadata(root, client):
    make_run(root, run="r1", tags=["a"], description="first")
    make_run(root, run="r2")
    exps = client.json("/api/experiments")["experiments"]
    assert [e["name"] for e in exps] == ["resnet"]
    assert exps[0]["runs"] == 2 and exps[0]["status_counts"] == {"finished": 2}
    runs = client.json("/api/experiments/resnet/runs")["runs"]
    assert [r["name"] for r in runs] == ["r2", "r1"]  # newest first
    r1 = runs[1]
    assert r1["status"] == "finished" and r1["rows"] == 51 and r1["last_step"] == 50
    assert r1["params"] == {"lr": 0.01, "opt.name": "adam"}
    assert r1["summary"]["val/acc"] == pytest.approx(0.98)
    assert r1["summary"]["train/loss"] == "NaN"  # NaN is not JSON: sent as a string
    assert r1["tags"] == ["a"] and r1["description"] == "first"
    meta = client.json("/api/experiments/resnet/runs/r1/metadata")
    assert meta["hostname"] and meta["pid"] and meta["config"]["opt"] == {"name": "adam"}
    assert client.json("/api/experiments/resnet/metadata")["name"] == "resnet"
    assert client.json("/api/experiments/resnet/runs/r1/config")["config"]["lr"] == 0.01


def test_unknown_names_are_404(root, client):
    make_run(root)
    for path in ("/api/experiments/nope/runs", "/api/experiments/resnet/runs/nope/metrics",
                 "/api/experiments/nope/metadata", "/api/nothing"):
        status, headers, body = client.request(path)
        assert status == 404, path
        assert "error" in json.loads(body)


def test_metrics_keys_since_and_nan(root, client):
    make_run(root, rows=100)
    data = client.json("/api/experiments/resnet/runs/r1/metrics")
    assert data["keys"] == ["train/loss", "val/acc"]
    assert data["rows"] == 101 and data["next_since"] == 101
    loss = data["series"]["train/loss"]
    assert loss["step"][:3] == [0, 1, 2] and loss["value"][1] == 0.5
    assert loss["value"][-1] == "NaN" and len(loss["time"]) == 101
    assert data["series"]["val/acc"]["step"] == list(range(9, 100, 10))
    key = urllib.parse.quote("val/acc", safe="")
    only = client.json(f"/api/experiments/resnet/runs/r1/metrics?keys={key}")
    assert list(only["series"]) == ["val/acc"]
    newer = client.json("/api/experiments/resnet/runs/r1/metrics?since=95")
    assert newer["series"]["train/loss"]["step"] == [95, 96, 97, 98, 99, 100]
    assert client.request("/api/experiments/resnet/runs/r1/metrics?since=x")[0] == 400
    assert client.request("/api/experiments/resnet/runs/r1/metrics?max_points=-1")[0] == 400


def test_metrics_downsampling_keeps_extremes_and_zoom(root, client):
    with expman.Experiment("big", base_dir=root, run_name="r", capture_git=False) as e:
        for i in range(20_000):
            e.log_metrics({"x": 1.0 if i != 12_345 else 100.0}, step=i)
    data = client.json("/api/experiments/big/runs/r/metrics?max_points=400")
    series = data["series"]["x"]
    assert data["downsampled"] and len(series["step"]) <= 400
    assert max(series["value"]) == 100.0  # the spike survives the reduction
    assert series["step"] == sorted(series["step"])
    zoom = client.json("/api/experiments/big/runs/r/metrics?max_points=400&x_min=100&x_max=199")
    assert zoom["series"]["x"]["step"] == list(range(100, 200)) and not zoom["downsampled"]


def test_log_endpoint(root, client):
    make_run(root)
    data = client.json("/api/experiments/resnet/runs/r1/log")
    assert "hello <b>world</b>" in data["text"] and data["next"] == data["size"]
    assert client.json(f"/api/experiments/resnet/runs/r1/log?since={data['next']}")["text"] == ""
    # the end of the log is asked for with tail= (a negative since is a 400, as for metrics)
    log_bytes = (root / "resnet" / "r1" / "run.log").read_bytes()
    assert log_bytes.endswith(b"d</b>\n")
    tail = client.json("/api/experiments/resnet/runs/r1/log?tail=6")
    assert tail["text"] == "d</b>\n" and tail["next"] == len(log_bytes)
    for bad in ("since=-6", "tail=0", "tail=-1", "tail=x"):
        assert client.request(f"/api/experiments/resnet/runs/r1/log?{bad}")[0] == 400, bad


# -- artifacts -----------------------------------------------------------------------------

@pytest.fixture
def artifact_run(root, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    pq.write_table(pa.table({"a": [1, 2, 3], "b": ["x", "<script>", None]}), src / "t.parquet")
    (src / "p.csv").write_text("id,name\n1,<img src=x onerror=alert(1)>\n")
    (src / "notes.md").write_text("# notes\n")
    (src / "img.png").write_bytes(expman._png_bytes(4, 4, lambda x, y: (x * 60, y * 60, 0)))
    (src / "evil.svg").write_text("<svg onload=alert(1)></svg>")
    (src / "page.html").write_text("<script>alert(1)</script>")
    (tmp_path / "secret.txt").write_text("top secret")
    with expman.Experiment("resnet", base_dir=root, run_name="r1", capture_git=False) as e:
        for name in ("t.parquet", "p.csv", "notes.md", "img.png", "evil.svg", "page.html"):
            e.save_artifact(src / name, f"sub/{name}" if name == "img.png" else name)
    art = root / "resnet" / "r1" / "artifacts"
    os.symlink(tmp_path / "secret.txt", art / "link.txt")
    return art


def test_artifact_list_and_previews(artifact_run, client):
    listing = client.json("/api/experiments/resnet/runs/r1/artifacts")["artifacts"]
    paths = {a["path"]: a for a in listing}
    assert {"t.parquet", "p.csv", "notes.md", "sub/img.png"} <= set(paths)
    assert "link.txt" not in paths  # a link out of the run is not part of it
    assert paths["sub/img.png"]["kind"] == "image" and paths["t.parquet"]["kind"] == "table"
    base = "/api/experiments/resnet/runs/r1/artifacts/content?path="
    table = client.json(base + "t.parquet")
    assert table["kind"] == "table" and table["total_rows"] == 3
    assert [c["name"] for c in table["columns"]] == ["a", "b"]
    assert table["rows"] == [[1, "x"], [2, "<script>"], [3, None]]
    csv = client.json(base + "p.csv")
    assert csv["rows"] == [["1", "<img src=x onerror=alert(1)>"]]
    assert client.json(base + "notes.md") == {"kind": "text", "path": "notes.md",
                                              "text": "# notes\n", "truncated": False}
    img = client.json(base + urllib.parse.quote("sub/img.png"))
    status, headers, body = client.request(img["url"])
    assert status == 200 and headers["Content-Type"] == "image/png"
    assert body.startswith(b"\x89PNG")


def test_active_content_is_never_served_inline(artifact_run, client):
    for name in ("evil.svg", "page.html"):
        status, headers, _ = client.request(
            f"/api/experiments/resnet/runs/r1/artifacts/raw?path={name}")
        assert status == 200
        assert headers["Content-Type"] == "application/octet-stream"
        assert headers["Content-Disposition"].startswith("attachment")


@pytest.mark.parametrize("bad", ["../run.yaml", "..%2Frun.yaml", "%2e%2e/run.yaml",
                                 "/etc/passwd", "sub/../../run.yaml", "link.txt",
                                 "x%00.png", "..\\run.yaml", ""])
def test_artifact_traversal_is_refused(artifact_run, client, bad):
    for route in ("content", "raw"):
        status, _headers, body = client.request(
            f"/api/experiments/resnet/runs/r1/artifacts/{route}?path={bad}")
        assert status in (400, 403, 404), (bad, status)
        assert b"top secret" not in body and b"status:" not in body


@pytest.mark.parametrize("path", ["/api/experiments/..%2F..%2Fetc/runs",
                                  "/api/experiments/resnet/runs/..%2Fresnet/metadata",
                                  "/api/experiments/%2e%2e/runs/r1/log"])
def test_name_traversal_is_refused(artifact_run, client, path):
    status, _headers, body = client.request(path)
    assert status in (400, 403, 404) and b"root:" not in body


# -- PATCH metadata ------------------------------------------------------------------------

def test_patch_description_and_tags(root, client):
    make_run(root)
    body = json.dumps({"description": "<b>bold</b>", "tags": ["x", " y ", ""]}).encode()
    path = "/api/experiments/resnet/runs/r1/metadata"
    updated = client.json(path, method="PATCH", body=body,
                          headers={"Content-Type": "application/json"})
    assert updated["description"] == "<b>bold</b>" and updated["tags"] == ["x", "y"]
    assert expman.load_run(root / "resnet" / "r1")["tags"] == ["x", "y"]
    # form posts (what a cross-site page can send without preflight) are refused
    assert client.request(path, method="PATCH", body=body,
                          headers={"Content-Type": "text/plain"})[0] == 415
    assert client.request(path, method="PATCH", body=body, headers={
        "Content-Type": "application/json", "Origin": "http://evil.example"})[0] == 403
    for bad in (b"nope", b'{"status": "finished"}', b'{"tags": "x"}', b'{"description": 1}'):
        assert client.request(path, method="PATCH", body=bad,
                              headers={"Content-Type": "application/json"})[0] == 400


def test_patch_on_live_run_survives_heartbeat(root, client):
    exp = expman.Experiment("resnet", base_dir=root, run_name="live", capture_git=False,
                            flush_interval_ms=50, heartbeat_secs=0.1)
    try:
        exp.log_metrics({"a": 1.0}, step=0)
        client.json("/api/experiments/resnet/runs/live/metadata", method="PATCH",
                    body=b'{"tags": ["kept"]}', headers={"Content-Type": "application/json"})
        beats = set()

        def several_heartbeats():  # the writer rewrites run.yaml every 0.1 s
            beats.add(expman.load_run(exp.run_dir)["heartbeat_at"])
            return len(beats) >= 4
        wait_for(several_heartbeats, message="heartbeats")
        assert expman.load_run(exp.run_dir)["tags"] == ["kept"]
    finally:
        exp.close()
    assert expman.load_run(exp.run_dir)["tags"] == ["kept"]


# -- SSE -----------------------------------------------------------------------------------

class SSEReader:
    """Reads an event stream in a thread, collecting (event, data) pairs."""

    def __init__(self, url):
        parts = urllib.parse.urlsplit(url)
        self.conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
        self.conn.request("GET", parts.path + ("?" + parts.query if parts.query else ""))
        self.sock = self.conn.sock  # http.client forgets it once the response streams
        self.resp = self.conn.getresponse()
        assert self.resp.status == 200, self.resp.status
        self.events = []
        self.comments = 0
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self):
        event = None
        try:
            for raw in self.resp:
                line = raw.decode().rstrip("\n")
                if line.startswith(":"):
                    self.comments += 1
                elif line.startswith("event:"):
                    event = line[6:].strip()
                elif line.startswith("data:"):
                    self.events.append((event, json.loads(line[5:])))
        except Exception:  # noqa: BLE001 - closed by the test
            pass

    def of(self, kind):
        return [d for e, d in self.events if e == kind]

    def close(self):
        """Drop the connection the way a closed browser tab does."""
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.conn.close()
        self.thread.join(5)


def test_stream_pushes_new_rows_logs_status_and_new_runs(root, live_server):
    exp = expman.Experiment("resnet", base_dir=root, run_name="live", capture_git=False,
                            flush_interval_ms=50)
    reader = None
    try:
        exp.log_metrics({"loss": 1.0}, step=0)
        exp.flush()
        reader = SSEReader(live_server.url + "/api/stream?runs=resnet/live:0")
        wait_for(lambda: reader.of("hello"), message="hello")
        assert reader.of("hello")[0]["runs"] == ["resnet/live"]
        wait_for(lambda: reader.of("metrics"), message="first rows")
        for i in range(1, 20):
            exp.log_metrics({"loss": 1.0 / (i + 1)}, step=i)
        exp.info("epoch done")

        def steps():
            return [s for d in reader.of("metrics") for s in d["series"]["loss"]["step"]]
        wait_for(lambda: steps() == list(range(20)), message="all 20 steps, once each, in order")
        wait_for(lambda: any("epoch done" in d["text"] for d in reader.of("log")), message="log")
        # a run created after the page opened shows up as a `runs` event
        make_run(root, run="newer", rows=3)
        wait_for(lambda: any(d["run"]["name"] == "newer" for d in reader.of("runs")),
                 message="runs event")
        exp.close()
        wait_for(lambda: any(d["name"] == "live" and d["status"] == "finished"
                             for d in reader.of("status")), message="finished status")
    finally:
        exp.close()
        if reader:
            reader.close()


def test_stream_reports_a_crashed_run(root, live_server):
    child = subprocess.Popen([sys.executable, "-c", f"""
import sys, time
sys.path.insert(0, {REPO!r})
import expman
exp = expman.Experiment("resnet", base_dir={str(root)!r}, run_name="doomed",
                        capture_git=False, flush_interval_ms=50)
exp.log_metrics({{"a": 1.0}}, step=0)
exp.flush()
print("ready", flush=True)
time.sleep(60)
"""], stdout=subprocess.PIPE, text=True)
    reader = None
    try:
        assert child.stdout.readline().strip() == "ready"
        reader = SSEReader(live_server.url + "/api/stream")
        wait_for(lambda: reader.of("hello"), message="hello")
        time.sleep(expman.WATCH_SECS * 1.5)  # let the watcher see the run as running
        child.kill()
        child.wait()
        wait_for(lambda: any(d["name"] == "doomed" and d["status"] == "crashed"
                             for d in reader.of("status")), timeout=15, message="crashed")
    finally:
        child.kill()
        child.wait()
        child.stdout.close()
        if reader:
            reader.close()


def test_stream_rejects_bad_runs_and_cleans_up_dropped_clients(root, live_server):
    make_run(root)
    client = Client(live_server.url)
    assert client.request("/api/stream?runs=resnet/nope")[0] == 400
    assert client.request("/api/stream?runs=../x/y")[0] == 400
    hub = live_server.app.config["expman.hub"]
    readers = [SSEReader(live_server.url + "/api/stream?runs=resnet/r1") for _ in range(5)]
    wait_for(lambda: len(hub.subscribers) == 5, message="5 subscribers")
    for r in readers:
        r.close()
    wait_for(lambda: len(hub.subscribers) == 0, timeout=10, message="dropped clients removed")
    # the server still answers promptly afterwards
    assert client.json("/api/health")["status"] == "ok"


def test_stream_sends_heartbeats(root, live_server, monkeypatch):
    monkeypatch.setattr(expman, "SSE_PING_SECS", 0.1)
    reader = SSEReader(live_server.url + "/api/stream")
    try:
        wait_for(lambda: reader.comments >= 2, timeout=30, message="two pings")
    finally:
        reader.close()


# -- token ---------------------------------------------------------------------------------

def test_token_protects_every_route(root):
    make_run(root)
    server, thread = start_server(root, token="s3cret")
    try:
        c = Client(server.url)
        for path in ("/", "/api/health", "/api/experiments", "/api/stream"):
            assert c.request(path)[0] == 401, path
        assert c.request("/api/health", headers={"Authorization": "Bearer wrong"})[0] == 401
        assert c.json("/api/health", headers={"Authorization": "Bearer s3cret"})["status"] == "ok"
        status, headers, _ = c.request("/?token=s3cret")
        assert status == 200 and "expman_token=s3cret" in headers.get("Set-Cookie", "")
        assert "HttpOnly" in headers["Set-Cookie"]
        cookie = {"Cookie": "expman_token=s3cret"}
        assert c.json("/api/experiments", headers=cookie)["experiments"][0]["name"] == "resnet"
    finally:
        server.close()
        thread.join(5)


# -- the CLI entry point, as users start it ------------------------------------------------

def test_serve_subprocess_prints_url_and_serves(root):
    make_run(root)
    proc = subprocess.Popen([sys.executable, os.path.join(REPO, "expman.py"), "serve",
                             str(root), "--port", "0"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        match = re.search(r"http://127\.0\.0\.1:(\d+)/", line)
        assert match, line + proc.stderr.read() if proc.poll() is not None else line
        c = Client(match.group(0).rstrip("/"))
        assert wait_for(lambda: c.json("/api/health")["status"] == "ok")
        assert c.json("/api/experiments")["experiments"][0]["runs"] == 1
    finally:
        proc.terminate()
        proc.wait(10)
        proc.stdout.close()
        proc.stderr.close()


def test_downsampling_keeps_a_gap_where_values_are_nan(root, client):
    with expman.Experiment("nan", base_dir=root, run_name="r", capture_git=False) as e:
        for i in range(10_000):
            e.log_metrics({"x": float("nan") if 5_000 <= i < 5_010 else float(i)}, step=i)
    series = client.json("/api/experiments/nan/runs/r/metrics?max_points=200")["series"]["x"]
    assert len(series["step"]) <= 200 and "NaN" in series["value"]
    assert series["value"][-1] == 9999.0 and series["value"][0] == 0.0


# -- many and hostile streams (issue 20 items 3 and 16) -------------------------------------

def test_streams_past_the_cap_get_503_and_the_api_stays_up(root):
    """Each stream holds a worker thread: with threads=16, SERVER_RESERVED_THREADS (8) are
    kept for the page and API. Without the cap, 16 idle streams took every thread and
    /api/health hung."""
    assert expman.SERVER_RESERVED_THREADS == 8
    make_run(root)
    server, thread = start_server(root, threads=16)
    readers = []
    try:
        c = Client(server.url)
        readers = [SSEReader(server.url + "/api/stream?runs=resnet/r1") for _ in range(8)]
        assert wait_for(lambda: server.app.config["expman.api"].streams == 8)
        status, headers, body = c.request("/api/stream?runs=resnet/r1")
        assert status == 503 and headers["Retry-After"] == str(expman.SSE_RETRY_SECS)
        assert "error" in json.loads(body)
        for _ in range(5):       # the page and the API still answer, promptly
            started = time.monotonic()
            assert c.json("/api/health")["status"] == "ok"
            assert c.request("/")[0] == 200
            assert time.monotonic() - started < 5
        readers.pop().close()    # a slot comes free when a stream ends
        wait_for(lambda: server.app.config["expman.api"].streams == 7, timeout=10)
        readers.append(SSEReader(server.url + "/api/stream?runs=resnet/r1"))
    finally:
        for r in readers:
            r.close()
        server.close()
        thread.join(5)


def test_a_run_named_many_times_in_one_stream_is_sent_once(root, live_server, monkeypatch):
    monkeypatch.setattr(expman, "SSE_PING_SECS", 0.05)   # a ping about every tick
    make_run(root, rows=100)
    reader = SSEReader(live_server.url + "/api/stream?runs=" + ",".join(
        ["resnet/r1:0"] * 250 + ["resnet/r1"] * 250))
    try:
        wait_for(lambda: reader.of("metrics"), timeout=20)
        assert reader.of("hello")[0]["runs"] == ["resnet/r1"]
        # five pings (ticks) later still one copy of the rows, not 250
        pings = reader.comments
        wait_for(lambda: reader.comments >= pings + 5, timeout=20)
        sent = sum(len(m["series"]["train/loss"]["step"]) for m in reader.of("metrics"))
        assert sent == 101 and len(reader.of("metrics")) == 1
        assert len(reader.of("log")) <= 1
    finally:
        reader.close()
    # 501 distinct names are still too many
    names = ",".join(f"resnet/r{i}" for i in range(501))
    assert Client(live_server.url).request("/api/stream?runs=" + names)[0] == 400


def test_a_backlog_streams_in_bounded_events(root, live_server):
    with expman.Experiment("big", base_dir=root, run_name="r", capture_git=False) as e:
        for i in range(12_345):
            e.log_metrics({"x": float(i)}, step=i)
    reader = SSEReader(live_server.url + "/api/stream?runs=big/r:0")
    try:
        wait_for(lambda: reader.of("metrics") and
                 reader.of("metrics")[-1]["next_since"] == 12_345, timeout=30)
        events = reader.of("metrics")
        assert all(len(m["series"]["x"]["step"]) <= expman.SSE_EVENT_ROWS for m in events)
        assert len(events) >= 3
        steps = [s for m in events for s in m["series"]["x"]["step"]]
        assert steps == list(range(12_345))                       # all of them, in order
        assert [m["since"] for m in events[1:]] == [m["next_since"] for m in events[:-1]]
    finally:
        reader.close()


def test_streams_at_the_same_rows_share_one_event(root, live_server):
    make_run(root, rows=100)
    hub = live_server.app.config["expman.hub"]
    path = str(root / "resnet" / "r1")
    first, nxt = hub.cache.metrics_event("resnet/r1", path, 10, 60)
    again, nxt2 = hub.cache.metrics_event("resnet/r1", path, 10, 60)
    assert again is first and nxt == nxt2 == 60      # encoded once, handed out twice
    data = json.loads(first.split(b"data: ", 1)[1])
    assert data["series"]["train/loss"]["step"] == list(range(10, 60))
    other, _ = hub.cache.metrics_event("resnet/r1", path, 60, 101)
    assert other is not first
    assert json.loads(other.split(b"data: ", 1)[1])["next_since"] == 101


@pytest.mark.parametrize("since,upto", [(0, 1), (0, 101), (37, 38), (37, 99), (100, 101),
                                        (5, 5), (0, 500), (95, 405), (299, 300)])
@pytest.mark.parametrize("live", [False, True])
def test_read_rows_reads_exactly_the_asked_rows(root, since, upto, live):
    """The stream's bounded reader against load_metrics, on a closed run (one file) and on a
    live one (segments, one per flush, with a key that appears later)."""
    e = expman.Experiment("seg", base_dir=root, run_name="r", capture_git=False)
    try:
        for i in range(400):
            e.log_metrics({"a": float(i)} if i < 150 else {"a": float("nan"), "b": i}, step=i)
            if i % 50 == 49 and live:
                assert e.flush()
        if not live:
            e.close()
        run = str(root / "seg" / "r")
        store, path = expman._open_store(run)
        if live:
            assert len(os.listdir(os.path.join(run, "metrics"))) >= 2
        whole = expman.load_metrics(run)
        part = expman._read_rows(store, path, since, upto)
        expected = whole.slice(since, max(0, min(upto, 400) - since))
        assert part.num_rows == expected.num_rows
        assert repr(part.to_pylist()) == repr(expected.select(part.column_names).to_pylist())
    finally:
        e.close()


def _m4_reference(values, max_points):
    """M4 the slow, obvious way: per run of rows, first, last, first min, first max (NaN
    skipped) and first NaN. The runs are aligned blocks of 2^k rows, k the smallest giving at
    most max_points/4 of them (issue 13: blocks a chart summary can hold ready)."""
    n = len(values)
    size = 1
    while -(-n // size) > max(1, max_points // 4):
        size *= 2
    picks = set()
    for start in range(0, n, size):
        seg = values[start:start + size]
        picks |= {start, start + len(seg) - 1}
        finite = [v for v in seg if v == v]
        if finite:
            picks.add(start + seg.index(min(finite)))
            picks.add(start + seg.index(max(finite)))
        nans = [i for i, v in enumerate(seg) if v != v]
        if nans:
            picks.add(start + nans[0])
    return sorted(picks)


def test_downsampling_matches_a_plain_python_m4():
    import random
    rng = random.Random(20)
    special = [float("nan"), float("inf"), -float("inf"), 0.5, 1.0, -0.0]
    for _ in range(150):
        n = rng.randint(1, 2500)
        values = [rng.choice(special) if rng.random() < 0.15 else rng.random()
                  for _ in range(n)]
        max_points = rng.choice([4, 8, 12, 40, 400, 2000])
        table = pa.table({"step": pa.array(range(n), pa.int64()),
                          "timestamp": pa.array(range(n), pa.timestamp("us", tz="UTC")),
                          "x": pa.array(values, pa.float64())})
        series, downsampled = expman._series_json(table, ["x"], max_points)
        expected = (_m4_reference(values, max_points) if n > max_points
                    else list(range(n)))
        assert series["x"]["step"] == expected, (n, max_points)
        assert downsampled == (n > max_points)
