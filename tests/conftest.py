"""Shared fixtures: a fresh experiments root per test, a guard against leaked writers, a live
server over a module's `data_root` (`server`), and a real browser for the dashboard tests
(`browser`: one Chromium per test module; `ui`: a fresh page per test that fails the test on
console errors or dialogs)."""
import os
import sys
import threading

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

import expman  # noqa: E402
from _util import Page, launch_chromium, playwright_or_skip, serving  # noqa: E402


@pytest.fixture
def root(tmp_path):
    """An empty experiments root in tmp_path."""
    path = tmp_path / "experiments"
    path.mkdir()
    return path


@pytest.fixture(autouse=True)
def no_leaked_writers():
    """Every test must close the runs it opens: no expman-writer thread may outlive it."""
    before = {t for t in threading.enumerate() if t.name == "expman-writer"}
    open_before = set(expman._OPEN_RUNS)
    yield
    left_open = [run for run in expman._OPEN_RUNS if run not in open_before]
    for run in left_open:  # clean up so one leak does not cascade into other tests
        run.close()
    for t in threading.enumerate():
        if t.name == "expman-writer" and t not in before:
            t.join(5)
    assert not left_open, f"test left runs open: {left_open}"
    assert not [t for t in threading.enumerate()
                if t.name == "expman-writer" and t not in before and t.is_alive()], \
        "a test left an expman-writer thread running"


@pytest.fixture(scope="module")
def browser():
    """Headless Debian Chromium through Playwright, shared by one module's tests (skips the
    test when either is missing)."""
    sync_api = playwright_or_skip()
    with sync_api.sync_playwright() as pw:
        chromium = launch_chromium(pw)
        yield chromium
        chromium.close()


@pytest.fixture
def ui(browser):
    """A fresh page (a util.Page: .page, .context, .problems, .dialogs) in its own context;
    the test fails if the page logged a console error or opened a dialog."""
    page = Page(browser)
    yield page
    page.check()


@pytest.fixture(scope="module")
def server(data_root):
    """A live server (_util.serving, an ephemeral port) over the module's own `data_root`
    fixture, shared by its tests and stopped after them; a module that serves another tree
    defines a `server` of its own."""
    with serving(data_root) as srv:
        yield srv
