"""Callbacks that tests put into a real ``train.py`` run (``+callbacks.x._target_=...``) to make
something happen at a known point: a SIGKILL in the middle of a checkpoint write, a full disk,
a SIGTERM mid-epoch or in any phase of a run, NaN in every batch or on one DDP rank."""

from __future__ import annotations

import io
import os
import signal
import time
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


class SigkillOnce(pl.Callback):
    """SIGKILL this process at batch 1 of epoch ``epoch``, once per run directory (a marker
    file ``sigkilled`` remembers it): a job lost to the out-of-memory killer, say."""

    def __init__(self, epoch: int = 1) -> None:
        self.epoch = epoch

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        marker = Path(trainer.default_root_dir) / "sigkilled"
        if (trainer.current_epoch, batch_idx) == (self.epoch, 1) and not marker.exists():
            marker.touch()
            os.kill(os.getpid(), signal.SIGKILL)


class SigtermAt(pl.Callback):
    """Send SIGTERM to this process at batch ``batch`` of epoch ``epoch`` (a preemption)."""

    def __init__(self, epoch: int = 1, batch: int = 1) -> None:
        self.epoch, self.batch = epoch, batch

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if (trainer.current_epoch, batch_idx) == (self.epoch, self.batch):
            os.kill(os.getpid(), signal.SIGTERM)


class SignalInPhase(pl.Callback):
    """Send signal ``signal`` (``TERM``, ``INT``) to this process in phase ``phase`` of the run
    (a name of :data:`lfbm_lightning.runtime.preemption.PHASES`; ``training``: at epoch 0's
    batch 1; ``evaluation_after_fit``: as its task number ``task`` starts), then go on with
    the phase for ``hold`` seconds and touch ``<run dir>/phase_went_on``: that file shows that
    the signal did not stop the phase."""

    def __init__(self, phase: str, signal: str = "TERM", task: int = 0, hold: float = 30) -> None:
        self.phase, self.signum, self.task, self.hold = phase, f"SIG{signal}", task, hold

    def _send(self, trainer) -> None:
        os.kill(os.getpid(), getattr(signal, self.signum))
        time.sleep(self.hold)
        (Path(trainer.default_root_dir) / "phase_went_on").touch()

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, *args) -> None:
        phase = "sanity_check" if trainer.sanity_checking else "validation"
        if phase == self.phase and batch_idx == 0:
            self._send(trainer)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if self.phase == "training" and (trainer.current_epoch, batch_idx) == (0, 1):
            os.kill(os.getpid(), getattr(signal, self.signum))

    def on_train_end(self, trainer, pl_module) -> None:
        if self.phase == "end_figures":
            self._send(trainer)

    def on_fit_end(self, trainer, pl_module) -> None:
        if self.phase != "evaluation_after_fit":
            return
        from lfbm_lightning.run import after_fit  # noqa: PLC0415 - patched for this run only

        evaluate, calls = after_fit.evaluate, []

        def signal_at_task(cfg):
            if len(calls) == self.task:
                self._send(trainer)
            calls.append(cfg)
            return evaluate(cfg)

        after_fit.evaluate = signal_at_task


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


class SigtermInPeriodicAUPRC(pl.Callback):
    """Send SIGTERM to this process as the periodic held-out AUPRC (``callbacks.auprc``) starts
    scoring its first split."""

    def on_fit_start(self, trainer, pl_module) -> None:
        from lfbm_lightning.callbacks.held_out_auprc import HeldOutAUPRC  # noqa: PLC0415

        periodic = next(cb for cb in trainer.callbacks if isinstance(cb, HeldOutAUPRC))
        score = periodic.split_auprc

        def signalled(*args):
            os.kill(os.getpid(), signal.SIGTERM)
            return score(*args)

        periodic.split_auprc = signalled
