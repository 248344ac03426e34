"""Streaming export/import and the CLI's progress line (_Progress).

The progress tests run a child with its stderr on a real pseudo-terminal (pty.openpty), and
piped, because whether a bar is drawn depends on the real isatty() of the stream."""
import os
import pty
import subprocess
import sys
import textwrap

import pytest
from _util import child_env

import expman

PROGRESS_CHILD = """
    import sys, expman
    ticks = [0.0]
    def clock():                      # 0.05 s per call: deterministic, no sleeping
        ticks[0] += 0.05
        return ticks[0]
    total = None if sys.argv[1] == "none" else 100
    with expman._Progress("export", total=total, unit="rows", clock=clock,
                          enabled=sys.argv[2] == "on") as bar:
        for _ in range(100):
            bar.update(1)
    print("done", bar.count)
"""


def _run_progress(tmp_path, total, enabled, tty):
    """Run PROGRESS_CHILD; return (stdout, stderr bytes)."""
    argv = [sys.executable, "-c", textwrap.dedent(PROGRESS_CHILD), total, enabled]
    if not tty:
        proc = subprocess.run(argv, cwd=tmp_path, env=child_env(), capture_output=True,
                              timeout=60)
        assert proc.returncode == 0, proc.stderr
        return proc.stdout.decode(), proc.stderr
    master, slave = pty.openpty()
    try:
        proc = subprocess.Popen(argv, cwd=tmp_path, env=child_env(), stdout=subprocess.PIPE,
                                stderr=slave)
    finally:
        os.close(slave)
    chunks = []
    while True:   # read the terminal until the child closes it (EIO on Linux, b"" elsewhere)
        try:
            data = os.read(master, 65536)
        except OSError:
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    out = proc.stdout.read().decode()
    proc.stdout.close()
    assert proc.wait(timeout=60) == 0
    return out, b"".join(chunks)


def test_progress_on_a_tty_draws_throttled_and_clears(tmp_path):
    out, err = _run_progress(tmp_path, "100", "on", tty=True)
    assert out.strip() == "done 100"
    text = err.decode()
    draws = text.count("export: [")
    # 100 updates over 5 fake seconds at one redraw per 0.1 s: about 50, never one per update
    assert 10 <= draws <= 51, text
    assert "/100 rows" in text and "rows/s" in text and "ETA" in text
    assert text.endswith("\r\x1b[K"), "the line is cleared at the end"


def test_progress_unknown_total_shows_count_and_rate(tmp_path):
    _, err = _run_progress(tmp_path, "none", "on", tty=True)
    text = err.decode()
    assert "export: " in text and " rows, " in text and "rows/s" in text
    assert "ETA" not in text and "export: [" not in text


@pytest.mark.parametrize("enabled,tty", [("on", False), ("off", True)])
def test_progress_prints_nothing_when_piped_or_disabled(tmp_path, enabled, tty):
    out, err = _run_progress(tmp_path, "100", enabled, tty=tty)
    assert out.strip() == "done 100"
    assert err == b""


def test_progress_counts_even_when_not_drawn():
    with expman._Progress("x", total=10, stream=None) as bar:
        bar.update(3)
        bar.update(4)
    assert bar.count == 7
