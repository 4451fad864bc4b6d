"""PNG grids of prior samples and reconstructions during and after training."""

from __future__ import annotations

import time
from pathlib import Path

import pytorch_lightning as pl
import torch

from lfbm_lightning.callbacks.figures import log_figure
from lfbm_lightning.reporting.image_grids import comparison_grid, save_array, to_grid, to_uint8


class ImageGridCallback(pl.Callback):
    """Every ``every_n_epochs`` epochs and at the end of training, write
    ``images/samples_eXXXX.png`` (decoded prior samples) and ``images/reconstructions_eXXXX.png``
    (the first validation images beside their reconstructions, in labelled columns), plus
    ``samples.png`` and ``reconstructions.png`` for the final model; images are enlarged to
    be readable (:mod:`lfbm_lightning.reporting.image_grids`). The same figures go to every
    logger that accepts images (``log_image``: W&B, TensorBoard, MLflow; as (H, W, 3) uint8).

    Args:
        n_images: images per grid (reconstructions show n_images // 2 pairs).
        every_n_epochs: period in epochs (0 = only at the end).
    """

    def __init__(self, n_images: int = 64, every_n_epochs: int = 20) -> None:
        self.n_images = n_images
        self.every_n_epochs = every_n_epochs
        self.seconds = 0.0  # spent drawing and writing figures in this process

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        epoch = trainer.current_epoch + 1
        if self.every_n_epochs > 0 and epoch % self.every_n_epochs == 0:
            self._write(trainer, pl_module, f"e{epoch:04d}")

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._write(trainer, pl_module, None)

    def _reference_images(self, trainer: pl.Trainer) -> torch.Tensor | None:
        datamodule = trainer.datamodule
        if datamodule is None or "val" not in getattr(datamodule, "splits", {}):
            return None
        val = datamodule.splits["val"]
        n = min(self.n_images // 2, len(val))
        return torch.stack([val[i]["image"] for i in range(n)])

    def _write(self, trainer: pl.Trainer, pl_module: pl.LightningModule, tag: str | None) -> None:
        if not trainer.is_global_zero:
            return
        started = time.monotonic()
        was_training = pl_module.training
        pl_module.eval()
        # pictures must not change training: draw their randomness from a forked RNG
        with torch.random.fork_rng(devices=[pl_module.device] if pl_module.on_gpu else []):
            torch.manual_seed(0)
            samples = pl_module.sample_images(self.n_images)
        figures = {"samples": to_uint8(to_grid(samples, nrow=8))}
        x = self._reference_images(trainer)
        if x is not None:
            x = x.to(pl_module.device)
            x_hat, _ = pl_module.reconstruct(x)
            figures["reconstructions"] = comparison_grid(
                [x, x_hat], ["original", "reconstruction"], groups=4
            )
        pl_module.train(was_training)
        out_dir = Path(trainer.default_root_dir)
        for name, picture in figures.items():
            file = f"images/{name}_{tag}.png" if tag else f"{name}.png"
            save_array(picture, out_dir / file)
            log_figure(trainer.loggers, f"images/{name}", picture, trainer.global_step)
        self.seconds += time.monotonic() - started
