"""Helpers shared by the test files: polling with a deadline, Python child processes (on a
terminal, or with their peak memory measured), a live server on an ephemeral port, and the
browser page that the `browser` and `ui` fixtures of conftest.py hand to dashboard tests."""
import contextlib
import os
import subprocess
import sys
import textwrap
import threading
import time

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def wait_for(predicate, timeout=10.0, interval=0.01, message=None):
    """Poll predicate until it returns something truthy (returned); fail after timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(message or f"timed out after {timeout}s waiting for {predicate}")
        time.sleep(interval)  # polling interval, not a fixed wait: the deadline bounds it


def child_env(pythonpath=REPO, **extra):
    """The environment of a child: expman importable from pythonpath, no EXPMAN_* leaking in."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("EXPMAN_") and k != "PYTHONPATH"}
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


def run_python(code, cwd, timeout=60, env=None, check=True):
    """Run code in a fresh interpreter; returns the CompletedProcess (text output)."""
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=cwd,
                          env=env or child_env(), capture_output=True, text=True,
                          timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"child failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


class Child:
    """A Python child whose stdout lines are collected by a thread, so a test can poll them."""

    def __init__(self, code, cwd, env=None):
        self.proc = subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], cwd=cwd,
                                     env=env or child_env(), stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
        self.lines = []
        self.stderr = ""
        self._out = threading.Thread(target=self._read, daemon=True)
        self._out.start()
        self._err = threading.Thread(target=self._read_err, daemon=True)
        self._err.start()

    def _read(self):
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def _read_err(self):
        self.stderr = self.proc.stderr.read()

    def wait_line(self, predicate, timeout=20.0):
        """The last stdout line once predicate(line) holds for it."""
        def check():
            if self.proc.poll() is not None and not self._out.is_alive():
                lines = list(self.lines)
                if not (lines and predicate(lines[-1])):
                    raise AssertionError(f"child exited ({self.proc.returncode}) early:\n"
                                         f"{lines[-5:]}\n{self.stderr}")
            lines = self.lines
            return lines and predicate(lines[-1]) and lines[-1]
        return wait_for(check, timeout, message=f"child output never matched; "
                                                f"last lines {self.lines[-3:]}")

    def wait(self, timeout=30.0):
        rc = self.proc.wait(timeout)
        self._out.join(timeout)
        self._err.join(timeout)
        for pipe in (self.proc.stdout, self.proc.stderr):
            pipe.close()
        return rc

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.wait()



def run_on_pty(argv, cwd=None, env=None, timeout=60, terminal="stdout"):
    """Run argv with one stream (terminal="stdout" or "stderr") on a real terminal
    (pty.openpty) and the other piped: (exit code, terminal bytes, piped bytes). Whether the
    CLI draws a bar, colours or a window of runs depends on the real isatty() of the stream."""
    pty = pytest.importorskip("pty")
    assert terminal in ("stdout", "stderr"), terminal
    master, slave = pty.openpty()
    streams = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, terminal: slave}
    try:
        proc = subprocess.Popen(argv, cwd=cwd, env=env or child_env(), **streams)
    except BaseException:
        os.close(master)
        raise
    finally:
        os.close(slave)
    pipe = proc.stderr if terminal == "stdout" else proc.stdout
    piped = []   # read by a thread, so a full pipe cannot stop the child writing its terminal
    reader = threading.Thread(target=lambda: piped.append(pipe.read()), daemon=True)
    reader.start()
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
    code = proc.wait(timeout)
    reader.join(timeout)
    pipe.close()
    return code, b"".join(chunks), b"".join(piped)


# A command measured runs as the grandchild of a small Python: a child forked from this (big,
# and growing) pytest process would count the parent's pages in its own peak RSS until it execs.
_MEASURE_RSS = """
import os, subprocess, sys
proc = subprocess.Popen(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
err = proc.stderr.read()
_, status, usage = os.wait4(proc.pid, 0)
sys.stderr.write(err.decode(errors="replace"))
print(usage.ru_maxrss if os.waitstatus_to_exitcode(status) == 0 else -1)
"""


def peak_rss_mb(argv, cwd, timeout=300):
    """The peak RSS in MB (ru_maxrss from os.wait4) of the command argv, run with its stdout
    discarded; fails, with its stderr, if it exits non-zero."""
    proc = subprocess.run([sys.executable, "-c", _MEASURE_RSS, *map(str, argv)], cwd=cwd,
                          env=child_env(), capture_output=True, text=True, timeout=timeout)
    peak_kb = int(proc.stdout.strip() or -1)
    assert peak_kb > 0, proc.stderr
    return peak_kb / 1024

def only_run_dir(root, experiment):
    """The single run directory of an experiment (fails if there are zero or several)."""
    runs = [p for p in (root / experiment).iterdir() if p.is_dir() and not p.name.startswith(".")]
    assert len(runs) == 1, runs
    return runs[0]


def make_experiment(root, name="exp", **kwargs):
    """An Experiment under root with a short flush interval and no git lookup (fast tests)."""
    import expman
    kwargs.setdefault("flush_interval_ms", 50)
    kwargs.setdefault("capture_git", False)
    return expman.Experiment(name, base_dir=root, **kwargs)


def columns(run_dir, **kwargs):
    """The run's metrics as {column: [values]} without the timestamp column."""
    import expman
    return expman.load_metrics(run_dir, **kwargs).drop_columns(["timestamp"]).to_pydict()


def filled_root(tmp_path_factory, name, fill):
    """A module's experiments root: <tmp>/<name>N/experiments, written by fill(root, scratch)
    where scratch is an empty folder beside it for files the runs save."""
    base = tmp_path_factory.mktemp(name)
    root, scratch = base / "experiments", base / "scratch"
    root.mkdir()
    scratch.mkdir()
    fill(root, scratch)
    return root


# -- a live server ----------------------------------------------------------------------------

def start_server(root, **kwargs):
    """An expman server on an ephemeral loopback port, served by a daemon thread: (server, thread).
    Its URL is server.url; end it with stop_server(server, thread), or use serving()."""
    import expman
    kwargs.setdefault("host", "127.0.0.1")
    server = expman.make_server(root, port=0, **kwargs)
    thread = threading.Thread(target=server.run, name="expman-test-server", daemon=True)
    thread.start()
    return server, thread


def stop_server(server, thread, timeout=10):
    server.close()
    thread.join(timeout)


@contextlib.contextmanager
def serving(root, **kwargs):
    """`with serving(root) as server:` a started server, stopped when the block ends (a module
    fixture: `with serving(data_root) as srv: yield srv`)."""
    server, thread = start_server(root, **kwargs)
    try:
        yield server
    finally:
        stop_server(server, thread)


# -- a real browser (Debian's Chromium through Playwright) -----------------------------------

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run", "--disable-sync"]
BROWSER_TIMEOUT_MS = 30_000


def playwright_or_skip():
    """playwright.sync_api, or skip the calling test module when it or Debian's chromium is
    missing (call it at module level: `sync_api = playwright_or_skip()`)."""
    sync_api = pytest.importorskip("playwright.sync_api")
    if not os.path.exists(CHROMIUM):
        pytest.skip("Debian's chromium is not installed at /usr/bin/chromium",
                    allow_module_level=True)
    return sync_api


def launch_chromium(playwright):
    return playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)


class Page:
    """A fresh browser context and page that records console errors, page errors and dialogs;
    check() (run by the `ui` fixture at teardown) fails the test if any appeared."""

    def __init__(self, browser, scheme="light"):
        self.context = browser.new_context(viewport={"width": 1440, "height": 900},
                                           color_scheme=scheme)
        self.page = self.context.new_page()
        self.page.set_default_timeout(BROWSER_TIMEOUT_MS)
        self.problems, self.dialogs = [], []
        self.page.on("console", lambda m: m.type == "error" and self.problems.append(m.text))
        self.page.on("pageerror", lambda e: self.problems.append(f"page error: {e}"))
        self.page.on("dialog", self._dialog)

    def _dialog(self, dialog):
        self.dialogs.append(dialog.message)
        dialog.dismiss()

    def check(self, allowed=()):
        """Close the context, then fail on any dialog, or on any console problem that contains
        none of the allowed substrings."""
        self.context.close()
        assert not self.dialogs, f"the page opened dialogs: {self.dialogs}"
        problems = [m for m in self.problems if not any(a in m for a in allowed)]
        assert not problems, f"browser console errors: {problems}"


def open_page(ui, server, fragment="", rows="#runs-table tbody tr[data-run]"):
    """Load the dashboard at fragment and wait until the runs table shows a row."""
    from playwright.sync_api import expect
    ui.page.goto(server.url + "/" + fragment)
    expect(ui.page.locator(rows).first).to_be_visible()
    return ui.page



def drag(page, x0, y0, x1, y1, steps=2):
    """Press the mouse at (x0, y0), move to (x1, y1) in `steps` moves, release: a brush, a
    zoom or a column resize on a Playwright page."""
    page.mouse.move(x0, y0)
    page.mouse.down()
    page.mouse.move(x1, y1, steps=steps)
    page.mouse.up()

# -- the runs API as the page reads it ----------------------------------------------------------

def get_json(server, path, expect=200):
    """(decoded JSON, body size) of a GET that must answer `expect` (an error's body closed too)."""
    import json
    import urllib.error
    import urllib.request
    try:
        with urllib.request.urlopen(server.url + path, timeout=60) as resp:
            status, body = resp.status, resp.read()
    except urllib.error.HTTPError as err:
        with err:
            status, body = err.code, err.read()
    assert status == expect, (status, body[:300])
    return json.loads(body), len(body)


def decode_columns(answer):
    """Rows back from format=columns (the page's decodeRuns, in Python)."""
    rows = [{} for _ in range(answer["count"])]

    def put(col, setter):
        if isinstance(col, list):
            for i, v in enumerate(col):
                setter(i, v)
        else:
            for i, v in zip(col["sparse"], col["values"]):
                setter(i, v)

    for field, col in answer["columns"].items():
        if isinstance(col, dict) and "fields" in col:
            for r in rows:
                r[field] = {}
            for key, sub in col["fields"].items():
                put(sub, lambda i, v, f=field, k=key: rows[i][f].__setitem__(k, v))
        else:
            put(col, lambda i, v, f=field: rows[i].__setitem__(f, v))
    return rows
