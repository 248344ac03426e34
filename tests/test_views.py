"""Saved views (issue 14): named page states saved into the experiment as
<exp>/.views/<name>.json through GET/PUT/POST/DELETE /api/experiments/<exp>/views[/<name>], and
the page's view picker. A real Waitress server on port 0; the page in Debian Chromium.
"""
import json
import urllib.error
import urllib.parse
import urllib.request

import pytest

import expman
from _util import Page, playwright_or_skip, start_server, stop_server


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("views") / "experiments"
    root.mkdir()
    for i, lr in enumerate((0.1, 0.01, 0.001)):
        with expman.Experiment("sweep", base_dir=root, run_name=f"r{i}", capture_git=False,
                               config={"lr": lr}) as run:
            for step in range(10):
                run.log_metrics({"loss": lr * (10 - step)}, step=step)
    return root


def call(server, method, path, body=None, content_type="application/json", headers=None):
    data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    req = urllib.request.Request(server.url + path, method=method, data=data,
                                 headers={"Content-Type": content_type, **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def view_url(name, exp="sweep"):
    return f"/api/experiments/{exp}/views/{urllib.parse.quote(name, safe='')}"


def test_views_round_trip_through_the_api_into_files(server, data_root):
    assert call(server, "GET", "/api/experiments/sweep/views") == \
        (200, {"experiment": "sweep", "views": []})
    status, saved = call(server, "PUT", view_url("lr sweep"), {"hash": "#exp=sweep&logy=1"})
    assert status == 200 and saved["name"] == "lr sweep" and saved["hash"] == "#exp=sweep&logy=1"
    status, _ = call(server, "POST", view_url("Best (v2)"), {"hash": "exp=sweep"})
    assert status == 200
    on_disk = json.loads((data_root / "sweep" / ".views" / "lr sweep.json").read_text())
    assert on_disk["hash"] == "#exp=sweep&logy=1" and on_disk["saved_at"]
    status, body = call(server, "GET", "/api/experiments/sweep/views")
    assert status == 200
    assert [(v["name"], v["hash"]) for v in body["views"]] == \
        [("Best (v2)", "#exp=sweep"), ("lr sweep", "#exp=sweep&logy=1")]
    # saving again replaces; the views folder is no run and no experiment
    call(server, "PUT", view_url("lr sweep"), {"hash": "#exp=sweep&logy=0"})
    assert call(server, "GET", "/api/experiments/sweep/views")[1]["views"][1]["hash"] == \
        "#exp=sweep&logy=0"
    assert sorted(r["name"] for r in call(server, "GET", "/api/experiments/sweep/runs")[1]["runs"]) \
        == ["r0", "r1", "r2"]
    assert [e["name"] for e in call(server, "GET", "/api/experiments")[1]["experiments"]] == ["sweep"]
    assert call(server, "DELETE", view_url("Best (v2)")) == (200, {"deleted": "Best (v2)"})
    assert not (data_root / "sweep" / ".views" / "Best (v2).json").exists()
    assert call(server, "DELETE", view_url("Best (v2)"))[0] == 404
    call(server, "DELETE", view_url("lr sweep"))


@pytest.mark.parametrize("name", [".hidden", "..", " lead", "trail ", "a\\b", "x" * 81, "a;b",
                                  "dot.", "_under"])
def test_bad_view_names_are_refused(server, data_root, name):
    status, body = call(server, "PUT", view_url(name), {"hash": "#exp=sweep"})
    assert status in (400, 404), (status, body)
    assert "error" in body
    assert not list((data_root / "sweep").glob(".views/*")) or \
        all(p.name.endswith(".json") and not p.name.startswith(".") for p in
            (data_root / "sweep" / ".views").iterdir())


def test_view_writes_are_checked_like_the_other_mutating_routes(server):
    # a cross-site page, a form post (text/plain), a bad body, an unknown experiment
    assert call(server, "PUT", view_url("x"), {"hash": "#"},
                headers={"Origin": "http://evil.example"})[0] == 403
    assert call(server, "DELETE", view_url("x"), headers={"Origin": "http://evil.example"})[0] == 403
    assert call(server, "POST", view_url("x"), b'{"hash": "#"}', content_type="text/plain")[0] == 415
    assert call(server, "PUT", view_url("x"), b"not json")[0] == 400
    assert call(server, "PUT", view_url("x"), {"state": "#"})[0] == 400
    assert call(server, "PUT", view_url("x"), {"hash": "#" + "a" * 20_000})[0] == 400
    assert call(server, "PUT", view_url("x", exp="nope"), {"hash": "#"})[0] == 404
    assert call(server, "GET", "/api/experiments/nope/views")[0] == 404
    assert call(server, "GET", "/api/experiments/..%2F/views")[0] == 404


def test_views_need_the_token_when_the_server_has_one(data_root):
    server, thread = start_server(data_root, token="s3cret-token-0123456789")
    try:
        assert call(server, "PUT", view_url("t"), {"hash": "#"})[0] == 401
        assert call(server, "GET", "/api/experiments/sweep/views")[0] == 401
        status, _ = call(server, "PUT", view_url("t"), {"hash": "#"},
                         headers={"Authorization": "Bearer s3cret-token-0123456789"})
        assert status == 200
        assert call(server, "DELETE", view_url("t"),
                    headers={"Authorization": "Bearer s3cret-token-0123456789"})[0] == 200
    finally:
        stop_server(server, thread)


# -- the page ----------------------------------------------------------------------------------

@pytest.fixture
def pages(browser):
    made = []

    def new():
        p = Page(browser)
        made.append(p)
        return p
    yield new
    for p in made:
        p.check()


def test_a_saved_view_reopens_after_a_reload_and_in_another_browser(pages, server):
    expect = playwright_or_skip().expect
    a = pages().page
    a.goto(server.url + "/#exp=sweep&runs=sweep/r0,sweep/r2")
    expect(a.locator("#legend .chip")).to_have_count(2)
    expect(a.locator("#view-picker")).to_have_value("")
    a.locator("#logy").check(force=True)
    a.locator("#filter").fill("lr<0.05")
    a.wait_for_function("() => location.hash.indexOf('q=') >= 0 && location.hash.indexOf('logy=1') >= 0")
    a.locator("#view-save").click()
    expect(a.locator("#view-form")).to_be_visible()
    a.locator("#view-name").fill("small lr, log")
    a.locator("[data-testid=view-name-ok]").click()
    expect(a.locator("#view-form")).to_be_hidden()
    expect(a.locator("#view-picker")).to_have_value("small lr, log")
    # a bad name says why, in the form
    a.locator("#view-save").click()
    a.locator("#view-name").fill(".secret")
    a.locator("[data-testid=view-name-ok]").click()
    expect(a.locator("#view-error")).to_contain_text("A view name is")
    a.locator("#view-cancel").click()

    # another browser (its own storage) starts on a different state and opens the view
    b = pages().page
    b.goto(server.url + "/#exp=sweep&runs=sweep/r1")
    expect(b.locator("#legend .chip")).to_have_count(1)
    expect(b.locator("#view-picker option")).to_have_count(2)
    b.locator("#view-picker").select_option("small lr, log")
    expect(b.locator("#legend .chip")).to_have_count(2)
    expect(b.locator("#legend .chip[data-run-key='sweep/r0']")).to_have_count(1)
    expect(b.locator("#legend .chip[data-run-key='sweep/r2']")).to_have_count(1)
    expect(b.locator("#logy")).to_be_checked()
    expect(b.locator("#filter")).to_have_value("lr<0.05")
    expect(b.locator("#runs-table tbody tr[data-run]")).to_have_count(2)
    # the view's state is in the URL: a reload keeps it
    b.reload()
    expect(b.locator("#legend .chip")).to_have_count(2)
    expect(b.locator("#logy")).to_be_checked()
    expect(b.locator("#filter")).to_have_value("lr<0.05")
    # deleting it removes it for everyone
    b.locator("#view-picker").select_option("small lr, log")
    b.locator("#view-delete").click()
    expect(b.locator("#view-picker option")).to_have_count(1)
    a.reload()
    expect(a.locator("#view-picker option")).to_have_count(1)
    expect(a.locator("#view-picker option")).to_have_text("No saved views")
