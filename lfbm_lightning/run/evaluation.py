"""Evaluate one checkpoint, or several, on one task (the logic behind evaluate.py).

The model comes from the checkpoint alone (:func:`lfbm_lightning.runtime.checkpoints.load_model`)
and the data module from its stored ``dataset`` config; the task (``conf/task/<name>.yaml``, a
:class:`lfbm_lightning.tasks.task.Task`) writes its files, and this module ``metrics.json``
and ``results.md``. Several checkpoints (a directory of ``epoch-*.ckpt`` or a glob) give each
number's mean and sample standard deviation. ``devices=N`` shares the work over N ranks
(or the ranks of an existing process group); rank 0 writes.
Details: docs/runs.md ("Evaluating checkpoints"); docs/scaling.md.
"""

from __future__ import annotations

import glob
import json
import logging
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from hydra.utils import get_class, instantiate
from lightning_fabric import Fabric
from omegaconf import DictConfig
from pytorch_lightning.utilities import rank_zero_only

from lfbm_lightning.checks import is_number
from lfbm_lightning.data.data_module import ImageDataModule
from lfbm_lightning.data.selection import relocate
from lfbm_lightning.errors import CheckpointError, ConfigError
from lfbm_lightning.metrics.inception import resolve_inception_weights
from lfbm_lightning.reporting.markdown import mean_std, table_lines
from lfbm_lightning.run.config_checks import (
    check_evaluate_config,
    check_process_counts,
    resolve_device,
)
from lfbm_lightning.runtime.checkpoint_io import atomic_write_text
from lfbm_lightning.runtime.checkpoints import load_model
from lfbm_lightning.runtime.distributed import ddp_job_scope, rank_and_world_size
from lfbm_lightning.runtime.job_record import record_hydra_files
from lfbm_lightning.tasks.task import Task

log = logging.getLogger(__name__)

INCEPTION_KEYS = ("fid", "kid", "isc")
"""Task settings that need the Inception network."""

CHECKPOINT_PATTERN = "epoch-*.ckpt"
"""The checkpoints of a directory ``ckpt_path`` (``callbacks.keep_last_epochs``)."""


@contextmanager
def evaluation_ranks(cfg: DictConfig) -> Iterator[torch.device]:
    """Run the block in every rank of the evaluation; yields this rank's device.

    Inside a distributed job (an initialised process group of N > 1 ranks, e.g. the ranks of a
    DDP training job running ``evaluate_after_fit``): every rank of that job, in its process
    group, on ``cfg.device``; ``devices`` and ``num_nodes`` are not used. Otherwise with
    ``devices=1, num_nodes=1``: this process alone, on ``cfg.device``; else Fabric's ``ddp``
    strategy on ``cfg.device``'s type (gloo on CPU, NCCL on CUDA): it starts ranks 1..N-1 as
    copies of this command (inside a Hydra sweep: of this job, see
    :func:`~lfbm_lightning.runtime.distributed.ddp_job_scope`), or joins the ranks that
    ``torchrun`` or SLURM started, and initialises the process group.
    """
    devices, num_nodes = check_process_counts(cfg)
    device = resolve_device(cfg.device)
    if rank_and_world_size()[1] > 1 or (devices == 1 and num_nodes == 1):
        yield device
        return
    fabric = Fabric(accelerator=device.type, devices=devices, num_nodes=num_nodes, strategy="ddp")
    with ddp_job_scope(fabric.strategy):
        fabric.launch()
        yield fabric.device


def checkpoint_paths(ckpt_path: str) -> tuple[list[Path], bool]:
    """The checkpoints ``ckpt_path`` names, and whether it names several (a directory's
    ``epoch-*.ckpt`` files or the files a glob matches, sorted by name) rather than one file
    (a missing one is left for :func:`~lfbm_lightning.runtime.checkpoints.read_checkpoint` to
    name)."""
    path = Path(ckpt_path).expanduser()
    if path.is_dir():
        found = sorted(path.glob(CHECKPOINT_PATTERN))
        where = f"ckpt_path={ckpt_path} is a directory without {CHECKPOINT_PATTERN} files"
    elif glob.has_magic(str(path)):
        found = sorted(Path(p) for p in glob.glob(str(path)) if Path(p).is_file())
        where = f"ckpt_path={ckpt_path} matches no checkpoint file"
    else:
        return [path], False
    if not found:
        raise CheckpointError(
            f"{where} (train with callbacks.keep_last_epochs=N to keep one per epoch, or "
            "give one .ckpt file)"
        )
    return found, True


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


def shown(value: Any) -> str:
    """A value as results.md shows it (floats to 6 significant digits)."""
    return f"{value:.6g}" if isinstance(value, float) else str(value)


def markdown_table(results: Mapping[str, Any], title: str) -> str:
    """A two-column Markdown table of the results under a heading (and the MSE scale note)."""
    rows = [[key, shown(value)] for key, value in results.items()]
    lines = [f"# {title}", "", *table_lines(["quantity", "value"], rows)]
    if any(key.startswith("mse") for key in results):
        lines += ["", MSE_NOTE]
    return "\n".join(lines) + "\n"


def spread(per_checkpoint: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, float]]:
    """Per number that every checkpoint reports: ``{"mean": m, "sd": s}`` over the
    checkpoints, s the sample standard deviation (divisor n - 1; 0 for one checkpoint)."""
    runs = list(per_checkpoint.values())
    keys = [k for k in runs[0] if k != "processes" and all(is_number(r.get(k)) for r in runs)]
    out = {}
    for key in keys:
        mean, sd = mean_std([float(r[key]) for r in runs])
        out[key] = {"mean": mean, "sd": sd}
    return out


def spread_table(
    per_checkpoint: Mapping[str, Mapping[str, Any]], stats: Mapping[str, Mapping[str, float]]
) -> str:
    """Markdown: one row per number, one column per checkpoint, then mean +/- sd."""
    names = list(per_checkpoint)
    rows = [
        [key, *(shown(per_checkpoint[name][key]) for name in names)]
        + [f"{s['mean']:.6g} +/- {s['sd']:.3g}"]
        for key, s in stats.items()
    ]
    return "\n".join(table_lines(["quantity", *names, "mean +/- sd"], rows)) + "\n"


def run_task(cfg: DictConfig, ckpt: Path, device: torch.device, out_dir: Path) -> dict[str, Any]:
    """Score one checkpoint: load it, rebuild its data, run the task into ``out_dir`` and write
    ``metrics.json`` / ``results.md`` there (rank 0); returns what ``metrics.json`` holds."""
    rank, world_size = rank_and_world_size()
    pl.seed_everything(cfg.seed + rank, workers=True)  # each rank its own stream
    model = load_model(ckpt, device)
    datamodule = build_datamodule(model.config, cfg.paths.data_dir)
    if cfg.metrics.stats_dir is None:  # the reference-statistics cache beside the data
        data_dir = cfg.paths.data_dir or model.config["paths"]["data_dir"]
        cfg.metrics.stats_dir = str(Path(data_dir) / "fid_stats")
    out_dir.mkdir(parents=True, exist_ok=True)
    task: Task = get_class(cfg.task._target_)(model, datamodule, cfg, out_dir)
    results = task.run()
    name = cfg.task.name
    summary = {"task": name, "ckpt_path": str(ckpt), "device": str(device)}
    summary |= {"processes": world_size} | results
    if rank == 0:
        atomic_write_text(out_dir / "metrics.json", json.dumps(summary, indent=2) + "\n")
        section = task.markdown(results)
        report = markdown_table(summary, f"{name} evaluation") + (
            f"\n{section}" if section else ""
        )
        (out_dir / "results.md").write_text(report)
        log.info("%s of %s: %s", name, ckpt, results)
    return summary


def check_output_dir_free(out_dir: Path) -> None:
    """Refuse to evaluate into a directory that already holds files (a training run's, an
    earlier evaluation's): an evaluation never replaces results. Log files (Hydra opens
    ``evaluate.log`` before the job starts) do not count.

    Raises:
        ConfigError: naming the directory, a few of its files and the fix.
    """
    held = (
        sorted(p.name for p in out_dir.iterdir() if p.suffix != ".log") if out_dir.is_dir() else []
    )
    if held:
        shown = ", ".join(held[:4]) + (f" and {len(held) - 4} more" if len(held) > 4 else "")
        raise ConfigError(
            f"the output directory {out_dir} already holds {shown}: an evaluation never "
            "replaces a run's files. Leave hydra.run.dir unset (each evaluation gets a new "
            "outputs/eval/<task>/<date>/<time>) or set hydra.run.dir to a new directory"
        )


def evaluate(cfg: DictConfig, command: bool = False) -> dict[str, Any]:
    """Run the task ``cfg.task`` on the checkpoint(s) ``cfg.ckpt_path``; returns what the
    top-level ``metrics.json`` holds.

    Checks that are cheap come first: evaluate's own settings
    (:func:`~lfbm_lightning.run.config_checks.check_evaluate_config`), the
    checkpoint paths, then the Inception weights when the task needs them, so a wrong value
    fails before any process is started, model loaded or sample drawn. Every rank returns the
    summary; rank 0's holds the task's results (rank 0 alone computes the FID against the
    training set, KID and IS).

    Args:
        cfg: the composed ``conf/evaluate.yaml``.
        command: the ``evaluate.py`` command's own run (not ``evaluate_after_fit``, which
            re-scores into its run's ``eval/<task>/``): the output directory must hold no files
            yet (:func:`check_output_dir_free`), and Hydra's ``.hydra/`` record is written once
            the checks pass (:func:`~lfbm_lightning.runtime.job_record.record_hydra_files`).
    """
    check_evaluate_config(cfg)
    out_dir = Path(cfg.paths.output_dir)
    first_process = command and rank_zero_only.rank == 0  # not a rank started by rank 0
    if first_process:
        check_output_dir_free(out_dir)
    ckpts, several = checkpoint_paths(str(cfg.ckpt_path))
    task_cfg = cfg[cfg.task.name]
    if any(task_cfg.get(key, False) for key in INCEPTION_KEYS):
        resolve_inception_weights(cfg.metrics.inception_weights, cfg.metrics.allow_download)
    if first_process:
        record_hydra_files(cfg)
    with evaluation_ranks(cfg) as device:
        if not several:
            return run_task(cfg, ckpts[0], device, out_dir)
        per_checkpoint = {
            ckpt.stem: run_task(cfg, ckpt, device, out_dir / ckpt.stem) for ckpt in ckpts
        }
        writer = rank_and_world_size()[0] == 0
    name = cfg.task.name
    stats = spread(per_checkpoint)
    summary = {
        "task": name,
        "ckpt_path": str(cfg.ckpt_path),
        "n_checkpoints": len(ckpts),
        "mean": {key: s["mean"] for key, s in stats.items()},
        "sd": {key: s["sd"] for key, s in stats.items()},
        "checkpoints": per_checkpoint,
    }
    if writer:
        atomic_write_text(out_dir / "metrics.json", json.dumps(summary, indent=2) + "\n")
        title = f"# {name} evaluation of {len(ckpts)} checkpoints\n\n"
        note = "\nsd: sample standard deviation over the checkpoints (divisor n - 1).\n"
        table = spread_table(per_checkpoint, stats)
        (out_dir / "results.md").write_text(title + table + note)
        log.info("outputs in %s", out_dir)
    return summary
