"""The built forms of expman, run as real processes: dist/expman and dist/expman.pyz.

The binary's tests carry the `binary` mark (its first build takes a minute or more; skip them
with -m 'not binary'):

    python3 -m pytest -m binary tests/test_binary.py

It reuses dist/expman when that is newer than expman.py, expman.spec, launcher.c and
build_binary.sh, and runs ./build_binary.sh otherwise. The binary unpacks itself into
$XDG_CACHE_HOME/expman/ on its first start; these tests point XDG_CACHE_HOME at a temporary
folder. The zipapp tests run by default: `build_binary.sh
--zipapp-only` takes well under a second of CPU.
"""
import glob
import json
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import threading
import time
import urllib.request

import pytest

import expman
from _util import REPO, Child, child_env, wait_for

BINARY = os.path.join(REPO, "dist", "expman")
BUILD_INPUTS = [os.path.join(REPO, name)
                for name in ("expman.py", "expman.spec", "launcher.c", "build_binary.sh")]
MAX_BINARY_MB = 30  # issue 17 (was 40, issue 5)


# --- helpers ---------------------------------------------------------------------------------

def run(argv, timeout=60, env=None, cwd=None):
    """Run a command to completion; returns (returncode, stdout, stderr) as text."""
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                          env=env or child_env(), cwd=cwd)
    return proc.returncode, proc.stdout, proc.stderr


def logged_run(root, exp="bin", name="r1", rows=40):
    """A finished run written by the library, with a CSV and a Feather artifact."""
    import pyarrow as pa
    import pyarrow.feather as feather
    tables = root.parent / "tables"
    tables.mkdir(exist_ok=True)
    (tables / "preds.csv").write_text("id,score\n1,0.5\n2,0.25\n")
    feather.write_feather(pa.table({"id": [1, 2], "label": ["cat", "dog"]}),
                          str(tables / "labels.feather"))
    with expman.Experiment(exp, base_dir=str(root), run_name=name,
                           config={"lr": 0.01, "model": {"depth": 18}}, tags=["smoke"],
                           description="logged by the library") as run_:
        for step in range(rows):
            run_.log_metrics({"train/loss": 1.0 / (step + 1), "acc": step / rows}, step=step)
        run_.info("hello from the library")
        run_.log_scalar("best_acc", 0.97)
        run_.save_artifact(str(tables / "preds.csv"))
        run_.save_artifact(str(tables / "labels.feather"))
    return str(run_.run_dir)


def get_json(url, timeout=10):
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return json.loads(resp.read().decode())


class Server:
    """`<command> serve DIR --port 0` in a subprocess: its URL read from stdout, then polled."""

    def __init__(self, argv, root):
        self.child = subprocess.Popen([*argv, "serve", str(root), "--port", "0"],
                                      env=child_env(), stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True)
        self.lines = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

        def banner():
            if self.child.poll() is not None and not self._reader.is_alive():
                raise AssertionError(f"server exited ({self.child.returncode}): "
                                     f"{self.lines} {self.child.stderr.read()}")
            return next((m.group(0) for m in map(re.compile(r"http://\S+").search,
                                                 list(self.lines)) if m), None)
        try:
            self.url = wait_for(banner, timeout=30, interval=0.05,
                                message="the server printed no URL").rstrip("/")

            def healthy():
                try:
                    return get_json(self.url + "/api/health", timeout=2)
                except OSError:
                    return None
            self.health = wait_for(healthy, timeout=30, interval=0.05,
                                   message="/api/health never answered")
        except BaseException:
            self.close()
            raise

    def _read(self):
        for line in self.child.stdout:
            self.lines.append(line)

    def close(self):
        if self.child.poll() is None:
            self.child.send_signal(signal.SIGINT)
            try:
                self.child.wait(15)
            except subprocess.TimeoutExpired:
                self.child.kill()
                self.child.wait(5)
        self._reader.join(5)
        self.child.stdout.close()
        self.child.stderr.close()


def read_sse(url, want, timeout=30):
    """Read a Server-Sent Events stream until want(event, data) holds; returns that data."""
    deadline = time.monotonic() + timeout
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        event = None
        while time.monotonic() < deadline:
            line = resp.readline().decode()
            if not line:
                break
            line = line.rstrip("\n")
            if line.startswith("event: "):
                event = line[len("event: "):]
            elif line.startswith("data: "):
                data = json.loads(line[len("data: "):])
                if want(event, data):
                    return data
    raise AssertionError(f"no matching event from {url} within {timeout}s")


def _timeless(result):
    """A CLI result with relative ages ("3s ago") masked: the two commands run a second apart."""
    rc, out, err = result
    out = re.sub(r"\b\d+(?:\.\d+)?[smhd] ago\b", "_ ago", out)
    return rc, re.sub(r" +", " ", out), err


def check_reads_like_the_module(command, root, run_dir, tmp_path, quick=False):
    """list/inspect/export through command print exactly what `python expman.py` prints."""
    module = [sys.executable, os.path.join(REPO, "expman.py")]
    checks = [["list", str(root), "-e", "bin", "--json"], ["inspect", run_dir, "--json"],
              ["export", run_dir, "--format", "json"]]
    if not quick:
        checks += [["list", str(root)], ["inspect", run_dir],
                   ["export", run_dir, "--format", "csv"]]
    for args in checks:
        got, want = run([*command, *args]), run([*module, *args])
        assert _timeless(got) == _timeless(want), f"{args}: {got} != {want}"
    assert "train/loss" in run([*command, "inspect", run_dir, "--json"])[1]
    out = tmp_path / "export.parquet"
    rc, _, err = run([*command, "export", run_dir, "--format", "parquet", "-o", str(out)])
    assert rc == 0, err
    import pyarrow.parquet as pq
    assert pq.read_table(str(out)).equals(expman.load_metrics(run_dir))


# --- the binary (opt-in) -----------------------------------------------------------------------

@pytest.fixture(scope="module")
def binary(tmp_path_factory):
    """dist/expman, rebuilt by ./build_binary.sh unless newer than its inputs; it unpacks into
    a temporary XDG_CACHE_HOME (every child of these tests inherits it through child_env)."""
    fresh = os.path.exists(BINARY) and all(
        os.path.getmtime(BINARY) > os.path.getmtime(p) for p in BUILD_INPUTS)
    if not fresh:
        proc = subprocess.run(["bash", os.path.join(REPO, "build_binary.sh")], cwd=REPO,
                              capture_output=True, text=True, timeout=900)
        assert proc.returncode == 0, f"build failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    saved = os.environ.get("XDG_CACHE_HOME")
    os.environ["XDG_CACHE_HOME"] = str(tmp_path_factory.mktemp("xdg-cache"))
    yield BINARY
    if saved is None:
        os.environ.pop("XDG_CACHE_HOME", None)
    else:
        os.environ["XDG_CACHE_HOME"] = saved


def unpacked(cache):
    """The build folders and leftover unpack folders under a cache root's expman/."""
    root = os.path.join(str(cache), "expman")
    return (sorted(glob.glob(os.path.join(root, "[!.]*"))),
            sorted(glob.glob(os.path.join(root, ".unpack-*"))))


@pytest.mark.binary
def test_binary_version_is_the_module_version(binary):
    rc, out, err = run([binary, "--version"])
    assert (rc, err) == (0, "")
    first, built = out.splitlines()
    assert first == f"expman {expman.__version__}"
    # what it was built from: commit, date, PyInstaller and Python versions
    assert re.fullmatch(r"built from git [0-9a-f]{7,40}(\+changes)? on "
                        r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ with PyInstaller [\d.]+, "
                        r"Python \d+\.\d+\.\d+", built), built


@pytest.mark.binary
def test_binary_answers_to_exp(binary, tmp_path):
    exp = tmp_path / "exp"
    exp.symlink_to(binary)
    rc, out, _ = run([str(exp), "--help"])
    assert rc == 0 and out.startswith("usage: exp ")
    rc, _, err = run([str(exp), "bogus"])
    assert rc == 2 and "(see 'exp --help')" in err
    # and under its own name it stays expman
    assert run([binary, "--help"])[1].startswith("usage: expman ")


def test_module_answers_to_exp(tmp_path):
    exp = tmp_path / "exp"
    exp.symlink_to(os.path.join(REPO, "expman.py"))
    rc, out, _ = run([sys.executable, str(exp), "--help"])
    assert rc == 0 and out.startswith("usage: exp ")
    # from source, --version is the version alone (no build line)
    assert run([sys.executable, str(exp), "--version"]) == (0, f"expman {expman.__version__}\n", "")


@pytest.mark.binary
def test_binary_unpacks_once_into_a_private_cache(binary, tmp_path):
    cache = tmp_path / "cache"
    env = child_env(XDG_CACHE_HOME=str(cache))
    assert run([binary, "--help"], env=env)[0] == 0
    (folder,), leftovers = unpacked(cache)
    assert leftovers == []
    assert os.path.basename(folder).startswith(expman.__version__ + "-")
    for path in (os.path.dirname(folder), folder):
        st = os.lstat(path)
        assert stat.S_ISDIR(st.st_mode) and st.st_uid == os.geteuid()
        assert stat.S_IMODE(st.st_mode) == 0o700, oct(st.st_mode)
    # later starts run the unpacked copy: nothing is written again
    marker = os.path.join(folder, "_internal", "BUILD_INFO")
    before = os.stat(marker)
    assert run([binary, "--version"], env=env)[0] == 0
    after = os.stat(marker)
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert unpacked(cache) == ([folder], [])


@pytest.mark.binary
def test_binary_refuses_a_cache_folder_others_can_write(binary, tmp_path):
    cache = tmp_path / "cache"
    env = child_env(XDG_CACHE_HOME=str(cache))
    assert run([binary, "--help"], env=env)[0] == 0
    (folder,), _ = unpacked(cache)
    os.chmod(folder, 0o777)
    rc, out, err = run([binary, "--help"], env=env)
    assert rc == 1 and out == "" and "not a private directory" in err
    os.chmod(folder, 0o700)
    assert run([binary, "--help"], env=env)[0] == 0


@pytest.mark.binary
def test_binary_first_starts_racing_share_one_unpack(binary, tmp_path):
    cache = tmp_path / "cache"
    env = child_env(XDG_CACHE_HOME=str(cache))
    children = [subprocess.Popen([binary, "--version"], env=env, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True) for _ in range(4)]
    results = [(child.wait(120), child.stdout.read(), child.stderr.read()) for child in children]
    for child in children:
        child.stdout.close()
        child.stderr.close()
    assert all(rc == 0 and out.startswith("expman ") and err == "" for rc, out, err in results), \
        results
    folders, leftovers = unpacked(cache)
    assert len(folders) == 1 and leftovers == []


@pytest.mark.binary
def test_binary_damaged_payload_is_never_run(binary, tmp_path):
    damaged = tmp_path / "expman"
    shutil.copy2(binary, damaged)
    size = os.path.getsize(damaged)
    with open(damaged, "r+b") as f:  # one byte in the middle of the packed folder
        f.seek(size // 2)
        byte = f.read(1)
        f.seek(size // 2)
        f.write(bytes([byte[0] ^ 0xFF]))
    cache = tmp_path / "cache"
    rc, out, err = run([str(damaged), "--help"], env=child_env(XDG_CACHE_HOME=str(cache)))
    assert rc == 1 and out == "" and "damaged" in err
    assert unpacked(cache) == ([], [])


@pytest.mark.binary
def test_binary_help_and_size(binary):
    rc, out, _ = run([binary, "--help"])
    assert rc == 0 and "serve" in out and "export" in out
    assert os.path.getsize(binary) <= MAX_BINARY_MB * 1e6, os.path.getsize(binary)


@pytest.mark.binary
def test_binary_reads_a_run_logged_by_the_library(binary, root, tmp_path):
    run_dir = logged_run(root)
    check_reads_like_the_module([binary], root, run_dir, tmp_path)


@pytest.mark.binary
def test_binary_needs_no_system_time_zone_data(binary, root, tmp_path):
    # pyarrow converts the UTC timestamps through zoneinfo; the binary carries tzdata's UTC
    run_dir = logged_run(root, rows=3)
    env = child_env(PYTHONTZPATH=str(tmp_path / "no-zoneinfo"))
    rc, out, err = run([binary, "export", run_dir, "--format", "json"], env=env)
    assert rc == 0, err
    assert json.loads(out)[0]["timestamp"].endswith("+00:00")


@pytest.mark.binary
def test_library_reads_runs_written_by_the_binary(binary, root):
    rc, _, err = run([binary, "demo", str(root), "--no-serve"], timeout=120)
    assert rc == 0, err
    runs = [r for exp in expman.list_experiments(str(root)) for r in
            expman.list_runs(str(root), exp["name"])]
    assert runs and all(r["status"] in expman.STATUSES for r in runs)
    finished = [r for r in runs if r["status"] == "finished" and r.get("rows")]
    assert finished
    exp, name = finished[0]["experiment"], finished[0]["name"]
    table = expman.load_metrics(os.path.join(str(root), exp, name))
    assert table.num_rows == finished[0]["rows"]


API_PATHS = [
    "/api/health", "/api/experiments", "/api/experiments/bin/runs",
    "/api/experiments/bin/metadata", "/api/experiments/bin/runs/r1/metadata",
    "/api/experiments/bin/runs/r1/config",
    "/api/experiments/bin/runs/r1/metrics?keys=train%2Floss,acc&max_points=0",
    "/api/experiments/bin/runs/r1/metrics?max_points=10",
    "/api/experiments/bin/runs/r1/log?since=0",
    "/api/experiments/bin/runs/r1/artifacts",
    "/api/experiments/bin/runs/r1/artifacts/content?path=preds.csv",
    "/api/experiments/bin/runs/r1/artifacts/content?path=labels.feather",
]


@pytest.mark.binary
def test_binary_serves_what_the_module_serves(binary, root):
    run_dir = logged_run(root)
    servers = []
    try:
        servers.append(Server([binary], root))
        servers.append(Server([sys.executable, os.path.join(REPO, "expman.py")], root))
        ours, theirs = servers
        assert ours.health["status"] == "ok" and ours.health["version"] == expman.__version__
        for path in API_PATHS:
            assert get_json(ours.url + path) == get_json(theirs.url + path), path
        metrics = get_json(ours.url + API_PATHS[6])
        assert metrics["series"]["train/loss"]["value"][:2] == [1.0, 0.5]
        labels = get_json(ours.url + API_PATHS[-1])
        assert labels["kind"] == "table" and labels["rows"][1][1] == "dog"
        with urllib.request.urlopen(ours.url + "/", timeout=10) as resp:
            assert b"<html" in resp.read(2000).lower()
        # the binary writes run.yaml the way the library does
        request = urllib.request.Request(
            ours.url + "/api/experiments/bin/runs/r1/metadata", method="PATCH",
            data=json.dumps({"tags": ["edited"]}).encode(),
            headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=10) as resp:
            assert json.loads(resp.read())["tags"] == ["edited"]
        assert expman.load_run(run_dir)["tags"] == ["edited"]
    finally:
        for server in servers:
            server.close()


@pytest.mark.binary
def test_binary_dashboard_streams_a_live_run(binary, root):
    stop = root.parent / "stop"
    child = Child(f"""
        import os, time, expman
        run = expman.init("live", base_dir={str(root)!r}, run_name="r", flush_interval_ms=50)
        print("started", flush=True)
        step = 0
        while not os.path.exists({str(stop)!r}) and step < 6000:
            run.log_metrics({{"loss": 1.0 / (step + 1)}}, step=step)
            step += 1
            time.sleep(0.01)  # a training step
        expman.close()
        print("closed", flush=True)
    """, cwd=str(root.parent))
    server = None
    try:
        child.wait_line(lambda line: line == "started")
        server = Server([binary], root)
        # no ":since": the server tails from the current end, so these rows are new ones
        data = read_sse(server.url + "/api/stream?runs=live/r",
                        lambda event, data: event == "metrics" and data.get("series"))
        assert data["run"] == "live/r" and data["series"]["loss"]["step"]
    finally:
        stop.write_text("")
        child.wait_line(lambda line: line == "closed", timeout=30)
        child.wait()
        if server:
            server.close()


# --- the zipapp (cheap: runs by default) -------------------------------------------------------

@pytest.fixture(scope="module")
def zipapp(tmp_path_factory):
    dist = tmp_path_factory.mktemp("dist")
    env = child_env(pythonpath=None, DIST=str(dist), PYTHON=sys.executable)
    proc = subprocess.run(["bash", os.path.join(REPO, "build_binary.sh"), "--zipapp-only"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return str(dist / "expman.pyz")


def test_zipapp_version_is_the_module_version(zipapp):
    assert run([sys.executable, zipapp, "--version"], env=child_env(pythonpath=None)) \
        == (0, f"expman {expman.__version__}\n", "")


def test_zipapp_reads_a_run_logged_by_the_library(zipapp, root, tmp_path):
    run_dir = logged_run(root)
    check_reads_like_the_module([sys.executable, zipapp], root, run_dir, tmp_path, quick=True)


def test_zipapp_vendored_dependencies_work_alone(zipapp, root):
    # -I -S: no site-packages, so bottle, waitress and PyYAML (pure Python) come from the zip;
    # listing and the health check need no pyarrow.
    logged_run(root)
    isolated = [sys.executable, "-I", "-S", zipapp]
    rc, out, err = run([*isolated, "list", str(root), "--json"])
    assert rc == 0, err
    assert "bin" in out
    server = Server(isolated, root)
    try:
        assert server.health["version"] == expman.__version__
    finally:
        server.close()
