#!/usr/bin/env python
"""expman against the trackers people would pick instead, same workload, same machine, one run.

    python benchmarks/bench_peers.py --setup     # once: one venv per peer in benchmarks/.venvs
    python benchmarks/bench_peers.py             # 100k steps for all, 1M for the fast ones
    python benchmarks/bench_peers.py --quick     # smoke run (10k steps, no 1M)
    python benchmarks/bench_peers.py --peers expman,wandb --sizes 100000

Workload (benchmarks/_harness.py): N steps, each logs a dict of 5 floats with an explicit step.
Each peer runs in a fresh subprocess from its own venv (expman from this checkout with the
current interpreter), in a private network namespace with only loopback (``unshare -n``, when
the kernel allows it; the tools are configured offline as well), with HOME, caches and data
redirected into a fresh temporary directory, whose size afterwards is "on disk".

Per peer: log-call latency median/p99 (perf_counter_ns around every call, the timer's own cost
from the same loop without the call subtracted; tensorboardX needs 5 add_scalar calls per step,
timed together), overhead per step (loop with the call minus the same loop without it, per-call
timers on both sides, plus the final flush/close), close time, RSS (sampled every 50 ms over the
worker's whole process tree, wandb's service process included: peak, and growth over the value
once the tool was imported and initialised), bytes on disk, and a read-back (rows, values,
checksum) with the tool's own reader. JSON goes to benchmarks/results/.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
VENVS = os.path.join(HERE, ".venvs")
sys.path.insert(0, HERE)
import _harness as H  # noqa: E402

# peer -> (venv or None for this interpreter, pip requirements, distribution for the version)
PEERS = {
    "expman": (None, [], "expman"),
    "expman-rs": ("expman-rs", ["expman-rs"], "expman-rs"),
    "tensorboardX": ("tensorboardX", ["tensorboardX", "tensorboard"], "tensorboardX"),
    "mlflow": ("mlflow", ["mlflow"], "mlflow"),
    "mlflow-async": ("mlflow", ["mlflow"], "mlflow"),
    "mlflow-sqlite": ("mlflow", ["mlflow"], "mlflow"),
    "trackio": ("trackio", ["trackio"], "trackio"),
    "wandb": ("wandb", ["wandb"], "wandb"),
    "aim": ("aim", ["aim"], "aim"),
}
DEFAULT_PEERS = ["expman", "expman-rs", "tensorboardX", "mlflow", "mlflow-async", "trackio",
                 "wandb", "aim"]
CALLS = {  # the statement in the training loop; obj is what init returned
    "expman": "obj.log_metrics(d, step=i)",
    "expman-rs": "obj.log_vector(d, step=i)",
    "tensorboardX": "for k, v in d.items(): obj.add_scalar(k, v, i)",
    "mlflow": "obj.log_metrics(d, step=i)",
    "mlflow-async": "obj.log_metrics(d, step=i)",
    "mlflow-sqlite": "obj.log_metrics(d, step=i)",
    "trackio": "obj.log(d, step=i)",
    "wandb": "obj.log(d, step=i)",
    "aim": "obj.track(d, step=i)",
}
NOTES = {
    "expman": "Experiment(flush_interval_ms=500), log_metrics(d, step=i), close()",
    "expman-rs": "Experiment(redirect_console=False), log_vector(d, step=i), close(); "
                 "read with expman.read_metrics",
    "tensorboardX": "SummaryWriter(logdir).add_scalar x5 per step, close(); read with "
                    "tensorboard's event_file_loader (values are float32)",
    "mlflow": "local file store (file:, needs MLFLOW_ALLOW_FILE_STORE=true since MLflow 3.x "
              "put it in maintenance mode), log_metrics(d, step=i) synchronous, end_run(); "
              "read with MlflowClient.get_metric_history",
    "mlflow-async": "as mlflow, after mlflow.config.enable_async_logging(); close = "
                    "flush_async_logging() + end_run()",
    "mlflow-sqlite": "sqlite:/// store (MLflow 3's default), synchronous",
    "trackio": "trackio.init(project) local SQLite, log(d, step=i), finish(); read with "
               "SQLiteStorage.get_logs",
    "wandb": "WANDB_MODE=offline, wandb.init().log(d, step=i), finish(); read: wandb ships no "
             "reader for offline .wandb files any more, so its LevelDB-log framing is parsed "
             "here and each record decoded with wandb's own protobuf classes",
    "aim": "aim.Run(repo).track(d, step=i), close(); read with Run(read_only).get_metric",
}


# == worker side (runs inside the peer's venv; stdlib + the peer only) =========================
def offline_env(work):
    home = os.path.join(work, "home")
    os.makedirs(home, exist_ok=True)
    return {
        "HOME": home, "XDG_CACHE_HOME": os.path.join(home, ".cache"),
        "XDG_CONFIG_HOME": os.path.join(home, ".config"), "MPLCONFIGDIR": os.path.join(home, "mpl"),
        "DO_NOT_TRACK": "1", "HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1",
        "GRADIO_ANALYTICS_ENABLED": "False", "TRACKIO_DIR": os.path.join(work, "trackio"),
        "HF_HOME": os.path.join(home, "hf"), "WANDB_MODE": "offline", "WANDB_DIR": work,
        "WANDB_SILENT": "true", "WANDB_DISABLE_CODE": "true", "WANDB_CONSOLE": "off",
        "MLFLOW_TRACKING_URI": "file://" + os.path.join(work, "mlruns"),
        "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false", "MLFLOW_ALLOW_FILE_STORE": "true", "AIM_UI_TELEMETRY_ENABLED": "0",
        "EXPMAN_DIR": os.path.join(work, "experiments"),
    }


def values_of(rows, keys=H.KEYS):
    return [r[k] for r in rows for k in keys if r.get(k) is not None]


def peer_expman(work, n):
    sys.path.insert(0, REPO)
    import expman
    yield "import"
    exp = expman.Experiment("bench", base_dir=os.path.join(work, "experiments"))
    yield exp, exp.close

    table = expman.load_metrics(exp.run_dir)
    cols = table.to_pydict()
    yield cols["step"], [v for k in H.KEYS for v in cols[k] if v is not None]


def peer_expman_rs(work, n):
    import expman
    yield "import"
    exp = expman.Experiment("bench", base_dir=os.path.join(work, "experiments"),
                            redirect_console=False)
    run_dir = exp.run_dir  # the property raises once the engine is closed
    yield exp, exp.close
    rows = expman.read_metrics(run_dir)
    yield [r["step"] for r in rows], values_of(rows)


def peer_tensorboardx(work, n):
    from tensorboardX import SummaryWriter
    yield "import"
    logdir = os.path.join(work, "tb")
    w = SummaryWriter(logdir)
    yield w, w.close
    from tensorboard.backend.event_processing import event_file_loader
    steps, values = [], []
    for name in sorted(os.listdir(logdir)):
        if not name.startswith("events.out.tfevents"):
            continue
        loader = event_file_loader.LegacyEventFileLoader(os.path.join(logdir, name))
        for ev in loader.Load():
            if ev.HasField("summary"):
                for v in ev.summary.value:
                    if v.tag in H.KEYS:
                        values.append(v.simple_value)
                        steps.append(ev.step)
    yield steps, values


def _mlflow(work, n, mode):
    import mlflow
    yield "import"
    if mode == "sqlite":
        mlflow.set_tracking_uri("sqlite:///" + os.path.join(work, "mlflow.db"))
    if mode == "async":
        mlflow.config.enable_async_logging()
    mlflow.set_experiment("bench")
    run = mlflow.start_run()

    def close():
        if mode == "async":
            mlflow.flush_async_logging()
        mlflow.end_run()
    yield mlflow, close
    client = mlflow.MlflowClient()
    steps, values = [], []
    for key in H.KEYS:
        for m in client.get_metric_history(run.info.run_id, key):
            values.append(m.value)
            if key == H.KEYS[0]:
                steps.append(m.step)
    yield steps, values


def peer_mlflow(work, n):
    return _mlflow(work, n, "sync")


def peer_mlflow_async(work, n):
    return _mlflow(work, n, "async")


def peer_mlflow_sqlite(work, n):
    return _mlflow(work, n, "sqlite")


def peer_trackio(work, n):
    import trackio
    yield "import"
    run = trackio.init(project="bench", name="run1")
    yield trackio, trackio.finish
    from trackio.sqlite_storage import SQLiteStorage
    rows = SQLiteStorage.get_logs("bench", getattr(run, "name", "run1"))
    yield [r["step"] for r in rows], values_of(rows)


def peer_wandb(work, n):
    import wandb
    yield "import"
    run = wandb.init(project="bench", mode="offline", dir=work)
    yield run, run.finish
    import glob
    import struct
    from wandb.proto import wandb_internal_pb2 as pb
    path = glob.glob(os.path.join(work, "wandb", "offline-run-*", "run-*.wandb"))[0]
    with open(path, "rb") as fh:
        data = fh.read()
    # LevelDB log framing as wandb writes it: a 7-byte file header (":W&B", magic, version),
    # then 32 KiB blocks of records [crc32 u32][length u16][type u8][payload] (FULL=1,
    # FIRST=2, MIDDLE=3, LAST=4); a block tail shorter than a header is padding.
    block, pos, buf, records = 32768, 7, b"", []
    while pos + 7 <= len(data):
        room = block - pos % block
        if room < 7:
            pos += room
            continue
        length, rtype = struct.unpack_from("<HB", data, pos + 4)
        payload = data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if rtype == 0 and length == 0:
            continue
        buf = payload if rtype in (1, 2) else buf + payload
        if rtype in (1, 4):
            records.append(buf)
            buf = b""
    steps, values = [], []
    for raw in records:
        rec = pb.Record()
        rec.ParseFromString(raw)
        if rec.WhichOneof("record_type") != "history":
            continue
        got = {}
        for item in rec.history.item:
            key = item.key or "/".join(item.nested_key)
            if key in H.KEYS:
                got[key] = json.loads(item.value_json)
        if got:
            steps.append(rec.history.step.num)
            values.extend(got.values())
    yield steps, values


def peer_aim(work, n):
    from aim import Run
    yield "import"
    repo = os.path.join(work, "aim")
    os.makedirs(repo, exist_ok=True)
    run = Run(repo=repo, experiment="bench", system_tracking_interval=None,
              capture_terminal_logs=False, log_system_params=False)
    run_hash = run.hash
    yield run, run.close
    # Read back from a fresh process once this one has exited, as a later analysis would: the
    # writing process keeps the run's RocksDB locks after close(), and a read_only Run sees
    # nothing until aim's index manager has indexed the run (as `aim up` does).
    yield {"read_later": {"peer": "aim", "run_hash": run_hash, "repo": repo}}


def read_aim(cfg):
    from aim import Run
    from aim.storage.context import Context
    r = Run(run_hash=cfg["run_hash"], repo=cfg["repo"])
    steps, values = [], []
    for key in H.KEYS:
        idx, cols = r.get_metric(key, Context({})).data.items_list()
        values.extend(cols[0])
        if key == H.KEYS[0]:
            steps = list(idx)
    return steps, values


READERS = {"aim": read_aim}
ADAPTERS = {"expman": peer_expman, "expman-rs": peer_expman_rs,
            "tensorboardX": peer_tensorboardx, "mlflow": peer_mlflow,
            "mlflow-async": peer_mlflow_async, "mlflow-sqlite": peer_mlflow_sqlite,
            "trackio": peer_trackio, "wandb": peer_wandb, "aim": peer_aim}


def worker(cfg):
    peer, n, work = cfg["peer"], cfg["n"], cfg["work"]
    os.chdir(work)
    gen = ADAPTERS[peer](work, n)
    t0 = time.perf_counter()
    next(gen)
    t1 = time.perf_counter()
    obj, close = next(gen)
    t2 = time.perf_counter()
    arrays = H.timing_arrays(n)
    time.sleep(0.3)  # background start-up (threads, service processes) settles
    print("INIT_DONE", flush=True)
    time.sleep(0.2)  # the parent takes its RSS baseline
    res = H.measure(CALLS[peer], obj, n, cfg["cap_s"], True, close, arrays,
                    after_close=lambda: print("LOOP_DONE", flush=True))
    res.update(import_s=t1 - t0, init_s=t2 - t1)
    done = res["done"]
    t0 = time.perf_counter()
    try:
        got = next(gen)
        if isinstance(got, dict):
            res.update(got)
        else:
            check_read(res, peer, done, *got, time.perf_counter() - t0)
    except Exception as exc:  # noqa: BLE001 - report, do not lose the timings
        read_failed(res, exc)
    H.emit(res)


def read_failed(res, exc):
    import traceback
    res["read_error"] = f"{type(exc).__name__}: {exc}"
    res["read_tb"] = traceback.format_exc()[-1500:]
    res["read_ok"] = False


def check_read(res, peer, done, steps, values, read_s):
    import math
    f32 = peer == "tensorboardX"
    distinct = set(steps)
    res.update(read_s=read_s, read_rows=len(distinct), read_values=len(values),
               read_steps_ok=distinct == set(range(done)), checksum=math.fsum(values),
               checksum_expected=H.expected_checksum(done, float32=f32), float32=f32)
    res["read_ok"] = (res["read_steps_ok"] and len(values) == 5 * done
                      and res["checksum"] == res["checksum_expected"])


def reader(cfg):
    """Deferred read-back in a fresh process (``read_later``)."""
    res = {}
    t0 = time.perf_counter()
    try:
        steps, values = READERS[cfg["peer"]](cfg)
        check_read(res, cfg["peer"], cfg["done"], steps, values, time.perf_counter() - t0)
    except Exception as exc:  # noqa: BLE001
        read_failed(res, exc)
    H.emit(res)


# == parent side ===============================================================================
def venv_python(peer):
    venv = PEERS[peer][0]
    return sys.executable if venv is None else os.path.join(VENVS, venv, "bin", "python")


def setup(peers):
    os.makedirs(VENVS, exist_ok=True)
    done = set()
    for peer in peers:
        venv, reqs, _ = PEERS[peer]
        if venv is None or venv in done:
            continue
        done.add(venv)
        path = os.path.join(VENVS, venv)
        print(f"setup {venv}: pip install {' '.join(reqs)}", flush=True)
        if not os.path.exists(os.path.join(path, "bin", "python")):
            subprocess.run([sys.executable, "-m", "venv", path], check=True)
        proc = subprocess.run([os.path.join(path, "bin", "pip"), "install", "-q", "-U", *reqs],
                              capture_output=True, text=True)
        if proc.returncode:
            print(f"  FAILED ({proc.returncode}): {proc.stderr.strip()[-800:]}", flush=True)


def peer_version(peer):
    venv, _, dist = PEERS[peer]
    if venv is None:
        sys.path.insert(0, REPO)
        import expman
        return expman.__version__
    code = f"import importlib.metadata as m; print(m.version({dist!r}))"
    try:
        return subprocess.run([venv_python(peer), "-c", code], capture_output=True, text=True,
                              timeout=60).stdout.strip() or None
    except (OSError, subprocess.TimeoutExpired):
        return None


def netns_ok():
    try:
        return subprocess.run(["unshare", "-n", "--", "sh", "-c", "ip link set lo up"],
                              capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def run_peer(peer, n, cap_s, hard_timeout, isolate):
    """One fresh worker; returns its result dict (with RSS from the sampler) or an error."""
    work = tempfile.mkdtemp(prefix=f"bench-{peer}-")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WANDB", "MLFLOW"))}
    env.update(offline_env(work))
    cmd = [venv_python(peer), os.path.abspath(__file__), "--worker",
           json.dumps({"peer": peer, "n": n, "work": work, "cap_s": cap_s})]
    if isolate:
        cmd = ["unshare", "-n", "--", "sh", "-c", 'ip link set lo up 2>/dev/null; exec "$@"',
               "sh", *cmd]
    errf = tempfile.TemporaryFile("w+")
    t_start = time.time()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=errf, text=True, cwd=work,
                            env=env, start_new_session=True)
    lines, marks = [], {}

    def read():
        for line in proc.stdout:
            lines.append(line)
            if line.strip() in ("INIT_DONE", "LOOP_DONE"):
                marks[line.strip()] = True
    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    base = peak = peak_all = None
    killed = False
    while proc.poll() is None:
        rss = H.tree_rss(proc.pid)
        peak_all = max(peak_all or 0, rss)
        if "INIT_DONE" in marks and base is None:
            base = peak = rss
        elif base is not None and "LOOP_DONE" not in marks:
            peak = max(peak, rss)
        if time.time() - t_start > hard_timeout:
            os.killpg(proc.pid, 9)
            killed = True
            break
        time.sleep(0.05)
    proc.wait()
    reader.join(5)
    errf.seek(0)
    stderr = errf.read()
    errf.close()
    res = H.parse_result("".join(lines))
    if res is None:
        why = f"killed after {hard_timeout:.0f} s" if killed else f"exit {proc.returncode}"
        tail = [ln for ln in stderr.strip().splitlines() if ln.strip()][-6:]
        res = {"error": why, "stderr_tail": tail}
    if res.get("read_later"):
        cfg = dict(res.pop("read_later"), done=res["done"])
        cmd = [venv_python(peer), os.path.abspath(__file__), "--reader", json.dumps(cfg)]
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=work, env=env,
                              timeout=hard_timeout)
        got = H.parse_result(proc.stdout)
        res.update(got or {"read_ok": False, "read_error": f"reader exit {proc.returncode}: "
                                                           f"{proc.stderr.strip()[-300:]}"})
    res.update(peer=peer, wall_s=time.time() - t_start, tree_rss_init=base,
               tree_rss_peak=peak, tree_rss_growth=(peak - base) if base and peak else None,
               tree_rss_peak_all=peak_all, stderr=stderr[-3000:])
    res["bytes"], res["files"] = H.disk_usage(work) if os.path.isdir(work) else (None, None)
    shutil.rmtree(work, ignore_errors=True)
    return res


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    ap.add_argument("--setup", action="store_true", help="create/update the peer venvs and exit")
    ap.add_argument("--quick", action="store_true", help="N=10k only, no 1M runs")
    ap.add_argument("--peers", default=",".join(DEFAULT_PEERS),
                    help=f"comma list from {', '.join(PEERS)}")
    ap.add_argument("--sizes", default=None, help="comma list (default 100000,1000000)")
    ap.add_argument("--big-if-under", type=float, default=15.0,
                    help="run the largest N only for peers whose previous N (loop+close) took "
                         "less than this many seconds (default 15: keeps the whole run < 10 min;"
                         " 60 lets TensorBoardX and MLflow try 1M as well)")
    ap.add_argument("--cap", type=float, default=60.0,
                    help="stop a peer's logging loop after this many seconds (reported as too "
                         "slow)")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--reader", help=argparse.SUPPRESS)
    ap.add_argument("--report", metavar="JSON", help="print the tables of a saved result file")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    if args.worker:
        return worker(json.loads(args.worker))
    if args.reader:
        return reader(json.loads(args.reader))
    if args.report:
        with open(args.report) as fh:
            return print(report(json.load(fh)))
    peers = [p.strip() for p in args.peers.split(",") if p.strip()]
    unknown = [p for p in peers if p not in PEERS]
    if unknown:
        ap.error(f"unknown peers: {unknown}")
    if args.setup:
        return setup(peers)
    sizes = ([10_000] if args.quick else [100_000, 1_000_000]) if args.sizes is None else \
        [int(s) for s in args.sizes.split(",")]
    isolate = netns_ok()
    info = H.machine_info()
    info["network_isolation"] = "unshare -n (loopback only)" if isolate else \
        "none available: offline settings only"
    import pyarrow
    info["pyarrow"] = pyarrow.__version__
    print(f"bench_peers: {info['cores']} cores, {info['cpu']}, Python {info['python']}, "
          f"load {info['loadavg_at_start']}, isolation: {info['network_isolation']}",
          file=sys.stderr)
    versions, results, skipped = {}, {}, {}
    for peer in peers:
        if not os.path.exists(venv_python(peer)):
            skipped[peer] = "not installed (run with --setup; the install failed or was " \
                            "never run)"
            continue
        versions[peer] = peer_version(peer)
    prev_total = {}
    for n in sizes:
        for peer in peers:
            if peer in skipped:
                continue
            if n != sizes[0] and prev_total.get(peer) is None:
                results.setdefault(str(n), {})[peer] = {"peer": peer, "skipped":
                                                        "failed at the smaller N"}
                continue
            if n != sizes[0] and prev_total[peer] > args.big_if_under:
                results.setdefault(str(n), {})[peer] = {
                    "peer": peer, "skipped": f"too slow: {prev_total[peer]:.0f} s at the "
                                             f"smaller N (> {args.big_if_under:.0f} s)"}
                continue
            hard = args.cap + 240 + n / 1000  # imports, close, read-back on top of the cap
            print(f"  {peer} N={n:,} ...", end="", file=sys.stderr, flush=True)
            res = run_peer(peer, n, args.cap, hard, isolate)
            results.setdefault(str(n), {})[peer] = res
            if "error" in res:
                print(f" FAILED: {res['error']} {res['stderr_tail'][-2:]}", file=sys.stderr)
                prev_total[peer] = None
                continue
            prev_total[peer] = res["loop_s"] + res["close_s"]
            print(f" {res['wall_s']:.0f} s (loop {res['loop_s']:.1f} s, close "
                  f"{res['close_s']:.1f} s, read {res.get('read_s', 0):.1f} s)",
                  file=sys.stderr, flush=True)
    out = {"machine": info, "versions": versions, "sizes": sizes, "skipped": skipped,
           "results": results, "notes": {p: NOTES[p] for p in peers}}
    print(report(out))
    path = args.json or os.path.join(HERE, "results",
                                     f"bench_peers-{time.strftime('%Y%m%d-%H%M')}.json")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as fh:
        json.dump(out, fh, indent=1)
    print(f"\nresults written to {os.path.relpath(path)}")


FIGURES = [  # (column, getter, formatter, comparable for a run stopped early at the cap)
    ("log call median", lambda r: r["latency"]["median_ns"], H.fmt_ns, True),
    ("log call p99", lambda r: r["latency"]["p99_ns"], H.fmt_ns, True),
    ("worst call", lambda r: r["latency"]["max_ns"], H.fmt_ns, True),
    ("overhead/step (loop+close)", lambda r: r["overhead_total_us"] * 1e3, H.fmt_ns, True),
    ("close", lambda r: r["close_s"] * 1e9, H.fmt_ns, False),
    ("peak RSS (tree)", lambda r: r["tree_rss_peak"], H.fmt_bytes, False),
    ("RSS growth", lambda r: r["tree_rss_growth"], H.fmt_bytes, False),
    ("on disk", lambda r: r["bytes"], H.fmt_bytes, False),
]


def report(out):
    lines = [f"Machine: {out['machine']['cores']} cores, {out['machine']['cpu']}, Python "
             f"{out['machine']['python']}, pyarrow {out['machine']['pyarrow']}; "
             f"{out['machine']['date']}; isolation: {out['machine']['network_isolation']}",
             "Versions: " + ", ".join(f"{p} {v}" for p, v in out["versions"].items())]
    for peer, why in out["skipped"].items():
        lines.append(f"Skipped {peer}: {why}")
    for n, by_peer in out["results"].items():
        ran = {p: r for p, r in by_peer.items() if "error" not in r and "skipped" not in r}
        ok = {p: r for p, r in ran.items() if r.get("complete")}
        best = {}
        for name, get, _, partial_ok in FIGURES:
            vals = [(get(r), p) for p, r in (ran if partial_ok else ok).items()
                    if get(r) is not None]
            best[name] = min(vals) if vals else (None, None)
        rows = []
        for peer, r in by_peer.items():
            if "skipped" in r or "error" in r:
                why = r.get("skipped") or f"failed: {r['error']}; " + " / ".join(
                    r.get("stderr_tail", [])[-2:])[:200]
                rows.append([peer] + ["-"] * len(FIGURES) + [why])
                continue
            cells = [peer if r.get("complete") else f"{peer} (stopped at {r['done']:,} steps: "
                                                    f"too slow)"]
            for name, get, fmt, partial_ok in FIGURES:
                v = get(r)
                b = best[name][0]
                ratio = "" if v is None or not b else (" **best**" if v == b else
                                                        f" ({v / b:.1f}x)")
                if not r.get("complete") and not partial_ok:
                    ratio = " (partial)"
                cells.append(fmt(v) + ratio)
            if r.get("read_error"):
                check = "read failed: " + r["read_error"][:120]
            else:
                tag = "ok" if r["read_ok"] else "MISMATCH"
                check = (f"{tag}: {r['read_rows']:,} steps, {r['read_values']:,} values, "
                         f"Σ={r['checksum']:.4f}{' (f32)' if r.get('float32') else ''}, "
                         f"{r['read_s']:.1f} s")
            rows.append(cells + [check])
        lines.append(f"\n### N = {int(n):,} steps (5 floats per step)\n")
        lines.append(H.md_table(["tool"] + [f[0] for f in FIGURES] + ["read-back"], rows))
        if ok:
            lines.append("\nBest per figure: " + "; ".join(
                f"{name}: {p}" for name, (v, p) in best.items() if p))
        if "expman" in ok and len(ran) > 1:
            parts = []
            for name, get, fmt, partial_ok in FIGURES:
                peers = [(get(r), p) for p, r in (ran if partial_ok else ok).items()
                         if p != "expman" and get(r) is not None]
                mine = get(ok["expman"])
                if peers and mine is not None:
                    v, p = min(peers)
                    word = "WINS" if v < mine else "behind"
                    parts.append(f"{name}: {fmt(mine)} vs {p} {fmt(v)} = {mine / v:.2f}x"
                                 + (f" (peer {word})" if v < mine else ""))
            lines.append("\nexpman / best other tool: " + "; ".join(parts))
        for peer, r in ok.items():
            if "logging faster than the writer" in r.get("stderr", ""):
                lines.append(f"\nNote: {peer} warned that the writer fell behind (backpressure:"
                             f" log calls waited for it).")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
