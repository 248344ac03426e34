"""The dashboard server under hostile and many clients (issue 20, items 3, 4, 16, 17).

Against a real `expman serve ROOT --port 0` (a subprocess, loopback only) on a live run that a
child process keeps growing (40 keys, ~300 rows/s, flushed every 100 ms), opens at once:

- 20 reading streams: `/api/stream?runs=exp/live` (new rows of the live run, read and dropped);
- 200 idle streams: `/api/stream` naming no run (a refused one retries after Retry-After);
- 100 slowloris sockets: a request's headers a byte a second, reconnecting when closed;
- one page-like client polling `/metrics?since=0&max_points=2000` of the live run 10 times a
  second (what the page asks for; `--metrics-query ''` asks for the full series instead);

and measures, for the whole period, the latency of `/api/health` and of the page `/` (a new
connection per request, 5 a second each; a non-200 answer or a 10 s timeout is "refused") and
the server's RSS once a second (growth: least-squares slope after the first third, MB/min).

    python benchmarks/bench_hostile.py                     # 2 minutes
    python benchmarks/bench_hostile.py --minutes 5         # the issue's period
    python benchmarks/bench_hostile.py --expman OLD.py     # another expman.py, side by side

Every loop is bounded by the period; the script stops everything it started. Writes JSON to
benchmarks/results/bench_hostile-<date>.json.
"""
import argparse
import http.client
import json
import os
import re
import selectors
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)

WRITER = r"""
import os, sys, time
sys.path.insert(0, sys.argv[3])
import expman
root, stop = sys.argv[1], sys.argv[2]
keys = [f"k{i:02d}" for i in range(40)]
with expman.Experiment("exp", base_dir=root, run_name="live", flush_interval_ms=100,
                       capture_git=False) as exp:
    step, start = 0, time.monotonic()
    while not os.path.exists(stop):
        exp.log_metrics({k: (step * (i + 1)) % 997 / 997.0 for i, k in enumerate(keys)},
                        step=step)
        if step % 100 == 0:
            exp.info(f"step {step}")
        step += 1
        ahead = step / 300.0 - (time.monotonic() - start)     # ~300 rows a second
        if ahead > 0:
            time.sleep(ahead)
print("rows", step, flush=True)
"""


def rss_mb(pid, field="VmRSS"):
    """VmRSS (or RssAnon / RssFile: what the process allocated / file pages it maps) in MB."""
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


def percentile(values, p):
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


def slope_per_min(samples):
    """Least-squares slope of (t seconds, MB) in MB per minute."""
    if len(samples) < 3:
        return float("nan")
    ts, ys = [t for t, _ in samples], [y for _, y in samples]
    mt, my = statistics.fmean(ts), statistics.fmean(ys)
    den = sum((t - mt) ** 2 for t in ts)
    return 60 * sum((t - mt) * (y - my) for t, y in zip(ts, ys)) / den if den else float("nan")


class Sockets:
    """Idle streams, reading streams and slowloris sockets, all in one selector loop."""

    def __init__(self, port, deadline):
        self.port, self.deadline = port, deadline
        self.sel = selectors.DefaultSelector()
        self.stats = {"stream_200": 0, "stream_503": 0, "stream_other": 0, "stream_bytes": 0,
                      "slow_connects": 0, "slow_closed_by_server": 0, "connect_errors": 0}
        self.slow = []        # [socket, next byte at]
        self.retry = []       # (at, kind, path)

    def connect(self):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.settimeout(5)
        try:
            s.connect(("127.0.0.1", self.port))
        except OSError:
            self.stats["connect_errors"] += 1
            s.close()
            return None
        s.setblocking(False)
        return s

    def open_stream(self, kind, path):
        s = self.connect()
        if s is None:
            self.retry.append((time.monotonic() + 1, kind, path))
            return
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n"
                  f"\r\n".encode())
        self.sel.register(s, selectors.EVENT_READ, {"kind": kind, "path": path, "head": b""})

    def open_slow(self):
        s = self.connect()
        if s is None:
            return
        self.stats["slow_connects"] += 1
        s.send(b"GET /api/health HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        self.slow.append([s, time.monotonic() + 1])

    def run(self):
        while time.monotonic() < self.deadline:
            for key, _ in self.sel.select(timeout=0.2):
                self._readable(key)
            now = time.monotonic()
            for item in list(self.slow):
                if now >= item[1]:
                    try:
                        item[0].send(b"X")
                        item[1] = now + 1
                    except OSError:   # closed by the server: a slowloris comes back
                        self.stats["slow_closed_by_server"] += 1
                        item[0].close()
                        self.slow.remove(item)
                        self.open_slow()
            due = [r for r in self.retry if r[0] <= now]
            self.retry = [r for r in self.retry if r[0] > now]
            for _at, kind, path in due:
                self.open_stream(kind, path)
        for key in list(self.sel.get_map().values()):
            key.fileobj.close()
        for item in self.slow:
            item[0].close()

    def _readable(self, key):
        s, info = key.fileobj, key.data
        try:
            data = s.recv(65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self.sel.unregister(s)
            s.close()
            self.retry.append((time.monotonic() + 2, info["kind"], info["path"]))
            return
        self.stats["stream_bytes"] += len(data)
        if info["head"] is not None:
            info["head"] += data
            if b"\r\n" not in info["head"]:
                return
            status = int(info["head"].split(b" ", 2)[1])
            wait = re.search(rb"Retry-After: (\d+)", info["head"], re.I)
            info["head"] = None
            if status == 200:
                self.stats["stream_200"] += 1
            else:
                self.stats["stream_503" if status == 503 else "stream_other"] += 1
                self.sel.unregister(s)
                s.close()
                self.retry.append((time.monotonic() + (int(wait.group(1)) if wait else 5),
                                   info["kind"], info["path"]))


def probe(port, path, deadline, out, interval=0.2):
    """One request on a new connection every interval: (latency s, status or error)."""
    while time.monotonic() < deadline:
        started = time.monotonic()
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            conn.request("GET", path)
            resp = conn.getresponse()
            resp.read()
            conn.close()
            out.append((time.monotonic() - started, resp.status))
        except (OSError, http.client.HTTPException) as exc:
            out.append((time.monotonic() - started, type(exc).__name__))
        time.sleep(max(0.0, interval - (time.monotonic() - started)))


def poll_metrics(port, path, deadline, out, rate=10.0):
    conn = None
    while time.monotonic() < deadline:
        started = time.monotonic()
        try:
            conn = conn or http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            conn.request("GET", path)
            resp = conn.getresponse()
            body = resp.read()
            out.append((time.monotonic() - started, resp.status, len(body)))
        except (OSError, http.client.HTTPException) as exc:
            out.append((time.monotonic() - started, type(exc).__name__, 0))
            conn = None
        time.sleep(max(0.0, 1.0 / rate - (time.monotonic() - started)))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--minutes", type=float, default=2.0)
    ap.add_argument("--expman", default=os.path.join(REPO, "expman.py"),
                    help="the expman.py whose `serve` is measured (default: this repo's)")
    ap.add_argument("--idle", type=int, default=200)
    ap.add_argument("--slow", type=int, default=100)
    ap.add_argument("--readers", type=int, default=20)
    ap.add_argument("--metrics-query", default="since=0&max_points=2000")
    ap.add_argument("--metrics-rate", type=float, default=10.0, help="0: no /metrics poller")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    expman_dir = os.path.dirname(os.path.abspath(args.expman))
    tmp = tempfile.mkdtemp(prefix="bench_hostile-")
    root, stop = os.path.join(tmp, "root"), os.path.join(tmp, "stop")
    procs = []
    try:
        writer = subprocess.Popen([sys.executable, "-c", WRITER, root, stop, expman_dir],
                                  stdout=subprocess.PIPE, text=True)
        procs.append(writer)
        run_yaml = os.path.join(root, "exp", "live", "run.yaml")
        until = time.monotonic() + 60
        while not os.path.exists(run_yaml) and time.monotonic() < until:
            time.sleep(0.05)
        server = subprocess.Popen([sys.executable, args.expman, "serve", root, "--port", "0"],
                                  stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        procs.append(server)
        line = server.stdout.readline()
        port = int(re.search(r"http://127\.0\.0\.1:(\d+)/", line).group(1))
        load_start = os.getloadavg()
        t0 = time.monotonic()
        deadline = t0 + args.minutes * 60
        socks = Sockets(port, deadline)
        for _ in range(args.readers):
            socks.open_stream("reader", "/api/stream?runs=exp/live")
        for _ in range(args.idle):
            socks.open_stream("idle", "/api/stream")
        for _ in range(args.slow):
            socks.open_slow()
        health, page, metrics, rss, anon = [], [], [], [], []
        threads = [threading.Thread(target=socks.run, daemon=True),
                   threading.Thread(target=probe, args=(port, "/api/health", deadline, health),
                                    daemon=True),
                   threading.Thread(target=probe, args=(port, "/", deadline, page), daemon=True),
                   threading.Thread(target=poll_metrics, args=(
                       port, "/api/experiments/exp/runs/live/metrics"
                       + (f"?{args.metrics_query}" if args.metrics_query else ""),
                       deadline if args.metrics_rate > 0 else 0, metrics,
                       args.metrics_rate or 1.0), daemon=True)]
        for t in threads:
            t.start()
        while time.monotonic() < deadline:
            rss.append((time.monotonic() - t0, rss_mb(server.pid)))
            anon.append((time.monotonic() - t0, rss_mb(server.pid, "RssAnon")))
            time.sleep(1.0)
        for t in threads:
            t.join(30)
        load_end = os.getloadavg()
        open(stop, "w").close()
        rows = writer.communicate(timeout=60)[0].split()[-1]
        warm = [s for s in rss if s[0] >= args.minutes * 60 / 3]
        warm_anon = [s for s in anon if s[0] >= args.minutes * 60 / 3]

        def summary(samples):
            ok = [lat for lat, status in samples if status == 200]
            return {"requests": len(samples), "refused": len(samples) - len(ok),
                    "p50_ms": round(percentile(ok, 50) * 1000, 1),
                    "p99_ms": round(percentile(ok, 99) * 1000, 1),
                    "max_ms": round(max(ok) * 1000, 1) if ok else None}

        result = {
            "expman": os.path.abspath(args.expman), "minutes": args.minutes,
            "clients": {"idle_streams": args.idle, "slowloris": args.slow,
                        "reading_streams": args.readers, "metrics_query": args.metrics_query,
                        "metrics_rate": args.metrics_rate},
            "health": summary(health), "page": summary(page),
            "metrics": {"requests": len(metrics),
                        "ok": sum(1 for m in metrics if m[1] == 200),
                        "p50_ms": round(percentile([m[0] for m in metrics if m[1] == 200], 50)
                                        * 1000, 1),
                        "mean_kb": round(statistics.fmean([m[2] for m in metrics] or [0])
                                         / 1024, 1)},
            "sockets": socks.stats,
            "rss_mb": {"start": round(rss[0][1], 1), "after_warmup": round(warm[0][1], 1),
                       "end": round(rss[-1][1], 1), "peak": round(max(r for _, r in rss), 1),
                       "growth_mb_per_min_after_warmup": round(slope_per_min(warm), 2),
                       "anon_end": round(anon[-1][1], 1),
                       "anon_growth_mb_per_min_after_warmup": round(slope_per_min(warm_anon),
                                                                    2)},
            "live_run_rows": int(rows) if rows.isdigit() else rows,
            "loadavg_start": load_start, "loadavg_end": load_end,
        }
        print(json.dumps(result, indent=2))
        print(f"\n| | requests | refused | p50 ms | p99 ms |\n|---|---|---|---|---|")
        for name in ("health", "page"):
            r = result[name]
            print(f"| {name} | {r['requests']} | {r['refused']} | {r['p50_ms']} | {r['p99_ms']} |")
        r = result["rss_mb"]
        print(f"\nRSS {r['start']} -> {r['end']} MB (peak {r['peak']}), "
              f"{r['growth_mb_per_min_after_warmup']} MB/min after warm-up "
              f"(anonymous memory: {r['anon_growth_mb_per_min_after_warmup']} MB/min); "
              f"load average {load_start[0]:.2f} -> {load_end[0]:.2f}")
        out = args.out or os.path.join(HERE, "results", time.strftime(
            "bench_hostile-%Y%m%d-%H%M.json"))
        os.makedirs(os.path.dirname(out), exist_ok=True)
        with open(out, "w") as fh:
            json.dump(result, fh, indent=2)
    finally:
        open(stop, "w").close() if os.path.isdir(tmp) else None
        for proc in reversed(procs):
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
