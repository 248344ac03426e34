"""The dashboard in a real browser on runs written by the real expman-rs (0.5.3 and 1.3.0):
their curves are drawn. Kept apart from test_expman_rs_compat.py so that a machine without
Chromium skips only this file (CI installs it)."""
from _util import start_server, stop_server
from test_dashboard import COLOURED_PIXELS, expect
from test_expman_rs_compat import rs_runs  # noqa: F401 - the fixture


def test_dashboard_draws_their_curves(ui, rs_runs):  # noqa: F811
    _version, root = rs_runs
    server, thread = start_server(root)
    try:
        page = ui.page
        page.goto(server.url + "/#exp=exp")
        expect(page.locator("#runs-table tbody tr[data-run]")).to_have_count(2)
        expect(page.locator("#charts [data-key='loss']")).to_have_count(1)
        # select every run: the finished r1 has 120 loss points, drawn in its colour
        page.wait_for_function(
            "() => (window.expman.chartPoints('loss')['exp/r1'] || 0) >= 120")
        assert page.evaluate("k => window.expman.chartPoints(k)", "loss")["exp/r1"] == 120
        page.wait_for_function(f"() => ({COLOURED_PIXELS})('loss') > 50")
        # the row logged without a step (expman-rs writes a null step) breaks nothing
        expect(page.locator("#charts [data-key='nostep']")).to_have_count(1)
    finally:
        ui.page.goto("about:blank")   # leave the page before its server goes away
        stop_server(server, thread)
