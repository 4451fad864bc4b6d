"""Callbacks that tests put into a real ``train.py`` run (``+callbacks.x._target_=...``) to make
something happen at a known point: a SIGKILL in the middle of a checkpoint write, a full disk,
a SIGTERM mid-epoch, NaN in every batch or on one DDP rank."""

from __future__ import annotations

import io
import os
import signal
from pathlib import Path

import pytorch_lightning as pl
import torch

from lfbm_lightning.runtime import checkpoint_io


class KillDuringCheckpointWrite(pl.Callback):
    """From epoch ``epoch`` on, the next checkpoint write stops half way: half the bytes are in
    the temp file when the process SIGKILLs itself (a deterministic kill during the write)."""

    def __init__(self, epoch: int = 1) -> None:
        self.epoch = epoch

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        if trainer.current_epoch < self.epoch:
            return

        def dump_half_then_die(checkpoint, file) -> None:
            buffer = io.BytesIO()
            torch.save(checkpoint, buffer)
            file.write(buffer.getvalue()[: buffer.tell() // 2])
            file.flush()
            os.kill(os.getpid(), signal.SIGKILL)

        checkpoint_io._dump = dump_half_then_die


class FillDiskBeforeSave(pl.Callback):
    """At the first checkpoint save of epoch ``epoch``, fill the run directory's filesystem
    (a small tmpfs in the test) but for ``spare`` bytes: too few for the checkpoint, enough
    for the small CSV and JSON files written after it."""

    def __init__(self, epoch: int = 1, spare: int = 256 * 1024) -> None:
        self.epoch, self.spare = epoch, spare

    def on_save_checkpoint(self, trainer, pl_module, checkpoint) -> None:
        if trainer.current_epoch < self.epoch:
            return
        filler = Path(trainer.default_root_dir) / "filler"
        chunk = b"\0" * 65536
        try:
            with open(filler, "ab") as f:
                while True:
                    f.write(chunk)
                    f.flush()
        except OSError:
            pass
        os.truncate(filler, max(0, filler.stat().st_size - self.spare))


class SigtermAt(pl.Callback):
    """Send SIGTERM to this process at batch ``batch`` of epoch ``epoch`` (a preemption)."""

    def __init__(self, epoch: int = 1, batch: int = 1) -> None:
        self.epoch, self.batch = epoch, batch

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if (trainer.current_epoch, batch_idx) == (self.epoch, self.batch):
            os.kill(os.getpid(), signal.SIGTERM)


class NaNEveryBatch(pl.Callback):
    """Put a NaN pixel into every training batch from epoch ``epoch`` on."""

    def __init__(self, epoch: int = 0) -> None:
        self.epoch = epoch

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.current_epoch >= self.epoch:
            batch["image"][0, 0, 0, 0] = float("nan")


class NaNOnRank(pl.Callback):
    """Put a NaN pixel into batch ``batch`` of epoch ``epoch`` on global rank ``rank`` alone
    (a divergence that one DDP rank sees and the others do not)."""

    def __init__(self, rank: int = 1, epoch: int = 1, batch: int = 0) -> None:
        self.rank, self.epoch, self.batch = rank, epoch, batch

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if (trainer.global_rank, trainer.current_epoch, batch_idx) == (
            self.rank,
            self.epoch,
            self.batch,
        ):
            batch["image"][0, 0, 0, 0] = float("nan")
