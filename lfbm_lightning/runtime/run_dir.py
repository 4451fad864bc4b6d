"""One run per run directory: a lock while it runs, no silent overwrite of an earlier run, and
a resume that appends to the earlier run's records.

- :func:`lock_run_dir` holds an exclusive ``fcntl.flock`` on ``<run>/.lock`` for the whole run
  (rank 0 only); a second run into the same directory is refused at once. The kernel drops the
  lock when the process ends, however it ends, so a killed run leaves no stale lock.
- :func:`check_fresh_run` refuses a run without ``ckpt_path`` into a directory that already
  holds checkpoints (it would overwrite them), naming the resume command and the way to start
  elsewhere. A SLURM requeue (Lightning's ``hpc_ckpt_*.ckpt`` in the run directory) is allowed:
  Lightning resumes from that file by itself.
- :func:`append_csv_on_resume` makes Lightning's CSV logger append to ``csv/metrics.csv``
  instead of deleting it when a resumed run starts logging.

All checks happen before anything is written, so a refused run deletes and truncates nothing;
``.hydra/*.yaml`` too is written only after them
(:mod:`lfbm_lightning.runtime.job_record`).
"""

from __future__ import annotations

import csv
import fcntl
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pytorch_lightning.loggers import CSVLogger
from pytorch_lightning.loggers.csv_logs import ExperimentWriter

from lfbm_lightning.errors import ConfigError

LOCK_NAME = ".lock"


@contextmanager
def lock_run_dir(run_dir: str | Path, enabled: bool = True) -> Iterator[Path | None]:
    """Hold an exclusive lock on ``<run_dir>/.lock`` inside the ``with`` block.

    Args:
        run_dir: the run's output directory (created if missing).
        enabled: False on DDP ranks other than 0 (they run inside rank 0's lock).

    Raises:
        ConfigError: another process holds the lock.
    """
    if not enabled:
        yield None
        return
    lock_path = Path(run_dir) / LOCK_NAME
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "?"
            raise ConfigError(
                f"another run (pid {holder}) is using {run_dir}: its lock {lock_path} is held. "
                "Wait for it to end or write this run elsewhere (paths.output_dir=... or "
                "hydra.run.dir=...)"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield lock_path
    finally:
        os.close(fd)  # releases the lock


def existing_checkpoints(run_dir: str | Path) -> list[Path]:
    """The ``.ckpt`` files of an earlier run in ``<run_dir>/checkpoints``."""
    return sorted((Path(run_dir) / "checkpoints").glob("*.ckpt"))


def slurm_requeue_checkpoints(run_dir: str | Path) -> list[Path]:
    """Lightning's SLURM requeue checkpoints (``hpc_ckpt_<n>.ckpt``) in ``run_dir``."""
    return sorted(Path(run_dir).glob("hpc_ckpt_*.ckpt"))


def check_fresh_run(run_dir: str | Path, ckpt_path: str | None) -> None:
    """Refuse a fresh run (no ``ckpt_path``) into a directory holding an earlier run's
    checkpoints.

    Raises:
        ConfigError: naming the resume setting and the way to start elsewhere.
    """
    if ckpt_path or slurm_requeue_checkpoints(run_dir):
        return
    found = existing_checkpoints(run_dir)
    if found:
        last = Path(run_dir) / "checkpoints" / "last.ckpt"
        raise ConfigError(
            f"{run_dir} already holds a run ({', '.join(p.name for p in found[:3])} in "
            f"{last.parent}) that a new run would overwrite: resume it with ckpt_path={last}, "
            "or start a new run elsewhere (paths.output_dir=... or hydra.run.dir=...)"
        )


def check_epochs_left(ckpt_path: str, epochs_done: int, max_epochs: int) -> None:
    """Refuse a resume that has no epoch left to train (it would only rewrite the records).

    Args:
        ckpt_path: the checkpoint resumed.
        epochs_done: epochs the checkpoint has finished (Lightning's stored ``epoch`` + 1 for
            an end-of-epoch checkpoint).
        max_epochs: ``trainer.max_epochs`` (-1: no limit).

    Raises:
        ConfigError: ``max_epochs`` is not above ``epochs_done``.
    """
    if 0 <= max_epochs <= epochs_done:
        raise ConfigError(
            f"trainer.max_epochs={max_epochs} but {ckpt_path} has finished {epochs_done} "
            f"epochs: set trainer.max_epochs above {epochs_done} to train on"
        )


class AppendingExperimentWriter(ExperimentWriter):
    """Lightning's CSV writer, but keeping an existing ``metrics.csv`` and its columns: new
    rows are appended (the file is rewritten with a wider header when new columns appear, old
    rows kept)."""

    def _check_log_dir_exists(self) -> None:
        if not os.path.isfile(self.metrics_file_path):
            return
        with open(self.metrics_file_path, newline="") as file:
            header = next(csv.reader(file), [])
        self.metrics_keys = header


def append_csv_on_resume(loggers: Sequence[Any]) -> None:
    """Make every ``CSVLogger`` in ``loggers`` append to its existing ``metrics.csv``."""
    for logger in loggers:
        if isinstance(logger, CSVLogger):
            os.makedirs(logger.log_dir, exist_ok=True)
            logger._experiment = AppendingExperimentWriter(log_dir=logger.log_dir)
