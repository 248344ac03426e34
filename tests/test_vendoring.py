"""expman.py copied alone into another project works there, with only pyarrow and pyyaml."""
import json
import os
import shutil
import subprocess
import sys

import expman
from _util import REPO, child_env, run_python

# bottle and waitress are made unimportable: logging and reading must not need them
SCRIPT = """
import json, os, sys
sys.modules["bottle"] = None
sys.modules["waitress"] = None
{import_line}
assert os.path.dirname(os.path.abspath(expman.__file__)) == {expected_dir!r}, expman.__file__
with expman.Experiment("vendored", base_dir="runs", config={{"lr": 0.1}}) as exp:
    for step in range(50):
        exp.log_metrics({{"train/loss": 1.0 / (step + 1)}}, step=step)
    exp.log_scalar("best", 0.5)
run = expman.load_run(exp.run_dir)
table = expman.load_metrics(exp.run_dir)
print(json.dumps({{
    "status": run["status"], "config": run["config"], "best": run["summary"]["best"],
    "rows": table.num_rows, "last": table.column("train/loss")[-1].as_py(),
    "runs": [r["name"] for r in expman.list_runs("runs", "vendored")],
    "version": expman.__version__,
    "server_modules": [m for m in ("bottle", "waitress") if sys.modules.get(m) is not None],
}}))
"""


def _check(out, cwd):
    assert out["status"] == "finished"
    assert out["config"] == {"lr": 0.1}
    assert out["best"] == 0.5
    assert out["rows"] == 50 and out["last"] == 1.0 / 50
    assert len(out["runs"]) == 1
    assert out["version"] == expman.__version__
    assert out["server_modules"] == []
    runs = [n for n in os.listdir(cwd / "runs" / "vendored") if n != ".catalog"]  # a cache
    assert sorted(runs) == sorted(out["runs"] + ["experiment.yaml"])


def _env_without_repo():
    env = child_env(pythonpath=None)
    assert REPO not in env.get("PYTHONPATH", "")
    return env


def test_copied_next_to_the_script(tmp_path):
    proj = tmp_path / "proj"
    proj.mkdir()
    shutil.copy(os.path.join(REPO, "expman.py"), proj / "expman.py")
    (proj / "train.py").write_text(SCRIPT.format(import_line="import expman",
                                                 expected_dir=str(proj)))
    # `python train.py` from another directory: only the script's own folder is on sys.path
    proc = subprocess.run([sys.executable, str(proj / "train.py")], cwd=tmp_path,
                          env=_env_without_repo(), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    _check(json.loads(proc.stdout.splitlines()[-1]), tmp_path)


def test_copied_into_a_package(tmp_path):
    proj = tmp_path / "proj"
    vendor = proj / "mypkg" / "_vendor"
    vendor.mkdir(parents=True)
    (proj / "mypkg" / "__init__.py").write_text("")
    (vendor / "__init__.py").write_text("")
    shutil.copy(os.path.join(REPO, "expman.py"), vendor / "expman.py")
    code = SCRIPT.format(import_line="from mypkg._vendor import expman",
                         expected_dir=str(vendor))
    proc = run_python(code, cwd=proj, env=_env_without_repo())
    _check(json.loads(proc.stdout.splitlines()[-1]), proj)


def test_the_vendored_file_carries_its_licence():
    with open(os.path.join(REPO, "expman.py"), encoding="utf-8") as fh:
        head = fh.read(5000)
    assert head.startswith("#!/usr/bin/env python3\n")
    assert "MIT License" in head and "THE SOFTWARE IS PROVIDED \"AS IS\"" in head


def test_torch_comes_from_pytorchs_cpu_index_wherever_it_is_installed():
    """`torch==2.13.0` from PyPI is the multi-GB CUDA build on most machines: the README,
    requirements-integrations.txt and .ci/run all say to take it from PyTorch's CPU index."""
    index = "--index-url https://download.pytorch.org/whl/cpu"
    texts = {}
    for name in ("README.md", "requirements-integrations.txt", os.path.join(".ci", "run")):
        with open(os.path.join(REPO, name), encoding="utf-8") as fh:
            texts[name] = fh.read()
    ci_torch = [line for line in texts[os.path.join(".ci", "run")].splitlines()
                if "pip install" in line and "torch" in line]
    assert ci_torch and all(index in line for line in ci_torch)
    assert index in texts["README.md"] and index in texts["requirements-integrations.txt"]
    readme_torch = [line for line in texts["README.md"].splitlines()
                    if "pip install" in line and '"torch' in line]
    assert readme_torch and all(index in line for line in readme_torch)
