"""Where a run's wall-clock goes: training and validation seconds per epoch, totals per run.

:class:`PhaseTimes` logs, per epoch, ``time/train_s`` (from the epoch's start to the end of
its last training batch, less any validation in between: data loading, chains, updates) and,
in epochs that validate, ``time/val_s`` (the validation loop; not the sanity check).
What happens after the last batch (figures, checkpoints) is in neither. Its :meth:`totals`
(this process's seconds in ``fit``, and the sums) go into ``metrics.json`` and the summary.
"""

from __future__ import annotations

import time

import pytorch_lightning as pl

TRAIN = "time/train_s"
VAL = "time/val_s"


class PhaseTimes(pl.Callback):
    """Per-epoch ``time/train_s`` and ``time/val_s`` (module docstring); rank 0 logs them."""

    def __init__(self) -> None:
        self.fit_started: float | None = None
        self.train_total = 0.0
        self.val_total = 0.0
        self._epoch_started = 0.0
        self._last_batch_end: float | None = None
        self._val_started: float | None = None
        self._val_seconds: float | None = None
        self._val_mid_epoch = 0.0  # validation between this epoch's batches (val_check_interval)
        self._val_since_batch = 0.0

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.fit_started = time.monotonic()

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._epoch_started = time.monotonic()
        self._last_batch_end = None
        self._val_seconds = None
        self._val_mid_epoch = self._val_since_batch = 0.0

    def on_train_batch_end(self, trainer: pl.Trainer, *args: object) -> None:
        self._last_batch_end = time.monotonic()
        self._val_mid_epoch += self._val_since_batch
        self._val_since_batch = 0.0

    def on_validation_epoch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule
    ) -> None:
        self._val_started = None if trainer.sanity_checking else time.monotonic()

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._val_started is not None:
            seconds = time.monotonic() - self._val_started
            self._val_seconds = (self._val_seconds or 0.0) + seconds
            self._val_since_batch += seconds
            self.val_total += seconds
            self._val_started = None

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._last_batch_end is None:
            return
        train = self._last_batch_end - self._epoch_started - self._val_mid_epoch
        self.train_total += train
        logs = (
            {TRAIN: train} if self._val_seconds is None else {TRAIN: train, VAL: self._val_seconds}
        )
        pl_module.log_dict(logs, on_epoch=True, sync_dist=False, rank_zero_only=True)

    def totals(self) -> dict[str, float]:
        """``time/fit_s`` (this process's seconds since ``fit`` started), ``time/train_total_s``
        and ``time/val_total_s`` (the sums of this process's epochs)."""
        fit = 0.0 if self.fit_started is None else time.monotonic() - self.fit_started
        return {
            "time/fit_s": fit,
            "time/train_total_s": self.train_total,
            "time/val_total_s": self.val_total,
        }
