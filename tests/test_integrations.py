"""Framework callbacks against the real frameworks: a tiny model trained for a few steps on the
CPU, each in its own child process (importing torch, Lightning, transformers and Keras into one
interpreter, which keeps warnings as errors, is slow and fragile)."""
import importlib.util
import os
import subprocess
import sys
import textwrap

import pytest
from _util import REPO, child_env

import expman

TIMEOUT = 240   # a child imports torch + a framework: ~5 s alone, much more on a busy machine

LIGHTNING = """
    import sys, torch, lightning as L
    from torch.utils.data import DataLoader, TensorDataset
    import expman

    class Model(L.LightningModule):
        def __init__(self, lr=0.05, hidden=8, fail_at=None):
            super().__init__()
            self.save_hyperparameters()
            self.net = torch.nn.Sequential(torch.nn.Linear(4, hidden), torch.nn.ReLU(),
                                           torch.nn.Linear(hidden, 1))

        def _loss(self, batch):
            x, y = batch
            return torch.nn.functional.mse_loss(self.net(x), y)

        def training_step(self, batch, i):
            if self.hparams.fail_at == self.global_step:
                raise RuntimeError("loss diverged")
            loss = self._loss(batch)
            self.log("train/loss", loss)
            return loss

        def validation_step(self, batch, i):
            self.log("val/loss", self._loss(batch))

        def test_step(self, batch, i):
            self.log("test/loss", self._loss(batch))

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=self.hparams.lr)

    torch.manual_seed(0)
    x = torch.randn(64, 4)
    data = DataLoader(TensorDataset(x, x.sum(1, keepdim=True)), batch_size=16)

    def trainer(logger):
        return L.Trainer(max_epochs=3, logger=logger, log_every_n_steps=1,
                         enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, accelerator="cpu", default_root_dir=".")

    import pickle                   # spawn-based strategies pickle the trainer's loggers
    fresh = pickle.loads(pickle.dumps(expman.LightningLogger("lit", base_dir="exps")))
    assert isinstance(fresh, expman.LightningLogger)
    assert isinstance(fresh, L.pytorch.loggers.Logger)

    ok = expman.LightningLogger("lit", base_dir="exps", run_name="ok")
    t = trainer(ok)
    t.fit(Model(), data, data)
    t.test(Model(), data)           # after fit: the same run
    print("after fit:", ok.experiment.status)

    bad = expman.LightningLogger("lit", base_dir="exps", run_name="bad")
    try:
        trainer(bad).fit(Model(fail_at=5), data, data)
    except RuntimeError:
        print("after failure:", bad.experiment.status)
"""

TRANSFORMERS = """
    import sys, torch
    from transformers import GPT2Config, GPT2LMHeadModel, Trainer, TrainingArguments
    import expman

    FAIL = sys.argv[1:] == ["fail"]
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=64, n_positions=16, n_embd=16, n_layer=1,
                                       n_head=2))       # random weights: no download

    class Tokens(torch.utils.data.Dataset):
        def __len__(self):
            return 32

        def __getitem__(self, i):
            if FAIL and i == 20:
                raise RuntimeError("corrupt sample 20")
            ids = torch.arange(16) * (i % 3 + 1) % 64
            return {"input_ids": ids, "labels": ids}

    args = TrainingArguments(output_dir="out", max_steps=6, logging_steps=2,
                             per_device_train_batch_size=4, eval_strategy="steps", eval_steps=3,
                             report_to="none", use_cpu=True, save_strategy="no",
                             learning_rate=1e-3, disable_tqdm=True)
    callback = expman.TransformersCallback("hf", base_dir="exps",
                                           run_name="fail" if FAIL else "ok")
    trainer = Trainer(model=model, args=args, train_dataset=Tokens(), eval_dataset=Tokens(),
                      callbacks=[callback])
    trainer.train()
    trainer.evaluate()              # after train: the same run
"""

KERAS = """
    import os, sys
    os.environ["KERAS_BACKEND"] = "torch"
    import numpy as np, keras
    import expman

    FAIL = sys.argv[1:] == ["fail"]
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 4)).astype("float32")
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, activation="relu"),
                              keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="mse", metrics=["mae"])

    class Boom(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if FAIL and batch == 2:
                raise RuntimeError("loss is NaN")

    callback = expman.KerasCallback("keras", base_dir="exps", run_name="fail" if FAIL else "ok",
                                    log_every_n_batches=2, close_at_end=not FAIL)
    model.fit(x, x.sum(1, keepdims=True), epochs=3, batch_size=16, validation_split=0.25,
              verbose=0, callbacks=[callback, Boom()])
    print("after fit:", callback.experiment.status)
"""


def _require(*modules):
    """Skip when a framework is not installed, unless CI promised it (.ci/run sets
    EXPMAN_REQUIRE_INTEGRATIONS=1): there a missing framework fails instead of hiding."""
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        message = (f"not installed: {', '.join(missing)} "
                   f"(pip install -r requirements-integrations.txt)")
        if os.environ.get("EXPMAN_REQUIRE_INTEGRATIONS"):
            pytest.fail(message)
        pytest.skip(message)


def _child(code, cwd, *args, check=True, env=None):
    argv = ["-c", textwrap.dedent(code)] if "\n" in code else [code]
    proc = subprocess.run([sys.executable, *argv, *args], cwd=cwd, env=env or child_env(REPO),
                          capture_output=True, text=True, timeout=TIMEOUT, check=False)
    if check and proc.returncode != 0:
        raise AssertionError(f"child failed ({proc.returncode}):\n{proc.stdout}\n"
                             f"{proc.stderr[-3000:]}")
    return proc


@pytest.mark.parametrize("package", ["lightning", "pytorch_lightning"])
def test_lightning_logger(tmp_path, package):
    _require(package)
    code = LIGHTNING
    if package == "pytorch_lightning":   # the standalone package has its own Logger class
        code = code.replace("import sys, torch, lightning as L",
                            "import sys, torch, pytorch_lightning as L").replace(
            "L.pytorch.loggers.Logger", "L.loggers.Logger")
        assert "pytorch_lightning as L" in code
    proc = _child(code, tmp_path)
    assert "after fit: running" in proc.stdout          # open for trainer.test
    assert "after failure: failed" in proc.stdout       # closed at once by finalize("failed")

    ok = tmp_path / "exps" / "lit" / "ok"
    meta = expman.load_run(ok)
    assert meta["status"] == "finished"                 # closed at exit
    assert expman.load_config(ok) == {"lr": 0.05, "hidden": 8, "fail_at": None}
    rows = expman.load_metrics(ok).to_pylist()
    # 4 batches x 3 epochs: global steps 0..11, validation at the last step of each epoch
    # in the same row as that step's training loss, then the test metrics
    assert [r["step"] for r in rows] == list(range(12)) + [12]
    assert all(r["train/loss"] is not None for r in rows[:12])
    assert [r["step"] for r in rows if r["val/loss"] is not None] == [3, 7, 11]
    assert [r["epoch"] for r in rows[:12]] == [0.0] * 4 + [1.0] * 4 + [2.0] * 4
    assert rows[-1]["test/loss"] is not None

    bad = tmp_path / "exps" / "lit" / "bad"
    meta = expman.load_run(bad)
    assert meta["status"] == "failed" and meta["error"] == "RuntimeError: loss diverged"
    assert expman.load_metrics(bad).column("step").to_pylist()[-1] == 4
    assert "RuntimeError: loss diverged" in (bad / "run.log").read_text()
    assert not (tmp_path / "lightning_logs").exists()


def test_transformers_callback(tmp_path):
    _require("transformers", "accelerate")
    _child(TRANSFORMERS, tmp_path)
    run = tmp_path / "exps" / "hf" / "ok"
    meta = expman.load_run(run)
    assert meta["status"] == "finished"
    config = expman.load_config(run)
    assert config["args"]["learning_rate"] == 1e-3 and config["args"]["max_steps"] == 6
    assert config["model"]["n_layer"] == 1 and config["model"]["vocab_size"] == 64
    rows = expman.load_metrics(run).to_pylist()
    assert [r["step"] for r in rows if r["train/loss"] is not None] == [2, 4, 6]
    assert [r["step"] for r in rows if r["eval/loss"] is not None] == [3, 6, 6]
    assert rows[0]["train/learning_rate"] > 0 and rows[0]["train/epoch"] == 0.25
    # the end-of-training totals are summary values, not rows
    assert "train/train_runtime" not in rows[0]
    assert meta["summary"]["train/runtime"] > 0 and "train/avg_loss" in meta["summary"]

    proc = _child(TRANSFORMERS, tmp_path, "fail", check=False)
    assert proc.returncode == 1 and "corrupt sample 20" in proc.stderr
    meta = expman.load_run(tmp_path / "exps" / "hf" / "fail")
    assert meta["status"] == "failed" and "corrupt sample 20" in meta["error"]
    assert expman.load_metrics(tmp_path / "exps" / "hf" / "fail").column(
        "step").to_pylist()[:1] == [2]


def test_keras_callback(tmp_path):
    _require("keras")
    proc = _child(KERAS, tmp_path)
    assert "after fit: finished" in proc.stdout          # close_at_end=True
    run = tmp_path / "exps" / "keras" / "ok"
    config = expman.load_config(run)
    assert config["fit"]["epochs"] == 3 and config["fit"]["steps"] == 3
    assert config["optimizer"]["name"] == "adam"
    rows = expman.load_metrics(run).to_pylist()
    # 3 batches an epoch: steps count batches; epoch rows carry val/ metrics and "epoch"
    assert [(r["step"], r["epoch"]) for r in rows if r["epoch"] is not None] == [
        (3, 1.0), (6, 2.0), (9, 3.0)]
    assert all(r["val/loss"] is not None for r in rows if r["epoch"] is not None)
    assert [r["step"] for r in rows if r["epoch"] is None] == [2, 4, 8]   # every 2 batches
    assert all(r["train/loss"] is not None and r["train/mae"] is not None for r in rows)

    proc = _child(KERAS, tmp_path, "fail", check=False)
    assert proc.returncode == 1 and "loss is NaN" in proc.stderr
    meta = expman.load_run(tmp_path / "exps" / "keras" / "fail")
    assert meta["status"] == "failed" and "loss is NaN" in meta["error"]


def test_callbacks_log_into_the_run_of_init(tmp_path):
    """With expman.init() open and no run options, a callback logs into that run and leaves
    closing it to the script."""
    _require("keras")
    code = KERAS.replace(
        'callback = expman.KerasCallback("keras", base_dir="exps", run_name="fail" if FAIL '
        'else "ok",\n                                    log_every_n_batches=2, '
        'close_at_end=not FAIL)',
        'expman.init("mine", base_dir="exps", run_name="main", config={"seed": 0})\n'
        '    callback = expman.KerasCallback()')
    assert "expman.init" in code
    proc = _child(code, tmp_path)
    assert "after fit: running" in proc.stdout
    run = tmp_path / "exps" / "mine" / "main"
    assert expman.load_run(run)["status"] == "finished"
    assert expman.load_config(run)["seed"] == 0
    assert expman.load_metrics(run).num_rows == 3
    assert not os.path.exists(tmp_path / "exps" / "keras")


EXAMPLES = ["tensorboard_shim.py", "lightning_mnist_like.py", "transformers_trainer.py",
            "keras_fit.py"]


@pytest.mark.parametrize("name", EXAMPLES)
def test_examples_run(tmp_path, name):
    """Each example runs on the CPU, offline, within a deadline, and leaves a finished run."""
    _require(*{"tensorboard_shim.py": [], "lightning_mnist_like.py": ["lightning"],
                "transformers_trainer.py": ["transformers", "accelerate"],
                "keras_fit.py": ["keras", "torch"]}[name])
    path = os.path.join(REPO, "examples", name)
    env = child_env(REPO, EXPMAN_DIR=str(tmp_path / "exps"), HF_HUB_OFFLINE="1",
                    TRANSFORMERS_OFFLINE="1")
    _child(path, tmp_path, env=env)
    # a SummaryWriter's log_dir is a path, as torch's ("runs/shim_demo": under ./runs)
    root = tmp_path / ("runs" if name == "tensorboard_shim.py" else "exps")
    runs = [r for exp in expman.list_experiments(root)
            for r in expman.list_runs(root, exp["name"])]
    assert runs and all(r["status"] == "finished" for r in runs), runs
    assert all(r.get("rows") for r in runs), runs
