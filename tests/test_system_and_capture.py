"""Opt-in extras of a run: system metrics (CPU, memory, GPU) and console capture into run.log.

GPU readings are checked against stand-ins of the two real sources: an `nvidia-smi` script on
PATH, and a libnvidia-ml.so.1 compiled here from C that answers the NVML calls expman makes.
Both run through the same code a machine with a GPU runs; only the driver is stood in for.
"""
import os
import shutil
import subprocess
import sys

import pytest

import expman
from _util import child_env, only_run_dir, run_python

SYSTEM_CHILD = """
import sys, time, expman
exp = expman.init("sys", base_dir=sys.argv[1] if len(sys.argv) > 1 else "experiments",
                  system_metrics=0.1)
deadline = time.monotonic() + 2.5   # pyarrow loads first on a busy machine
step = 0
while time.monotonic() < deadline:
    x = sum(i * i for i in range(20000))   # keep a core busy
    expman.log_metrics({"loss": 1.0 / (step + 1)})
    step += 1
    time.sleep(0.01)
print("steps", step)
"""


def system_table(root, code=SYSTEM_CHILD, **env):
    proc = run_python(code, cwd=root.parent, env=child_env(**env))
    run_dir = only_run_dir(root, "sys")
    return proc, run_dir, expman.load_metrics(run_dir).to_pydict()


def test_system_metrics_sample_cpu_and_memory_without_touching_steps(root):
    proc, run_dir, table = system_table(root)
    steps = int(proc.stdout.split()[-1])
    sys_rows = [i for i, v in enumerate(table["sys/rss_mb"]) if v is not None]
    assert len(sys_rows) >= 3, table.keys()   # 2.5 s at 0.1 s, minus the writer's start
    rss = [table["sys/rss_mb"][i] for i in sys_rows]
    # in MB (KB or bytes would be > 4000); a run that never imports pyarrow is ~18 MB
    assert all(5 < r < 4000 for r in rss), rss
    cpu = [table["sys/cpu_percent"][i] for i in sys_rows if table["sys/cpu_percent"][i]]
    assert cpu and max(cpu) > 5, cpu                # the loop above keeps a core busy
    assert all(0 <= table["sys/host_memory_percent"][i] <= 100 for i in sys_rows)
    # the training's auto steps are 0..n-1 whatever the sampler staged in between
    loss_steps = [s for s, v in zip(table["step"], table["loss"]) if v is not None]
    assert loss_steps == list(range(steps))
    assert table["step"] == sorted(table["step"])  # sampled rows take the current step
    for i in sys_rows:
        assert table["loss"][i] is None
    assert "sys/rss_mb" in expman.load_run(run_dir)["summary"]


def test_system_metrics_are_off_by_default(root):
    with expman.Experiment("plain", base_dir=root) as exp:
        exp.log_metrics({"a": 1.0})
    assert expman.metric_keys(exp.run_dir) == ["a"]


@pytest.mark.parametrize("bad", ["yes", -1, 0.0, float("nan"), [5]])
def test_system_metrics_rejects_what_is_not_an_interval(root, bad):
    with pytest.raises(expman.InvalidInputError, match="system_metrics"):
        expman.Experiment("bad", base_dir=root, system_metrics=bad)
    assert not (root / "bad").exists()   # refused before anything is written


def fake_nvidia_smi(bin_dir, body):
    bin_dir.mkdir(exist_ok=True)
    exe = bin_dir / "nvidia-smi"
    exe.write_text(f"#!/bin/sh\n{body}\n")
    exe.chmod(0o755)
    return exe


def test_gpu_readings_from_nvidia_smi(root, tmp_path):
    fake_nvidia_smi(tmp_path / "bin", 'printf "0, 37, 1024, 16384\\n1, [N/A], 2048, 16384\\n"')
    env = {"PATH": f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}"}
    _, run_dir, table = system_table(root, **env)
    util = [v for v in table["sys/gpu0/util_percent"] if v is not None]
    assert util and set(util) == {37.0}
    assert {v for v in table["sys/gpu0/memory_mb"] if v is not None} == {1024.0}
    assert {v for v in table["sys/gpu0/memory_percent"] if v is not None} == {6.25}
    assert {v for v in table["sys/gpu1/memory_mb"] if v is not None} == {2048.0}
    assert "sys/gpu1/util_percent" not in table   # [N/A] is no reading, not a zero
    assert "GPUs read through nvidia-smi" in expman.load_log(run_dir)[0]


def test_a_failing_gpu_source_is_dropped_and_the_rest_goes_on(root, tmp_path):
    # answers the probe, then fails every call after it, as a driver that went away does
    count = tmp_path / "calls"
    fake_nvidia_smi(tmp_path / "bin", f'echo x >> {count}\n'
                                      f'[ $(wc -l < {count}) -le 1 ] || exit 9\n'
                                      f'echo "0, 50, 100, 200"')
    env = {"PATH": f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}"}
    _, run_dir, table = system_table(root, **env)
    assert count.read_text().count("x") == 3          # the probe, then two failures: no more
    assert "stopped reading GPUs" in expman.load_log(run_dir)[0]
    assert len([v for v in table["sys/rss_mb"] if v is not None]) >= 3


FAKE_NVML = r"""
typedef struct { unsigned int gpu, memory; } util_t;
typedef struct { unsigned long long total, free, used; } mem_t;
int nvmlInit_v2(void) { return 0; }
int nvmlDeviceGetCount_v2(unsigned int *n) { *n = 1; return 0; }
int nvmlDeviceGetHandleByIndex_v2(unsigned int i, void **h) { *h = (void *)(long)(i + 1); return 0; }
int nvmlDeviceGetUtilizationRates(void *h, util_t *u) { u->gpu = 55; u->memory = 10; return 0; }
int nvmlDeviceGetMemoryInfo(void *h, mem_t *m) {
    m->total = 12ULL << 30; m->used = 3ULL << 30; m->free = m->total - m->used; return 0; }
"""


@pytest.mark.skipif(not shutil.which("gcc"), reason="needs gcc to build the NVML stand-in")
def test_gpu_readings_from_nvml(root, tmp_path):
    lib_dir = tmp_path / "lib"
    lib_dir.mkdir()
    (lib_dir / "nvml.c").write_text(FAKE_NVML)
    subprocess.run(["gcc", "-shared", "-fPIC", "-o", str(lib_dir / "libnvidia-ml.so.1"),
                    str(lib_dir / "nvml.c")], check=True)
    _, run_dir, table = system_table(root, LD_LIBRARY_PATH=str(lib_dir))
    assert {v for v in table["sys/gpu0/util_percent"] if v is not None} == {55.0}
    assert {v for v in table["sys/gpu0/memory_mb"] if v is not None} == {3072.0}
    assert {v for v in table["sys/gpu0/memory_percent"] if v is not None} == {25.0}
    assert "GPUs read through NVML" in expman.load_log(run_dir)[0]


CAPTURE_CHILD = r"""
import sys, expman
expman.init("cap", base_dir="experiments", capture_output=True)
print("hello from stdout")
print("a warning on stderr", file=sys.stderr)
for i in range(1000):
    sys.stderr.write(f"\rtraining {i + 1}/1000")
sys.stderr.write("\n")
print("<img src=x onerror=alert(1)>")
print("no newline at the end", end="")
raise RuntimeError("boom")
"""


def log_lines(run_dir):
    return [line.split(" ", 1)[1] for line in
            expman.load_log(run_dir)[0].splitlines()]


def test_capture_output_tees_the_console_into_run_log(root):
    proc = run_python(CAPTURE_CHILD, cwd=root.parent, check=False)
    assert proc.returncode == 1
    # the console still gets everything, unchanged
    assert "hello from stdout" in proc.stdout and "no newline at the end" in proc.stdout
    assert "training 1000/1000" in proc.stderr and "RuntimeError: boom" in proc.stderr
    run_dir = only_run_dir(root, "cap")
    lines = log_lines(run_dir)
    assert "OUT   hello from stdout" in lines
    assert "ERR   a warning on stderr" in lines
    # a bar redrawn 1000 times with \r is one line: its last state
    assert [line for line in lines if "training" in line] == ["ERR   training 1000/1000"]
    assert "OUT   <img src=x onerror=alert(1)>" in lines
    assert "OUT   no newline at the end" in lines       # the partial line is kept at close
    assert "ERR   RuntimeError: boom" in lines          # the traceback of the failure
    assert expman.load_run(run_dir)["status"] == "failed"


def test_capture_stops_at_close_and_puts_the_streams_back(root, capsys):
    before_out, before_err = sys.stdout, sys.stderr
    exp = expman.Experiment("cap", base_dir=root, capture_output=True)
    assert sys.stdout is not before_out
    print("during")
    exp.close()
    assert sys.stdout is before_out and sys.stderr is before_err
    print("after")
    assert "during" in capsys.readouterr().out
    assert log_lines(exp.run_dir) == ["OUT   during"]


def test_capture_is_bounded(root, monkeypatch):
    monkeypatch.setattr(expman, "CAPTURE_MAX_BYTES", 2000)
    exp = expman.Experiment("cap", base_dir=root, capture_output=True)
    try:
        for i in range(200):
            print(f"line {i:04d} " + "x" * 40)
    finally:
        exp.close()
    lines = log_lines(exp.run_dir)
    assert 10 < len(lines) < 60
    assert lines[-1].startswith("WARN  expman: output capture stopped")


def test_a_forked_child_prints_to_its_console_only(root):
    code = """
    import os, sys, expman
    exp = expman.init("cap", base_dir="experiments", capture_output=True)
    print("parent before")
    pid = os.fork()
    if pid == 0:
        print("child says hi")
        sys.stdout.flush()
        os._exit(0)
    os.waitpid(pid, 0)
    print("parent after")
    """
    proc = run_python(code, cwd=root.parent)
    assert "child says hi" in proc.stdout
    lines = log_lines(only_run_dir(root, "cap"))
    assert lines == ["OUT   parent before", "OUT   parent after"]
