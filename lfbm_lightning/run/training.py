"""Build and run a training job from a composed Hydra config (the logic behind train.py).

With a DDP strategy, ``trainer.fit`` and ``evaluate_after_fit`` run inside
:func:`~lfbm_lightning.runtime.distributed.ddp_job_scope`. ``metrics.json`` records
``"status"`` (``completed``, ``interrupted``: :class:`RunInterrupted`, exit 143 or 130,
``diverged``: :class:`~lfbm_lightning.errors.DivergenceError`, or ``failed``), ``"progress"``
and, after a completed fit, the ``time/*`` seconds. ``resume=true`` resumes from
``last.ckpt`` and returns at once when the run is already complete.
Details: docs/runs.md ("Training runs").
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.utilities import rank_zero_only
from pytorch_lightning.utilities.exceptions import SIGTERMException

from lfbm_lightning.callbacks.curves import csv_metrics_file, read_epoch_metrics
from lfbm_lightning.callbacks.epoch_metrics import EpochMetricsOnEveryRank
from lfbm_lightning.callbacks.run_guards import (
    CheckpointOnSigterm,
    SkippedBatchesGuard,
    StopOnSignal,
)
from lfbm_lightning.callbacks.timing import PhaseTimes
from lfbm_lightning.checks import is_number
from lfbm_lightning.errors import CheckpointError, DivergenceError, LfbmError
from lfbm_lightning.generators import output_shape
from lfbm_lightning.models import LatentPriorModel
from lfbm_lightning.run.after_fit import (
    check_task_names,
    checkpoint_choice,
    evaluate_after_fit,
    task_names,
)
from lfbm_lightning.run.config_checks import validate_config
from lfbm_lightning.run.config_tree import print_config_tree
from lfbm_lightning.run.summary import run_summary
from lfbm_lightning.runtime.checkpoint_io import (
    AtomicCheckpointIO,
    atomic_write_text,
    remove_stale_temp_files,
    safe_load,
)
from lfbm_lightning.runtime.checkpoints import (
    check_resume_compatible,
    epochs_done,
    load_model,
    read_checkpoint,
)
from lfbm_lightning.runtime.distributed import ddp_job_scope, ddp_strategy, is_first_process
from lfbm_lightning.runtime.job_record import job_settings, record_hydra_files
from lfbm_lightning.runtime.preemption import EVALUATION_AFTER_FIT, StopSignals
from lfbm_lightning.runtime.run_dir import (
    append_csv_on_resume,
    check_epochs_left,
    check_fresh_run,
    lock_run_dir,
    slurm_requeue_checkpoints,
)

log = logging.getLogger(__name__)

CONFIG_TREE_FIRST = ("dataset", "prior", "generator", "inference", "model", "trainer")
"""Config nodes printed first in the tree at the start of a run."""


def resolved_config(cfg: DictConfig) -> dict[str, Any]:
    """The run config as a plain, fully resolved dict (without the ``hydra`` node)."""
    container = OmegaConf.to_container(cfg, resolve=True)
    container.pop("hydra", None)
    return container


def prepare_before_fit(datamodule: pl.LightningDataModule, global_rank: int) -> None:
    """Check the data files (or fetch them, with ``dataset.download=true``) before any model is
    built, so that a missing file fails within seconds.

    Fetching is left to rank 0: the other ranks of a DDP job skip it here, and inside
    ``trainer.fit`` Lightning has each node's first rank prepare the data behind a barrier, so
    no two processes download into the same directory at once.
    """
    if getattr(datamodule, "download", False) and global_rank != 0:
        return
    datamodule.prepare_data()


def check_model_matches_data(model: LatentPriorModel, channels: int, image_size: int) -> None:
    """Fail early when the generator's output is not the data's image shape."""
    produced = output_shape(model.generator, model.latent_dim)
    expected = (channels, image_size, image_size)
    if produced != expected:
        raise ValueError(
            f"the generator produces images of shape {produced} but the data set has "
            f"{expected} (dataset.channels, dataset.image_size): choose the generator that "
            "matches the data set (generator=...)"
        )


class RunInterrupted(LfbmError):
    """The run was stopped by SIGTERM or SIGINT, its checkpoint kept; ``exit_code`` is 128 +
    the signal's number (143 for SIGTERM, what a scheduler expects of a preempted job; 130 for
    SIGINT)."""

    def __init__(self, message: str, exit_code: int = 143) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def checkpoint_dir(cfg: DictConfig) -> Path:
    """Where ``last.ckpt`` is written (``callbacks.last_checkpoint.dirpath``)."""
    dirpath = OmegaConf.select(cfg, "callbacks.last_checkpoint.dirpath")
    return Path(dirpath) if dirpath else Path(cfg.paths.output_dir) / "checkpoints"


def describe_last_checkpoint(path: Path) -> str:
    """Which checkpoint a stopped run leaves: its path and epoch, or that there is none."""
    if not path.is_file():
        return f"no checkpoint was written yet ({path} does not exist)"
    try:
        epoch = safe_load(path)["epoch"]
    except (CheckpointError, KeyError):
        return f"{path} exists but cannot be read"
    return f"the last good checkpoint is {path} (epoch {epoch}): resume with ckpt_path={path}"


def write_record(out_dir: Path, record: dict[str, Any]) -> None:
    """``out_dir/metrics.json`` replaced atomically by ``record`` (an error is logged)."""
    try:
        atomic_write_text(out_dir / "metrics.json", json.dumps(record, indent=2, sort_keys=True))
    except OSError as err:  # e.g. the disk is full: the run's own error says more
        log.error("could not write %s: %s", out_dir / "metrics.json", err)


def read_record(out_dir: Path) -> dict[str, Any]:
    """``out_dir/metrics.json`` as written by an earlier run ({} when absent or unreadable)."""
    try:
        return json.loads((out_dir / "metrics.json").read_text())
    except (OSError, ValueError):
        return {}


def stop_fields(stop: StopSignals) -> dict[str, str]:
    """``status``, ``phase`` and ``signal`` of a run stopped by a signal."""
    return {"status": "interrupted", "phase": stop.received_in or stop.phase, "signal": stop.name}


def write_run_metrics(
    out_dir: Path,
    metrics: dict[str, float],
    status: str,
    trainer: pl.Trainer,
    stop: StopSignals | None = None,
) -> None:
    """``metrics.json``: the final scalar metrics, ``status``, ``progress`` (module doc) and
    the job's ``settings``, what ``lfbm-gather`` files the numbers under
    (:func:`~lfbm_lightning.runtime.job_record.job_settings`)."""
    progress = {
        "epoch": trainer.current_epoch,
        "epochs_completed": trainer.fit_loop.epoch_progress.current.processed,
        "global_step": trainer.global_step,
        "skipped_batches": int(getattr(trainer.lightning_module, "skipped_batches", 0)),
    }
    settings = job_settings(trainer.lightning_module.config)
    record = {**metrics, "status": status, "progress": progress, "settings": settings}
    if status == "interrupted" and stop is not None:
        record |= stop_fields(stop)
    write_record(out_dir, record)


def stopped_message(stop: StopSignals, where: str, last: Path, saved: bool) -> str:
    """The one line of a run stopped by a signal: where, and how to resume."""
    if saved:
        resume = f"saved {last}: resume with ckpt_path={last}"
    elif last.is_file():
        resume = describe_last_checkpoint(last)
    else:
        resume = "no checkpoint was written yet: re-run the same command to start again"
    return f"stopped by {stop.name} during {stop.received_in or stop.phase} at {where}; {resume}"


def scalar_metrics(trainer: pl.Trainer) -> dict[str, float]:
    return {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}


def train(cfg: DictConfig) -> tuple[LatentPriorModel, dict[str, float]]:
    """Train a model as ``cfg`` describes; returns the trained model and final metrics.

    Writes under ``paths.output_dir``: ``checkpoints/`` (``last.ckpt``; with
    ``callbacks.keep_last_epochs=N`` also ``epoch-XXXX.ckpt`` of the last N epochs; with
    ``callbacks.checkpoint.save_top_k=1`` the best by val/mse), ``csv/metrics.csv`` (appended
    to on resume), ``samples.png``, ``reconstructions.png``, ``images/`` and ``metrics.json``.
    The directory is locked (``.lock``) while the run uses it. With ``trainer.devices > 1``
    (or ``trainer.num_nodes > 1``) and a DDP strategy every rank runs this function; only
    rank 0 writes files.

    Raises:
        ConfigError: a bad setting, a directory holding another run, or a locked directory.
        CheckpointError: an unreadable or incompatible ``ckpt_path``, or a failed write.
        DivergenceError: non-finite training (see the module docstring).
        RunInterrupted: SIGTERM.
    """
    validate_config(cfg)
    check_task_names(cfg)  # evaluate_after_fit: an unknown task fails now, not after training
    checkpoint_choice(cfg)  # and evaluate_checkpoint=fid_best without its checkpoint
    out_dir = Path(cfg.paths.output_dir)
    rank_zero = is_first_process()  # node n > 0 of a multi-node job is not, before fit too
    ckpt_path = cfg.get("ckpt_path")
    if cfg.get("resume") and not ckpt_path:
        done = read_record(out_dir)
        evaluated = all(t in done.get("evaluation", {}) for t in task_names(cfg))
        trained = done.get("progress", {}).get("epochs_completed", 0)
        if done.get("status") == "completed" and evaluated and trained >= cfg.trainer.max_epochs:
            log.info("resume=true: %s completed earlier, not run again", out_dir)
            last = checkpoint_dir(cfg) / "last.ckpt"
            return load_model(last), {k: v for k, v in done.items() if is_number(v)}
        ckpt_path = resume_checkpoint(cfg)
        cfg.ckpt_path = ckpt_path
    with lock_run_dir(out_dir, enabled=rank_zero):
        if rank_zero:
            check_fresh_run(out_dir, ckpt_path)
        config = resolved_config(cfg)
        finishing = False
        if ckpt_path:
            checkpoint = read_checkpoint(ckpt_path)
            check_resume_compatible(config, ckpt_path, checkpoint)
            finishing = trained_but_finishing(out_dir, epochs_done(checkpoint), cfg)
            if not finishing:
                check_epochs_left(ckpt_path, epochs_done(checkpoint), cfg.trainer.max_epochs)
            del checkpoint
        if rank_zero:  # the checks passed: now the directory may record this job
            record_hydra_files(cfg)
        if rank_zero and OmegaConf.select(cfg, "extras.print_config", default=True):
            print_config_tree(cfg, out_dir / "config_tree.log", first=CONFIG_TREE_FIRST)
        if finishing:
            return load_model(ckpt_path), finish_after_fit(cfg, out_dir)
        return _fit(cfg, config, out_dir, ckpt_path, rank_zero)


def resume_checkpoint(cfg: DictConfig) -> str | None:
    """``resume=true``: the run directory's ``last.ckpt`` to resume from (None: start afresh,
    no checkpoint was written)."""
    last = checkpoint_dir(cfg) / "last.ckpt"
    if not last.is_file():
        return None
    log.info("resume=true: resuming from %s", last)
    return str(last)


def trained_but_finishing(out_dir: Path, epochs: int, cfg: DictConfig) -> bool:
    """Whether a resume only finishes the run: its checkpoint has trained every epoch of
    ``trainer.max_epochs`` and the run was stopped (by a signal in its end figures or
    evaluation after fit, or, with ``resume=true``, lost there)."""
    status = read_record(out_dir).get("status")
    # resume=true: also a run lost (SIGKILL) in its evaluation after fit
    stopped = status == "interrupted" or (cfg.get("resume") and status != "diverged")
    return 0 <= cfg.trainer.max_epochs <= epochs and bool(stopped)


def finish_after_fit(cfg: DictConfig, out_dir: Path) -> dict[str, Any]:
    """Finish a run stopped after its last epoch: the ``evaluate_after_fit`` tasks not yet
    completed (the end figures are not redrawn), then ``status`` ``completed``."""
    log.info("%s: training is complete; finishing the evaluation after fit", out_dir)
    stop = StopSignals()
    with stop.installed():
        added = evaluate_interruptibly(cfg, out_dir, checkpoint_dir(cfg), None, stop)
    record = read_record(out_dir)
    for key in ("phase", "signal"):
        record.pop(key, None)
    write_record(out_dir, record | {"status": "completed"})
    return {k: v for k, v in record.items() if isinstance(v, int | float)} | added


def evaluate_interruptibly(cfg, out_dir: Path, ckpt_dir: Path, device, stop: StopSignals):
    """:func:`evaluate_after_fit` in its own phase: stopped by a signal, ``metrics.json`` says
    so (with the tasks completed so far) and :class:`RunInterrupted` is raised."""
    try:
        stop.enter(EVALUATION_AFTER_FIT)
        return evaluate_after_fit(cfg, out_dir, ckpt_dir, device)
    except SIGTERMException as err:
        if rank_zero_only.rank == 0:
            write_record(out_dir, read_record(out_dir) | stop_fields(stop))
        last = ckpt_dir / "last.ckpt"
        message = stopped_message(stop, "the end of training", last, saved=False)
        raise RunInterrupted(message, stop.exit_code) from err


def _fit(cfg, config, out_dir: Path, ckpt_path, rank_zero: bool):
    pl.seed_everything(cfg.seed, workers=True)
    datamodule = instantiate(cfg.dataset)
    prepare_before_fit(datamodule, rank_zero_only.rank)  # missing files fail here, at once
    model = LatentPriorModel(config)
    check_model_matches_data(model, cfg.dataset.channels, cfg.dataset.image_size)

    last = checkpoint_dir(cfg) / "last.ckpt"
    if rank_zero:
        for stale in remove_stale_temp_files(last.parent):
            log.info("removed %s, left by an interrupted checkpoint write", stale)
    callbacks = [
        instantiate(c) for c in cfg.get("callbacks", {}).values() if isinstance(c, DictConfig)
    ]
    stop = StopSignals()
    sigterm = CheckpointOnSigterm(last, stop)
    times = PhaseTimes()
    guard = SkippedBatchesGuard(cfg.model.get("max_skipped_fraction", 1.0))
    # StopOnSignal first: the other callbacks' end figures run in its end_figures phase;
    # then the epoch metrics' all-reduces, on every rank before any rank-0-only reader
    callbacks = [StopOnSignal(stop), EpochMetricsOnEveryRank(), *callbacks, guard, sigterm, times]
    loggers = [instantiate(c) for c in cfg.get("logger", {}).values()]
    if rank_zero and (ckpt_path or slurm_requeue_checkpoints(out_dir)):
        append_csv_on_resume(loggers)  # a resume, or Lightning's own after a SLURM requeue
    strategy = ddp_strategy(cfg.trainer.strategy, cfg.get("ddp_timeout_min", 30))
    trainer: pl.Trainer = instantiate(
        cfg.trainer,
        callbacks=callbacks,
        logger=loggers,
        plugins=[AtomicCheckpointIO()],
        strategy=strategy,
    )
    started = time.monotonic()
    # ranks join this (sweep) job, nothing leaks; SIGTERM and SIGINT stop it in any phase
    with ddp_job_scope(trainer.strategy), stop.installed():
        fit_and_record(trainer, model, datamodule, ckpt_path, out_dir, sigterm, stop)
        metrics = scalar_metrics(trainer)
        spent = times.totals() | {"time/figures_s": figure_seconds(callbacks)}
        if trainer.is_global_zero:
            add_run_metrics(out_dir, spent)
        # evaluate_after_fit=[...]: every rank, in the job's process group, on its own device
        device = trainer.strategy.root_device
        metrics |= evaluate_interruptibly(cfg, out_dir, last.parent, device, stop)
        if trainer.is_global_zero:
            metrics_file = csv_metrics_file(loggers)
            per_epoch = read_epoch_metrics(metrics_file) if metrics_file else {}
            epochs = trainer.fit_loop.epoch_progress.current.processed
            wall = time.monotonic() - started
            phases = {
                "training": spent["time/train_total_s"],
                "validation": spent["time/val_total_s"],
                "figures": spent["time/figures_s"],
                "evaluation": metrics.get("time/evaluate_after_fit_s", 0.0),
            }
            summary = run_summary(out_dir, "completed", wall, epochs, per_epoch, last, phases)
            log.info("%s", summary)
    return model, metrics


def figure_seconds(callbacks: list[pl.Callback]) -> float:
    """Seconds the figure callbacks (image grids, curves) spent in this process."""
    return sum(float(getattr(c, "seconds", 0.0)) for c in callbacks)


def add_run_metrics(out_dir: Path, numbers: dict[str, float]) -> None:
    """Add ``numbers`` to the run's ``metrics.json`` (written by :func:`write_run_metrics`)."""
    path = out_dir / "metrics.json"
    record = json.loads(path.read_text()) if path.is_file() else {}
    try:
        atomic_write_text(path, json.dumps(record | numbers, indent=2, sort_keys=True))
    except OSError as err:  # e.g. the disk is full
        log.error("could not write %s: %s", path, err)


def fit_and_record(
    trainer: pl.Trainer,
    model: LatentPriorModel,
    datamodule: pl.LightningDataModule,
    ckpt_path: str | None,
    out_dir: Path,
    sigterm: CheckpointOnSigterm,
    stop: StopSignals,
) -> None:
    """``trainer.fit``, then (rank 0) ``metrics.json`` with how it ended (module docstring);
    a stopped run raises :class:`RunInterrupted` or :class:`DivergenceError`."""
    status = "failed"
    last = sigterm.path
    try:
        trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
        status = "completed"
    except SIGTERMException as err:
        status = "interrupted"
        where = f"epoch {trainer.current_epoch}, global step {trainer.global_step}"
        message = stopped_message(stop, where, last, sigterm.saved)
        raise RunInterrupted(message, stop.exit_code) from err
    except DivergenceError as err:
        status = "diverged"
        raise DivergenceError(f"{err}; {describe_last_checkpoint(last)}") from err
    finally:
        if trainer.is_global_zero:
            write_run_metrics(out_dir, scalar_metrics(trainer), status, trainer, stop)
