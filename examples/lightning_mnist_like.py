"""PyTorch Lightning with expman.LightningLogger, on synthetic MNIST-shaped data (no download).

    python examples/lightning_mnist_like.py && expman serve

save_hyperparameters() goes to config.yaml; self.log(...) metrics go to metrics.parquet at the
trainer's global step; trainer.test after fit logs into the same run.
"""
import lightning as L
import torch
from torch.utils.data import DataLoader, TensorDataset

import expman


class Classifier(L.LightningModule):
    def __init__(self, lr=1e-2, hidden=32):
        super().__init__()
        self.save_hyperparameters()
        self.net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(28 * 28, hidden),
                                       torch.nn.ReLU(), torch.nn.Linear(hidden, 10))

    def _step(self, batch, stage):
        x, y = batch
        logits = self.net(x)
        loss = torch.nn.functional.cross_entropy(logits, y)
        self.log(f"{stage}/loss", loss)
        self.log(f"{stage}/acc", (logits.argmax(1) == y).float().mean())
        return loss

    def training_step(self, batch, batch_idx):
        return self._step(batch, "train")

    def validation_step(self, batch, batch_idx):
        self._step(batch, "val")

    def test_step(self, batch, batch_idx):
        self._step(batch, "test")

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr)


def fake_mnist(n, seed):
    """Images whose label is written into a brighter row: learnable in a few steps."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 10, (n,), generator=g)
    x = torch.rand(n, 1, 28, 28, generator=g) * 0.3
    x[torch.arange(n), 0, y * 2 + 4, :] += 1.0
    return DataLoader(TensorDataset(x, y), batch_size=64)


if __name__ == "__main__":
    torch.manual_seed(0)
    logger = expman.LightningLogger("mnist_like", run_name="mlp_lightning")
    trainer = L.Trainer(max_epochs=2, logger=logger, log_every_n_steps=5, accelerator="cpu",
                        enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False)
    model = Classifier()
    trainer.fit(model, fake_mnist(1024, 0), fake_mnist(256, 1))
    trainer.test(model, fake_mnist(256, 2), verbose=False)
    logger.close()   # or let the script end: the run closes (finished) at exit
