"""The dashboard server under load (issue 6): 20 Server-Sent-Events clients plus a steady stream
of API requests for 60 s, against `expman serve` in its own process.

    python benchmarks/bench_load.py                  # 60 s, 20 streams, 2 x 15 API req/s
    python benchmarks/bench_load.py --secs 20 --clients 40 --rate 30

Reports API latency (p50/p90/p99/max, overall and per endpoint kind), the server's RSS at the
start (after a warm-up) and at the end with a per-minute slope over the second half, SSE events
delivered, and how long the server takes to let go of clients that vanish (RST, no goodbye).
The data: 20 finished runs of 3,000 rows and one live run a child process keeps logging to.
Writes JSON to benchmarks/results/bench_load-<date>.json. tests/test_reliability.py runs the
same load for 20 s as a test.
"""
import argparse
import http.client
import json
import os
import platform
import random
import shutil
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import urllib.parse
import warnings

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, REPO)
import expman  # noqa: E402

warnings.simplefilter("ignore", expman.ExpmanWarning)

SERVER = """
import sys, threading, time
sys.path.insert(0, {repo!r})
import expman
expman._use_system_memory_pool()     # what `expman serve` does
server = expman.make_server({root!r}, port=0)
hub = server.app.config["expman.hub"]
print("url", server.url, flush=True)
def report():
    while True:
        print("subs", len(hub.subscribers), flush=True)
        time.sleep(0.1)
threading.Thread(target=report, daemon=True).start()
server.run()
"""

WRITER = """
import os, sys, time
sys.path.insert(0, {repo!r})
import expman
with expman.Experiment("load", base_dir={root!r}, run_name="live", flush_interval_ms=100,
                       capture_git=False) as exp:
    step = 0
    while not os.path.exists({stop!r}):
        exp.log_metrics({{"train/loss": 1.0 / (1 + step), "train/acc": step / 1e5}}, step=step)
        if step % 50 == 0:
            exp.info(f"step {{step}}")
        step += 1
        time.sleep(0.005)
print("done", step, flush=True)
"""


class Proc:
    def __init__(self, code):
        self.proc = subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.lines = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def first(self, prefix, timeout=60):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in self.lines:
                if line.startswith(prefix):
                    return line
            if self.proc.poll() is not None:
                break
            time.sleep(0.02)
        raise SystemExit(f"no {prefix!r} line: {self.lines[-5:]} {self.proc.stderr.read()}")

    def last(self, prefix):
        return next((l for l in reversed(self.lines) if l.startswith(prefix)), None)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class RawSSE(threading.Thread):
    def __init__(self, host, port, path):
        super().__init__(daemon=True)
        self.sock = socket.create_connection((host, port), timeout=60)
        self.sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
                          f"Accept: text/event-stream\r\n\r\n".encode())
        self.events = 0
        self.start()

    def run(self):
        try:
            while True:
                data = self.sock.recv(65536)
                if not data:
                    return
                self.events += data.count(b"\nevent: ")
        except OSError:
            return

    def vanish(self):
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
        self.sock.close()
        self.join(5)


def rss_mb(pid):
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def pct(values, q):
    values = sorted(values)
    return values[min(len(values) - 1, int(q * (len(values) - 1)))] if values else float("nan")


def make_data(root, runs, rows):
    for r in range(runs):
        with expman.Experiment("load", base_dir=root, run_name=f"r{r:02d}",
                               flush_interval_ms=10_000, capture_git=False,
                               config={"lr": 10 ** -(r % 5), "seed": r}) as exp:
            for i in range(rows):
                exp.log_metrics({"train/loss": 1.0 / (i + 1), "val/acc": i / rows}, step=i)
            exp.info(f"run {r} done")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--secs", type=float, default=60.0)
    ap.add_argument("--clients", type=int, default=20)
    ap.add_argument("--threads", type=int, default=2, help="API client threads")
    ap.add_argument("--rate", type=float, default=15.0, help="requests/s per API thread")
    ap.add_argument("--warmup", type=float, default=5.0)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()

    tmp = tempfile.mkdtemp(prefix="expman-bench-load-")
    root, stop = os.path.join(tmp, "experiments"), os.path.join(tmp, "stop")
    t0 = time.perf_counter()
    make_data(root, 20, 3000)
    print(f"data: 20 runs x 3,000 rows in {time.perf_counter() - t0:.1f}s", flush=True)
    writer = Proc(WRITER.format(repo=REPO, root=root, stop=stop))
    server = Proc(SERVER.format(repo=REPO, root=root))
    clients = []
    lat = {}
    failures = []
    done = threading.Event()
    try:
        url = server.first("url").split()[1]
        parts = urllib.parse.urlsplit(url)
        host, port = parts.hostname, parts.port
        while not os.path.exists(os.path.join(root, "load", "live", "run.yaml")):
            time.sleep(0.05)
        stream = "/api/stream?runs=load/live,load/r00,load/r01"
        clients = [RawSSE(host, port, stream) for _ in range(args.clients)]
        runs = [f"r{r:02d}" for r in range(20)] + ["live"]
        base = "/api/experiments/load/runs"
        kinds = {"health": ["/api/health"], "experiments": ["/api/experiments"],
                 "runs": [base],
                 "metrics": [f"{base}/{r}/metrics?max_points=1000" for r in runs],
                 "log": [f"{base}/{r}/log" for r in runs],
                 "metadata": [f"{base}/{r}/metadata" for r in runs],
                 "artifacts": [f"{base}/{r}/artifacts" for r in runs]}
        choices = [(k, p) for k, ps in kinds.items() for p in ps]

        def api_worker(seed):
            rnd = random.Random(seed)
            conn = http.client.HTTPConnection(host, port, timeout=60)
            next_at = time.monotonic()
            while not done.is_set():
                kind, path = rnd.choice(choices)
                t = time.perf_counter()
                try:
                    conn.request("GET", path)
                    resp = conn.getresponse()
                    resp.read()
                    if resp.status != 200:
                        failures.append((path, resp.status))
                except (OSError, http.client.HTTPException) as exc:
                    failures.append((path, repr(exc)))
                    conn.close()
                    conn = http.client.HTTPConnection(host, port, timeout=60)
                lat.setdefault(kind, []).append(time.perf_counter() - t)
                next_at += 1.0 / args.rate
                done.wait(max(0.0, next_at - time.monotonic()))
            conn.close()

        workers = [threading.Thread(target=api_worker, args=(s,), daemon=True)
                   for s in range(args.threads)]
        for w in workers:
            w.start()
        start = time.monotonic()
        done.wait(args.warmup)
        rss = [(0.0, rss_mb(server.proc.pid))]
        churned = 0
        while time.monotonic() - start < args.secs:
            victim = clients.pop(random.randrange(len(clients)))
            victim.vanish()
            clients.append(RawSSE(host, port, stream))
            churned += 1
            done.wait(1.0)
            rss.append((time.monotonic() - start - args.warmup, rss_mb(server.proc.pid)))
        done.set()
        for w in workers:
            w.join(60)
        events = sum(c.events for c in clients)
        t_gone = time.monotonic()
        for c in clients:
            c.vanish()
        while int((server.last("subs") or "subs -1").split()[1]) != 0:
            if time.monotonic() - t_gone > 30:
                break
            time.sleep(0.05)
        cleanup = time.monotonic() - t_gone
        left = int((server.last("subs") or "subs -1").split()[1])
    finally:
        done.set()
        with open(stop, "w"):
            pass
        for c in clients:
            c.vanish()
        try:
            writer.proc.wait(30)
        except subprocess.TimeoutExpired:
            pass
        writer.stop()
        server.stop()
        shutil.rmtree(tmp, ignore_errors=True)

    all_lat = [x for v in lat.values() for x in v]
    half = [(t, m) for t, m in rss if t >= (args.secs - args.warmup) / 2]
    slope = None
    if len(half) >= 3:
        tm, mm = statistics.fmean(t for t, _ in half), statistics.fmean(m for _, m in half)
        den = sum((t - tm) ** 2 for t, _ in half)
        slope = 60 * sum((t - tm) * (m - mm) for t, m in half) / den if den else None
    result = {
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(),
                    "platform": platform.platform(), "load": os.getloadavg()},
        "settings": vars(args), "requests": len(all_lat), "failures": failures[:20],
        "latency_ms": {"p50": pct(all_lat, 0.5) * 1e3, "p90": pct(all_lat, 0.9) * 1e3,
                       "p99": pct(all_lat, 0.99) * 1e3, "max": max(all_lat) * 1e3},
        "latency_ms_by_kind": {k: {"n": len(v), "p50": pct(v, 0.5) * 1e3,
                                   "p99": pct(v, 0.99) * 1e3} for k, v in sorted(lat.items())},
        "rss_mb": {"start": rss[0][1], "end": rss[-1][1], "max": max(m for _, m in rss),
                   "slope_mb_per_min_second_half": slope, "samples": rss},
        "sse": {"clients": args.clients, "churned": churned, "events_last_clients": events,
                "cleanup_secs": cleanup, "subscribers_left": left},
    }
    print(f"\n| {args.secs:.0f} s, {args.clients} SSE clients, {args.threads} x "
          f"{args.rate:g} API req/s | value |\n|---|---|")
    print(f"| API requests (failures) | {len(all_lat)} ({len(failures)}) |")
    for q in ("p50", "p90", "p99", "max"):
        print(f"| latency {q} | {result['latency_ms'][q]:.1f} ms |")
    print(f"| server RSS start -> end (max) | {rss[0][1]:.1f} -> {rss[-1][1]:.1f} MB "
          f"({result['rss_mb']['max']:.1f}) |")
    if slope is not None:
        print(f"| RSS slope, second half | {slope:+.2f} MB/min |")
    print(f"| SSE events to the {args.clients} last clients; clients churned | {events}; "
          f"{churned} |")
    print(f"| vanished clients released | {left == 0} in {cleanup:.2f} s |")
    print("\nby endpoint: " + ", ".join(f"{k} p50 {v['p50']:.1f} / p99 {v['p99']:.1f} ms"
                                        for k, v in result["latency_ms_by_kind"].items()))
    path = args.json or os.path.join(HERE, "results",
                                     f"bench_load-{time.strftime('%Y%m%d-%H%M')}.json")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as fh:
        json.dump(result, fh, indent=1)
    print(f"wrote {path}")
    return 0 if not failures and left == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
