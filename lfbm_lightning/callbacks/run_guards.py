"""Callbacks that stop a run which would otherwise end looking normal: too many skipped
(non-finite) batches, and a SIGTERM (how schedulers preempt) or SIGINT that must stop the run
promptly and leave a checkpoint."""

from __future__ import annotations

import logging
from pathlib import Path

import pytorch_lightning as pl
from pytorch_lightning.utilities.exceptions import SIGTERMException

from lfbm_lightning.errors import DivergenceError
from lfbm_lightning.runtime import preemption
from lfbm_lightning.runtime.preemption import StopSignals

log = logging.getLogger(__name__)


class SkippedBatchesGuard(pl.Callback):
    """Stop the run once more than ``max_fraction`` of an epoch's batches were skipped.

    With ``model.on_divergence=skip`` the model skips a batch whose z, energy, loss or
    gradient is non-finite and counts it in ``pl_module.skipped_batches``. If ``k`` batches of
    an epoch of ``n`` are skipped and ``k > max_fraction * n``, the epoch cannot end within the
    limit, so the run stops at once with a :class:`DivergenceError` (no checkpoint of that
    epoch is written). Under DDP each rank counts its own batches and all stop when one must.

    Args:
        max_fraction: largest allowed fraction of skipped batches per epoch, in [0, 1]
            (``model.max_skipped_fraction``; 1 never stops).
    """

    def __init__(self, max_fraction: float) -> None:
        self.max_fraction = float(max_fraction)
        self._skipped_before_epoch = 0

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._skipped_before_epoch = int(getattr(pl_module, "skipped_batches", 0))

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs, batch, batch_idx: int
    ) -> None:
        skipped = int(getattr(pl_module, "skipped_batches", 0)) - self._skipped_before_epoch
        n_batches = trainer.num_training_batches
        stop = skipped > self.max_fraction * n_batches
        if trainer.world_size > 1:  # every rank stops together, or none
            stop = trainer.strategy.reduce_boolean_decision(stop, all=False)
        if not stop:
            return
        raise DivergenceError(
            f"{skipped} of the {n_batches} batches of epoch {trainer.current_epoch} were "
            f"skipped as non-finite, more than model.max_skipped_fraction={self.max_fraction}: "
            "the run stopped (lower the learning rates or inference.step_size, or raise "
            "model.max_skipped_fraction)"
        )


class StopOnSignal(pl.Callback):
    """Keep ``stop``'s phase (:mod:`lfbm_lightning.runtime.preemption`) in step with the
    Trainer, and stop after a training batch once a SIGTERM or SIGINT was received (under DDP
    every rank stops together when one received it). Put it first in the callback list, so
    that the end figures of the other callbacks' ``on_train_end`` run in that phase.
    """

    def __init__(self, stop: StopSignals) -> None:
        self.stop = stop

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.stop.enter(preemption.SETUP)

    def on_sanity_check_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.stop.enter(preemption.SANITY_CHECK)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.stop.enter(preemption.TRAINING)

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.sanity_checking:
            self.stop.enter(preemption.VALIDATION)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.sanity_checking:
            self.stop.enter(preemption.TRAINING)

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs, batch, batch_idx: int
    ) -> None:
        stop = self.stop.stopping
        if trainer.world_size > 1:  # every rank stops together, or none
            stop = trainer.strategy.reduce_boolean_decision(stop, all=False)
        if stop:
            raise SIGTERMException()

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.stop.enter(preemption.END_FIGURES)


class CheckpointOnSigterm(pl.Callback):
    """On SIGTERM or SIGINT, save ``path`` (``last.ckpt``) before the Trainer tears down.

    Lightning turns a SIGTERM into a ``SIGTERMException`` after the current batch (every rank
    together under DDP), as :class:`StopOnSignal` does a SIGINT, and the signal handler raises
    one at once outside training batches; this callback's ``on_exception`` then saves the
    state reached, through the Trainer's atomic ``CheckpointIO``, so that ``ckpt_path=<path>``
    continues the run from there. Before training (``stop.phase`` setup or sanity check) it
    saves only a fresh run's first ``path`` and otherwise keeps the one resumed from; after
    training it keeps the final one. ``saved`` says whether it wrote.
    """

    def __init__(self, path: str | Path, stop: StopSignals | None = None) -> None:
        self.path = Path(path)
        self.stop = stop
        self.saved = False

    def on_exception(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException
    ) -> None:
        if not isinstance(exception, SIGTERMException):
            return
        phase = self.stop.phase if self.stop is not None else preemption.TRAINING
        fresh_sanity_check = phase == preemption.SANITY_CHECK and not self.path.is_file()
        if phase not in (preemption.TRAINING, preemption.VALIDATION) and not fresh_sanity_check:
            log.warning("stopped during %s: kept %s", phase, self.path)
            return
        trainer.save_checkpoint(self.path)
        self.saved = True
        log.warning("stopped: saved %s at epoch %d", self.path, trainer.current_epoch)
