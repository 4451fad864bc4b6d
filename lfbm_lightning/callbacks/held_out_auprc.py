"""The held-out AUPRC during training: ``val/auprc`` on the validation anomalies and
``test/auprc`` on the test split every N epochs, so the sweep tables can apply each checkpoint
rule to a run's ``csv/metrics.csv`` (:mod:`~lfbm_lightning.reporting.checkpoint_rules`).

Score of an image x: ``||x - g(z)||^2 / (2 sigma^2) - log p(z)`` (the anomaly task's joint
score, -log p(x, z) + const) after the model's deterministic evaluation fit of z; AUPRC with the
held-out digit as the positive class (:func:`~lfbm_lightning.metrics.precision_recall.auprc`).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities.exceptions import SIGTERMException

from lfbm_lightning.callbacks.run_guards import StopOnSignal
from lfbm_lightning.metrics.precision_recall import auprc
from lfbm_lightning.models.energy import reconstruction_energy

SPLITS = {"val_anomaly": "val/auprc", "test": "test/auprc"}
"""Data-module split -> the metric logged for it."""


def scored_rows(labels: torch.Tensor, max_images: int | None) -> list[int]:
    """The rows of a labelled split (labels (N,) in {0, 1}) to score: all, or a fixed seeded
    subset of ``max_images`` with each class in its share of the split (at least one image of
    each), in row order."""
    if max_images is None or max_images >= len(labels):
        return list(range(len(labels)))
    generator = torch.Generator().manual_seed(0)
    n_anomalies = int(labels.sum())
    share = round(max_images * n_anomalies / len(labels))
    share = min(max(share, 1), n_anomalies, max_images - 1)
    rows = []
    for label, count in ((1, share), (0, max_images - share)):
        members = torch.nonzero(labels == label).flatten()
        rows += members[torch.randperm(len(members), generator=generator)[:count]].tolist()
    return sorted(rows)


def stop_requested(trainer: pl.Trainer) -> bool:
    """Whether a SIGTERM or SIGINT asked the run to stop (:class:`StopOnSignal`'s record; under
    DDP every rank stops together, or none)."""
    stop = any(isinstance(cb, StopOnSignal) and cb.stop.stopping for cb in trainer.callbacks)
    if trainer.world_size > 1:
        stop = trainer.strategy.reduce_boolean_decision(stop, all=False)
    return stop


class HeldOutAUPRC(pl.Callback):
    """Log the held-out AUPRC of the model every ``every_n_epochs`` epochs (0 = never, the
    default), at the end of the training epoch.

    ``val/auprc`` is scored on the data module's ``val_anomaly`` split (validation images and
    the held-out digit's images moved out of test by ``dataset.holdout_val_fraction``; not
    logged without them), ``test/auprc`` on its test split: a checkpoint chosen by
    ``test/auprc`` is selected on the test set. The fit is deterministic and never draws from
    the training noise stream, so the callback does not change the run it watches. Every
    rank scores the whole set; rank 0 logs.

    The data module must hold a held-out digit; train.py's config checks refuse a run without
    one, and the settings' ranges, before any work.

    With ``best_checkpoint`` set, an evaluation whose ``val/auprc`` is above every earlier one
    (of this run, resumes included) saves the whole training state there (atomic, as
    ``fid_best.ckpt``) and logs ``val/auprc_best`` and ``val/auprc_best_epoch`` (0-based): the
    checkpoint of the ``best_val`` rule, which ``evaluate_checkpoint=auprc_best`` scores after
    fit.

    Args:
        every_n_epochs: period in epochs; 0 switches the callback off.
        n_steps: noise-free fit steps per image (None: the model's evaluation chain,
            ``inference.eval_steps``).
        step_size: the fit's step size (None: ``inference.eval_step_size``).
        max_images: score at most this many images of each split, a fixed seeded subset
            that keeps the anomaly fraction (None: all).
        best_checkpoint: where to keep the checkpoint of the highest ``val/auprc`` (None:
            nowhere).
    """

    def __init__(
        self,
        every_n_epochs: int = 0,
        n_steps: int | None = None,
        step_size: float | None = None,
        max_images: int | None = None,
        best_checkpoint: str | Path | None = None,
    ) -> None:
        self.every_n_epochs = every_n_epochs
        self.n_steps = n_steps
        self.step_size = step_size
        self.max_images = max_images
        self.best_checkpoint = None if best_checkpoint is None else Path(best_checkpoint)
        self.best_auprc = -math.inf
        self.best_epoch: int | None = None

    def state_dict(self) -> dict[str, Any]:
        return {"best_auprc": self.best_auprc, "best_epoch": self.best_epoch}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.best_auprc = float(state_dict["best_auprc"])
        self.best_epoch = state_dict["best_epoch"]

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        epoch = trainer.current_epoch + 1
        if not self.every_n_epochs or epoch % self.every_n_epochs:
            return
        was_training = pl_module.training
        pl_module.eval()
        splits = trainer.datamodule.splits
        values = {
            name: self.split_auprc(trainer, pl_module, splits[split])
            for split, name in SPLITS.items()
            if split in splits
        }
        pl_module.train(was_training)
        for name, value in values.items():
            pl_module.log(name, value, rank_zero_only=True)
        if self.best_checkpoint is not None and "val/auprc" in values:
            val = trainer.strategy.broadcast(values["val/auprc"], src=0)
            self.keep_if_best(trainer, pl_module, val)

    def keep_if_best(self, trainer: pl.Trainer, pl_module: pl.LightningModule, val: float) -> None:
        """Save ``best_checkpoint`` when ``val`` (rank 0's ``val/auprc``, on every rank) is the
        highest yet; every rank calls it (saving is a collective under DDP; rank 0 writes)."""
        if val > self.best_auprc:
            self.best_auprc, self.best_epoch = val, trainer.current_epoch
            trainer.save_checkpoint(self.best_checkpoint)
        pl_module.log("val/auprc_best", self.best_auprc, rank_zero_only=True)
        pl_module.log("val/auprc_best_epoch", float(self.best_epoch), rank_zero_only=True)

    def split_auprc(self, trainer: pl.Trainer, pl_module: pl.LightningModule, dataset) -> float:
        """AUPRC of the joint score over ``dataset`` (or its subset :func:`scored_rows`)."""
        rows = scored_rows(dataset.labels, self.max_images)
        batch_size = int(pl_module.config["dataset"]["batch_size"])
        scores, labels = [], []
        for start in range(0, len(rows), batch_size):
            if stop_requested(trainer):
                raise SIGTERMException()
            items = [dataset[i] for i in rows[start : start + batch_size]]
            x = torch.stack([item["image"] for item in items]).to(pl_module.device)
            index = torch.stack([item["index"] for item in items]).to(pl_module.device)
            x_hat, z = pl_module.reconstruct(
                x, n_steps=self.n_steps, step_size=self.step_size, index=index
            )
            with torch.no_grad():
                energy = reconstruction_energy(x, x_hat, pl_module.sigma).double()
                scores.append((energy - pl_module.prior.log_prob(z).double()).cpu())
            labels += [int(item["label"]) for item in items]
        return auprc(torch.cat(scores), torch.tensor(labels))
