"""Shared fixtures: a fresh experiments root per test, and a guard against leaked writers."""
import os
import sys
import threading

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

import expman  # noqa: E402


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
