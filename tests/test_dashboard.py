"""The dashboard page in a real browser: headless Debian Chromium driven by Playwright, against
a real Waitress server on an ephemeral port. Every wait is a poll with a deadline.

Screenshots land in each test's tmp_path (pytest prints it on failure): look at them.
"""
import os
import struct
import zlib

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

# the `browser`, `ui` and `server` (over data_root) fixtures come from conftest.py
from _util import Page, drag, filled_root, open_page, playwright_or_skip, serving

sync_api = playwright_or_skip()

import expman  # noqa: E402
from _util import Child, child_env  # noqa: E402

expect = sync_api.expect
XSS = '<img src=x onerror="window.__pwned=1;alert(1)">'
XSS_FILE = "<img src=x onerror=alert(1)>.txt"


# -- data ------------------------------------------------------------------------------------

def _png(size=16):
    """A small opaque RGB PNG, encoded with zlib alone so the test needs no imaging library."""
    def chunk(kind, data):
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))
    raw = b"".join(b"\0" + b"".join(bytes((x * 15 % 256, y * 15 % 256, 128)) for x in range(size))
                   for y in range(size))
    header = struct.pack(">IIBBBBB", size, size, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw))
            + chunk(b"IEND", b""))


def _make_data(root, scratch):
    """Experiment 'vision' (three runs, one with NaN/inf values and artifacts of every kind)
    and experiment 'xss', where every string a user can log carries markup."""
    opts = {"alpha": ("adam", 0.01), "beta": ("sgd", 0.1), "gamma": ("adamw", 0.001)}
    for name, (opt, lr) in opts.items():
        with expman.Experiment("vision", base_dir=root, run_name=name, capture_git=False,
                               config={"lr": lr, "optimizer": {"name": opt, "momentum": 0.9}},
                               tags=["cnn", opt], description=f"{opt} at lr={lr}") as exp:
            for step in range(200):
                row = {"train/loss": 2.0 / (1 + step * lr * 10), "train/acc": step / 200}
                if name == "beta" and step in (50, 51):
                    row["train/loss"] = float("nan") if step == 50 else float("inf")
                if step % 20 == 19:
                    row["val/acc"] = step / 220
                if step % 50 == 0:   # what system_metrics=True logs
                    row["sys/rss_mb"] = 100.0 + step
                exp.log_metrics(row, step=step)
            exp.info(f"{name} finished training")
            if name == "alpha":
                table = scratch / "table.parquet"
                pq.write_table(pa.table({"epoch": [0, 1, 2, 3, 4],
                                         "val_acc": [0.1, 0.4, 0.6, 0.7, 0.75],
                                         "split": ["a", "b", "c", "d", "e"]}), table)
                exp.save_artifact(table)
                png = scratch / "curve.png"
                png.write_bytes(_png())
                exp.save_artifact(png, "plots/curve.png")
                notes = scratch / "notes.txt"
                notes.write_text("trained on 4 GPUs\n")
                exp.save_artifact(notes)
                blob = scratch / "weights.bin"
                blob.write_bytes(os.urandom(300))
                exp.save_artifact(blob)
    # long enough that the server downsamples it, so zooming has finer data to fetch
    with expman.Experiment("zoom", base_dir=root, run_name="long", capture_git=False) as exp:
        for step in range(20_000):
            noise = 0.05 * ((step * 7919) % 13) / 13
            exp.log_metrics({"train/loss": 1.0 / (1 + step / 500) + noise}, step=step)
    payload = scratch / "payload.txt"
    payload.write_text(XSS + "\n<script>window.__pwned=3</script>\n")
    with expman.Experiment("xss", base_dir=root, run_name=XSS, capture_git=False,
                           config={XSS: XSS, "nested": {"k": "<script>window.__pwned=2</script>"}},
                           tags=[XSS], description=XSS) as exp:
        for step in range(30):
            exp.log_metrics({"train/loss": 1.0 / (step + 1), XSS: float(step)}, step=step)
        exp.info(XSS)
        exp.warn("<b>warned</b>")
        exp.save_artifact(payload, XSS_FILE)


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return filled_root(tmp_path_factory, "dashboard", _make_data)


def chart_points(page, key):
    return page.evaluate("k => window.expman.chartPoints(k)", key)


def wait_points(page, key, run, at_least):
    page.wait_for_function("([k, r, n]) => (window.expman.chartPoints(k)[r] || 0) >= n",
                           arg=[key, run, at_least])
    return chart_points(page, key)[run]


# Pixels of a chart's canvas that have the colour of one of the legend's runs: proof that
# curves were drawn, not only axes.
COLOURED_PIXELS = """key => {
  const card = Array.from(document.querySelectorAll('#charts [data-key]'))
    .find(e => e.dataset.key === key);
  const canvas = card && card.querySelector('canvas.plot');
  if (!canvas || !canvas.width) return 0;
  const colours = Array.from(document.querySelectorAll('#legend .chip i')).map(i => {
    const m = getComputedStyle(i).backgroundColor.match(/\\d+/g);
    return m ? m.map(Number) : null;
  }).filter(Boolean);
  const d = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
  let n = 0;
  for (let i = 0; i < d.length; i += 4) {
    if (d[i + 3] < 200) continue;
    const near = c => Math.abs(d[i] - c[0]) + Math.abs(d[i + 1] - c[1])
      + Math.abs(d[i + 2] - c[2]) < 60;
    if (colours.some(near)) n++;
  }
  return n;
}"""


# -- tests -----------------------------------------------------------------------------------

def test_runs_table_and_comparison_charts(ui, server, tmp_path):
    page = open_page(ui, server, "#exp=vision")
    expect(page.locator("#experiments [data-exp]")).to_have_count(3)
    expect(page.locator("#experiments [data-exp='vision']")).to_have_class("exp-item active")
    rows = page.locator("#runs-table tbody tr[data-run]")
    expect(rows).to_have_count(3)
    for name in ("alpha", "beta", "gamma"):
        # a link naming no runs shows the newest ones
        expect(page.locator(f"tr[data-run='{name}'] .run-select")).to_be_checked()
        assert wait_points(page, "train/loss", f"vision/{name}", 200) == 200
        assert wait_points(page, "val/acc", f"vision/{name}", 10) == 10
    # params and last metric values are columns
    expect(page.locator("#runs-table thead th[data-col='p:lr']")).to_be_visible()
    expect(page.locator("tr[data-run='gamma'] td[data-col='p:lr']")).to_have_text("0.001")
    expect(page.locator("tr[data-run='alpha'] td[data-col='steps']")).to_have_text("199")
    # one chart per key, grouped by prefix
    expect(page.locator("#charts details[data-group='train'] [data-key]")).to_have_count(2)
    expect(page.locator("#charts details[data-group='val'] [data-key='val/acc']")).to_have_count(1)
    # training groups in name order, system metrics after them
    expect(page.locator("#charts details[data-group='sys'] [data-key]")).to_have_count(1)
    assert page.eval_on_selector_all("#charts details[data-group]",
                                     "els => els.map(e => e.dataset.group)") == \
        ["train", "val", "sys"]
    page.wait_for_function(f"() => ({COLOURED_PIXELS})('train/loss') > 100")
    # NaN and inf in beta are gaps, not a broken chart
    assert page.evaluate(f"({COLOURED_PIXELS})('train/loss')") > 100
    # hovering shows every run's value at the nearest step
    box = page.locator("[data-key='train/acc'] canvas.chart-overlay").bounding_box()
    page.mouse.move(box["x"] + box["width"] * 0.55, box["y"] + box["height"] * 0.5)
    tip = page.locator(".chart-tip")
    expect(tip).to_be_visible()
    expect(tip.locator(".tip-row")).to_have_count(3)
    expect(tip).to_contain_text("Step")
    page.screenshot(path=str(tmp_path / "charts.png"))

    # deselect one run: its curves go, the URL remembers the selection, a reload restores it
    page.locator("tr[data-run='beta'] .run-select").uncheck()
    page.wait_for_function("() => !('vision/beta' in window.expman.chartPoints('train/loss'))")
    page.wait_for_function("() => location.hash.includes('runs=vision/')")
    assert "vision/beta" not in page.evaluate("location.hash")
    page.reload()
    wait_points(page, "train/loss", "vision/alpha", 200)
    expect(page.locator("tr[data-run='beta'] .run-select")).not_to_be_checked()
    assert sorted(page.evaluate("window.expman.selected()")) == ["vision/alpha", "vision/gamma"]

    # the legend hides a run without deselecting it
    page.locator("#legend .chip[data-run-key='vision/alpha'] .chip-label").click()
    expect(page.locator("#legend .chip[data-run-key='vision/alpha']")).to_have_class("chip off")
    page.wait_for_function("() => location.hash.includes('hide=vision/alpha')")


def test_filter_sort_and_columns(ui, server, tmp_path):
    page = open_page(ui, server, "#exp=vision")
    rows = page.locator("#runs-table tbody tr[data-run]")
    page.fill("#filter", "optimizer.name=sgd")
    expect(rows).to_have_count(1)
    expect(rows.first).to_have_attribute("data-run", "beta")
    page.fill("#filter", "adam")                      # matches tags and params: adam, adamw
    expect(rows).to_have_count(2)
    page.fill("#filter", "")
    expect(rows).to_have_count(3)
    page.locator("#runs-table thead th[data-col='p:lr']").click()        # ascending
    expect(rows.first).to_have_attribute("data-run", "gamma")
    page.locator("#runs-table thead th[data-col='p:lr']").click()        # descending
    expect(rows.first).to_have_attribute("data-run", "beta")
    # the column chooser hides and shows columns
    page.click("#columns-button")
    item = page.locator("#columns-popover .pop-item[data-col='p:lr'] input")
    expect(item).to_be_checked()
    item.uncheck()
    expect(page.locator("#runs-table thead th[data-col='p:lr']")).to_have_count(0)
    page.locator("#columns-popover .pop-item[data-col='hostname'] input").check()
    expect(page.locator("#runs-table thead th[data-col='hostname']")).to_have_count(1)
    page.keyboard.press("Escape")
    expect(page.locator("#columns-popover")).to_be_hidden()
    page.screenshot(path=str(tmp_path / "filtered.png"))


def test_chart_settings_live_in_the_url(ui, server):
    page = open_page(ui, server, "#exp=vision")
    wait_points(page, "train/loss", "vision/alpha", 200)
    page.evaluate("""() => { const s = document.querySelector('#smoothing');
                             s.value = '0.6'; s.dispatchEvent(new Event('input')); }""")
    page.locator("label:has(#logy)").click()
    page.select_option("#xaxis", "relative")
    page.wait_for_function(
        "() => ['smooth=0.6', 'logy=1', 'x=relative'].every(p => location.hash.includes(p))")
    page.reload()
    wait_points(page, "train/loss", "vision/alpha", 200)
    assert page.evaluate("window.expman.settings()") == {
        "smoothing": 0.6, "logy": True, "xaxis": "relative", "filter": ""}
    expect(page.locator("#smoothing")).to_have_value("0.6")
    expect(page.locator("#logy")).to_be_checked()
    expect(page.locator("#xaxis")).to_have_value("relative")
    page.wait_for_function(f"() => ({COLOURED_PIXELS})('train/loss') > 100")


def test_zoom_fetches_finer_data_and_resets(ui, server, tmp_path):
    zoom_requests = []
    ui.page.on("request", lambda r: "x_min=" in r.url and zoom_requests.append(r.url))
    page = open_page(ui, server, "#exp=zoom")
    coarse = wait_points(page, "train/loss", "zoom/long", 100)
    assert coarse <= 2000, "the page must ask for a downsampled series, not 20,000 points"
    card = page.locator("[data-key='train/loss']")
    box = card.locator("canvas.chart-overlay").bounding_box()
    y = box["y"] + box["height"] / 2
    drag(page, box["x"] + box["width"] * 0.4, y, box["x"] + box["width"] * 0.6, y, steps=5)
    expect(card).to_have_class("chart zoomed")
    # the zoomed range is refetched at full resolution and merged into the curve
    zoomed = wait_points(page, "train/loss", "zoom/long", coarse + 50)
    assert zoomed > coarse
    assert zoom_requests, "zooming must fetch the range with x_min/x_max"
    assert "x_max=" in zoom_requests[0] and "keys=train%2Floss" in zoom_requests[0]
    page.wait_for_function(f"() => ({COLOURED_PIXELS})('train/loss') > 100")
    page.screenshot(path=str(tmp_path / "zoomed.png"))
    page.mouse.dblclick(box["x"] + box["width"] * 0.5, y)
    expect(card).to_have_class("chart")
    page.wait_for_function("n => window.expman.chartPoints('train/loss')['zoom/long'] === n",
                           arg=coarse)


def test_live_run_grows_while_a_process_logs(ui, server, data_root, tmp_path):
    page = open_page(ui, server, "#exp=vision")
    stop = tmp_path / "stop"
    child = Child(f"""
        import os, sys, time
        import expman
        with expman.Experiment("live", base_dir={str(data_root)!r}, run_name="streaming",
                               flush_interval_ms=100, capture_git=False) as exp:
            exp.log_params({{"lr": 0.01}})
            step, deadline = 0, time.time() + 90
            while not os.path.exists({str(stop)!r}) and time.time() < deadline:
                exp.log_metrics({{"train/loss": 1.0 / (1 + step), "train/acc": step / 1e4}},
                                step=step)
                if step % 10 == 0:
                    exp.info(f"step {{step}} ok")
                step += 1
                time.sleep(0.02)
        print("done", step, flush=True)
        """, cwd=str(tmp_path), env=child_env(os.path.dirname(expman.__file__)))
    try:
        # the new experiment and its run appear without a reload
        exp_item = page.locator("#experiments [data-exp='live']")
        expect(exp_item).to_be_visible(timeout=30_000)
        exp_item.click()
        row = page.locator("tr[data-run='streaming']")
        expect(row).to_have_attribute("data-status", "running")
        expect(row.locator(".status.running .dot")).to_be_visible()
        expect(page.locator("#live-indicator")).to_have_attribute("data-state", "live")
        first = wait_points(page, "train/loss", "live/streaming", 1)
        grown = wait_points(page, "train/loss", "live/streaming", first + 25)
        assert grown > first
        page.screenshot(path=str(tmp_path / "live.png"))
        # the run detail tails run.log live
        row.locator(".run-link").click()
        expect(page.locator("#run-detail")).to_be_visible()
        log = page.locator("#log")
        expect(log).to_contain_text("step 0 ok")
        count_lines = "(document.querySelector('#log').textContent.match(/ ok/g) || []).length"
        page.wait_for_function(f"() => {count_lines} >= 3")
        seen = log.text_content().count(" ok")
        page.wait_for_function(f"n => {count_lines} > n + 3", arg=seen)
        page.screenshot(path=str(tmp_path / "live-detail.png"))
        stop.write_text("stop")
        assert child.wait(30) == 0
        # the status flips without a reload, and every logged row is on the chart exactly once
        expect(row).to_have_attribute("data-status", "finished", timeout=30_000)
        expect(page.locator("#detail-status .status")).to_have_attribute("data-status", "finished")
        steps = int(child.lines[-1].split()[1])
        assert wait_points(page, "train/loss", "live/streaming", steps) == steps
        page.wait_for_function(f"() => ({COLOURED_PIXELS})('train/loss') > 50")
    finally:
        stop.write_text("stop")
        if child.proc.poll() is None:
            child.kill()


def test_run_detail_and_artifact_previews(ui, server, data_root, tmp_path):
    page = open_page(ui, server, "#exp=vision")
    page.locator("tr[data-run='alpha'] .run-link").click()
    detail = page.locator("#run-detail")
    expect(detail).to_be_visible()
    expect(page.locator("#detail-name")).to_have_text("alpha")
    expect(page.locator("#detail-meta [data-field='status']")).to_contain_text("finished")
    expect(page.locator("#detail-meta [data-field='command']")).not_to_be_empty()
    expect(page.locator("#detail-params [data-param='name']")).to_contain_text("adam")
    expect(page.locator("#log")).to_contain_text("alpha finished training")
    page.wait_for_function("() => location.hash.includes('run=vision/alpha')")
    arts = page.locator("#artifacts")
    for path in ("table.parquet", "plots/curve.png", "notes.txt", "weights.bin"):
        expect(arts.locator(f".af-file[data-path='{path}']")).to_be_visible()
    preview = page.locator("#artifact-preview")
    # parquet: a table with column names and types
    arts.locator(".af-file[data-path='table.parquet']").click()
    table = preview.locator("table.data")
    expect(table.locator("thead th")).to_have_count(3)
    expect(table.locator("thead th").first).to_contain_text("epoch")
    expect(table.locator("thead th").first).to_contain_text("int64")
    expect(table.locator("tbody tr")).to_have_count(5)
    page.screenshot(path=str(tmp_path / "preview-table.png"))
    # image: shown inline, actually decoded
    arts.locator(".af-file[data-path='plots/curve.png']").click()
    img = preview.locator("img")
    expect(img).to_be_visible()
    page.wait_for_function("() => { const i = document.querySelector('#artifact-preview img');"
                           "        return i && i.complete && i.naturalWidth === 16; }")
    page.screenshot(path=str(tmp_path / "preview-image.png"))
    # text, and a download link for anything else
    arts.locator(".af-file[data-path='notes.txt']").click()
    expect(preview.locator("pre")).to_have_text("trained on 4 GPUs\n")
    arts.locator(".af-file[data-path='weights.bin']").click()
    expect(preview.locator("[data-testid='preview-download']")).to_be_visible()
    # a reload reopens the detail
    page.reload()
    expect(page.locator("#run-detail")).to_be_visible()
    expect(page.locator("#detail-name")).to_have_text("alpha")
    page.keyboard.press("Escape")
    expect(page.locator("#run-detail")).to_be_hidden()


def test_description_and_tags_are_editable(ui, server, data_root):
    page = open_page(ui, server, "#exp=vision&run=vision/gamma")
    expect(page.locator("#detail-name")).to_have_text("gamma")
    page.click("[data-testid='description-edit']")
    page.fill("[data-testid='description-input']", "best run so far\nsecond line")
    page.click("[data-testid='description-save']")
    expect(page.locator("#detail-desc .desc-text")).to_have_text("best run so far\nsecond line")
    page.fill("[data-testid='tag-input']", "keep")
    page.press("[data-testid='tag-input']", "Enter")
    expect(page.locator("#detail-tags .tag", has_text="keep")).to_be_visible()
    run = expman.load_run(str(data_root / "vision" / "gamma"))
    assert run["description"] == "best run so far\nsecond line"
    assert "keep" in run["tags"]
    # the table follows
    expect(page.locator("tr[data-run='gamma'] td[data-col='tags']")).to_contain_text("keep")
    page.locator("#detail-tags .tag", has_text="keep").locator("button").click()
    expect(page.locator("#detail-tags .tag", has_text="keep")).to_have_count(0)
    assert "keep" not in expman.load_run(str(data_root / "vision" / "gamma"))["tags"]


def test_logged_strings_render_as_text(ui, server, data_root, tmp_path):
    run = [r["name"] for r in expman.list_runs(str(data_root), "xss")][0]
    page = open_page(ui, server, "#exp=xss")
    row = page.locator(f"tr[data-run='{run}']")
    expect(row.locator(".run-link")).to_have_text(run)
    expect(row.locator("td[data-col='tags']")).to_contain_text(XSS)
    expect(page.locator("#charts .chart-title", has_text="<img src=x")).to_have_count(1)
    row.locator(".run-link").click()
    expect(page.locator("#detail-desc .desc-text")).to_have_text(XSS)
    expect(page.locator("#detail-tags")).to_contain_text(XSS)
    expect(page.locator("#detail-params")).to_contain_text(XSS)
    expect(page.locator("#detail-params")).to_contain_text("<script>window.__pwned=2</script>")
    expect(page.locator("#log")).to_contain_text(XSS)
    expect(page.locator("#log")).to_contain_text("<b>warned</b>")
    file_row = page.locator("#artifacts .af-file").first
    expect(file_row).to_contain_text(XSS_FILE)
    file_row.click()
    expect(page.locator("#artifact-preview pre")).to_contain_text(
        "<script>window.__pwned=3</script>")
    # the markup stayed text: no element was made from it and nothing ran
    made = "document.querySelectorAll('img, #run-detail script, #runs-table b, #log b').length"
    assert page.evaluate(made) == 0
    assert page.evaluate("window.__pwned") is None
    page.screenshot(path=str(tmp_path / "xss.png"))


def test_dark_mode_toggle(browser, server, tmp_path):
    p = Page(browser, scheme="dark")
    try:
        page = p.page
        open_page(p, server, "#exp=vision")
        assert page.evaluate("document.documentElement.dataset.theme") == "dark"
        wait_points(page, "train/loss", "vision/alpha", 200)
        page.screenshot(path=str(tmp_path / "dark.png"))
        page.click("#theme-toggle")
        assert page.evaluate("document.documentElement.dataset.theme") == "light"
        bg = page.evaluate(
            "getComputedStyle(document.querySelector('#runs-panel')).backgroundColor")
        assert bg == "rgb(255, 255, 255)"
        page.reload()   # the choice is remembered
        expect(page.locator("html")).to_have_attribute("data-theme", "light")
    finally:
        p.context.close()
    assert not p.problems and not p.dialogs, (p.problems, p.dialogs)


def test_empty_root_explains_how_to_log(ui, tmp_path):
    root = tmp_path / "experiments"
    root.mkdir()
    with serving(root) as srv:
        page = ui.page
        page.goto(srv.url + "/")
        expect(page.locator("#empty")).to_be_visible()
        expect(page.locator("#empty")).to_contain_text("log_metrics")
        expect(page.locator("#empty-root")).to_have_text(str(root))
        page.screenshot(path=str(tmp_path / "empty.png"))
        page.goto("about:blank")   # leave before the server goes, so no reconnect is attempted

