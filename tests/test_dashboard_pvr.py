"""Params vs results over every run of a big experiment (issue 14): the runs query's columns=
(only the fields asked for, and which params vary) against the full rows, and, in headless
Chromium against a real Waitress server, a 1,200-run experiment (more than PAGE_ALL, so the
runs table is paged): the scatter draws a point for every run, not only the pages the table
fetched, and a brush narrows the table's matched count through the server's where=.
"""
import os
import urllib.parse

import pytest
import yaml

import expman
from _util import decode_columns, drag, get_json as get, playwright_or_skip, serving

RUNS = 1200
LRS = (0.0001, 0.001, 0.01, 0.1)
BASE_T = 1_760_000_000


def _name(i):
    return f"r{i:05d}"


def _acc(i):
    return round(0.2 + 0.6 * ((i * 7919) % 1000) / 1000, 4)


def _config(i):
    return {"lr": LRS[i % 4], "seed": i, "opt": ["adam", "sgd", "adamw"][i % 3], "width": 64}


def _write_run(exp_dir, i):
    path = os.path.join(exp_dir, _name(i))
    os.makedirs(path, exist_ok=True)
    started = expman._dt.datetime.fromtimestamp(BASE_T + 60 * i, expman._dt.timezone.utc)
    meta = {"name": _name(i), "experiment": os.path.basename(exp_dir), "status": "finished",
            "started_at": started.isoformat(), "finished_at": started.isoformat(),
            "duration_secs": 10.0, "hostname": "h", "pid": 1, "rows": 5, "last_step": 4,
            "tags": [], "summary": {"acc": _acc(i), "loss": 1.0 / (i + 1)},
            "summary_min": {"loss": 0.5 / (i + 1)}, "summary_max": {"loss": 2.0}}
    with open(os.path.join(path, "config.yaml"), "w") as f:
        yaml.safe_dump(_config(i), f)
    with open(os.path.join(path, "run.yaml.tmp"), "w") as f:
        yaml.safe_dump(meta, f, sort_keys=False)
    os.replace(os.path.join(path, "run.yaml.tmp"), os.path.join(path, "run.yaml"))


@pytest.fixture(scope="module")
def big_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("pvr") / "experiments"
    exp_dir = root / "sweep"
    exp_dir.mkdir(parents=True)
    for i in range(RUNS):
        _write_run(str(exp_dir), i)
    _write_cfg(root / "cfg")
    return root


# three runs for the config diff: a and b differ in lr and commit, b's tree was dirty; c is a's
# twin but for its seed; every run has the same width and optimizer
CFG = {"a": ({"lr": 0.1, "seed": 1, "opt": {"name": "adam", "width": 64}},
             {"commit": "1111111111aaaaaaaaaa", "dirty": False, "branch": "main"}),
       "b": ({"lr": 0.01, "seed": 1, "opt": {"name": "adam", "width": 64}},
             {"commit": "2222222222bbbbbbbbbb", "dirty": True, "branch": "main"}),
       "c": ({"lr": 0.1, "seed": 2, "opt": {"name": "adam", "width": 64}},
             {"commit": "1111111111aaaaaaaaaa", "dirty": False, "branch": "main"})}


def _write_cfg(exp_dir):
    for i, (name, (config, git)) in enumerate(CFG.items()):
        run = exp_dir / name
        run.mkdir(parents=True)
        started = expman._dt.datetime.fromtimestamp(BASE_T + 60 * i, expman._dt.timezone.utc)
        (run / "config.yaml").write_text(yaml.safe_dump(config))
        meta = {"name": name, "experiment": "cfg", "status": "finished",
                "started_at": started.isoformat(), "finished_at": started.isoformat(),
                "duration_secs": 1.0, "hostname": "h", "pid": 1, "rows": 0, "git": git,
                "summary": {"loss": 0.5 + i if name != "c" else float("nan")}}   # c diverged
        (run / "run.yaml").write_text(yaml.safe_dump(meta, sort_keys=False))


@pytest.fixture(scope="module")
def server(big_root):
    with serving(big_root) as srv:
        yield srv


# -- the API: columns= ------------------------------------------------------------------------

def test_columns_answers_only_the_fields_asked_for_every_run(server):
    full, full_bytes = get(server, "/api/experiments/sweep/runs?format=columns&sort=name")
    picked, picked_bytes = get(server, "/api/experiments/sweep/runs?format=columns&sort=name"
                                       "&columns=p:lr,m:acc,min:loss")
    assert picked["count"] == picked["matched"] == picked["total"] == RUNS
    rows = decode_columns(picked)
    assert rows[:2] == [{"name": "r00000", "params": {"lr": 0.0001}, "summary": {"acc": _acc(0)},
                         "summary_min": {"loss": 0.5}},
                        {"name": "r00001", "params": {"lr": 0.001}, "summary": {"acc": _acc(1)},
                         "summary_min": {"loss": 0.25}}]
    assert [r["params"]["lr"] for r in rows] == [_config(i)["lr"] for i in range(RUNS)]
    # the params that vary among the runs: not width (64 in every run)
    assert picked["varying"] == ["lr", "opt", "seed"]
    assert "varying" not in full
    # 1,200 runs x 4 fields (name too) in under 50 bytes a run, a fifth of the full rows
    assert picked_bytes < 50 * RUNS and picked_bytes * 5 < full_bytes, (picked_bytes, full_bytes)
    # with where=: only the runs it matches, and a whole field by its name
    some, _ = get(server, "/api/experiments/sweep/runs?format=columns&sort=name"
                          "&columns=name,status&where=" + urllib.parse.quote("lr>=0.01 acc>0.7"))
    want = [_name(i) for i in range(RUNS) if _config(i)["lr"] >= 0.01 and _acc(i) > 0.7]
    assert [r["name"] for r in decode_columns(some)] == want and some["matched"] == len(want)
    assert set(decode_columns(some)[0]) == {"name", "status"}
    # the rows form too
    plain, _ = get(server, "/api/experiments/sweep/runs?sort=name&limit=1&columns=tags,p:opt")
    assert plain["runs"] == [{"name": "r00000", "tags": [], "params": {"opt": "adam"}}]


@pytest.mark.parametrize("bad", ["p:", "nope", "x:lr", "lr", ""])
def test_columns_names_a_field_it_does_not_know(server, bad):
    answer, _ = get(server, "/api/experiments/sweep/runs?columns=" + urllib.parse.quote(bad),
                    expect=400)
    assert "columns" in answer["error"] and "not a run field" in answer["error"]


# -- the page ---------------------------------------------------------------------------------

sync_api = None


@pytest.fixture(scope="module")
def pw():
    global sync_api
    sync_api = playwright_or_skip()
    return sync_api


def _in(lo, hi, v):
    return lo <= v <= hi


def test_scatter_draws_every_run_of_a_paged_table_and_a_brush_narrows_it(pw, ui, server):
    expect = pw.expect
    p = ui.page
    p.goto(server.url + "/#exp=sweep&runs=&pvr=scatter,p%253Alr,m%253Aacc")
    expect(p.locator("#runs-table tbody tr[data-run]").first).to_be_visible(timeout=30_000)
    expect(p.locator("#runs-count")).to_have_text(f"{RUNS} runs")
    # the table holds a page or two; the scatter every run, each where its values put it
    assert p.evaluate("() => document.querySelectorAll('#runs-table tbody tr[data-run]').length") < RUNS
    p.wait_for_function(f"() => window.expman.pvrPoints().length == {RUNS}")
    pts = {pt["run"]: pt for pt in p.evaluate("() => window.expman.pvrPoints()")}
    assert set(pts) == {_name(i) for i in range(RUNS)}
    assert all(pt["matched"] for pt in pts.values())
    expect(p.locator("#pvr-note")).to_have_text(f"{RUNS} of {RUNS} runs match the filter")
    xs = {lr: {round(pts[_name(i)]["x"], 3) for i in range(RUNS) if _config(i)["lr"] == lr}
          for lr in LRS}
    assert all(len(v) == 1 for v in xs.values()), xs       # one column per lr
    cols = [xs[lr].pop() for lr in LRS]
    assert cols == sorted(cols)
    # y: higher acc higher on screen, linear in acc
    lo_run = min(range(RUNS), key=_acc)
    hi_run = max(range(RUNS), key=_acc)
    assert pts[_name(hi_run)]["y"] < pts[_name(lo_run)]["y"]
    # brush a box around the two middle lr columns and the upper half of acc
    box = p.locator("#pvr-canvas").bounding_box()
    y_mid = (pts[_name(lo_run)]["y"] + pts[_name(hi_run)]["y"]) / 2
    x0 = box["x"] + (cols[0] + cols[1]) / 2
    x1 = box["x"] + (cols[2] + cols[3]) / 2
    y0, y1 = box["y"] + 12, box["y"] + y_mid
    drag(p, x0, y0, x1, y1)
    text = p.locator("#filter").input_value()
    terms = dict(t.split(">=") if ">=" in t else (t.split("<=")[0] + "<", t.split("<=")[1])
                 for t in text.split(" "))
    lr_lo, lr_hi = float(terms["lr"]), float(terms["lr<"])
    acc_lo, acc_hi = float(terms["acc"]), float(terms["acc<"])
    assert 0.0001 < lr_lo < 0.001 and 0.01 < lr_hi < 0.1, text
    want = [i for i in range(RUNS) if _in(lr_lo, lr_hi, _config(i)["lr"])
            and _in(acc_lo, acc_hi, _acc(i))]
    assert 100 < len(want) < RUNS / 2, (text, len(want))
    # the paged table asks the server (where=): its matched count is the brushed runs
    expect(p.locator("#runs-count")).to_have_text(f"{len(want)} of {RUNS} runs")
    # and the scatter keeps every run, the brushed ones in colour
    p.wait_for_function(f"() => window.expman.pvrPoints().filter(p => p.matched).length == {len(want)}")
    pts = {pt["run"]: pt for pt in p.evaluate("() => window.expman.pvrPoints()")}
    assert len(pts) == RUNS
    assert {n for n, pt in pts.items() if pt["matched"]} == {_name(i) for i in want}
    expect(p.locator("#pvr-note")).to_have_text(f"{len(want)} of {RUNS} runs match the filter")
    p.locator("#pvr-clear").click()
    expect(p.locator("#runs-count")).to_have_text(f"{RUNS} runs")
    p.wait_for_function(f"() => window.expman.pvrPoints().filter(p => p.matched).length == {RUNS}")


def test_parallel_coordinates_of_a_paged_table_use_the_params_that_vary(pw, ui, server):
    p = ui.page
    p.goto(server.url + "/#exp=sweep&runs=&pvr=parallel,,m%253Aacc")
    pw.expect(p.locator("#runs-table tbody tr[data-run]").first).to_be_visible(timeout=30_000)
    p.wait_for_function(f"() => window.expman.pvrPoints().length == {RUNS}")
    # the axes: lr, opt, seed (width is 64 in every run) and acc, over every run
    assert p.evaluate("() => window.expman.pvrAxes()") == ["lr (log)", "opt", "seed", "acc"]
    pts = {pt["run"]: pt for pt in p.evaluate("() => window.expman.pvrPoints()")}
    # seed i on its axis: the highest seed highest on screen, the lowest lowest
    assert pts[_name(RUNS - 1)]["ys"][2] < pts[_name(0)]["ys"][2]


def test_config_diff_shows_the_params_and_provenance_that_differ(pw, ui, server):
    """Select two runs, open Diff params: only lr and the provenance that differs (commit,
    and dirty, which run.yaml holds and the runs rows do not) are rows; a third run adds a
    column and seed; equal params stay hidden."""
    expect = pw.expect
    p = ui.page
    p.goto(server.url + "/#exp=cfg&runs=cfg/a,cfg/b")
    expect(p.locator("#legend .chip")).to_have_count(2)
    p.locator("#diff-button").click()
    table = p.locator("[data-testid=diff-table]")
    expect(p.locator("#diff-panel")).to_have_attribute("data-loading", "false")
    expect(table.locator("thead th")).to_have_text(["param", "b", "a"])   # the table's order

    def rows():
        return table.locator("tbody tr").evaluate_all(
            "trs => trs.map(tr => [tr.dataset.param, tr.dataset.kind]"
            ".concat(Array.from(tr.querySelectorAll('td')).map(td => td.textContent)))")

    assert rows() == [["lr", "param", "0.01", "0.1"],
                      ["git commit", "provenance", "2222222222bb", "1111111111aa"],
                      ["git dirty", "provenance", "dirty", "clean"]]
    expect(p.locator("#diff-note")).to_have_text("2 runs \u00b7 3 differ \u00b7 4 equal, hidden")
    p.locator("tr[data-run='c'] .run-select").check()
    expect(table.locator("thead th")).to_have_text(["param", "c", "b", "a"])
    expect(p.locator("#diff-panel")).to_have_attribute("data-loading", "false")
    expect(table.locator("tbody tr")).to_have_count(4)
    assert rows() == [["lr", "param", "0.1", "0.01", "0.1"],
                      ["seed", "param", "2", "1", "1"],
                      ["git commit", "provenance", "1111111111aa", "2222222222bb", "1111111111aa"],
                      ["git dirty", "provenance", "clean", "dirty", "clean"]]
    # the cells marked are the runs that stray from what most of them have
    marked = table.locator("tbody tr").evaluate_all(
        "trs => trs.map(tr => Array.from(tr.querySelectorAll('td')).map(td => td.classList.contains('differs')))")
    assert marked == [[False, True, False], [True, False, False], [False, True, False],
                      [False, True, False]]
    # two runs alike in provenance: only their params differ
    p.locator("tr[data-run='b'] .run-select").uncheck()
    expect(table.locator("tbody tr")).to_have_count(1)
    assert rows() == [["seed", "param", "2", "1"]]


def test_a_legend_chip_shows_only_its_run(pw, ui, server):
    """Alt+click a legend chip: only its run stays shown; again: all."""
    expect = pw.expect
    p = ui.page
    p.goto(server.url + "/#exp=cfg&runs=cfg/a,cfg/b,cfg/c")
    chips = p.locator("#legend .chip")
    expect(chips).to_have_count(3)
    chip = {k: p.locator(f"#legend .chip[data-run-key='cfg/{k}']") for k in "abc"}
    chip["b"].locator(".chip-label").click(modifiers=["Alt"])
    for k in "ac":
        expect(chip[k]).to_have_class("chip off")
    expect(chip["b"]).to_have_class("chip solo")     # marked as the one shown alone
    p.wait_for_function("() => { const m = /[#&]hide=([^&]*)/.exec(location.hash); "
                        "return !!m && decodeURIComponent(m[1]).split(',').sort().join() == 'cfg/a,cfg/c'; }")
    chip["b"].locator(".chip-label").click(modifiers=["Alt"])                       # the only one shown: all come back
    for k in "abc":
        expect(chip[k]).to_have_class("chip")
    chip["c"].locator(".chip-label").click(modifiers=["Alt"])
    expect(chip["a"]).to_have_class("chip off")
    expect(chip["b"]).to_have_class("chip off")
    expect(chip["c"]).to_have_class("chip solo")
    chip["a"].locator(".chip-label").click()     # a plain click still flips one chip
    expect(chip["a"]).to_have_class("chip")
    expect(chip["b"]).to_have_class("chip off")


def test_slash_moves_to_the_filter(pw, ui, server):
    """The shortcut list's "/": focus the runs filter from anywhere (keyboard item of #14)."""
    p = ui.page
    p.goto(server.url + "/#exp=cfg")
    pw.expect(p.locator("#runs-table tbody tr[data-run]").first).to_be_visible(timeout=30_000)
    p.locator("body").click(position={"x": 5, "y": 5})
    assert p.evaluate("() => document.activeElement.id") != "filter"
    p.keyboard.press("/")
    p.wait_for_function("() => document.activeElement.id == 'filter'")
    p.keyboard.type("seed=2")
    pw.expect(p.locator("#runs-table tbody tr[data-run]")).to_have_count(1)
    pw.expect(p.locator("#filter")).to_have_value("seed=2")       # the "/" was not typed in

def test_the_scatter_says_which_runs_it_leaves_off(pw, ui, server):
    """A run with no number on an axis (c's loss is NaN) has no place on the scatter: the
    note says one run is not drawn, rather than showing 2 points for 3 matching runs."""
    p = ui.page
    p.goto(server.url + "/#exp=cfg&pvr=scatter,p%253Alr,m%253Aloss")
    pw.expect(p.locator("#runs-table tbody tr[data-run]").first).to_be_visible(timeout=30_000)
    p.wait_for_function("() => window.expman.pvrPoints().length == 2")
    assert sorted(pt["run"] for pt in p.evaluate("() => window.expman.pvrPoints()")) == ["a", "b"]
    note = p.locator("#pvr-note")
    pw.expect(note).to_have_text("3 of 3 runs match the filter \u00b7 1 not drawn")
    pw.expect(note).to_have_attribute("title", "No value for lr or loss: c")

def test_a_new_run_joins_the_scatter_of_a_paged_table(pw, ui, server, big_root):
    """Runs that arrive while the page is open are drawn too (the view asks again when the
    run count changes). Last in this module: it adds run 1200 to the sweep."""
    p = ui.page
    p.goto(server.url + "/#exp=sweep&runs=&pvr=scatter,p%253Alr,m%253Aacc")
    pw.expect(p.locator("#runs-table tbody tr[data-run]").first).to_be_visible(timeout=30_000)
    p.wait_for_function(f"() => window.expman.pvrPoints().length == {RUNS}")
    _write_run(str(big_root / "sweep"), RUNS)
    p.wait_for_function(f"() => window.expman.pvrPoints().length == {RUNS + 1}", timeout=60_000)
    new = [pt for pt in p.evaluate("() => window.expman.pvrPoints()") if pt["run"] == _name(RUNS)]
    assert len(new) == 1 and new[0]["matched"]
