"""Group by, params vs results and x = another metric (issue 14), in a real browser: Debian
Chromium through Playwright against a real Waitress server on port 0, as in test_dashboard.py.
Each test checks what a person sees: a band's pixels in its group's colour, the group legend's
text, a scatter point where its values put it, the runs the table shows after a brush, the
x axis's tick labels.
"""
import pytest

from _util import drag, playwright_or_skip, serving

import expman  # noqa: E402

sync_api = playwright_or_skip()
expect = sync_api.expect

LRS = (0.001, 0.01, 0.1)
BASE = {0.001: 0.0, 0.01: 4.0, 0.1: 8.0}          # each lr group's loss: BASE + seed, flat
ACC = {0.001: 0.5, 0.01: 0.7, 0.1: 0.6}           # each run's last acc: ACC + 0.02 * seed
OPTS = ("sgd", "adam", "sgd", None)               # experiment "opts": run o<i> has opt OPTS[i]


def _name(lr, seed):
    return f"lr{lr}_s{seed}"


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("groups") / "experiments"
    root.mkdir()
    for lr in LRS:
        for seed in range(3):
            with expman.Experiment("sweep", base_dir=root, run_name=_name(lr, seed),
                                   capture_git=False, config={"lr": lr, "seed": seed},
                                   tags=["big" if lr > 0.005 else "small"]) as run:
                for step in range(20):        # tokens from step 2 on: no x for steps 0, 1
                    row = {"loss": BASE[lr] + seed}
                    if step >= 2:
                        row["tokens"] = 1000.0 * step + 500
                    run.log_metrics(row, step=step)
                run.log_metrics({"acc": ACC[lr] + 0.02 * seed}, step=19)
    for i, opt in enumerate(OPTS):   # a text param, for colour by
        with expman.Experiment("opts", base_dir=root, run_name=f"o{i}", capture_git=False,
                               config={"opt": opt} if opt else {"other": 1}) as run:
            for step in range(5):
                run.log_metrics({"loss": float(i)}, step=step)
    return root


ALL = ",".join(f"sweep/{_name(lr, s)}" for lr in LRS for s in range(3))


def colour_of(p, selector):
    """The computed background colour of the element selector names, found and read in one
    evaluation, polled until one is attached. The legends are rebuilt as runs arrive, so an
    element a locator resolved can be detached by the next round trip, and a detached
    element's computed style is ''."""
    return p.wait_for_function(
        "sel => { const e = document.querySelector(sel); "
        "return e && e.isConnected && getComputedStyle(e).backgroundColor; }", arg=selector).json_value()


def open_page(ui, fragment):
    ui.page.goto(ui.url + "/" + fragment)
    # grouped, the table's first rows are its groups' (13.20)
    expect(ui.page.locator("#runs-table tbody tr[data-run], #runs-table tbody tr[data-group]").first).to_be_visible()
    return ui.page


@pytest.fixture
def page(ui, server):
    ui.url = server.url
    return ui


# The colour a person sees at a chart's pixel for a value: the canvas over the card's background.
SEEN_AT = """([key, frac, value]) => {
  const card = Array.from(document.querySelectorAll('#charts [data-key]')).find(e => e.dataset.key === key);
  const c = card.querySelector('canvas.plot'), dpr = devicePixelRatio;
  const labels = window.expman.chartYLabels(key).map(l => [Number(l.text), l.y]);
  const [v0, y0] = labels[0], [v1, y1] = labels[labels.length - 1];
  const y = y0 + (value - v0) * (y1 - y0) / (v1 - v0);
  const p = c.getContext('2d').getImageData(Math.round(c.width * frac), Math.round(y * dpr), 1, 1).data;
  const bg = getComputedStyle(card).backgroundColor.match(/\\d+/g).map(Number);
  const a = p[3] / 255;
  return [0, 1, 2].map(i => p[i] * a + bg[i] * (1 - a));
}"""


def _rgb(css):
    return [int(v) for v in css[css.index("(") + 1:css.index(")")].split(",")[:3]]


def _near(seen, want, tolerance):
    return sum(abs(a - b) for a, b in zip(seen, want)) <= tolerance


def test_group_by_param_draws_one_band_per_value_with_a_legend(page):
    # two groups first, then a third that sorts before them: colours move, the bands follow
    two = ",".join(f"sweep/{_name(lr, s)}" for lr in LRS[1:] for s in range(3))
    p = open_page(page, f"#exp=sweep&runs={two}&group=p:lr")
    chips = p.locator("#group-legend .chip")
    expect(chips).to_have_count(2)
    p.wait_for_function("() => Object.keys(window.expman.chartPoints('loss')).length == 2")
    p.evaluate("h => { location.hash = h; }", f"#exp=sweep&runs={ALL}&group=p:lr")
    expect(chips).to_have_count(3)
    expect(p.locator("#legend")).to_be_hidden()
    expect(p.locator("#group-legend")).to_contain_text("Grouped by lr:")
    for i, lr in enumerate(LRS):
        expect(chips.nth(i).locator(".chip-label")).to_have_text(str(lr))
        expect(chips.nth(i).locator(".count")).to_have_text("3 runs")
    p.wait_for_function("() => Object.keys(window.expman.chartPoints('loss')).length == 3")
    assert sorted(p.evaluate("() => Object.keys(window.expman.chartPoints('loss'))")) == \
        [f"grp:{lr}" for lr in LRS]
    assert p.evaluate("() => window.expman.selected().length") == 9
    bg = p.evaluate("() => getComputedStyle(document.querySelector('.chart')).backgroundColor")
    bg = _rgb(bg)
    # full screen: about 75 px per unit of loss, so a pixel a tenth inside a band is well inside
    p.locator("#charts [data-key='loss'] [data-tool=full]").click()
    p.wait_for_function("() => Math.max(...window.expman.chartYLabels('loss').map(l => l.y)) > 500")
    for i, lr in enumerate(LRS):
        colour = _rgb(colour_of(p, f"#group-legend .chip[data-group-value='{lr}'] i"))
        # min/max band: BASE .. BASE + 2 around the mean BASE + 1, filled at alpha 0.24
        seen = p.evaluate(SEEN_AT, ["loss", 0.6, BASE[lr] + 0.09])
        want = [0.24 * c + 0.76 * b for c, b in zip(colour, bg)]
        assert _near(seen, want, 30), (lr, seen, want, colour)
        outside = p.evaluate(SEEN_AT, ["loss", 0.6, BASE[lr] - 0.9])
        assert _near(outside, bg, 12), (lr, outside, bg)
    # +-1 std: sqrt(2/3) = 0.82 either side of the mean, so BASE + 0.09 is outside now
    p.locator("#group-band").select_option("std")
    p.wait_for_function("() => location.hash.indexOf('gband=std') >= 0")
    for i, lr in enumerate(LRS):
        p.wait_for_function(
            "a => { const s = (" + SEEN_AT + ")(a), b = a[3]; "
            "return Math.abs(s[0] - b[0]) + Math.abs(s[1] - b[1]) + Math.abs(s[2] - b[2]) <= 12; }",
            arg=["loss", 0.6, BASE[lr] + 0.09, bg])
        colour = _rgb(colour_of(p, f"#group-legend .chip[data-group-value='{lr}'] i"))
        seen = p.evaluate(SEEN_AT, ["loss", 0.6, BASE[lr] + 0.4])
        assert _near(seen, [0.24 * c + 0.76 * b for c, b in zip(colour, bg)], 30), (lr, seen)
    # a click on a group hides it; grouping off brings the run legend back
    p.keyboard.press("Escape")
    chips.nth(0).click()
    expect(chips.nth(0)).to_have_class("chip off")
    p.wait_for_function("() => !('grp:0.001' in window.expman.chartPoints('loss'))")
    p.locator("#group-by").select_option("")
    expect(p.locator("#group-legend")).to_be_hidden()
    expect(p.locator("#legend .chip")).to_have_count(9)


def test_group_by_tags_and_the_setting_survives_a_reload(page):
    p = open_page(page, f"#exp=sweep&runs={ALL}")
    p.locator("#group-by").select_option("tags")
    chips = p.locator("#group-legend .chip")
    expect(chips).to_have_count(2)
    expect(chips.nth(0).locator(".chip-label")).to_have_text("big")
    expect(chips.nth(0).locator(".count")).to_have_text("6 runs")
    expect(chips.nth(1).locator(".chip-label")).to_have_text("small")
    expect(chips.nth(1).locator(".count")).to_have_text("3 runs")
    p.wait_for_function("() => location.hash.indexOf('group=tags') >= 0")
    p.reload()
    expect(p.locator("#group-legend .chip")).to_have_count(2)
    expect(p.locator("#group-by")).to_have_value("tags")
    p.wait_for_function("() => Object.keys(window.expman.chartPoints('loss')).sort().join() == "
                        "'grp:big,grp:small'")


def test_x_axis_can_be_another_metric(page):
    p = open_page(page, f"#exp=sweep&runs=sweep/{_name(0.01, 0)}")
    p.wait_for_function("() => (window.expman.chartPoints('loss')['sweep/lr0.01_s0'] || 0) == 20")
    p.locator("#xaxis").select_option("m:tokens")
    card = p.locator("#charts [data-key='loss']")
    expect(card.locator("[data-testid=x-label]")).to_have_text("vs tokens")
    p.wait_for_function("() => location.hash.indexOf('x=m:tokens') >= 0")
    # tokens run 2,500 .. 19,500: the tick labels are token counts, not steps (0 .. 19)
    p.wait_for_function("() => window.expman.chartXLabels('loss').some(l => Number(l.text) >= 5000)")
    labels = p.evaluate("() => window.expman.chartXLabels('loss')")
    values = [float(label["text"]) for label in labels]
    assert values == sorted(values) and values[0] >= 2500 and values[-1] <= 19500, values
    assert all(v % 1000 == 0 for v in values), values       # round ticks on a linear axis
    # the hover reads the point at a token count
    hit = p.evaluate("() => window.expman.chartHover('loss', 10500)")
    assert hit and hit[0]["x"] == 10500 and hit[0]["value"] == 4.0, hit
    tip = p.locator("[data-testid=chart-tooltip]")
    expect(tip).to_contain_text("tokens 10500")
    p.reload()
    expect(p.locator("#xaxis")).to_have_value("m:tokens")
    expect(p.locator("#charts [data-key='loss'] [data-testid=x-label]")).to_have_text("vs tokens")


def _points(p):
    return {pt["run"]: pt for pt in p.evaluate("() => window.expman.pvrPoints()")}


def test_scatter_puts_points_at_their_values_and_a_brush_filters_the_table(page):
    p = open_page(page, "#exp=sweep&runs=&pvr=scatter,p%253Alr,m%253Aacc")
    expect(p.locator("#pvr-body")).to_be_visible()
    expect(p.locator("#pvr-x")).to_have_value("p:lr")
    expect(p.locator("#pvr-y")).to_have_value("m:acc")
    p.wait_for_function("() => window.expman.pvrPoints().length == 9")
    pts = _points(p)
    width = p.locator("#pvr-canvas").evaluate("c => c.clientWidth")
    # lr spans two decades: a log axis, 0.01 in the middle of the plot (64 px left, 16 right)
    for seed in range(3):
        assert abs(pts[_name(0.01, seed)]["x"] - (64 + (width - 80) / 2)) < 0.6
        assert pts[_name(0.001, seed)]["x"] == pytest.approx(pts[_name(0.001, 0)]["x"])
    step = pts[_name(0.01, 0)]["x"] - pts[_name(0.001, 0)]["x"]
    assert pts[_name(0.1, 0)]["x"] - pts[_name(0.01, 0)]["x"] == pytest.approx(step, abs=0.5)
    # y is linear in acc: every run sits on one line through (acc, y)
    a, b = pts[_name(0.001, 0)], pts[_name(0.01, 2)]
    per = (b["y"] - a["y"]) / ((ACC[0.01] + 0.04) - ACC[0.001])
    assert per < 0                                    # higher acc is higher on screen
    for lr in LRS:
        for seed in range(3):
            want = a["y"] + per * (ACC[lr] + 0.02 * seed - ACC[0.001])
            assert pts[_name(lr, seed)]["y"] == pytest.approx(want, abs=0.6)
    # and each point is drawn: its pixel has the accent colour
    accent = p.evaluate("() => getComputedStyle(document.documentElement).getPropertyValue('--accent')")
    colour = [int(accent.strip()[i:i + 2], 16) for i in (1, 3, 5)]
    for pt in pts.values():
        px = p.evaluate("([x, y]) => { const c = document.querySelector('#pvr-canvas'), d = devicePixelRatio;"
                        " return Array.from(c.getContext('2d').getImageData(Math.round(x * d), Math.round(y * d), 1, 1).data); }",
                        [pt["x"], pt["y"]])
        assert px[3] > 200 and _near(px[:3], colour, 40), (pt, px, colour)
    # brush a box around the lr=0.01 column: the filter holds its ranges, the table its 3 runs
    box = p.locator("#pvr-canvas").bounding_box()
    x0 = box["x"] + (pts[_name(0.001, 0)]["x"] + pts[_name(0.01, 0)]["x"]) / 2
    x1 = box["x"] + (pts[_name(0.01, 0)]["x"] + pts[_name(0.1, 0)]["x"]) / 2
    y0, y1 = box["y"] + 14, box["y"] + box["height"] - 44
    drag(p, x0, y0, x1, y1)
    text = p.locator("#filter").input_value()
    terms = text.split(" ")          # side by side: AND, for the page's filter and the server's
    assert [t.split(">=")[0].split("<=")[0] for t in terms] == ["lr", "lr", "acc", "acc"], text
    lo, hi = float(terms[0].split(">=")[1]), float(terms[1].split("<=")[1])
    assert 0.001 < lo < 0.01 < hi < 0.1, text
    rows = p.locator("#runs-table tbody tr[data-run]")
    expect(rows).to_have_count(3)
    assert sorted(rows.evaluate_all("rs => rs.map(r => r.dataset.run)")) == \
        [_name(0.01, s) for s in range(3)]
    # the points outside the brush stay on the plot, faint: the axes do not move under the pointer
    p.wait_for_function("() => window.expman.pvrPoints().filter(p => p.matched).length == 3")
    assert len(_points(p)) == 9
    p.locator("#pvr-clear").click()
    expect(p.locator("#filter")).to_have_value("")
    expect(rows).to_have_count(9)


def test_parallel_coordinates_brush_an_axis(page):
    p = open_page(page, "#exp=sweep&pvr=parallel,,m%253Aacc")
    p.wait_for_function("() => window.expman.pvrPoints().length == 9")
    pts = _points(p)
    # axes: lr (log), seed, acc; every run's line ends on the acc axis at its acc
    ys = {n: pt["ys"] for n, pt in pts.items()}
    assert ys[_name(0.1, 0)][0] < ys[_name(0.01, 0)][0] < ys[_name(0.001, 0)][0]
    assert ys[_name(0.01, 2)][2] < ys[_name(0.01, 0)][2]
    width = p.locator("#pvr-canvas").evaluate("c => c.clientWidth")
    box = p.locator("#pvr-canvas").bounding_box()
    seed_x = box["x"] + 56 + (width - 112) / 2          # the middle of three axes
    top = box["y"] + ys[_name(0.01, 2)][1] - 6          # seed 2 is highest on its axis
    bottom = box["y"] + ys[_name(0.01, 1)][1] + 6
    drag(p, seed_x, top, seed_x, bottom, steps=1)
    text = p.locator("#filter").input_value()
    assert text.startswith("seed>=") and " seed<=" in text and "AND" not in text, text
    lo, hi = float(text.split("seed>=")[1].split(" ")[0]), float(text.split("seed<=")[1])
    assert 0 < lo < 1 and 2 < hi < 3, text
    rows = p.locator("#runs-table tbody tr[data-run]")
    expect(rows).to_have_count(6)
    p.locator("#pvr-clear").click()
    expect(rows).to_have_count(9)
    # a click on a line where it crosses an axis selects its run
    p.wait_for_function("() => window.expman.pvrPoints().length == 9")
    key = f"sweep/{_name(0.001, 0)}"                    # the oldest run: not auto-selected
    assert key not in p.evaluate("() => window.expman.selected()")
    target = _points(p)[_name(0.001, 0)]
    p.mouse.click(box["x"] + target["x"], box["y"] + target["ys"][2])
    p.wait_for_function("r => window.expman.selected().indexOf(r) >= 0", arg=key)
    expect(p.locator(f"#legend .chip[data-run-key='{key}']")).to_have_count(1)


# -- group rows in the runs table ------------------------------------------------------------

def _cells(row, col):
    return row.locator(f"td[data-col='{col}']")


def test_group_by_folds_the_runs_table_into_one_row_per_value(page):
    p = open_page(page, f"#exp=sweep&runs=sweep/{_name(0.01, 0)}&group=p:lr")
    groups = p.locator("#runs-table tbody tr[data-group]")
    expect(groups).to_have_count(3)
    expect(p.locator("#runs-table tbody tr[data-run]")).to_have_count(0)
    # sorted by lr (the group's own column, ascending)
    p.locator("#runs-table th[data-col='p:lr']").click()
    expect(groups.nth(0)).to_have_attribute("data-group", "0.001")
    for i, lr in enumerate(LRS):
        row = groups.nth(i)
        expect(row.locator(".group-name")).to_have_text(str(lr))
        expect(row.locator(".job-count")).to_have_text("3 runs")
        expect(_cells(row, "p:lr")).to_have_text(str(lr))
        expect(_cells(row, "p:seed")).to_have_text("varies")
        # acc: the mean of ACC + 0, .02, .04 and, in small text, the lowest and highest
        mean, lo, hi = ACC[lr] + 0.02, ACC[lr], ACC[lr] + 0.04
        cell = _cells(row, "m:acc")
        expect(cell).to_have_text(f"{mean:g}{lo:g}\u2013{hi:g}")
        assert cell.get_attribute("title").startswith(f"mean of 3 runs: {mean:g}")
        expect(_cells(row, "m:loss")).to_have_text(f"{BASE[lr] + 1:g}{BASE[lr]:g}\u2013{BASE[lr] + 2:g}")
    # acc goes up: the lr=0.01 group's mean is the best one, loss goes down: lr=0.001's
    expect(_cells(groups.nth(1), "m:acc")).to_have_class("num grp-metric first best")
    expect(p.locator("#runs-table tbody tr[data-group] td.best[data-col='m:acc']")).to_have_count(1)
    expect(p.locator("#runs-table tbody tr[data-group] td.best[data-col='m:loss']")).to_have_count(1)
    expect(_cells(groups.nth(0), "m:loss")).to_have_class("num grp-metric best")
    # sorting works on the groups: by mean acc, highest first
    acc = p.locator("#runs-table th[data-col='m:acc']")
    acc.click()
    expect(groups.nth(0)).to_have_attribute("data-group", "0.01")
    expect(groups.nth(1)).to_have_attribute("data-group", "0.1")
    expect(groups.nth(2)).to_have_attribute("data-group", "0.001")
    acc.click()
    expect(groups.nth(0)).to_have_attribute("data-group", "0.001")
    # the triangle unfolds a group into its runs, in the table's order (acc, lowest first)
    groups.nth(0).locator(".group-toggle").click()
    runs = p.locator("#runs-table tbody tr[data-run]")
    expect(runs).to_have_count(3)
    assert runs.evaluate_all("rs => rs.map(r => r.dataset.run)") == [_name(0.001, s) for s in range(3)]
    assert p.locator("#runs-table tbody tr").nth(1).get_attribute("data-run") == _name(0.001, 0)
    expect(groups.nth(0).locator(".group-toggle")).to_have_attribute("aria-expanded", "true")
    groups.nth(0).locator(".group-toggle").click()
    expect(runs).to_have_count(0)
    # the group's checkbox selects its runs; the row says how many of them are selected
    g01 = p.locator("#runs-table tbody tr[data-group='0.1']")
    box = g01.locator(".group-select")                  # lr=0.1: none selected yet
    expect(box).not_to_be_checked()
    box.check()
    p.wait_for_function("() => window.expman.selected().filter(k => k.indexOf('/lr0.1_') > 0).length == 3")
    expect(box).to_be_checked()
    expect(g01).to_have_class("group-row selected")
    expect(p.locator("#runs-count")).to_have_text("9 runs in 3 groups \u00b7 4 selected")
    # the group row's swatch has its group's colour in the charts' legend
    expect(p.locator("#group-legend .chip[data-group-value='0.1'] .count")).to_have_text("3 runs")
    want = colour_of(p, "#group-legend .chip[data-group-value='0.1'] i")
    expect(g01.locator(".swatch")).to_have_css("background-color", want)
    g01.locator(".group-toggle").click()                # and so do its runs' swatches
    expect(p.locator(f"#runs-table tr[data-run='{_name(0.1, 2)}'] .swatch")).to_have_css("background-color", want)
    g01.locator(".group-toggle").click()
    box.uncheck()
    p.wait_for_function("() => window.expman.selected().length == 1")
    # the filter narrows the groups and their counts; grouping off lists the runs again
    p.locator("#filter").fill("seed<2")
    expect(groups.nth(0).locator(".job-count")).to_have_text("2 runs")
    p.locator("#filter").fill("")
    p.locator("#group-by").select_option("")
    expect(groups).to_have_count(0)
    expect(runs).to_have_count(9)


def test_group_by_tags_folds_the_table(page):
    p = open_page(page, f"#exp=sweep&runs=sweep/{_name(0.01, 0)}&group=tags")
    groups = p.locator("#runs-table tbody tr[data-group]")
    expect(groups).to_have_count(2)
    p.locator("#runs-table th[data-col='name']").click()
    expect(groups.nth(0).locator(".group-name")).to_have_text("big")
    expect(groups.nth(0).locator(".job-count")).to_have_text("6 runs")
    expect(groups.nth(1).locator(".group-name")).to_have_text("small")
    expect(_cells(groups.nth(1), "p:lr")).to_have_text("0.001")     # shared by its runs
    expect(_cells(groups.nth(0), "p:lr")).to_have_text("varies")


# -- grouping a paged table (more runs than the page holds): the server folds every run ------

BIG = 1200
BIG_LRS = (0.1, 0.01, 0.001, 0.0001)


def _big_acc(i):
    return (i * 37 % 100) / 100


def _write_big_run(exp_dir, i):
    import os
    import yaml
    path = os.path.join(exp_dir, f"r{i:05d}")
    os.makedirs(path)
    started = expman._dt.datetime.fromtimestamp(1_760_000_000 + 60 * i, expman._dt.timezone.utc)
    meta = {"name": f"r{i:05d}", "experiment": "big", "status": "finished",
            "started_at": started.isoformat(), "finished_at": started.isoformat(),
            "duration_secs": 10.0, "hostname": "h", "pid": 1, "rows": 5, "last_step": 4,
            "tags": [], "summary": {"acc": _big_acc(i)}}
    with open(os.path.join(path, "config.yaml"), "w") as f:
        yaml.safe_dump({"lr": BIG_LRS[i % 4], "seed": i}, f)
    with open(os.path.join(path, "run.yaml"), "w") as f:
        yaml.safe_dump(meta, f, sort_keys=False)


@pytest.fixture(scope="module")
def big_server(tmp_path_factory):
    import os
    root = tmp_path_factory.mktemp("groups_big") / "experiments"
    os.makedirs(root / "big")
    for i in range(BIG):
        _write_big_run(str(root / "big"), i)
    with serving(root, live=False) as srv:
        yield srv


def _get_json(url):
    import json
    import urllib.request
    with urllib.request.urlopen(url, timeout=60) as resp:
        return json.loads(resp.read())


def test_runs_query_answers_groups_of_every_matching_run(big_server):
    base = big_server.url + "/api/experiments/big/runs?format=columns&limit=200"
    j = _get_json(base + "&group=p:lr&sort=m:acc&order=desc")
    assert j["matched"] == BIG and j["total"] == BIG and "columns" not in j
    by_lr = {g["value"]: g for g in j["groups"]}
    assert sorted(by_lr) == sorted(BIG_LRS)
    for k, lr in enumerate(BIG_LRS):
        accs = [_big_acc(i) for i in range(k, BIG, 4)]
        g = by_lr[lr]
        assert g["count"] == BIG // 4 and len(g["names"]) == BIG // 4
        assert g["params"] == {"lr": lr}                   # seed differs: not shared
        assert g["summary"]["acc"] == pytest.approx(sum(accs) / len(accs))
        assert g["spread"]["m:acc"] == [min(accs), max(accs), len(accs)]
        # its runs' names in the table's order: acc, highest first
        ranked = sorted(range(k, BIG, 4), key=lambda i: (-_big_acc(i), i))
        assert g["names"][:5] == [f"r{i:05d}" for i in ranked[:5]]
    means = [g["summary"]["acc"] for g in j["groups"]]
    assert means == sorted(means, reverse=True)
    # where= narrows the groups; sort=name orders them by value
    j = _get_json(base + "&group=p:lr&sort=name&order=asc&where=" + "seed%3C8")
    assert [g["value"] for g in j["groups"]] == sorted(BIG_LRS)
    assert [g["count"] for g in j["groups"]] == [2, 2, 2, 2] and j["matched"] == 8
    j = _get_json(base + "&group=p:lr&sort=name&order=desc")
    assert [g["value"] for g in j["groups"]] == sorted(BIG_LRS, reverse=True)
    j = _get_json(base + "&group=tags")          # no run has tags: one group, value null
    assert [(g["value"], g["count"]) for g in j["groups"]] == [(None, BIG)]
    import urllib.error
    with pytest.raises(urllib.error.HTTPError) as err:
        _get_json(base + "&group=lr")
    assert err.value.code == 400
    err.value.close()


def test_group_by_folds_a_paged_table_over_every_run(ui, big_server):
    ui.url = big_server.url
    p = open_page(ui, "#exp=big&runs=&group=p:lr")
    groups = p.locator("#runs-table tbody tr[data-group]")
    expect(groups).to_have_count(4)
    expect(p.locator("#runs-count")).to_have_text(f"{BIG} runs in 4 groups")
    p.locator("#runs-table th[data-col='p:lr']").click()
    for k, lr in enumerate(sorted(BIG_LRS)):
        row = groups.nth(k)
        expect(row.locator(".group-name")).to_have_text(str(lr))
        expect(row.locator(".job-count")).to_have_text(f"{BIG // 4} runs")   # all, not a page's
        accs = [_big_acc(i) for i in range(BIG_LRS.index(lr), BIG, 4)]
        cell = _cells(row, "m:acc")
        assert cell.get_attribute("title").startswith(f"mean of {BIG // 4} runs: ")
        mean = float(cell.get_attribute("title").split(": ")[1].split("\n")[0])
        assert mean == pytest.approx(sum(accs) / len(accs), rel=1e-4)
    # unfolded, a group lists its first page of runs and says how many more it has
    groups.nth(0).locator(".group-toggle").click()
    runs = p.locator("#runs-table tbody tr[data-run]")
    expect(runs.first).to_be_visible()
    names = runs.evaluate_all("rs => rs.map(r => r.dataset.run)")
    assert len(names) > 5 and all(int(n[1:]) % 4 == 3 for n in names)   # lr=0.0001: 3, 7, 11, ...
    # (the table is virtualised: scrolled down, the group's 200th run and the note below it)
    p.locator("#runs-scroll").evaluate("e => { e.scrollTop = e.scrollHeight; }")
    expect(p.locator("#runs-table tbody tr.group-more")).to_have_text(
        f"\u2026 and {BIG // 4 - 200} more runs in this group (filter to see them)")
    expect(p.locator("#runs-table tbody tr[data-group]")).to_have_count(3)   # the 3 below it
    last = [n for n in runs.evaluate_all("rs => rs.map(r => r.dataset.run)") if int(n[1:]) % 4 == 3]
    assert len(set(names) | set(last)) > 20
    p.locator("#runs-scroll").evaluate("e => { e.scrollTop = 0; }")
    groups.nth(0).locator(".group-toggle").click()
    expect(runs).to_have_count(0)
    # its checkbox selects its runs: at most 100 are charted, and the page says so
    groups.nth(1).locator(".group-select").check()
    p.wait_for_function("() => window.expman.selected().length == 100")
    expect(p.locator("#banner")).to_contain_text("at most 100")


def test_runs_query_sends_groups_a_window_at_a_time(big_server):
    """Grouped by seed, 1,200 runs are 1,200 groups: the answer holds the window asked for,
    how many groups there are and the best mean of each column over all of them; the windows
    put together are the groups sent whole, in every order."""
    base = big_server.url + "/api/experiments/big/runs?format=columns&group=p:seed"
    for order in ("&sort=m:acc&order=desc", "&sort=p:seed&order=asc", "&sort=name&order=desc"):
        whole = _get_json(base + order)
        assert whole["groups_total"] == BIG == len(whole["groups"])
        parts = []
        for offset in range(0, BIG, 500):
            j = _get_json(base + order + f"&offset={offset}&limit=500")
            assert j["offset"] == offset and j["groups_total"] == BIG
            assert len(j["groups"]) == min(500, BIG - offset)
            assert j["group_extremes"] == whole["group_extremes"]
            parts += j["groups"]
        assert parts == whole["groups"]
    accs = [_big_acc(i) for i in range(BIG)]
    assert whole["group_extremes"]["m:acc"] == [min(accs), max(accs)]
    assert [g["value"] for g in whole["groups"]] == list(range(BIG - 1, -1, -1))   # name desc
    one = whole["groups"][0]                                  # a group of one run: its values
    assert one["summary"] == {"acc": _big_acc(BIG - 1)} and one["count"] == 1
    assert one["spread"]["m:acc"] == [_big_acc(BIG - 1)] * 2 + [1]
    # a group of many runs keeps its names in the table's order, whichever order came first
    by_lr = base.replace("p:seed", "p:lr")
    for order, key in (("&sort=m:acc&order=asc", lambda i: (_big_acc(i), i)),
                       ("&sort=p:seed&order=desc", lambda i: -i),
                       ("&sort=m:acc&order=desc", lambda i: (-_big_acc(i), i))):
        j = _get_json(by_lr + order + "&limit=2")
        assert j["groups_total"] == 4 and len(j["groups"]) == 2
        for g in j["groups"]:
            k = BIG_LRS.index(g["value"])
            assert g["names"] == [f"r{i:05d}" for i in sorted(range(k, BIG, 4), key=key)]


def test_a_paged_table_grouped_by_seed_fetches_its_groups_as_it_scrolls(ui, big_server):
    import urllib.parse
    ui.url = big_server.url
    sizes, offsets = [], []

    def seen(response):
        query = urllib.parse.parse_qs(urllib.parse.urlsplit(response.url).query)
        if query.get("group") == ["p:seed"]:
            sizes.append(len(response.json()["groups"]))
            offsets.append(int(query["offset"][0]))
    ui.page.on("response", seen)
    p = open_page(ui, "#exp=big&runs=&group=p:seed")
    groups = p.locator("#runs-table tbody tr[data-group]")
    expect(p.locator("#runs-count")).to_have_text(f"{BIG} runs in {BIG} groups")
    p.locator("#runs-table th[data-col='p:seed']").click()             # seed 0 first
    expect(groups.first).to_have_attribute("data-group", "0")
    assert sizes and max(sizes) <= 400, sizes                         # a window, not 1,200
    # the best mean over every group (acc .99: seeds 27, 127, ...) is marked where it is shown
    p.locator("#runs-scroll").evaluate("e => { e.scrollTop = 20 * 30; }")
    expect(p.locator("#runs-table tbody tr[data-group='27'] td.best[data-col='m:acc']")).to_be_visible()
    best = p.locator("#runs-table tbody tr[data-group] td.best[data-col='m:acc']")
    marked = best.evaluate_all("ts => ts.map(t => t.closest('tr').dataset.group)")
    assert marked and all(_big_acc(int(v)) == 0.99 for v in marked), marked
    # jumped to the end: the last groups come, in order, and the pages in between are not asked
    p.locator("#runs-scroll").evaluate("e => { e.scrollTop = e.scrollHeight; }")
    expect(p.locator(f"#runs-table tbody tr[data-group='{BIG - 1}']")).to_be_visible()
    shown = [int(v) for v in groups.evaluate_all("rs => rs.map(r => r.dataset.group)")]
    assert shown == sorted(shown) and shown[-1] == BIG - 1 and 0 not in shown
    expect(p.locator("#runs-table tbody tr.pending")).to_have_count(0)
    assert BIG - 200 in offsets and not {400, 600} & set(offsets), offsets
    # a group far down selects its run
    p.locator(f"#runs-table tbody tr[data-group='{BIG - 2}'] .group-select").check()
    p.wait_for_function(f"() => window.expman.selected().includes('big/r{BIG - 2:05d}')")
    # and back in the middle: that page comes too
    p.locator("#runs-scroll").evaluate("e => { e.scrollTop = 610 * 30; }")
    expect(p.locator("#runs-table tbody tr[data-group='620']")).to_be_visible()
    expect(p.locator("#runs-table tbody tr.pending")).to_have_count(0)


def test_a_new_run_reaches_a_paged_table_grouped_by_seed_scrolled_to_its_end(ui, tmp_path):
    """Live: a run that starts while the table is grouped by seed and scrolled to the end
    comes in as the last group, and the rows on screen are asked again with it (no '...')."""
    import os
    root = tmp_path / "experiments"
    os.makedirs(root / "big")
    n = 600   # more than the page holds whole (PAGE_ALL): paged
    for i in range(n):
        _write_big_run(str(root / "big"), i)
    with serving(root) as srv:
        ui.url = srv.url
        p = open_page(ui, "#exp=big&runs=&group=p:seed")
        expect(p.locator("#runs-count")).to_have_text(f"{n} runs in {n} groups")
        p.locator("#runs-table th[data-col='p:seed']").click()
        expect(p.locator("#runs-table tbody tr[data-group]").first).to_have_attribute("data-group", "0")
        p.locator("#runs-scroll").evaluate("e => { e.scrollTop = e.scrollHeight; }")
        expect(p.locator(f"#runs-table tbody tr[data-group='{n - 1}']")).to_be_visible()
        _write_big_run(str(root / "big"), n)                    # seed 600: the new last group
        expect(p.locator("#runs-count")).to_have_text(f"{n + 1} runs in {n + 1} groups",
                                                      timeout=20_000)
        p.locator("#runs-scroll").evaluate("e => { e.scrollTop = e.scrollHeight; }")
        expect(p.locator(f"#runs-table tbody tr[data-group='{n}']")).to_be_visible()
        expect(p.locator("#runs-table tbody tr.pending")).to_have_count(0)
        p.goto("about:blank")   # the page's stream ends before its server does


# -- colour by param -------------------------------------------------------------------------

# Of the opaque pixels within 3 px of a value's height on a chart, the nearest to a colour
# (a line at the plot's edge shares its pixels with the frame and the best-value marker).
LINE_AT = """([key, frac, value, want]) => {
  const card = Array.from(document.querySelectorAll('#charts [data-key]')).find(e => e.dataset.key === key);
  const c = card.querySelector('canvas.plot'), dpr = devicePixelRatio;
  const labels = window.expman.chartYLabels(key).map(l => [Number(l.text), l.y]);
  const [v0, y0] = labels[0], [v1, y1] = labels[labels.length - 1];
  const y = Math.round((y0 + (value - v0) * (y1 - y0) / (v1 - v0)) * dpr), x = Math.round(c.width * frac);
  const d = c.getContext('2d').getImageData(x, y - 3 * dpr, 1, 6 * dpr + 1).data;
  const off = i => d[i + 3] < 200 ? 1e9 : Math.abs(d[i] - want[0]) + Math.abs(d[i + 1] - want[1]) + Math.abs(d[i + 2] - want[2]);
  let best = 0;
  for (let i = 4; i < d.length; i += 4) if (off(i) < off(best)) best = i;
  return [d[best], d[best + 1], d[best + 2], d[best + 3]];
}"""

RAMP_LOW, RAMP_MID, RAMP_HIGH = (59, 76, 192), (59, 171, 110), (224, 86, 42)


def test_colour_by_param_colours_each_line_by_its_value(page):
    # seed 1 of each lr (loss 1, 5, 9) inside the y range the outer two (0 and 10) set
    five = ",".join(f"sweep/{_name(lr, s)}" for lr, s in
                    [(0.001, 0), (0.001, 1), (0.01, 1), (0.1, 1), (0.1, 2)])
    p = open_page(page, f"#exp=sweep&runs={five}")
    p.wait_for_function("() => Object.keys(window.expman.chartPoints('loss')).length == 5")
    expect(p.locator("#color-legend")).to_be_hidden()
    p.locator("#color-by").select_option("p:lr")
    p.wait_for_function("() => location.hash.indexOf('cby=p:lr') >= 0")
    legend = p.locator("#color-legend")
    expect(legend).to_be_visible()
    expect(legend).to_contain_text("Colour by lr:")
    expect(legend.locator("[data-testid=color-lo]")).to_have_text("0.001")
    expect(legend.locator("[data-testid=color-hi]")).to_have_text("0.1")
    expect(legend).to_contain_text("(log)")             # 0.001 .. 0.1: log-spaced, 0.01 mid-way
    for lr, want in zip(LRS, (RAMP_LOW, RAMP_MID, RAMP_HIGH)):
        key = f"sweep/{_name(lr, 1)}"
        p.wait_for_function(
            "a => { const s = (" + LINE_AT + ")(a), w = a[3]; return s[3] > 200 && "
            "Math.abs(s[0] - w[0]) + Math.abs(s[1] - w[1]) + Math.abs(s[2] - w[2]) <= 30; }",
            arg=["loss", 0.55, BASE[lr] + 1, list(want)])
        chip = p.locator(f"#legend .chip[data-run-key='{key}'] i")
        expect(chip).to_have_css("background-color", "rgb(%d, %d, %d)" % want)
        swatch = p.locator(f"#runs-table tr[data-run='{_name(lr, 1)}'] .swatch")
        expect(swatch).to_have_css("background-color", "rgb(%d, %d, %d)" % want)
    # the setting survives a reload; back to "Run", each run has its own colour again
    p.reload()
    expect(p.locator("#color-by")).to_have_value("p:lr")
    expect(p.locator("#color-legend [data-testid=color-hi]")).to_have_text("0.1")
    p.locator("#color-by").select_option("")
    expect(p.locator("#color-legend")).to_be_hidden()
    key = f"sweep/{_name(0.1, 1)}"
    own = _rgb(p.wait_for_function(
        "k => { const e = document.querySelector(`#legend .chip[data-run-key='${k}'] i`);"
        " const c = e && getComputedStyle(e).backgroundColor;"
        " return c && c !== 'rgb(224, 86, 42)' ? c : null; }", arg=key).json_value())
    assert not _near(own, RAMP_HIGH, 30)
    p.wait_for_function(
        "a => { const s = (" + LINE_AT + ")(a), w = a[3]; return s[3] > 200 && "
        "Math.abs(s[0] - w[0]) + Math.abs(s[1] - w[1]) + Math.abs(s[2] - w[2]) <= 30; }",
        arg=["loss", 0.55, BASE[0.1] + 1, own])


def test_colour_by_a_number_is_linear_when_it_spans_little(page):
    p = open_page(page, f"#exp=sweep&runs={ALL}&cby=p:seed")
    legend = p.locator("#color-legend")
    expect(legend).to_contain_text("Colour by seed:")
    expect(legend.locator("[data-testid=color-lo]")).to_have_text("0")
    expect(legend.locator("[data-testid=color-hi]")).to_have_text("2")
    expect(legend).not_to_contain_text("(log)")
    for lr in LRS:                       # runs of one seed share a colour, across lrs
        for seed, want in enumerate((RAMP_LOW, RAMP_MID, RAMP_HIGH)):
            expect(p.locator(f"#legend .chip[data-run-key='sweep/{_name(lr, seed)}'] i")) \
                .to_have_css("background-color", "rgb(%d, %d, %d)" % want)


def test_colour_by_a_text_param_uses_distinct_colours_with_a_key(page):
    runs = ",".join(f"opts/o{i}" for i in range(len(OPTS)))
    p = open_page(page, f"#exp=opts&runs={runs}&cby=p:opt")
    legend = p.locator("#color-legend")
    expect(legend.locator(".ckey")).to_have_count(3)
    expect(legend.locator(".ckey").nth(0)).to_have_text("adam")
    expect(legend.locator(".ckey").nth(1)).to_have_text("sgd")
    expect(legend.locator(".ckey").nth(2)).to_have_text("(not set)")
    p.wait_for_function("() => document.querySelectorAll('#legend .chip i').length == 4")
    seen = p.evaluate("""() => {
      const bg = e => getComputedStyle(e).backgroundColor;
      return { key: Array.from(document.querySelectorAll('#color-legend .ckey i')).map(bg),
               chip: [0, 1, 2, 3].map(i => bg(document.querySelector(`#legend .chip[data-run-key='opts/o${i}'] i`))) };
    }""")
    key_colour, chip = seen["key"], seen["chip"]
    assert chip[0] == chip[2] == key_colour[1]          # sgd
    assert chip[1] == key_colour[0] != chip[0]          # adam
    assert chip[3] == key_colour[2]                     # no opt: grey
    # and the line of o1 (loss 1, between o0's 0 and o3's 3) is drawn in adam's colour
    want = _rgb(key_colour[0])
    p.wait_for_function(
        "a => { const s = (" + LINE_AT + ")(a), w = a[3]; return s[3] > 200 && "
        "Math.abs(s[0] - w[0]) + Math.abs(s[1] - w[1]) + Math.abs(s[2] - w[2]) <= 30; }",
        arg=["loss", 0.55, 1.0, want])


# -- show only this run ----------------------------------------------------------------------

def test_show_only_this_run_from_the_legend(page):
    # seed 1 of each lr (loss 1, 5, 9) between seed 0 of lr 0.001 (0) and seed 2 of lr 0.1 (10)
    picked = [(0.001, 0), (0.001, 1), (0.01, 1), (0.1, 1), (0.1, 2)]
    p = open_page(page, "#exp=sweep&runs=" + ",".join(f"sweep/{_name(lr, s)}" for lr, s in picked))
    p.wait_for_function("() => document.querySelectorAll('#legend .chip i').length == 5")
    chip = lambda lr, s: p.locator(f"#legend .chip[data-run-key='sweep/{_name(lr, s)}']")  # noqa: E731
    colour = {(lr, s): _rgb(colour_of(p, f"#legend .chip[data-run-key='sweep/{_name(lr, s)}'] i"))
              for lr, s in picked}

    def line_drawn(lr, s, drawn):
        p.wait_for_function(
            "a => { const s = (" + LINE_AT + ")(a), w = a[3], d = Math.abs(s[0] - w[0]) + "
            "Math.abs(s[1] - w[1]) + Math.abs(s[2] - w[2]); return a[4] ? s[3] > 200 && d <= 30 : d > 90; }",
            arg=["loss", 0.55, BASE[lr] + s, colour[(lr, s)], drawn])

    for lr, s in picked[1:4]:
        line_drawn(lr, s, True)
    # the chip's "only" button: the other four are hidden, their lines gone
    target = chip(0.01, 1)
    target.hover()
    target.locator("[data-testid=show-only]").click()
    for lr, s in picked:
        expect(chip(lr, s)).to_have_class("chip solo" if (lr, s) == (0.01, 1) else "chip off")
    line_drawn(0.01, 1, True)
    line_drawn(0.001, 1, False)
    line_drawn(0.1, 1, False)
    p.wait_for_function("() => location.hash.indexOf('hide=sweep/lr0.001_s0,sweep/lr0.001_s1,"
                        "sweep/lr0.1_s1,sweep/lr0.1_s2') >= 0")   # the hidden four, in the URL
    # again: every run is shown (the pointer off the legend: a hovered chip highlights its line)
    target.locator("[data-testid=show-only]").click()
    p.mouse.move(5, 5)
    for lr, s in picked:
        expect(chip(lr, s)).to_have_class("chip")
    line_drawn(0.001, 1, True)
    # alt-click on a chip does the same, and a plain click still hides just that run
    chip(0.1, 1).click(modifiers=["Alt"])
    expect(chip(0.1, 1)).to_have_class("chip solo")
    expect(chip(0.01, 1)).to_have_class("chip off")
    p.mouse.move(5, 5)
    line_drawn(0.1, 1, True)
    line_drawn(0.01, 1, False)
    chip(0.1, 1).click(modifiers=["Alt"])
    expect(chip(0.01, 1)).to_have_class("chip")
    chip(0.01, 1).click()
    expect(chip(0.01, 1)).to_have_class("chip off")
    expect(chip(0.1, 1)).to_have_class("chip")


def test_alt_click_on_a_group_shows_only_that_group(page):
    p = open_page(page, f"#exp=sweep&runs={ALL}&group=p:lr")
    chips = p.locator("#group-legend .chip")
    expect(chips).to_have_count(3)
    p.wait_for_function("() => Object.keys(window.expman.chartPoints('loss')).length == 3")
    chips.nth(1).click(modifiers=["Alt"])
    expect(chips.nth(0)).to_have_class("chip off")
    expect(chips.nth(1)).to_have_class("chip")
    expect(chips.nth(2)).to_have_class("chip off")
    p.wait_for_function("() => Object.keys(window.expman.chartPoints('loss')).join() == 'grp:0.01'")
    chips.nth(1).click(modifiers=["Alt"])
    for i in range(3):
        expect(chips.nth(i)).to_have_class("chip")
    p.wait_for_function("() => Object.keys(window.expman.chartPoints('loss')).length == 3")
