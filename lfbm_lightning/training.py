"""Build and run a training job from a composed Hydra config (the logic behind train.py).

**DDP inside a Hydra job.** Lightning's ``ddp`` strategy starts ranks 1..N-1 by re-running the
entry script with the parent's command line (``_hydra_subprocess_cmd``). Under ``--multirun``
that line is the whole sweep, so the ranks replay the sweep instead of joining their job; under
the joblib launcher it is not even the entry script (the worker's ``__main__`` is loky's).
:func:`ddp_job_scope` (around ``trainer.fit``) has them started by :func:`job_rank_command`
instead: a single run of exactly the current job's overrides in exactly its output directory.
It also undoes what the launcher leaves behind, so the next job of a sweep run in the same
process starts clean. On SLURM (one task per device) the ranks are SLURM's tasks and nothing is
re-run.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
import torch.distributed as dist
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate, to_absolute_path
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.strategies.launchers import subprocess_script as pl_launcher

from lfbm_lightning.checkpoints import check_resume_compatible
from lfbm_lightning.generators import output_shape
from lfbm_lightning.models import LatentPriorModel
from lfbm_lightning.validation import validate_config

log = logging.getLogger(__name__)

LAUNCH_ENV = ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "WORLD_SIZE")
"""Variables Lightning's launcher sets in the launching process (and never unsets)."""

CHILD_EXIT_TIMEOUT = 120.0
"""Seconds a finished job waits for its DDP rank processes to exit."""

SWEEP_ONLY_OVERRIDES = (
    "hydra.mode",
    "hydra.run",
    "hydra.sweep",
    "hydra.sweeper",
    "hydra/sweeper",
    "hydra.launcher",
    "hydra/launcher",
    "hydra.output_subdir",
    "hydra.job.name",
)
"""Hydra overrides of the sweep that a rank's single run must not repeat."""


def resolved_config(cfg: DictConfig) -> dict[str, Any]:
    """The run config as a plain, fully resolved dict (without the ``hydra`` node)."""
    container = OmegaConf.to_container(cfg, resolve=True)
    container.pop("hydra", None)
    return container


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


def _is_sweep_only(override: str) -> bool:
    """Whether a ``hydra`` override only concerns the sweep (``hydra/launcher=joblib``, ...)."""
    key = override.split("=", 1)[0].lstrip("+~")
    return any(key == p or key.startswith(p + ".") for p in SWEEP_ONLY_OVERRIDES)


def _launched_children(trainer: pl.Trainer) -> list[subprocess.Popen]:
    """The rank processes this process started (Lightning's ``ddp`` launcher), if any."""
    return list(getattr(trainer.strategy.launcher, "procs", None) or [])


def job_rank_command(local_rank: int) -> tuple[list[str], str]:
    """The command and working directory that start DDP rank ``local_rank`` of the current
    Hydra job.

    A single run (no ``--multirun``, no sweep) of the entry script with the job's own overrides,
    ``hydra.run.dir`` = the job's output directory and ``hydra.output_subdir=null``: the rank
    creates no directory, leaves the job's ``.hydra/`` files alone and logs to
    ``<job dir>/<job name>_rank<local_rank>.log``. It runs from the directory the sweep was
    started in, like the job itself.
    """
    hydra_cfg = HydraConfig.get()
    overrides = [o for o in hydra_cfg.overrides.hydra if not _is_sweep_only(o)]
    command = [
        sys.executable,
        to_absolute_path(sys.argv[0]),
        *hydra_cfg.overrides.task,
        *overrides,
        f'hydra.run.dir="{hydra_cfg.runtime.output_dir}"',
        "hydra.output_subdir=null",
        f"hydra.job.name={hydra_cfg.job.name}_rank{local_rank}",
    ]
    return command, hydra_cfg.runtime.cwd


@contextmanager
def ddp_job_scope(trainer: pl.Trainer) -> Iterator[None]:
    """Fit ``trainer`` inside this scope so that DDP ranks join the current job, the job ends
    only when its ranks have, and nothing leaks into the next job.

    Inside a Hydra job, Lightning starts the ranks with :func:`job_rank_command`. On exit the
    environment is restored: the launcher leaves ``LOCAL_RANK=0`` and ``MASTER_PORT`` set,
    which would make the next job of a sweep in the same process believe its ranks were
    started externally and wait for them forever. The process group and the torch thread count
    the launcher changed are reset too. The ranks are waited for (up to
    :data:`CHILD_EXIT_TIMEOUT` s), or killed when training raised, so that none is left waiting
    in a collective.
    """
    saved = {key: os.environ.get(key) for key in ("OMP_NUM_THREADS", *LAUNCH_ENV)}
    threads = torch.get_num_threads()
    had_group = dist.is_available() and dist.is_initialized()
    lightning_command = pl_launcher._hydra_subprocess_cmd
    if HydraConfig.initialized():
        pl_launcher._hydra_subprocess_cmd = job_rank_command
    try:
        yield
    except BaseException:
        for child in _launched_children(trainer):
            child.kill()
        raise
    else:
        for child in _launched_children(trainer):
            try:
                child.wait(timeout=CHILD_EXIT_TIMEOUT)
            except subprocess.TimeoutExpired:
                log.warning("DDP rank process %d did not exit; killing it", child.pid)
                child.kill()
    finally:
        pl_launcher._hydra_subprocess_cmd = lightning_command
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        torch.set_num_threads(threads)
        if not had_group and dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()


def train(cfg: DictConfig) -> tuple[LatentPriorModel, dict[str, float]]:
    """Train a model as ``cfg`` describes; returns the trained model and final metrics.

    Writes under ``paths.output_dir``: ``checkpoints/`` (``last.ckpt`` and the best by val/mse),
    ``csv/metrics.csv``, ``samples.png``, ``reconstructions.png``, ``images/`` and
    ``metrics.json``. With ``trainer.devices > 1`` (or ``trainer.num_nodes > 1``) and a DDP
    strategy every rank runs this function; only rank 0 writes files.
    """
    validate_config(cfg)
    pl.seed_everything(cfg.seed, workers=True)
    datamodule = instantiate(cfg.dataset)
    datamodule.prepare_data()  # fails here, before any model is built, when files are missing
    config = resolved_config(cfg)
    if cfg.get("ckpt_path"):
        check_resume_compatible(config, cfg.ckpt_path)
    model = LatentPriorModel(config)
    check_model_matches_data(model, cfg.dataset.channels, cfg.dataset.image_size)

    callbacks = [instantiate(c) for c in cfg.get("callbacks", {}).values()]
    loggers = [instantiate(c) for c in cfg.get("logger", {}).values()]
    trainer: pl.Trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers)
    with ddp_job_scope(trainer):  # DDP ranks join this (sweep) job; nothing leaks to the next
        trainer.fit(model, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))

    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}
    if trainer.is_global_zero:
        out = Path(cfg.paths.output_dir) / "metrics.json"
        out.write_text(json.dumps(metrics, indent=2, sort_keys=True))
        log.info("metrics: %s", metrics)
        log.info("outputs in %s", cfg.paths.output_dir)
    return model, metrics
