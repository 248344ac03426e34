"""The page draws once per frame (issue 13 item 4), in headless Debian Chromium against a real
Waitress server: each chart draws at most once per animation frame, charts off screen wait until
they scroll in, live rows still arrive and draw, points per series shrink as more runs share a
chart, metric fetches are queued, and loading many long runs leaves no long task over 500 ms (the 200 ms target is
bench_server.py's).

window.__expmanDraws is the page's own read-only draw statistic (draws, frames that drew, the
most draws one frame made, repeats = a chart drawn twice in one frame, per-chart draw counts).
"""
import os
import time

import pytest

from _util import Child, child_env, drag, filled_root, playwright_or_skip, serving

sync_api = playwright_or_skip()
import expman  # noqa: E402

expect = sync_api.expect
TIMEOUT_MS = 60_000
MANY = 24          # runs in experiment "many"
WIDE = 32          # metric keys of experiment "wide": more charts than fit on the screen
BIG_RUNS, BIG_STEPS = 20, 50_000
KEYS = ["train/a", "train/b", "train/c"]

# Counts in-flight /metrics fetches, from the page's side: window.__metricsFetches.max.
COUNT_FETCHES = """
(() => {
  const seen = { now: 0, max: 0, urls: [] };
  window.__metricsFetches = seen;
  const original = window.fetch;
  window.fetch = function (url, init) {
    const text = String(url && url.url || url);
    if (text.indexOf('/metrics?') < 0) return original.call(this, url, init);
    seen.now++; seen.max = Math.max(seen.max, seen.now); seen.urls.push(text);
    return original.call(this, url, init).finally(() => { seen.now--; });
  };
})();
"""
LONG_TASKS = """
window.__longTasks = [];
new PerformanceObserver(list => { for (const e of list.getEntries()) window.__longTasks.push(e.duration); })
  .observe({ type: 'longtask', buffered: true });
"""
ALL_DRAWN = """([keys, runs]) => keys.every(key => {
  const n = Object.values(window.expman.chartPoints(key) || {});
  const chart = window.__expmanDraws.charts.find(c => c.key === key);
  return n.length >= runs && n.every(c => c > 0) && chart && chart.draws > 0;
})"""
TWO_FRAMES = "() => new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))"


def _log_runs(root, exp, names, steps, keys):
    for i, name in enumerate(names):
        with expman.Experiment(exp, base_dir=root, run_name=name, capture_git=False,
                               config={"seed": i}) as run:
            for step in range(steps):
                run.log_metrics({key: (k + 1) / (1 + step / 100) + 0.01 * ((step * 31 + i) % 7)
                                 for k, key in enumerate(keys)}, step=step)


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    def fill(root, scratch):
        _log_runs(root, "many", [f"run{i:02d}" for i in range(MANY)], 3000, KEYS)
        _log_runs(root, "wide", ["r"], 60, [f"k/m{i:02d}" for i in range(WIDE)])
    return filled_root(tmp_path_factory, "frames", fill)


@pytest.fixture
def page(ui):
    ui.page.set_default_timeout(TIMEOUT_MS)
    return ui.page


def draws(page):
    return page.evaluate("() => window.__expmanDraws")


def max_points_of(urls):
    return [int(u.split("max_points=")[1].split("&")[0]) for u in urls if "max_points=" in u]


def release(page, held):
    """Stop holding the page's requests and let every held one through."""
    page.unroute_all(behavior="ignoreErrors")
    for route in held:
        try:
            route.continue_()
        except Exception:   # already continued
            pass


def test_more_runs_ask_for_fewer_points_per_series_through_a_small_queue(page, server):
    page.add_init_script(COUNT_FETCHES)
    page.goto(server.url + "/#exp=many&runs=many/run00")
    page.wait_for_function(ALL_DRAWN, arg=[KEYS, 1])
    one = max_points_of(page.evaluate("() => window.__metricsFetches.urls"))
    assert len(one) == 1
    page.evaluate("() => { window.__metricsFetches.urls = []; window.__metricsFetches.max = 0; }")
    page.click("input.select-all")
    page.wait_for_function(ALL_DRAWN, arg=[KEYS, MANY])
    seen = page.evaluate("() => window.__metricsFetches")
    many = max_points_of(seen["urls"])
    # one request per run (all keys at once), never more than a few in flight
    assert len(many) == MANY - 1
    assert 1 <= seen["max"] <= 4, seen["max"]
    # each of 24 runs gets a smaller share than one run alone (all the same share), not nothing
    assert len(set(many)) == 1 and 100 <= many[0] < one[0] / 2, (one, sorted(set(many)))
    # the chart holds what was asked for: at most max_points per series (M4 keeps <= that)
    points = page.evaluate("k => window.expman.chartPoints(k)", KEYS[0])
    assert len(points) == MANY
    assert max(points["many/run05"], points["many/run23"]) <= max(many)


def test_each_chart_draws_at_most_once_per_frame(page, server):
    page.goto(server.url + "/#exp=many&runs=many/run00")
    page.wait_for_function(ALL_DRAWN, arg=[KEYS, 1])
    before = draws(page)
    page.click("input.select-all")
    page.wait_for_function(ALL_DRAWN, arg=[KEYS, MANY])
    page.evaluate(TWO_FRAMES)
    after = draws(page)
    visible = [c for c in after["charts"] if c["visible"]]
    assert len(visible) >= len(KEYS)
    assert after["repeats"] == 0
    assert after["maxPerFrame"] <= len(after["charts"])
    assert after["draws"] > before["draws"] and after["frames"] > before["frames"]
    # a settings change touches every chart: one draw each, in one frame
    settled = draws(page)
    page.locator("label:has(#logy)").click()
    page.evaluate(TWO_FRAMES)
    changed = draws(page)
    assert changed["draws"] - settled["draws"] == len(visible)
    assert changed["frames"] - settled["frames"] == 1
    assert changed["repeats"] == 0


def test_charts_off_screen_draw_only_when_scrolled_into_view(page, server):
    page.goto(server.url + "/#exp=wide&runs=wide/r")
    page.wait_for_function(f"() => window.expman.chartKeys().length === {WIDE}")
    first, last = "k/m00", f"k/m{WIDE - 1:02d}"
    page.wait_for_function("k => (window.__expmanDraws.charts.find(c => c.key === k) || {}).draws > 0",
                           arg=first)
    page.evaluate(TWO_FRAMES)
    stats = {c["key"]: c for c in draws(page)["charts"]}
    assert stats[last]["draws"] == 0 and not stats[last]["visible"]
    hidden = [c for c in stats.values() if not c["visible"]]
    assert hidden and all(c["draws"] == 0 for c in hidden)
    card = page.locator(f'.chart[data-key="{last}"]')
    assert card.bounding_box()["y"] > 900 + 200   # below the screen and the observer's margin
    assert card.locator("canvas.plot").evaluate("c => c.width") == 0
    card.scroll_into_view_if_needed()
    page.wait_for_function("k => (window.__expmanDraws.charts.find(c => c.key === k) || {}).draws > 0",
                           arg=last)
    assert card.locator("canvas.plot").evaluate("c => c.width") > 0
    assert draws(page)["repeats"] == 0


def test_live_rows_still_arrive_and_draw(page, server, data_root, tmp_path):
    stop = tmp_path / "stop"
    child = Child(f"""
        import os, time
        import expman
        with expman.Experiment("frames_live", base_dir={str(data_root)!r}, run_name="tick",
                               flush_interval_ms=100, capture_git=False) as exp:
            step, deadline = 0, time.time() + 90
            while not os.path.exists({str(stop)!r}) and time.time() < deadline:
                exp.log_metrics({{"train/loss": 1.0 / (1 + step)}}, step=step)
                if step == 0:
                    print("logging", flush=True)
                step += 1
                time.sleep(0.01)
        print("done", step, flush=True)
        """, cwd=str(tmp_path), env=child_env(os.path.dirname(expman.__file__)))
    try:
        child.wait_line(lambda line: line == "logging")
        page.goto(server.url + "/#exp=frames_live&runs=frames_live/tick")
        expect(page.locator("#live-indicator")).to_have_attribute("data-state", "live")
        count = "() => window.expman.chartPoints('train/loss')['frames_live/tick'] || 0"
        page.wait_for_function(f"() => ({count})() > 0")
        first, drawn = page.evaluate(count), draws(page)["draws"]
        page.wait_for_function(f"n => ({count})() > n + 50", arg=first)
        page.evaluate(TWO_FRAMES)
        later = draws(page)
        assert later["draws"] > drawn     # the new rows were drawn, not only stored
        assert later["repeats"] == 0
        stop.write_text("stop")
        assert child.wait(30) == 0
        steps = int(child.lines[-1].split()[1])
        page.wait_for_function(f"n => ({count})() === n", arg=steps)
    finally:
        stop.write_text("stop")
        if child.proc.poll() is None:
            child.kill()


def _drag(page, key, start, end):
    overlay = page.locator(f'.chart[data-key="{key}"] canvas.chart-overlay')
    box = overlay.bounding_box()
    y = box["y"] + box["height"] / 2
    drag(page, box["x"] + box["width"] * start, y, box["x"] + box["width"] * end, y, steps=4)


def _wait_count(page, items, n, timeout=30.0):
    deadline = time.monotonic() + timeout
    while len(items) < n:   # Playwright dispatches route events while the page waits
        assert time.monotonic() < deadline, f"{len(items)} of {n} requests"
        page.wait_for_timeout(20)


def test_zoom_keeps_coarse_curves_and_drops_stale_range_requests(page, server):
    held = []
    page.route(lambda url: "x_min=" in url, lambda route: held.append(route))
    runs = [f"many/run{i:02d}" for i in range(8)]
    try:
        page.goto(server.url + "/#exp=many&runs=" + ",".join(runs))
        page.wait_for_function(ALL_DRAWN, arg=[KEYS, len(runs)])
        page.evaluate(TWO_FRAMES)
        coarse = page.evaluate("k => window.expman.chartPoints(k)", KEYS[0])
        before = draws(page)
        _drag(page, KEYS[0], 0.3, 0.7)
        _wait_count(page, held, 4)            # the queue lets four out, the server holds them
        page.evaluate(TWO_FRAMES)
        first = [r.request.url for r in held]
        assert all(f"keys={KEYS[0].replace('/', '%2F')}" in u for u in first), first
        assert len(set(max_points_of(first))) == 1
        # the zoomed range is drawn from the coarse curves while the finer data is on its way
        waiting = draws(page)
        mine = [c for c in waiting["charts"] if c["key"] == KEYS[0]][0]
        was = [c for c in before["charts"] if c["key"] == KEYS[0]][0]
        assert mine["draws"] > was["draws"]
        assert page.evaluate("k => window.expman.chartPoints(k)", KEYS[0]) == coarse
        # a second zoom before the first has landed: the first's four queued asks never go out
        _drag(page, KEYS[0], 0.4, 0.6)
        for route in held[:4]:
            route.continue_()
        _wait_count(page, held, 8)
        for route in held[4:8]:
            route.continue_()
        _wait_count(page, held, 12)
        for route in held[8:12]:
            route.continue_()
        # the finer ranges replace the coarse ones, run by run
        page.wait_for_function("([k, c]) => Object.keys(c)"
                               ".every(r => window.expman.chartPoints(k)[r] !== c[r])",
                               arg=[KEYS[0], coarse])
        second = [r.request.url for r in held[4:]]
        first_min = {u.split("x_min=")[1].split("&")[0] for u in first}
        assert not {u.split("x_min=")[1].split("&")[0] for u in second} & first_min
        page.evaluate(TWO_FRAMES)
        assert len(held) == 12 and draws(page)["repeats"] == 0
    finally:
        release(page, held)


@pytest.fixture(scope="module")
def big_root(tmp_path_factory):
    def fill(root, scratch):
        _log_runs(root, "big", [f"b{i:02d}" for i in range(BIG_RUNS)], BIG_STEPS, KEYS)
    return filled_root(tmp_path_factory, "frames_big", fill)


def test_no_long_task_while_many_long_runs_load(page, big_root):
    with serving(big_root) as srv:
        try:
            page.set_default_timeout(120_000)
            page.add_init_script(LONG_TASKS)
            page.goto(srv.url + "/#exp=big")
            page.wait_for_function(ALL_DRAWN, arg=[KEYS, 5])   # the 5 newest, selected on open
            page.evaluate("() => { window.__longTasks.length = 0; }")
            page.click("input.select-all")
            page.wait_for_function(ALL_DRAWN, arg=[KEYS, BIG_RUNS])
            page.evaluate(TWO_FRAMES)
            tasks = page.evaluate("() => window.__longTasks")
            # The target (no long task over 200 ms) is a benchmark figure (bench_server.py
            # --parts select-all): a timed test on a shared machine measures its neighbours.
            # 500 ms still fails the page before issue 13.4 (887-7,700 ms on this data shape)
            # and leaves room for a loaded CI machine (229-251 ms seen at load 14-22).
            assert max(tasks, default=0) <= 500, (f"long tasks {sorted(tasks)[-5:]} ms, "
                                                   f"load average {os.getloadavg()}")
            assert draws(page)["repeats"] == 0
        finally:
            page.goto("about:blank")   # before the server goes: no reconnecting stream


def _runs_of(url):
    """Runs a zoom request asks for: one (/runs/<run>/metrics) or each run= of a batch."""
    return 1 if "/runs/" in url else url.count("&run=")


def test_a_zoom_of_many_runs_is_a_few_requests_ahead_of_media(page, server):
    """24 runs zoomed: at most 8 requests (several runs each, snap=1), sent before the media
    and histogram requests still queued, and every run's finer range replaces its coarse one."""
    held, seen = [], []
    page.route(lambda url: "/media?" in url or "/histograms?" in url,
               lambda route: held.append(route))
    page.on("request", lambda r: seen.append(r.url))
    try:
        page.goto(server.url + "/#exp=many&runs=many/run00")
        page.wait_for_function(ALL_DRAWN, arg=[KEYS, 1])
        page.click("input.select-all")
        page.wait_for_function(ALL_DRAWN, arg=[KEYS, MANY])
        _wait_count(page, held, 4)      # the queue's four places: media the server holds
        page.evaluate(TWO_FRAMES)
        coarse = page.evaluate("k => window.expman.chartPoints(k)", KEYS[0])
        mark = len(seen)
        _drag(page, KEYS[0], 0.3, 0.7)
        page.evaluate(TWO_FRAMES)
        assert not [u for u in seen[mark:] if "x_min=" in u]   # queued behind the four
        released, deadline = 0, time.monotonic() + 30
        while sum(_runs_of(u) for u in seen[mark:] if "x_min=" in u) < MANY:
            assert time.monotonic() < deadline, seen[mark:]
            if released < len(held):   # one of the four places is free again
                held[released].continue_()
                released += 1
            page.wait_for_timeout(50)
        after = seen[mark:]
        zooms = [i for i, u in enumerate(after) if "x_min=" in u]
        media = [i for i, u in enumerate(after) if "/media?" in u or "/histograms?" in u]
        assert len(zooms) <= 8 and all("snap=1" in after[i] for i in zooms)
        assert not media or max(zooms) < min(media), after   # the zoom went first
        page.wait_for_function("([k, c]) => Object.keys(c)"
                               ".every(r => window.expman.chartPoints(k)[r] !== c[r])",
                               arg=[KEYS[0], coarse])
        assert draws(page)["repeats"] == 0
    finally:
        release(page, held)
