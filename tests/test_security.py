"""Nobody in where they don't belong: what the server binds, who it answers, which files it
serves, and what the page does with hostile strings (the real browser for the last part).

The server runs in-process on an ephemeral port for most tests; `expman serve` runs as a real
subprocess where the CLI path itself is the point (binding, the warning, the token).
"""
import csv
import http.client
import json
import os
import re
import socket
import subprocess
import sys
import threading
import urllib.parse

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import expman
from _util import REPO, child_env, serving, start_server, wait_for

EXPMAN_PY = os.path.join(REPO, "expman.py")
SECRET = "TOP-SECRET-d41d8cd9"


# -- helpers -------------------------------------------------------------------------------------

def request(url, path, method="GET", body=None, headers=None, read=True):
    """(status, headers dict with lower-case names, body) over a raw http.client connection,
    so the path goes out exactly as written (no client-side normalisation of '..')."""
    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        data = resp.read() if read else resp.read1(4096)   # a stream: its first chunk
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, data
    finally:
        conn.close()


@pytest.fixture
def hostile(root, tmp_path):
    """A root with one ordinary run, secrets beside it and links pointing at them."""
    outside = tmp_path / "outside"
    outside.mkdir()
    secret_yaml = outside / "credentials.yaml"
    secret_yaml.write_text(f"password: {SECRET}\nname: x\nstatus: finished\n")
    (outside / "secret.txt").write_text(SECRET)
    src = tmp_path / "src"
    src.mkdir()
    (src / "ok.txt").write_text("fine")
    with expman.Experiment("exp", base_dir=root, run_name="run", capture_git=False,
                           config={"lr": 0.1}) as e:
        e.log_metrics({"x": 1.0})
        e.save_artifact(src / "ok.txt", "sub/ok.txt")
    run = root / "exp" / "run"
    art = run / "artifacts"
    os.symlink(outside / "secret.txt", art / "link.txt")            # file link out
    os.symlink(outside, art / "linkdir")                             # directory link out
    os.symlink(run / "run.yaml", art / "inside.txt")                 # out of artifacts/
    # a second run whose own files are links to the secrets
    with expman.Experiment("exp", base_dir=root, run_name="linked", capture_git=False) as e:
        e.log_metrics({"x": 1.0})
    linked = root / "exp" / "linked"
    for name in ("config.yaml", "run.log"):
        (linked / name).unlink()
        os.symlink(secret_yaml, linked / name)
    with expman.Experiment("exp2", base_dir=root, run_name="r", capture_git=False) as e:
        e.log_metrics({"x": 1.0})
    (root / "exp2" / "experiment.yaml").unlink()
    os.symlink(secret_yaml, root / "exp2" / "experiment.yaml")
    with expman.Experiment("exp3", base_dir=root, run_name="r", capture_git=False) as e:
        e.log_metrics({"x": 1.0})
    (root / "exp3" / "r" / "run.yaml").unlink()
    os.symlink(secret_yaml, root / "exp3" / "r" / "run.yaml")
    return root


@pytest.fixture
def server(hostile):
    with serving(hostile) as srv:
        yield srv


def assert_refused(status, body, what):
    assert status in (400, 403, 404), (what, status, body[:300])
    assert SECRET.encode() not in body, what
    assert b"Traceback" not in body
    assert "error" in json.loads(body), (what, body[:300])


# -- binding and the token, through the CLI --------------------------------------------------------

class Serve:
    """`python expman.py serve ...` as a real process; its URL read from stdout."""

    def __init__(self, root, *args, env=None):
        self.proc = subprocess.Popen([sys.executable, EXPMAN_PY, "serve", str(root), "--port",
                                      "0", *args], stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True,
                                     env=env or child_env())
        self.out, self.err = [], []
        self.readers = [threading.Thread(target=lambda s=stream, i=into: [i.append(l) for l in s],
                                         daemon=True)
                        for stream, into in ((self.proc.stdout, self.out),
                                             (self.proc.stderr, self.err))]
        for reader in self.readers:
            reader.start()
        line = wait_for(lambda: next((l for l in self.out if "http://" in l), None)
                        or (self.proc.poll() is not None and self._died()), timeout=60)
        self.url = re.search(r"http://\S+", line).group(0)
        parts = urllib.parse.urlsplit(self.url)
        self.base = f"http://127.0.0.1:{parts.port}"      # 0.0.0.0 answers on loopback too
        self.port = parts.port
        self.token = urllib.parse.parse_qs(parts.query).get("token", [None])[0]

    def _died(self):
        raise AssertionError(f"serve exited {self.proc.returncode}: {self.out} {self.err}")

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        for reader in self.readers:
            reader.join(10)
        self.proc.stdout.close()
        self.proc.stderr.close()


def listening(port):
    """The local addresses with a socket listening on port (from /proc/net/tcp{,6})."""
    found = set()
    for name, width in (("/proc/net/tcp", 8), ("/proc/net/tcp6", 32)):
        try:
            with open(name) as fh:
                rows = fh.read().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            local, state = row.split()[1], row.split()[3]
            addr, _, hexport = local.partition(":")
            if state == "0A" and int(hexport, 16) == port:
                raw = bytes.fromhex(addr)
                if width == 8:
                    found.add(socket.inet_ntop(socket.AF_INET, raw[::-1]))
                else:
                    words = b"".join(raw[i:i + 4][::-1] for i in range(0, 16, 4))
                    found.add(socket.inet_ntop(socket.AF_INET6, words))
    return found


def test_serve_binds_loopback_by_default_without_warning(root):
    with expman.Experiment("exp", base_dir=root, run_name="r", capture_git=False) as e:
        e.log_metrics({"x": 1.0})
    srv = Serve(root)
    try:
        assert srv.url.startswith("http://127.0.0.1:") and srv.token is None
        assert listening(srv.port) == {"127.0.0.1"}
        status, _, body = request(srv.base, "/api/experiments")
        assert status == 200 and json.loads(body)["experiments"][0]["name"] == "exp"
        assert not [l for l in srv.err if "warning" in l]
    finally:
        srv.stop()


@pytest.mark.parametrize("how", ["made-up", "--token", "EXPMAN_TOKEN"])
def test_serve_on_all_interfaces_warns_and_needs_the_token(root, how):
    with expman.Experiment("exp", base_dir=root, run_name="r", capture_git=False) as e:
        e.log_metrics({"x": 1.0})
    args, env = ["--host", "0.0.0.0"], None
    if how == "--token":
        args += ["--token", "given-token-1"]
    elif how == "EXPMAN_TOKEN":
        env = child_env(EXPMAN_TOKEN="env-token-2")
    srv = Serve(root, *args, env=env)
    try:
        expected = {"made-up": srv.token, "--token": "given-token-1",
                    "EXPMAN_TOKEN": "env-token-2"}[how]
        assert srv.token == expected and len(expected) >= 11
        assert listening(srv.port) == {"0.0.0.0"}
        warning = wait_for(lambda: [l for l in srv.err if "warning" in l], timeout=10)
        assert len(warning) == 1 and "0.0.0.0" in warning[0] and "token" in warning[0]
        api = ["/", "/api/health", "/api/experiments", "/api/experiments/exp/runs",
               "/api/experiments/exp/runs/r/metrics", "/api/experiments/exp/runs/r/log",
               "/api/stream?runs=exp/r"]
        for path in api:
            for headers in ({}, {"Authorization": "Bearer wrong"},
                            {"Cookie": "expman_token=wrong"}):
                status, hdrs, body = request(srv.base, path, headers=headers)
                assert status == 401, (path, headers, status)
                assert b"exp" not in body.replace(b"expman", b"")   # no data, only the error
        for path in api[:-1]:
            status, _, _ = request(srv.base, path, headers={"Authorization": f"Bearer {expected}"})
            assert status == 200, path
        status, hdrs, _ = request(srv.base, f"/?token={expected}")
        assert status == 200 and "httponly" in hdrs["set-cookie"].lower()
        assert "samesite=strict" in hdrs["set-cookie"].lower()
        status, hdrs, body = request(srv.base, f"/api/stream?runs=exp/r&token={expected}",
                                     read=False)
        assert status == 200 and hdrs["content-type"].startswith("text/event-stream")
        assert b"event: hello" in body
        # with a token, any Host name is fine (the token is the guard)
        status, _, _ = request(srv.base, "/api/health", headers={
            "Host": "myhost.example:1", "Authorization": f"Bearer {expected}"})
        assert status == 200
    finally:
        srv.stop()


def test_env_token_protects_a_loopback_server_too(root):
    srv = Serve(root, env=child_env(EXPMAN_TOKEN="loop-token-3"))
    try:
        assert srv.token == "loop-token-3"
        assert request(srv.base, "/api/experiments")[0] == 401
        assert request(srv.base, "/api/experiments",
                       headers={"Authorization": "Bearer loop-token-3"})[0] == 200
    finally:
        srv.stop()


def test_without_a_token_only_local_host_names_are_answered(server):
    """DNS rebinding: evil.example re-pointed at 127.0.0.1 is same-origin with itself."""
    for host in ("evil.example", "evil.example:8000", "127.0.0.1.evil.example"):
        for method, path, body, headers in (
                ("GET", "/api/experiments", None, {}),
                ("GET", "/", None, {}),
                ("PATCH", "/api/experiments/exp/runs/run/metadata", b'{"tags": ["x"]}',
                 {"Content-Type": "application/json", "Origin": f"http://{host}"})):
            status, _, data = request(server.url, path, method=method, body=body,
                                      headers={"Host": host, **headers})
            assert status == 403 and b"Host" in data, (host, method, path, status)
    assert expman.load_run(server.app.config["expman.hub"].root + "/exp/run")["tags"] == []
    for host in ("127.0.0.1:9", "localhost", "localhost:8000", "[::1]:8000", "10.1.2.3"):
        assert request(server.url, "/api/health", headers={"Host": host})[0] == 200, host


# -- traversal on every route that takes a name or a path ---------------------------------------

NAME_ATTACKS = ["..", "%2e%2e", "%2E%2E", "..%2F..", "..%2f..%2fetc", "%2Fetc%2Fpasswd",
                "%00", "run%00", ".", "...", "..%5C..", "%5C", "%252e%252e", "~root",
                "%20", "___", "x" * 300, "%C0%AE%C0%AE", "run%2F..%2F..%2Fsecret.txt",
                ".run", "linked%2F..%2F..%2F..%2Foutside"]
NAME_ROUTES = ["/api/experiments/{e}/runs", "/api/experiments/{e}/metadata",
               "/api/experiments/{e}/runs/{r}/metadata", "/api/experiments/{e}/runs/{r}/config",
               "/api/experiments/{e}/runs/{r}/metrics", "/api/experiments/{e}/runs/{r}/log",
               "/api/experiments/{e}/runs/{r}/artifacts",
               "/api/experiments/{e}/runs/{r}/artifacts/content?path=sub/ok.txt",
               "/api/experiments/{e}/runs/{r}/artifacts/raw?path=sub/ok.txt",
               "/api/stream?runs={e}/{r}"]


@pytest.mark.parametrize("route", NAME_ROUTES)
def test_names_with_traversal_are_refused_on_every_route(server, route):
    for attack in NAME_ATTACKS:
        for e, r in ((attack, "run"), ("exp", attack)):
            if "{r}" not in route and e == "exp":
                continue
            path = route.format(e=e, r=r)
            status, headers, body = request(server.url, path,
                                            read=not path.startswith("/api/stream"))
            assert_refused(status, body, path)
            assert headers["x-content-type-options"] == "nosniff", path
    # and the same requests with a raw '../' in the path, as no browser would send them
    for path in ("/api/experiments/../../../etc/passwd", "/api/experiments/exp/../../x/runs",
                 "/api/experiments/exp/runs/run/../../../../outside/secret.txt"):
        status, _, body = request(server.url, path)
        assert_refused(status, body, path)


ARTIFACT_ATTACKS = ["../run.yaml", "..%2Frun.yaml", "%2e%2e/run.yaml", "%2e%2e%2frun.yaml",
                    "sub/../../run.yaml", "/etc/passwd", "%2Fetc%2Fpasswd", "link.txt",
                    "linkdir/secret.txt", "inside.txt", "x%00.txt", "sub%00/ok.txt",
                    "..%5Crun.yaml", "C:%5Cx", "", ".", "sub//ok.txt", "./sub/ok.txt",
                    "%252e%252e/run.yaml", "x" * 5000, "a/" * 3000 + "b", "sub/ok.txt/..",
                    "%C0%AE%C0%AE/run.yaml", "..", "sub/../.."]


@pytest.mark.parametrize("route", ["content", "raw"])
def test_artifact_paths_never_leave_the_run(server, route):
    for attack in ARTIFACT_ATTACKS:
        path = f"/api/experiments/exp/runs/run/artifacts/{route}?path={attack}"
        status, _, body = request(server.url, path)
        assert_refused(status, body, attack[:40])
        assert b"status:" not in body and b"heartbeat" not in body, attack[:40]
    status, _, body = request(server.url, f"/api/experiments/exp/runs/run/artifacts/{route}"
                                          f"?path=sub/ok.txt")
    assert status == 200 and b"fine" in body
    listing = json.loads(request(server.url, "/api/experiments/exp/runs/run/artifacts")[2])
    assert {a["path"] for a in listing["artifacts"]} == {"sub/ok.txt"}


def test_run_files_that_link_out_of_the_run_are_not_served(server):
    base = "/api/experiments/exp/runs/linked"
    for route in ("config", "log", "metadata", "metrics", "artifacts"):
        status, _, body = request(server.url, f"{base}/{route}")
        assert_refused(status, body, route)
    status, _, body = request(server.url, "/api/experiments/exp2/metadata")
    assert_refused(status, body, "experiment.yaml")
    status, _, body = request(server.url, "/api/experiments/exp3/runs/r/metadata")
    assert_refused(status, body, "run.yaml")
    for exp in ("exp", "exp3"):     # the runs table shows them, without what the links hold
        status, _, body = request(server.url, f"/api/experiments/{exp}/runs")
        assert status == 200 and SECRET.encode() not in body
    status, _, body = request(server.url, "/api/stream?runs=exp/linked")
    assert_refused(status, body, "stream")
    # the ordinary run beside them still works
    assert request(server.url, "/api/experiments/exp/runs/run/config")[0] == 200


def test_bad_query_values_are_400_not_500(server):
    base = "/api/experiments/exp/runs/run"
    for path in (f"{base}/metrics?x_min=nan", f"{base}/metrics?x_max=inf",
                 f"{base}/metrics?x_min=-inf&x_max=1", f"{base}/metrics?since=abc",
                 f"{base}/metrics?max_points=-5", f"{base}/log?since=1e3",
                 f"{base}/metrics?since=-1"):
        status, _, body = request(server.url, path)
        assert status == 400 and "error" in json.loads(body), (path, status)


# -- PATCH: only same-origin JSON ---------------------------------------------------------------

@pytest.mark.parametrize("content_type,origin,expected", [
    ("application/json", None, 200),
    ("application/json", "same", 200),
    ("application/json", "http://evil.example", 403),
    ("application/json", "null", 403),
    ("application/json", "http://127.0.0.1:1", 403),            # another local port: a site
    ("text/plain", None, 415),                                  # what a cross-site <form>
    ("application/x-www-form-urlencoded", None, 415),           # or fetch() may send
    ("multipart/form-data; boundary=x", None, 415),
    ("text/plain", "http://evil.example", 415),
    (None, None, 415),
])
def test_patch_refuses_cross_site_requests(server, content_type, origin, expected):
    parts = urllib.parse.urlsplit(server.url)
    headers = {}
    if content_type:
        headers["Content-Type"] = content_type
    if origin:
        headers["Origin"] = f"http://{parts.netloc}" if origin == "same" else origin
    body = json.dumps({"description": "changed", "tags": ["t"]}).encode()
    status, hdrs, data = request(server.url, "/api/experiments/exp/runs/run/metadata",
                                 method="PATCH", body=body, headers=headers)
    assert status == expected, (status, data[:200])
    assert hdrs["x-content-type-options"] == "nosniff"
    run = expman.load_run(server.app.config["expman.hub"].root + "/exp/run")
    assert (run["description"] == "changed") == (expected == 200)


# -- headers and active content -----------------------------------------------------------------

def test_every_response_carries_csp_and_nosniff(hostile, server):
    token_srv, thread = start_server(hostile, token="tok")
    try:
        cases = [(server.url, "/"), (server.url, "/api/health"), (server.url, "/api/nothing"),
                 (server.url, "/api/experiments/exp/runs/run/metrics?since=x"),
                 (server.url, "/api/experiments/exp/runs/run/artifacts/raw?path=sub/ok.txt"),
                 (server.url, "/api/experiments/exp/runs/linked/config"),
                 (token_srv.url, "/api/health"), (token_srv.url, "/")]
        for url, path in cases:
            status, headers, _ = request(url, path)
            csp = headers.get("content-security-policy", "")
            assert headers.get("x-content-type-options") == "nosniff", (path, status)
            assert "default-src 'none'" in csp and "frame-ancestors 'none'" in csp, path
            assert "unsafe-eval" not in csp and "script-src 'unsafe-inline'" not in csp, csp
        status, headers, _ = request(server.url, "/api/stream", read=False)
        assert headers["x-content-type-options"] == "nosniff"
    finally:
        token_srv.close()
        thread.join(10)


ACTIVE = ["page.html", "page.HTM", "x.xhtml", "pic.svg", "PIC.SVG", "feed.xml", "app.js",
          "doc.pdf", "z.svgz", "no_extension", "a\r\nSet-Cookie: pwned=1.html",
          "r\u00e9sum\u00e9 \u65e5\u672c.html", 'q"uote;.html']


def test_active_artifacts_only_download(root, tmp_path):
    src = tmp_path / "payload"
    src.write_text("<script>window.__pwned=1</script><svg onload=alert(1)>")
    with expman.Experiment("exp", base_dir=root, run_name="run", capture_git=False) as e:
        for name in ACTIVE + ["fake.png"]:
            e.save_artifact(src, name)
    srv, thread = start_server(root)
    try:
        for name in ACTIVE:
            quoted = urllib.parse.quote(name, safe="")
            status, headers, body = request(
                srv.url, f"/api/experiments/exp/runs/run/artifacts/raw?path={quoted}")
            assert status == 200, (name, status, body[:200])
            assert headers["content-type"] == "application/octet-stream", name
            disposition = headers["content-disposition"]
            assert disposition.startswith("attachment;"), name
            assert "\r" not in disposition and "\n" not in disposition
            assert "set-cookie" not in headers, name
            # the content preview is JSON text, never markup the browser renders
            status, headers, body = request(
                srv.url, f"/api/experiments/exp/runs/run/artifacts/content?path={quoted}")
            assert status == 200 and headers["content-type"].startswith("application/json")
        quoted = urllib.parse.quote("r\u00e9sum\u00e9 \u65e5\u672c.html", safe="")
        disposition = request(srv.url, f"/api/experiments/exp/runs/run/artifacts/raw?path="
                                       f"{quoted}")[1]["content-disposition"]
        assert f"filename*=UTF-8''{quoted}" in disposition
        # an "image" that is really markup stays an image: typed, and never sniffed
        status, headers, _ = request(srv.url, "/api/experiments/exp/runs/run/artifacts/raw"
                                              "?path=fake.png")
        assert headers["content-type"] == "image/png"
        assert headers["x-content-type-options"] == "nosniff"
    finally:
        srv.close()
        thread.join(10)


# -- stored XSS in the real browser: table cells and everything else a user can write --------------

XSS = '<img src=x onerror="window.__pwned=1;alert(1)">'
XSS2 = "<script>window.__pwned=2</script>"
XSS3 = '"><svg onload="window.__pwned=3">'


def _xss_root(root, scratch):
    table = scratch / "cells.parquet"
    pq.write_table(pa.table({XSS: [XSS2, XSS3, "ok"], "n": [1, 2, 3],
                             XSS3: [XSS, None, "<b>bold</b>"]}), table)
    csv_path = scratch / "cells.csv"
    with open(csv_path, "w", newline="") as fh:
        csv.writer(fh).writerows([[XSS, "plain"], [XSS2, XSS3],
                                  ["<iframe src=javascript:alert(1)>", "x"]])
    feather = scratch / "cells.arrow"
    import pyarrow.feather as feather_mod
    feather_mod.write_feather(pa.table({"html": [XSS, XSS2]}), feather)
    html = scratch / "page.html"
    html.write_text(XSS2 + XSS)
    svg = scratch / "pic.svg"
    svg.write_text('<svg xmlns="http://www.w3.org/2000/svg" onload="window.__pwned=4"/>')
    try:
        with expman.Experiment("cells", base_dir=root, run_name="r", capture_git=False,
                               config={"k": XSS3}, tags=[XSS3], description=XSS2) as exp:
            for step in range(5):
                exp.log_metrics({"loss": 1.0 / (step + 1)}, step=step)
            exp.log_scalar(XSS, 1.0)
            exp.info(XSS3)
            for f in (table, csv_path, feather, html, svg):
                exp.save_artifact(f)
            raise RuntimeError(XSS)          # the error message is shown too
    except RuntimeError:
        pass
    meta = (root / "cells" / "experiment.yaml")
    import yaml
    data = yaml.safe_load(meta.read_text())
    data.update(display_name=XSS, description=XSS2, tags=[XSS3])
    meta.write_text(yaml.safe_dump(data))


def test_table_cells_and_every_other_string_render_as_text(root, tmp_path, ui):
    from playwright.sync_api import expect
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    _xss_root(root, scratch)
    with serving(root) as srv:      # ui fails the test on a console error or a dialog
        page = ui.page
        page.goto(srv.url + "/#exp=cells&run=cells/r")
        expect(page.locator("#run-detail")).to_be_visible()
        expect(page.locator("#experiments")).to_contain_text(XSS)   # display name
        expect(page.locator("#detail-meta")).to_contain_text("RuntimeError")
        expect(page.locator("#detail-desc")).to_contain_text(XSS2)
        expect(page.locator("#log")).to_contain_text(XSS3)
        preview = page.locator("#artifact-preview")
        for name in ("cells.parquet", "cells.csv", "cells.arrow"):
            page.locator(f"#artifacts .af-file[data-path='{name}']").click()
            table = preview.locator("table.data")
            expect(table).to_be_visible()
            cells = table.locator("td, th")
            expect(cells.first).to_be_visible()
            texts = [t for t in cells.all_text_contents()]
            assert any(XSS in t for t in texts), (name, texts)
            assert any(XSS2 in t for t in texts), (name, texts)
        for name in ("page.html", "pic.svg"):
            page.locator(f"#artifacts .af-file[data-path='{name}']").click()
            expect(preview.locator("pre")).to_contain_text("__pwned")
        page.screenshot(path=str(tmp_path / "xss-cells.png"))
        made = page.evaluate("""() => document.querySelectorAll(
            '#run-detail img, #run-detail iframe, #run-detail svg[onload], '
            + 'script:not(:first-of-type), #artifact-preview b, [onerror], [onload]'
            ).length""")
        assert made == 0
        assert page.evaluate("window.__pwned") is None
        page.goto("about:blank")


# -- issue 20: links out of every file read, bad numbers, tokens, slowloris --------------------

def _live_linked_run(root, tmp_path, what):
    """A run holding one more file the server reads, as a link to a secret outside the run:
    a metrics segment, the media index, or a histogram segment."""
    outside = tmp_path / "outside-files"
    outside.mkdir(exist_ok=True)
    secret = outside / f"{what}.bin"
    e = expman.Experiment("exp", base_dir=root, run_name=what, capture_git=False)
    try:
        e.log_metrics({"x": 1.0}, step=0)
        e.log_text("note", "fine", step=0)
        e.log_histogram("h", [1.0, 2.0], step=0, bins=2)
        assert e.flush()
    finally:
        e.close() if what != "segment" else None
    run = root / "exp" / what
    if what == "segment":      # live: segments are what the readers read
        segs = sorted((run / "metrics").iterdir())
        target = segs[0]
    elif what == "media":
        target = run / "media" / "index.jsonl"
    else:
        hist = run / "histograms.parquet"
        target = hist if hist.exists() else sorted((run / "histograms").iterdir())[0]
    extra = SECRET.encode() if what == "media" else b""   # Parquet files stay readable
    secret.write_bytes(target.read_bytes() + extra)
    target.unlink()
    os.symlink(secret, target)
    return e


@pytest.mark.parametrize("what", ["segment", "media", "histogram"])
def test_every_run_file_that_links_out_is_refused(root, tmp_path, what):
    e = _live_linked_run(root, tmp_path, what)
    srv, thread = start_server(root)
    try:
        base = f"/api/experiments/exp/runs/{what}"
        for route in ("metrics", "metrics?since=0&max_points=10", "media", "histograms", "log",
                      "config"):
            status, _, body = request(srv.url, f"{base}/{route}")
            assert_refused(status, body, f"{what}: {route}")
            assert status == 403 and b"link out of the run" in body, (route, body)
        status, _, body = request(srv.url, f"/api/stream?runs=exp/{what}:0", read=False)
        assert_refused(status, body, f"{what}: stream")
    finally:
        srv.close()
        thread.join(10)
        e.close()


def test_a_segment_linked_after_the_stream_opened_is_not_streamed(root, tmp_path):
    """The stream checks what it reads, not only the run at open time."""
    with expman.Experiment("exp", base_dir=root, run_name="late", capture_git=False) as e:
        e.log_metrics({"x": 1.0}, step=0)
    srv, thread = start_server(root)
    try:
        hub = srv.app.config["expman.hub"]
        path = str(root / "exp" / "late")
        final = root / "exp" / "late" / "metrics.parquet"
        (tmp_path / "far.parquet").write_bytes(final.read_bytes())
        final.unlink()
        os.symlink(tmp_path / "far.parquet", final)
        with pytest.raises(expman.InvalidInputError, match="link out"):
            expman._read_rows(hub.store, path, 0, 1)
        assert hub.cache.state(path)[0] == 0       # no row count read through the link
    finally:
        srv.close()
        thread.join(10)


def test_out_of_range_numbers_and_negative_offsets_are_400(server):
    base = "/api/experiments/exp/runs/run"
    for path in (f"{base}/metrics?x_min=1e308&x_max=-1e308", f"{base}/metrics?x_min=1e19",
                 f"{base}/metrics?x_max=-9.3e18", f"{base}/metrics?since=99999999999999999999",
                 f"{base}/log?since=-5", f"{base}/log?tail=-5", f"{base}/log?tail=abc",
                 f"{base}/media?since=-1", f"{base}/histograms?max_steps=1e400",
                 f"/api/stream?runs=exp/run:-3"):
        status, _, body = request(server.url, path)
        assert status == 400 and "error" in json.loads(body), (path, status, body[:200])
    # the largest steps an int64 holds are still a window
    status, _, body = request(server.url, f"{base}/metrics?x_min=-9e18&x_max=9e18")
    assert status == 200 and json.loads(body)["series"]["x"]["value"] == [1.0]


def test_wrong_tokens_are_rate_limited_per_client(root):
    with expman.Experiment("exp", base_dir=root, run_name="r", capture_git=False) as e:
        e.log_metrics({"x": 1.0})
    srv, thread = start_server(root, token="a-long-enough-token-123")
    try:
        statuses = [request(srv.url, "/api/health",
                            headers={"Authorization": f"Bearer guess{i}"})[0] for i in range(40)]
        assert statuses[:expman.TOKEN_GUESSES] == [401] * expman.TOKEN_GUESSES
        assert statuses[-1] == 429
        assert statuses.count(401) <= expman.TOKEN_GUESSES + 2   # +refill during the loop
        # while limited, even the right token is not compared (a guesser learns nothing)
        status, headers, body = request(srv.url, "/api/health", headers={
            "Authorization": "Bearer a-long-enough-token-123"})
        assert status == 429 and int(headers["retry-after"]) >= 1 and "error" in json.loads(body)
        # the budget refills: the right token works again after Retry-After
        assert wait_for(lambda: request(srv.url, "/api/health", headers={
            "Authorization": "Bearer a-long-enough-token-123"})[0] == 200, timeout=10)
        # requests with no token at all (a page opened without its URL) are not guesses
        assert {request(srv.url, "/api/health")[0] for _ in range(30)} == {401}
    finally:
        srv.close()
        thread.join(10)


def test_the_token_page_is_never_stored(root):
    srv, thread = start_server(root, token="a-long-enough-token-456")
    try:
        status, headers, _ = request(srv.url, "/?token=a-long-enough-token-456")
        assert status == 200 and headers["cache-control"] == "no-store"
        status, headers, _ = request(srv.url, "/", headers={
            "Cookie": "expman_token=a-long-enough-token-456"})
        assert status == 200 and headers["cache-control"] == "no-store"
    finally:
        srv.close()
        thread.join(10)


def test_weak_token_warns_and_token_file_keeps_it_out_of_ps(root, tmp_path):
    weak = Serve(root, "--token", "abc")
    try:
        assert weak.token == "abc"
        line = wait_for(lambda: [l for l in weak.err if "warning" in l], timeout=10)
        assert len(line) == 1 and "easy to guess" in line[0] and "3 characters" in line[0]
    finally:
        weak.stop()
    token_file = tmp_path / "token"
    token_file.write_text("from-a-file-0123456789abcdef\n")
    srv = Serve(root, "--token-file", str(token_file))
    try:
        assert srv.token == "from-a-file-0123456789abcdef"
        with open(f"/proc/{srv.proc.pid}/cmdline", "rb") as fh:
            assert b"from-a-file" not in fh.read()
        assert request(srv.base, "/api/health")[0] == 401
        assert request(srv.base, "/api/health", headers={
            "Authorization": f"Bearer {srv.token}"})[0] == 200
        assert not [l for l in srv.err if "warning" in l]
    finally:
        srv.stop()


def test_an_empty_token_on_all_interfaces_still_gets_a_token(root):
    srv = Serve(root, "--host", "0.0.0.0", "--token", "")
    try:
        assert srv.token and len(srv.token) >= 16          # made up, and in the URL
        assert request(srv.base, "/api/health")[0] == 401
        assert request(srv.base, "/api/health", headers={
            "Authorization": f"Bearer {srv.token}"})[0] == 200
    finally:
        srv.stop()


def _slow_sockets(url, count, host=None):
    parts = urllib.parse.urlsplit(url)
    socks = []
    for _ in range(count):
        s = socket.create_connection((host or parts.hostname, parts.port), timeout=10)
        s.sendall(b"GET /api/health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-a: ")
        socks.append(s)
    return socks


def _closed_by_server(sock):
    """True once the server closed sock (without waiting: a non-blocking peek)."""
    sock.setblocking(False)
    try:
        return sock.recv(1) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True


def test_slowloris_does_not_lock_anyone_out(root, monkeypatch):
    """150 sockets that never finish their headers (Waitress's own limit is 100 connections,
    all that 99 such sockets needed to lock everyone out): the server keeps answering, and
    closes them once SERVER_REQUEST_SECS have passed."""
    monkeypatch.setattr(expman, "SERVER_REQUEST_SECS", 1.0)
    srv, thread = start_server(root)
    socks = []
    try:
        socks = _slow_sockets(srv.url, 150)
        for s in socks:
            s.sendall(b"x")          # a byte now and then keeps Waitress's idle timer happy
        for _ in range(5):
            status, _, body = request(srv.url, "/api/health")
            assert status == 200 and json.loads(body)["status"] == "ok"

        def trickle_until_closed():   # a byte at a time does not buy more time
            for s in socks:
                try:
                    s.send(b"x")
                except OSError:
                    pass
            return all(_closed_by_server(s) for s in socks)

        assert wait_for(trickle_until_closed, timeout=20, interval=0.25,
                        message="slow sockets closed by the server")
        assert request(srv.url, "/api/health")[0] == 200
    finally:
        for s in socks:
            s.close()
        srv.close()
        thread.join(10)


def _own_address():
    """This machine's address on a non-loopback interface (None without one)."""
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        probe.connect(("10.255.255.255", 9))   # no packet is sent for a UDP connect
        address = probe.getsockname()[0]
    except OSError:
        return None
    finally:
        probe.close()
    return None if address.startswith("127.") else address


def test_one_remote_client_gets_a_bounded_share_of_connections(root, monkeypatch):
    address = _own_address()
    if address is None:
        pytest.skip("no non-loopback interface to connect from")
    monkeypatch.setattr(expman, "SERVER_CLIENT_CONNECTIONS", 5)
    srv, thread = start_server(root, host=address)
    socks = []
    try:
        socks = _slow_sockets(srv.url, 8, host=address)
        assert wait_for(lambda: sum(_closed_by_server(s) for s in socks) >= 3, timeout=10)
        assert sum(not _closed_by_server(s) for s in socks) == 5
        # loopback clients are not that client: a loopback server still answers them
        local, local_thread = start_server(root)
        try:
            more = _slow_sockets(local.url, 8)
            assert request(local.url, "/api/health")[0] == 200
            assert not any(_closed_by_server(s) for s in more)
            for s in more:
                s.close()
        finally:
            local.close()
            local_thread.join(10)
    finally:
        for s in socks:
            s.close()
        srv.close()
        thread.join(10)
