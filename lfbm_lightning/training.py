"""Build and run a training job from a composed Hydra config (the logic behind train.py).

With a DDP strategy, ``trainer.fit`` runs inside :func:`~lfbm_lightning.distributed.ddp_job_scope`,
so that the ranks join the current job, also inside a Hydra sweep.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.utilities import rank_zero_only

from lfbm_lightning.checkpoints import check_resume_compatible
from lfbm_lightning.distributed import ddp_job_scope
from lfbm_lightning.generators import output_shape
from lfbm_lightning.models import LatentPriorModel
from lfbm_lightning.validation import validate_config

log = logging.getLogger(__name__)


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
    prepare_before_fit(datamodule, rank_zero_only.rank)  # missing files fail here, at once
    config = resolved_config(cfg)
    if cfg.get("ckpt_path"):
        check_resume_compatible(config, cfg.ckpt_path)
    model = LatentPriorModel(config)
    check_model_matches_data(model, cfg.dataset.channels, cfg.dataset.image_size)

    callbacks = [instantiate(c) for c in cfg.get("callbacks", {}).values()]
    loggers = [instantiate(c) for c in cfg.get("logger", {}).values()]
    trainer: pl.Trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers)
    with ddp_job_scope(trainer.strategy):  # ranks join this (sweep) job; nothing leaks
        trainer.fit(model, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))

    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}
    if trainer.is_global_zero:
        out = Path(cfg.paths.output_dir) / "metrics.json"
        out.write_text(json.dumps(metrics, indent=2, sort_keys=True))
        log.info("metrics: %s", metrics)
        log.info("outputs in %s", cfg.paths.output_dir)
    return model, metrics
