"""The dashboard's distributed-job grouping, rank bands and project filter, in a real browser
(same setup as test_dashboard.py: Debian Chromium through Playwright, a real Waitress server)."""
import pytest

from _util import playwright_or_skip, serving, start_server, stop_server

expect = playwright_or_skip().expect

import expman  # noqa: E402


@pytest.fixture(scope="module")
def jobs_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("jobs") / "experiments"
    root.mkdir()
    for rank in range(3):  # one job of three ranks: loss = rank at every step
        with expman.Experiment("ddp", base_dir=root, rank=rank, group="job42", capture_git=False,
                               project="vision", config={"lr": 0.1}) as exp:
            for step in range(50):
                exp.log_metrics({"train/loss": float(rank)}, step=step)
    with expman.Experiment("ddp", base_dir=root, run_name="solo", capture_git=False,
                           project="vision") as exp:
        for step in range(50):
            exp.log_metrics({"train/loss": 5.0}, step=step)
    with expman.Experiment("bert", base_dir=root, run_name="r", capture_git=False,
                           project="nlp") as exp:
        exp.log_metrics({"loss": 1.0})
    with expman.Experiment("loose", base_dir=root, run_name="r", capture_git=False) as exp:
        exp.log_metrics({"loss": 1.0})
    return root


@pytest.fixture(scope="module")
def server(jobs_root):
    with serving(jobs_root) as srv:
        yield srv


def test_a_jobs_ranks_fold_into_one_row_and_draw_as_a_band(ui, server, tmp_path):
    page = ui.page
    page.goto(server.url + "/#exp=ddp")
    job = page.locator("#runs-table tbody tr[data-job='ddp/job42']")
    expect(job).to_be_visible()
    expect(job.locator(".job-count")).to_have_text("3 ranks")
    expect(page.locator("#runs-table tbody tr[data-run]")).to_have_count(1)  # solo only
    expect(job.locator("[data-col='m:train/loss']")).to_have_text("1")  # mean of 0, 1, 2
    job.locator(".job-toggle").click()
    members = page.locator("#runs-table tbody tr.job-member")
    expect(members).to_have_count(3)
    assert [members.nth(i).get_attribute("data-run") for i in range(3)] == [
        "job42-rank0", "job42-rank1", "job42-rank2"]
    # every run is auto-selected (4 <= 5): each rank is its own line
    page.wait_for_function("() => Object.keys(window.expman.chartPoints('train/loss')).length == 4")
    # the job's checkbox deselects and reselects all its ranks
    box = job.locator(".job-select")
    expect(box).to_be_checked()
    box.uncheck()
    page.wait_for_function("() => window.expman.selected().length == 1")
    box.check()
    page.wait_for_function("() => window.expman.selected().length == 4")
    # mean with a min/max band: one series for the job
    expect(page.locator("#job-mode-label")).to_be_visible()
    page.select_option("#job-mode", "band")
    page.wait_for_function("""() => {
        const p = window.expman.chartPoints('train/loss');
        return Object.keys(p).sort().join(',') == 'ddp/solo,job:ddp/job42' && p['job:ddp/job42'] == 50;
    }""")
    hover = page.evaluate("() => window.expman.chartHover('train/loss', 10)")
    by_id = {h["run"]: h for h in hover}
    assert by_id["job:ddp/job42"]["raw"] == 1.0 and by_id["ddp/solo"]["raw"] == 5.0
    expect(page.locator(".chart-tip")).to_contain_text("job42 (mean of 3 ranks)")
    # the band is drawn: pixels of the series colour, faint, between the min and max lines
    shaded = page.evaluate("""() => {
        const c = document.querySelector('#charts [data-key="train/loss"] canvas.plot');
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        let faint = 0;
        for (let i = 0; i < d.length; i += 4) if (d[i + 3] > 10 && d[i + 3] < 90) faint++;
        return faint;
    }""")
    assert shaded > 2000, shaded
    page.screenshot(path=str(tmp_path / "band.png"))
    # the mode goes into the link (written after a short debounce, so wait for it)
    page.wait_for_function("() => location.hash.includes('ranks=band')")
    page.reload()  # the mode survives a reload
    page.wait_for_function("() => 'job:ddp/job42' in window.expman.chartPoints('train/loss')")
    page.select_option("#job-mode", "overlay")
    page.wait_for_function("() => Object.keys(window.expman.chartPoints('train/loss')).length == 4")


def test_project_filter_and_provenance_in_run_details(ui, server):
    page = ui.page
    page.goto(server.url + "/")
    select = page.locator("#project-filter")
    expect(select).to_be_visible()
    expect(select.locator("option")).to_have_count(3)  # all, nlp, vision
    expect(page.locator("#experiments [data-exp]")).to_have_count(3)
    select.select_option("nlp")
    expect(page.locator("#experiments [data-exp]")).to_have_count(1)
    expect(page.locator("#experiments [data-exp='bert']")).to_be_visible()
    page.wait_for_function("() => location.hash.includes('project=nlp')")
    page.reload()
    expect(page.locator("#experiments [data-exp]")).to_have_count(1)
    expect(page.locator("#project-filter")).to_have_value("nlp")
    select.select_option("")
    expect(page.locator("#experiments [data-exp]")).to_have_count(3)
    # run details: job, rank, project and where the run came from
    page.goto(server.url + "/#exp=ddp&run=ddp/job42-rank1")
    meta = page.locator("#detail-meta")
    expect(meta.locator("[data-field='group'] dd")).to_have_text("job42")
    expect(meta.locator("[data-field='rank'] dd")).to_have_text("1")
    expect(meta.locator("[data-field='project'] dd")).to_have_text("vision")
    expect(meta.locator("[data-field='packages'] dd")).to_contain_text("pyarrow")


def test_a_live_rank_joins_its_job_and_its_band_grows(ui, tmp_path):
    root = tmp_path / "experiments"
    root.mkdir()
    for rank in range(2):
        with expman.Experiment("ddp", base_dir=root, rank=rank, group="j", capture_git=False) as exp:
            for step in range(20):
                exp.log_metrics({"loss": 1.0}, step=step)
    srv, thread = start_server(root)
    live = None
    try:
        page = ui.page
        page.goto(srv.url + "/#exp=ddp&ranks=band")
        job = page.locator("#runs-table tbody tr[data-job='ddp/j']")
        expect(job.locator(".job-count")).to_have_text("2 ranks")
        page.wait_for_function("() => window.expman.chartPoints('loss')['job:ddp/j'] == 20")
        live = expman.Experiment("ddp", base_dir=root, rank=2, group="j", capture_git=False,
                                 flush_interval_ms=50)
        live.log_metrics({"loss": 4.0}, step=0)
        live.flush()
        # the new rank appears in the job's row, over the live stream
        expect(job.locator(".job-count")).to_have_text("3 ranks", timeout=20_000)
        job.locator(".job-select").check()  # select the new rank too
        page.wait_for_function("() => window.expman.selected().length == 3")
        # the band now averages the live rank's first row in (its data is loaded) ...
        page.wait_for_function("""() => (window.expman.chartHover('loss', 0)
            .find(h => h.run == 'job:ddp/j') || {}).raw == 2""")
        for step in range(1, 40):
            live.log_metrics({"loss": 4.0}, step=step)
        live.flush()
        # ... and rows streamed to the live rank from now on extend the band past the finished ranks' 20 steps
        page.wait_for_function("() => window.expman.chartPoints('loss')['job:ddp/j'] == 40",
                               timeout=20_000)
        hover = {h["run"]: h for h in page.evaluate(
            "() => window.expman.chartHover('loss', 5)")}
        assert hover["job:ddp/j"]["raw"] == 2.0  # mean of 1, 1 and 4
    finally:
        ui.page.goto("about:blank")  # drop the live stream before its server goes
        if live is not None:
            live.close()
        stop_server(srv, thread)
