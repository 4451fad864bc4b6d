"""Evaluate a checkpoint on one task (the logic behind evaluate.py).

The model comes from the checkpoint alone (:meth:`LatentPriorModel.load_from_checkpoint`) and
the data module from the config stored in it (``dataset`` node), with the data directory
replaced when ``paths.data_dir`` is given. The task (:data:`lfbm_lightning.tasks.TASKS`) writes
its files; this module adds ``metrics.json`` and ``results.md``.

With ``devices=N`` (and ``num_nodes``) Lightning Fabric's ``ddp`` starts N processes (or joins
the ranks ``torchrun`` or SLURM started), each on its own device; every task shares its
examples or samples out over the ranks and gathers the results (:mod:`lfbm_lightning.tasks
.common`), and rank 0 writes the files.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from lightning_fabric import Fabric
from omegaconf import DictConfig

from lfbm_lightning.data.base import ImageDataModule
from lfbm_lightning.distributed import ddp_job_scope, rank_and_world_size
from lfbm_lightning.metrics.fid import resolve_inception_weights
from lfbm_lightning.models import LatentPriorModel
from lfbm_lightning.tasks import TASKS
from lfbm_lightning.tasks.common import relocate

log = logging.getLogger(__name__)

INCEPTION_KEYS = ("fid", "kid", "isc")
"""Task settings that need the Inception network."""


def resolve_device(name: str) -> torch.device:
    """``auto`` is CUDA when available, else the CPU; anything else as torch spells it."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def check_process_counts(cfg: DictConfig) -> tuple[int, int]:
    """(devices, num_nodes) of ``cfg``, both integers >= 1, or a clear error."""
    counts = []
    for key in ("devices", "num_nodes"):
        value = cfg.get(key, 1)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{key} must be an integer >= 1 (processes), got {value!r}")
        counts.append(value)
    return counts[0], counts[1]


@contextmanager
def evaluation_ranks(cfg: DictConfig) -> Iterator[torch.device]:
    """Run the block in every rank of the evaluation; yields this rank's device.

    ``devices=1, num_nodes=1``: this process alone, on ``cfg.device``. Otherwise Fabric's
    ``ddp`` strategy on ``cfg.device``'s type (gloo on CPU, NCCL on CUDA): it starts ranks
    1..N-1 as copies of this command (inside a Hydra sweep: of this job, see
    :func:`~lfbm_lightning.distributed.ddp_job_scope`), or joins the ranks that ``torchrun`` or
    SLURM started, and initialises the process group.
    """
    devices, num_nodes = check_process_counts(cfg)
    device = resolve_device(cfg.device)
    if devices == 1 and num_nodes == 1:
        yield device
        return
    fabric = Fabric(accelerator=device.type, devices=devices, num_nodes=num_nodes, strategy="ddp")
    with ddp_job_scope(fabric.strategy):
        fabric.launch()
        yield fabric.device


def load_model(ckpt_path: str | Path, device: torch.device) -> LatentPriorModel:
    """The model of a checkpoint, on ``device``, in eval mode."""
    path = Path(ckpt_path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"ckpt_path={str(path)!r}: no such checkpoint file")
    model = LatentPriorModel.load_from_checkpoint(path, map_location=device)
    return model.to(device).eval()


def build_datamodule(run_config: Mapping[str, Any], data_dir: str | None) -> ImageDataModule:
    """The training run's data module, set up; its paths moved to ``data_dir`` when given."""
    dataset_cfg = dict(run_config["dataset"])
    if data_dir is not None:
        dataset_cfg = relocate(dataset_cfg, str(run_config["paths"]["data_dir"]), str(data_dir))
    datamodule = instantiate(dataset_cfg)
    datamodule.prepare_data()
    datamodule.setup()
    return datamodule


MSE_NOTE = "MSE: per-pixel mean per image, averaged over images; [-1, 1] scale, `_01`: [0, 1]."


def markdown_table(results: Mapping[str, Any], title: str) -> str:
    """A two-column Markdown table of the results under a heading (and the MSE scale note)."""
    lines = [f"# {title}", "", "| quantity | value |", "|---|---|"]
    for key, value in results.items():
        shown = f"{value:.6g}" if isinstance(value, float) else str(value)
        lines.append(f"| {key} | {shown} |")
    if any(key.startswith("mse") for key in results):
        lines += ["", MSE_NOTE]
    return "\n".join(lines) + "\n"


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    """Run ``cfg.task`` on ``cfg.ckpt_path``; returns what ``metrics.json`` holds.

    Checks that are cheap come first: the task name, the process counts, then the Inception
    weights when the task needs them (so a missing file fails before any process is started,
    model loaded or sample drawn). Every rank returns the summary; rank 0's holds the task's
    results (rank 0 alone computes the FID against the training set, KID and IS).
    """
    if cfg.task not in TASKS:
        raise ValueError(f"task must be one of {list(TASKS)}, got {cfg.task!r}")
    check_process_counts(cfg)
    task_cfg = cfg[cfg.task]
    if any(task_cfg.get(key, False) for key in INCEPTION_KEYS):
        resolve_inception_weights(cfg.metrics.inception_weights, cfg.metrics.allow_download)
    with evaluation_ranks(cfg) as device:
        rank, world_size = rank_and_world_size()
        pl.seed_everything(cfg.seed + rank, workers=True)  # each rank its own stream
        model = load_model(cfg.ckpt_path, device)
        datamodule = build_datamodule(model.config, cfg.paths.data_dir)
        if cfg.metrics.stats_dir is None:  # the reference-statistics cache beside the data
            data_dir = cfg.paths.data_dir or model.config["paths"]["data_dir"]
            cfg.metrics.stats_dir = str(Path(data_dir) / "fid_stats")

        out_dir = Path(cfg.paths.output_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        results = TASKS[cfg.task](model, datamodule, cfg, out_dir)
    summary = {"task": cfg.task, "ckpt_path": str(cfg.ckpt_path), "device": str(device)}
    summary |= {"processes": world_size} | results
    if rank == 0:
        (out_dir / "metrics.json").write_text(json.dumps(summary, indent=2) + "\n")
        (out_dir / "results.md").write_text(markdown_table(summary, f"{cfg.task} evaluation"))
        log.info("%s: %s", cfg.task, results)
        log.info("outputs in %s", out_dir)
    return summary
