"""Fork safety (issue 20 item 2): a process forked at any moment after init() -- a DataLoader
worker, a multiprocessing pool with the fork start method -- gets working imports and its own
runs, whatever the parent's writer thread was doing at that instant.

Each case is a real Python process that starts a run, logs in a loop, forks at a random
moment in the first seconds, and waits for the child with a deadline; the child imports
pyarrow.parquet and logs a run of its own. The parent kills a child that misses the deadline
and reports it as hung (it used to hang forever: forked while the writer thread held the
import lock inside ``import pyarrow.parquet``).
"""
import json
import os
import random
import subprocess
import sys
import time

import pytest

from _util import child_env

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

FORKER = r"""
import json, os, random, sys, time, traceback
root, delay, pre_import = sys.argv[1], float(sys.argv[2]), sys.argv[3] == "1"
if pre_import:
    import pyarrow.parquet  # noqa: F401
import expman
exp = expman.Experiment("parent", base_dir=root, flush_interval_ms=20)   # git runs too
end = time.monotonic() + delay
i = 0
while time.monotonic() < end:             # a training loop; the fork lands anywhere in it
    exp.log_metrics({"x": float(i)})
    i += 1
pid = os.fork()
if pid == 0:
    code = 4
    try:
        import pyarrow.parquet as pq       # hung here when forked mid-import
        import pyarrow as pa
        pq.write_table(pa.table({"a": [1]}), os.path.join(root, f"t{os.getpid()}.parquet"))
        run = expman.Experiment("child", base_dir=root, run_name=f"c{os.getpid()}",
                                flush_interval_ms=20)
        for j in range(50):
            run.log_metrics({"y": float(j)})
        exp.log_metrics({"x": -1.0})       # the parent's run: ignored here with a warning
        run.close()
        rows = expman.load_metrics(run.run_dir).num_rows
        code = 0 if rows == 50 and run.status == "finished" else 3
    except BaseException:
        traceback.print_exc()
    finally:
        os._exit(code)
deadline = time.monotonic() + 60
while True:
    done, status = os.waitpid(pid, os.WNOHANG)
    if done:
        break
    if time.monotonic() > deadline:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
        status = None
        break
    exp.log_metrics({"x": float(i)})      # the parent goes on logging meanwhile
    i += 1
    time.sleep(0.002)
exp.close()
rows = expman.load_metrics(exp.run_dir).num_rows
child = None if status is None else os.waitstatus_to_exitcode(status)
print("RESULT " + json.dumps({"child": child, "parent_rows": rows, "logged": i}), flush=True)
"""


def _run_cases(tmp_path, cases):
    procs = []
    for k, (delay, pre_import) in enumerate(cases):
        root = tmp_path / f"r{k}"
        root.mkdir()
        procs.append(((delay, pre_import), subprocess.Popen(
            [sys.executable, "-c", FORKER, str(root), f"{delay:.3f}", "1" if pre_import else "0"],
            cwd=tmp_path, env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True)))
    results = []
    for case, proc in procs:
        try:
            out, err = proc.communicate(timeout=150)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
        line = next((l for l in out.splitlines() if l.startswith("RESULT ")), None)
        results.append((case, proc.returncode, json.loads(line[7:]) if line else None, err))
    return results


@pytest.mark.parametrize("pre_import", [False, True], ids=["pyarrow-not-imported",
                                                           "pyarrow-imported"])
def test_fork_at_random_moments_after_init(tmp_path, pre_import):
    seed = int(os.environ.get("EXPMAN_FORK_SEED") or random.randrange(1 << 30))
    rnd = random.Random(seed)
    # right after init (0 s: the writer thread has just started), and spread over 1.5 s
    delays = [0.0, 0.01] + [rnd.uniform(0.0, 1.5) for _ in range(4)]
    results = _run_cases(tmp_path, [(d, pre_import) for d in delays])
    for (delay, _), rc, res, err in results:
        info = f"seed {seed}, fork after {delay:.3f} s: rc {rc}, {res}\n{err[-2000:]}"
        assert rc == 0 and res is not None, info
        assert res["child"] == 0, info               # None: hung and killed after 60 s
        assert res["parent_rows"] == res["logged"], info


def test_child_does_not_hang_at_exit_with_the_parents_run_open(tmp_path):
    """A child that just returns (no os._exit) runs atexit: it must not wait for the parent's
    writer thread, which does not exist in the child."""
    code = r"""
import os, sys, time, expman
exp = expman.Experiment("p", base_dir=sys.argv[1], flush_interval_ms=20, capture_git=False)
exp.log_metrics({"x": 1.0})
pid = os.fork()
if pid == 0:
    exp.log_metrics({"x": 2.0})   # ignored with a warning
    sys.exit(0)                   # atexit runs here
t0 = time.monotonic()
_, status = os.waitpid(pid, 0)
print("child", os.waitstatus_to_exitcode(status), round(time.monotonic() - t0, 2), flush=True)
exp.close()
"""
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path)], cwd=tmp_path,
                          env=child_env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("child 0 "), proc.stdout + proc.stderr
    assert time.monotonic() - started < 100
