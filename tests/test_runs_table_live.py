"""The runs table on a 2,000-run experiment while live updates keep arriving (issue 13, Tests:
"the page on a 2,000-run experiment in Chromium: paging, sort, filter, select, live updates
still arriving").

A writer in another process (real expman runs) keeps logging into a live run the whole time
and, on command, starts and closes more runs; the page, scrolled far down, sorted, filtered
and with a selection, must keep showing exactly the rows the runs say, without reloading and
without ever asking for the whole list.
"""
import datetime
import io
import os
import re
import subprocess
import sys
import threading

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from _util import Child, Page, child_env, serving, wait_for

RUNS = 2000
BASE_T = 1_760_000_000   # run i started BASE_T + 60 i: newest first is the highest i
RUNS_ROUTE = re.compile(r"/api/experiments/[^/]+/runs(\?|$)")   # the list, not one run


def _name(i):
    return f"r{i:05d}"


def _write_runs(exp_dir):
    """2,000 closed runs written straight into the layout (as a sweep leaves them): run.yaml,
    config.yaml and a small metrics.parquet each; the bytes are made once."""
    sink = io.BytesIO()
    pq.write_table(pa.table({"step": pa.array(range(5), pa.int64()),
                             "timestamp": pa.array([BASE_T * 10**6 + s for s in range(5)],
                                                   pa.timestamp("us", tz="UTC")),
                             "loss": [1.0, 0.8, 0.6, 0.5, 0.4]}), sink)
    metrics = sink.getvalue()
    for i in range(RUNS):
        path = os.path.join(exp_dir, _name(i))
        os.makedirs(path)
        started = datetime.datetime.fromtimestamp(BASE_T + 60 * i, datetime.timezone.utc)
        with open(os.path.join(path, "metrics.parquet"), "wb") as f:
            f.write(metrics)
        with open(os.path.join(path, "config.yaml"), "w") as f:
            f.write(f"lr: {[0.1, 0.01, 0.001, 0.0001][i % 4]}\nseed: {i}\n")
        with open(os.path.join(path, "run.yaml"), "w") as f:
            f.write(f"name: {_name(i)}\nexperiment: big\n"
                    f"status: {'failed' if i % 50 == 49 else 'finished'}\n"
                    f"started_at: '{started.isoformat()}'\nfinished_at: '{started.isoformat()}'\n"
                    f"duration_secs: 10.0\nhostname: h\npid: 1\nrows: 5\nlast_step: 4\n"
                    f"summary:\n  loss: 0.4\n")


@pytest.fixture(scope="module")
def big_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs_live") / "experiments"
    _write_runs(str(root / "big"))
    return root


# The writer: one live run ("live-a", seed -1) logging every 20 ms until told to stop, and
# on "new NAME SEED STATUS" one more run, started and closed.
WRITER = """
import sys, threading, time
import expman
root = sys.argv[1]
live = expman.Experiment("big", base_dir=root, run_name="live-a", capture_git=False,
                         config={"lr": 0.01, "seed": -1}, flush_interval_ms=50,
                         heartbeat_secs=1)
stop = threading.Event()

def commands():
    for line in sys.stdin:
        words = line.split()
        if words[0] == "stop":
            break
        name, seed, status = words[1], int(words[2]), words[3]
        run = expman.Experiment("big", base_dir=root, run_name=name, capture_git=False,
                                config={"lr": 0.01, "seed": seed})
        run.log_metrics({"loss": 0.5}, step=0)
        run.close(status=status)
        print("made", name, flush=True)
    stop.set()

threading.Thread(target=commands, daemon=True).start()
step = 0
print("live", flush=True)
while not stop.is_set():
    live.log_metrics({"loss": 1.0 / (step + 1)}, step=step)
    step += 1
    time.sleep(0.02)
live.close()
print("closed", step, flush=True)
"""


class Writer(Child):
    """The writer child, with a pipe to its stdin for commands."""

    def __init__(self, root, cwd):
        self.proc = subprocess.Popen([sys.executable, "-c", WRITER, str(root)], cwd=cwd,
                                     env=child_env(), stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.lines, self.stderr = [], ""
        self._out = threading.Thread(target=self._read, daemon=True)
        self._out.start()
        self._err = threading.Thread(target=self._read_err, daemon=True)
        self._err.start()

    def wait(self, timeout=30.0):
        rc = super().wait(timeout)
        self.proc.stdin.close()
        return rc

    def send(self, line):
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()


def shown_rows(p):
    """{index of the row: run name} of every rendered run row, from its place in the table."""
    return dict(p.evaluate("""() => {
      const body = document.querySelector('#runs-table tbody').getBoundingClientRect().top;
      return Array.from(document.querySelectorAll('#runs-table tbody tr[data-run]')).map(tr =>
        [Math.round((tr.getBoundingClientRect().top - body) / 30), tr.getAttribute('data-run')]);
    }"""))


def scroll_to(p, index):
    p.evaluate("i => { document.querySelector('#runs-scroll').scrollTop = i * 30; }", index)


def wait_rows(p, want, at):
    def check():
        got = shown_rows(p)
        return all(got.get(at + k) == name for k, name in enumerate(want))
    try:
        wait_for(check, timeout=30)
    except AssertionError:
        top = p.evaluate("() => document.querySelector('#runs-scroll').scrollTop")
        raise AssertionError(f"rows {at}..: {want[:3]}.. not shown; shown "
                             f"{sorted(shown_rows(p).items())[:5]}, scrollTop {top}") from None


def wait_count(p, text):
    wait_for(lambda: p.text_content("#runs-count").startswith(text), timeout=30,
             message=f"count is {p.text_content('#runs-count')!r}, not {text!r}")


def test_paging_sort_filter_and_select_while_runs_keep_arriving(browser, big_root, tmp_path):
    with serving(big_root) as srv:
        ui = Page(browser)
        p = ui.page
        urls = []
        p.on("request", lambda r: RUNS_ROUTE.search(r.url) and urls.append(r.url))
        writer = None
        try:
            p.goto(srv.url + "/#exp=big")
            newest = [_name(i) for i in range(RUNS - 1, -1, -1)]
            wait_rows(p, newest[:5], 0)
            wait_count(p, f"{RUNS} runs")
            base = p.evaluate("() => window.expman.selected()")
            writer = Writer(big_root, str(tmp_path))
            writer.wait_line(lambda line: line == "live", timeout=60)
            made = []

            def make(name, seed, status="finished"):
                writer.send(f"new {name} {seed} {status}")
                writer.wait_line(lambda line: line == f"made {name}", timeout=60)
                made.append(name)

            # paging, newest first: the live run arrives on top, rows far down move by one
            wait_count(p, f"{RUNS + 1} runs")
            scroll_to(p, 1000)
            order = ["live-a"] + newest
            wait_rows(p, order[1000:1006], 1000)
            make("n1", 5000)
            order = ["n1"] + order
            wait_count(p, f"{RUNS + 2} runs")
            wait_rows(p, order[1000:1006], 1000)
            scroll_to(p, 1990)
            wait_rows(p, order[1990:1996], 1990)

            # sorted by seed (the server sorts): arrivals land in their place
            p.locator("th[data-col='p:seed']").click()
            by_seed = ["live-a"] + [_name(i) for i in range(RUNS)] + ["n1"]
            scroll_to(p, 1500)
            wait_rows(p, by_seed[1500:1506], 1500)
            make("n2", -2)
            by_seed = ["n2"] + by_seed
            wait_count(p, f"{RUNS + 3} runs")
            wait_rows(p, by_seed[1500:1506], 1500)
            scroll_to(p, 0)
            wait_rows(p, by_seed[:4], 0)

            # filtered: a new run that matches joins, one that does not only moves the total
            p.fill("#filter", "seed<0")
            wait_count(p, f"2 of {RUNS + 3} runs")
            wait_rows(p, ["n2", "live-a"], 0)
            make("n3", -3, "failed")
            wait_count(p, f"3 of {RUNS + 4} runs")
            wait_rows(p, ["n3", "n2", "live-a"], 0)
            make("n4", 7000)
            wait_count(p, f"3 of {RUNS + 5} runs")
            assert len(shown_rows(p)) == 3
            status = p.locator("tr[data-run='n3'] [data-status]")
            assert status.get_attribute("data-status") == "failed"

            # selected: the live run's rows keep arriving on its chart, filtered or not
            p.locator("tr[data-run='live-a'] input.run-select").click()
            wait_for(lambda: p.evaluate("() => window.expman.selected()") ==
                     base + ["big/live-a"], timeout=30,
                     message=str(p.evaluate("() => window.expman.selected()")))
            points = "([k, r]) => window.expman.chartPoints(k)[r] || 0"
            p.wait_for_function(f"a => ({points})(a) >= 5", arg=["loss", "big/live-a"])
            first = p.evaluate(points, ["loss", "big/live-a"])
            p.wait_for_function(f"([a, n]) => ({points})(a) > n + 20",
                                arg=[["loss", "big/live-a"], first])
            p.fill("#filter", "")
            wait_count(p, f"{RUNS + 5} runs")
            by_seed = ["n3"] + by_seed + ["n4"]
            scroll_to(p, 1000)
            wait_rows(p, by_seed[1000:1006], 1000)
            make("n5", 1, "interrupted")      # seed 1, as r00001's: a tie, broken by name
            wait_count(p, f"{RUNS + 6} runs")
            by_seed.insert(by_seed.index(_name(1)), "n5")
            wait_rows(p, by_seed[1000:1006], 1000)
            assert p.evaluate("() => window.expman.selected()") == base + ["big/live-a"]
            scroll_to(p, 0)
            wait_rows(p, by_seed[:8], 0)
            live_row = p.locator("tr[data-run='live-a']")
            assert live_row.locator("input.run-select").is_checked()
            assert live_row.locator("[data-status]").get_attribute("data-status") == "running"
            at_stop = p.evaluate(points, ["loss", "big/live-a"])

            # the writer closes the live run: its status and its last rows arrive
            writer.send("stop")
            assert writer.wait(60) == 0
            steps = int(writer.lines[-1].split()[1])
            wait_for(lambda: live_row.locator("[data-status]").get_attribute("data-status")
                     == "finished", timeout=30)
            assert steps > 0
            assert p.evaluate(points, ["loss", "big/live-a"]) >= at_stop
            # never the whole list: every answer was a window
            assert urls and all("limit=" in u for u in urls), [u for u in urls
                                                               if "limit=" not in u]
        finally:
            if writer is not None and writer.proc.poll() is None:
                writer.kill()
        ui.check()
