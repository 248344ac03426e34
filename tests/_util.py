"""Helpers shared by the test files: polling with a deadline, and Python child processes."""
import os
import subprocess
import sys
import textwrap
import threading
import time

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
