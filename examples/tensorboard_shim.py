"""Switch a TensorBoard script to expman by changing one import.

    python examples/tensorboard_shim.py && expman serve runs

As with torch's writer, log_dir is the directory the run goes under: experiment "shim_demo"
in the root ./runs, a run named by time. Scalars of one global_step land in one row; the
hparams go to config.yaml and the final metrics next to them in the runs table.
"""
import math
import random

# from torch.utils.tensorboard import SummaryWriter       # before
from expman import SummaryWriter  # after

with SummaryWriter("runs/shim_demo") as writer:
    writer.add_hparams({"lr": 0.01, "batch_size": 64}, {"hparam/best_acc": 0.0})
    best = 0.0
    for step in range(500):
        loss = 2.0 * math.exp(-step / 100) + random.gauss(0, 0.02)
        writer.add_scalar("train/loss", loss, step)
        writer.add_scalar("train/acc", 1 - loss / 2.2, step)
        if step % 50 == 49:
            writer.add_scalars("loss", {"train": loss, "val": loss * 1.1}, step)
            best = max(best, 1 - loss * 1.1 / 2.2)
    writer.add_text("notes", f"best val acc {best:.3f}", step)
    writer.add_hparams({"lr": 0.01, "batch_size": 64}, {"hparam/best_acc": best})
