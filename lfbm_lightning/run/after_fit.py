"""Evaluate a run's checkpoint(s) when its training ends, inside the same job.

``evaluate_after_fit=[task, ...]`` runs each task as ``evaluate.py task=<name>`` would
(:func:`lfbm_lightning.run.evaluation.evaluate`) into ``<run>/eval/<task>/``, on the checkpoints
of ``evaluate_checkpoint`` (``last``, ``fid_best``, ``auprc_best``), with
``evaluate_overrides``. The run's ``metrics.json`` gains ``"t/m"``, ``"t/m_sd"``,
``"t/n_checkpoints"`` and ``"evaluation": {t: "completed" | "failed: <error>"}``, rewritten
after each task so that a resume runs only the tasks left. In a DDP job every rank runs the
tasks and rank 0 writes. Details: docs/runs.md ("Evaluation after fit"); DDP: docs/scaling.md.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import get_class
from omegaconf import DictConfig, OmegaConf

from lfbm_lightning import CONF_DIR
from lfbm_lightning.checks import is_number
from lfbm_lightning.errors import ConfigError
from lfbm_lightning.run.config_checks import TASK_DIR, resolve_device
from lfbm_lightning.run.evaluation import CHECKPOINT_PATTERN, evaluate
from lfbm_lightning.runtime.checkpoint_io import atomic_write_text
from lfbm_lightning.runtime.distributed import gather_lists, rank_and_world_size

log = logging.getLogger(__name__)


def task_names(cfg: DictConfig) -> list[str]:
    """The tasks ``evaluate_after_fit`` names (a single name counts as a list of one)."""
    names = OmegaConf.select(cfg, "evaluate_after_fit", default=None) or []
    return [names] if isinstance(names, str) else list(names)


def check_task_names(cfg: DictConfig) -> None:
    """A :class:`ConfigError` when ``evaluate_after_fit`` names a task without a
    ``conf/task/<name>.yaml``, or one that cannot score this run's checkpoints (the task
    class's ``check_training``, e.g. anomaly without a held-out digit): the checks before
    training; after it, a task that fails is a failed task in the row."""
    known = sorted(p.stem for p in TASK_DIR.glob("*.yaml"))
    for name in task_names(cfg):
        if name not in known:
            raise ConfigError(
                f"evaluate_after_fit names task {name!r}: use a list of {known} (conf/task/)"
            )
        get_class(OmegaConf.load(TASK_DIR / f"{name}.yaml").task._target_).check_training(cfg)


CHECKPOINT_CHOICES = ("last", "fid_best", "auprc_best")
"""Values of ``evaluate_checkpoint`` (module docstring)."""


def checkpoint_choice(cfg: DictConfig) -> str:
    """``evaluate_checkpoint``, checked before training: a :class:`ConfigError` for an unknown
    value, for ``fid_best`` without a FID callback that keeps its best checkpoint, or for
    ``auprc_best`` without a periodic AUPRC on validation anomalies that keeps its best."""
    choice = OmegaConf.select(cfg, "evaluate_checkpoint", default="last")
    if choice not in CHECKPOINT_CHOICES:
        raise ConfigError(
            f"evaluate_checkpoint must be one of {list(CHECKPOINT_CHOICES)}, got {choice!r}"
        )
    fid = OmegaConf.select(cfg, "callbacks.fid", default=None)
    if task_names(cfg) and choice == "fid_best":
        every = 0 if fid is None else fid.get("every_n_epochs", 0)
        if not every or fid.get("best_checkpoint") is None:
            raise ConfigError(
                "evaluate_checkpoint=fid_best needs the FID callback's best checkpoint: set "
                "callbacks.fid.every_n_epochs=N (> 0) and callbacks.fid.best_checkpoint, or "
                "evaluate_checkpoint=last"
            )
    auprc = OmegaConf.select(cfg, "callbacks.auprc", default=None)
    if task_names(cfg) and choice == "auprc_best":
        every = 0 if auprc is None else auprc.get("every_n_epochs", 0)
        held = OmegaConf.select(cfg, "dataset.holdout_val_fraction", default=0) or 0
        if not every or not held or auprc.get("best_checkpoint") is None:
            raise ConfigError(
                "evaluate_checkpoint=auprc_best needs the periodic AUPRC's best checkpoint on "
                "validation anomalies: set callbacks.auprc.every_n_epochs=N (> 0), "
                "dataset.holdout_val_fraction (> 0) and callbacks.auprc.best_checkpoint, or "
                "evaluate_checkpoint=last"
            )
    return choice


def run_checkpoints(cfg: DictConfig, ckpt_dir: Path) -> Path:
    """The checkpoints to score (module docstring): ``fid_best.ckpt``, ``auprc_best.ckpt``, the
    directory when it keeps epoch files, or ``last.ckpt``."""
    choice = checkpoint_choice(cfg)
    if choice == "fid_best":
        return Path(cfg.callbacks.fid.best_checkpoint)
    if choice == "auprc_best":
        return Path(cfg.callbacks.auprc.best_checkpoint)
    return ckpt_dir if any(ckpt_dir.glob(CHECKPOINT_PATTERN)) else ckpt_dir / "last.ckpt"


def compose_evaluate(overrides: Sequence[str]) -> DictConfig:
    """``conf/evaluate.yaml`` composed with ``overrides`` (inside or outside a Hydra app)."""
    if GlobalHydra.instance().is_initialized():
        return compose("evaluate", overrides=list(overrides))
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        return compose("evaluate", overrides=list(overrides))


def row_numbers(task: str, summary: dict[str, Any]) -> dict[str, float | str]:
    """``t/m``, ``t/m_sd`` and ``t/n_checkpoints`` from an evaluate summary (one checkpoint:
    the task's numbers, sd 0; several: their mean and sd), and ``t/fid_of`` when the task
    scored a FID (a label: prior samples, recovered training images)."""
    if "mean" in summary:
        means, sds, n = summary["mean"], summary["sd"], summary["n_checkpoints"]
        fid_of = next(iter(summary["checkpoints"].values()), {}).get("fid_of")
    else:
        means = {k: v for k, v in summary.items() if is_number(v) and k != "processes"}
        sds, n = dict.fromkeys(means, 0.0), 1
        fid_of = summary.get("fid_of")
    out: dict[str, float | str] = {f"{task}/n_checkpoints": n}
    if fid_of is not None:
        out[f"{task}/fid_of"] = fid_of
    for key, value in means.items():
        out[f"{task}/{key}"] = float(value)
        out[f"{task}/{key}_sd"] = float(sds.get(key, 0.0))
    return out


def evaluate_after_fit(
    cfg: DictConfig, out_dir: Path, ckpt_dir: Path, device: torch.device | None = None
) -> dict[str, Any]:
    """Run every task of ``cfg.evaluate_after_fit`` on the run's checkpoint(s) and add their
    numbers to ``out_dir/metrics.json`` (module docstring); returns what was added, the same
    on every rank.

    Args:
        cfg: the training config.
        out_dir: the run directory (``metrics.json``, ``eval/<task>/``).
        ckpt_dir: the run's ``checkpoints/``.
        device: the job's training device (this rank's in a distributed job); None: the
            evaluate ``device``.
    """
    names = task_names(cfg)
    if not names:
        return {}
    started = time.monotonic()
    rank, world_size = rank_and_world_size()
    if world_size > 1:
        dist.barrier()  # every rank sees the checkpoint rank 0 wrote
    ckpt = run_checkpoints(cfg, ckpt_dir)
    extra = list(OmegaConf.select(cfg, "evaluate_overrides", default=None) or [])
    metrics_path = out_dir / "metrics.json"
    record = json.loads(metrics_path.read_text()) if metrics_path.is_file() else {}
    status: dict[str, str] = dict(record.get("evaluation", {}))
    spent = float(record.get("time/evaluate_after_fit_s", 0.0))  # by the run resumed, if any
    added: dict[str, Any] = {"evaluation": status, "time/evaluate_after_fit_s": spent}
    added["evaluated_checkpoint"] = str(ckpt)
    for name in names:
        if status.get(name) == "completed":  # by the run this one resumes
            log.info("evaluate_after_fit: task %s completed earlier, skipped", name)
            continue
        numbers, error = run_one(name, extra, ckpt, out_dir / "eval" / name, device)
        outcomes = gather_lists([(numbers, error)])  # one per rank, in rank order
        failed = [(r, e) for r, (_, e) in enumerate(outcomes) if e is not None]
        if failed:
            where = f" (rank {failed[0][0]})" if world_size > 1 else ""
            status[name] = f"failed{where}: {failed[0][1]}"
        else:
            added |= outcomes[0][0]  # rank 0's: it alone computes some numbers (FID, ...)
            status[name] = "completed"
        added["time/evaluate_after_fit_s"] = spent + time.monotonic() - started
        if rank == 0:
            record = json.loads(metrics_path.read_text()) if metrics_path.is_file() else {}
            atomic_write_text(metrics_path, json.dumps(record | added, indent=2, sort_keys=True))
    return added


def run_one(
    name: str, extra: Sequence[str], ckpt: Path, out_dir: Path, device: torch.device | None
) -> tuple[dict[str, float], str | None]:
    """Task ``name`` on ``ckpt`` into ``out_dir``: (its row numbers, None), or ({}, the error
    in one line) when it raised (logged; the next task runs)."""
    try:
        eval_cfg = compose_evaluate([f"task={name}", *extra])
        eval_cfg.ckpt_path = str(ckpt)
        eval_cfg.paths.output_dir = str(out_dir)
        if device is not None:
            named = str(eval_cfg.device)
            if named != "auto" and resolve_device(named).type != device.type:
                log.warning(
                    "evaluate_after_fit: task %s runs on the job's training device %s, not "
                    "on evaluate_overrides' device=%s",
                    name,
                    device,
                    named,
                )
            eval_cfg.device = str(device)
        return row_numbers(name, evaluate(eval_cfg)), None
    except Exception as err:  # noqa: BLE001 - reported in the row, the next task runs
        log.exception("evaluate_after_fit: task %s failed", name)
        return {}, f"{type(err).__name__}: {err}".splitlines()[0]
