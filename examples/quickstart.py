"""The smallest useful expman script: python examples/quickstart.py, then expman serve."""
import math
import random

import expman

expman.init("quickstart", config={"lr": 0.01, "optimizer": {"name": "adam", "betas": [0.9, 0.999]}},
            tags=["example"])
for step in range(2000):
    loss = 2.0 * math.exp(-step / 400) + random.gauss(0, 0.03)
    metrics = {"train/loss": loss, "train/acc": 1 - loss / 2.2}
    if step % 100 == 99:
        metrics["val/loss"] = loss * 1.1
    expman.log_metrics(metrics, step=step)
expman.log_scalar("best/val_loss", loss * 1.1)
expman.info("done")
# no close() needed: the run is closed (and flushed) when the script exits
