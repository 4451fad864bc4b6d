"""Evaluation metrics during training: FID of prior samples every N epochs, and the
checkpoint of the lowest FID so far (``fid_best.ckpt``, how the authors chose their models).

The validation reconstruction MSE needs no callback: ``LatentPriorModel.validation_step`` logs
``val/mse`` every ``trainer.check_val_every_n_epoch`` epochs.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytorch_lightning as pl

from lfbm_lightning.errors import InceptionWeightsMissing
from lfbm_lightning.metrics.fid import frechet_distance
from lfbm_lightning.metrics.fid_statistics import (
    InceptionSettings,
    sample_stats,
    seeded_rng,
    training_reference_stats,
)


class FIDCallback(pl.Callback):
    """Log ``val/fid``, the FID of ``n_samples`` decoded prior samples against the training set,
    every ``every_n_epochs`` epochs (0 = never, the default: Inception-v3 costs about 0.5 s per
    image on a CPU).

    Every evaluation decodes the same latent draws (seed ``seed``) and leaves the training
    run's random state untouched. The training-set statistics are computed at the first
    evaluation and cached in ``stats_dir`` (shared with ``evaluate.py task=synthesis``). The
    Inception weights are looked up when training starts, so a missing file fails at once.
    Under DDP every rank draws and features its share of the samples and of an uncached
    training set; rank 0 computes the FID and logs.

    With ``best_checkpoint`` set, an evaluation whose FID is below every earlier one (of this
    run, resumes included: the best is kept in the callback's checkpoint state) saves the
    whole training state there through the Trainer's checkpoint writer (atomic,
    ``runtime/checkpoint_io.py``), and ``val/fid_best`` and ``val/fid_best_epoch`` (0-based,
    as the csv's ``epoch``) are logged. The paper's FIDs are of such checkpoints
    (docs/paper.md#fid).

    Args:
        every_n_epochs: period in epochs; 0 switches the callback off.
        n_samples: prior samples per evaluation (small: a cheap, biased FID to follow a run).
        reference_images: training images in the reference (None: all of them).
        inception_weights: local Inception weights file (see
            :func:`~lfbm_lightning.metrics.inception.resolve_inception_weights`).
        allow_download: let torch-fidelity download the weights (needs network).
        feature_layer: Inception layer, 2048 (pool3) for FID.
        batch_size: images per Inception forward pass and per decoded batch of samples.
        stats_dir: cache directory of the training-set statistics.
        seed: seed of the prior samples.
        best_checkpoint: where to keep the checkpoint of the lowest FID (None: nowhere).
    """

    def __init__(
        self,
        every_n_epochs: int = 0,
        n_samples: int = 5000,
        reference_images: int | None = None,
        inception_weights: str | None = None,
        allow_download: bool = False,
        feature_layer: int | str = 2048,
        batch_size: int = 64,
        stats_dir: str | Path = "fid_stats",
        seed: int = 0,
        best_checkpoint: str | Path | None = None,
    ) -> None:
        if every_n_epochs < 0:
            raise ValueError(f"callbacks.fid.every_n_epochs must be >= 0, got {every_n_epochs}")
        self.every_n_epochs = every_n_epochs
        self.n_samples = n_samples
        self.reference_images = reference_images
        self.metrics = {
            "inception_weights": inception_weights,
            "allow_download": allow_download,
            "feature_layer": feature_layer,
            "batch_size": batch_size,
        }
        self.stats_dir = stats_dir
        self.seed = seed
        self.best_checkpoint = None if best_checkpoint is None else Path(best_checkpoint)
        self.best_fid = math.inf
        self.best_epoch: int | None = None
        self.inception: InceptionSettings | None = None

    def state_dict(self) -> dict[str, Any]:
        return {"best_fid": self.best_fid, "best_epoch": self.best_epoch}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.best_fid = float(state_dict["best_fid"])
        self.best_epoch = state_dict["best_epoch"]

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.every_n_epochs == 0:
            return
        try:  # on every rank, so that all of them stop together when the weights are missing
            self.inception = InceptionSettings.from_config(
                self.metrics, pl_module.device, progress=False
            )
        except InceptionWeightsMissing as err:
            raise InceptionWeightsMissing(
                "FID callback (callbacks.fid.every_n_epochs > 0): set "
                f"callbacks.fid.inception_weights, the training run's name of the setting "
                f"below, or callbacks.fid.every_n_epochs=0. {err}"
            ) from err

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        epoch = trainer.current_epoch + 1
        if self.inception is None or epoch % self.every_n_epochs:
            return
        was_training = pl_module.training
        pl_module.eval()
        batch_size = self.inception.batch_size  # every rank draws and features its share
        samples = sample_stats(pl_module, self.n_samples, batch_size, self.inception, self.seed)
        pl_module.train(was_training)
        fid = None
        # every rank features its share of an uncached reference (a collective); (a DataLoader
        # draws its base seed from torch's RNG: keep the run's state)
        with seeded_rng(self.seed, pl_module.device):
            reference = training_reference_stats(
                pl_module.config,
                trainer.datamodule.splits["train"],
                self.stats_dir,
                self.inception,
                self.reference_images,
            )
        if trainer.is_global_zero:
            fid = frechet_distance(samples, reference)
            pl_module.log("val/fid", fid, rank_zero_only=True)
        if self.best_checkpoint is not None:
            self.keep_if_best(trainer, pl_module, trainer.strategy.broadcast(fid, src=0))

    def keep_if_best(self, trainer: pl.Trainer, pl_module: pl.LightningModule, fid: float) -> None:
        """Save ``best_checkpoint`` when ``fid`` (rank 0's, on every rank) is the lowest yet;
        every rank calls it (saving is a collective under DDP; rank 0 writes)."""
        if fid < self.best_fid:
            self.best_fid, self.best_epoch = fid, trainer.current_epoch
            trainer.save_checkpoint(self.best_checkpoint)
        if self.best_epoch is not None:
            pl_module.log("val/fid_best", self.best_fid, rank_zero_only=True)
            pl_module.log("val/fid_best_epoch", float(self.best_epoch), rank_zero_only=True)
