"""Evaluate one checkpoint, or several, on one task (the logic behind evaluate.py).

The model comes from the checkpoint alone (:func:`lfbm_lightning.runtime.checkpoints.load_model`,
which never runs code from the file) and the data module from the config stored in it
(``dataset`` node), with the data directory replaced when ``paths.data_dir`` is given. The
task (``task=<name>``: ``conf/task/<name>.yaml``, whose ``task._target_`` names a
:class:`lfbm_lightning.tasks.task.Task`) writes its files; this module adds ``metrics.json``
and ``results.md``.

Several checkpoints (``ckpt_path`` a directory of ``epoch-*.ckpt`` files, or a glob): each is
scored in the subdirectory of its name, and the top-level files hold every checkpoint's numbers
and, per number, the mean and the sample standard deviation over the checkpoints (our reading
of the paper's error bars, which the slides do not explain: the spread over the last epochs of
one run).

With ``devices=N`` (and ``num_nodes``) Lightning Fabric's ``ddp`` starts N processes (or joins
the ranks ``torchrun`` or SLURM started), each on its own device; every task shares its
examples or samples out over the ranks and gathers the results (:mod:`lfbm_lightning.tasks
.examples`), and rank 0 writes the files. Called in every rank of a job that already has a
process group (``evaluate_after_fit`` in a DDP training job), it uses that job's ranks instead.
"""

from __future__ import annotations

import glob
import json
import logging
import math
import statistics
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from hydra.utils import get_class, instantiate
from lightning_fabric import Fabric
from omegaconf import DictConfig, OmegaConf

from lfbm_lightning import CONF_DIR
from lfbm_lightning.data.data_module import ImageDataModule
from lfbm_lightning.data.selection import relocate
from lfbm_lightning.errors import CheckpointError, ConfigError
from lfbm_lightning.metrics.fid import resolve_inception_weights
from lfbm_lightning.runtime.checkpoint_io import atomic_write_text
from lfbm_lightning.runtime.checkpoints import load_model
from lfbm_lightning.runtime.distributed import ddp_job_scope, rank_and_world_size
from lfbm_lightning.tasks.task import Task

log = logging.getLogger(__name__)

INCEPTION_KEYS = ("fid", "kid", "isc")
"""Task settings that need the Inception network."""

TASK_DIR = CONF_DIR / "task"
"""The task config group: one ``<name>.yaml`` per task."""

CHECKPOINT_PATTERN = "epoch-*.ckpt"
"""The checkpoints of a directory ``ckpt_path`` (``callbacks.keep_last_epochs``)."""


def resolve_device(name: str) -> torch.device:
    """``auto`` is CUDA when available, else the CPU; anything else as torch spells it."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def check_device(name: Any) -> torch.device:
    """The device ``device=name`` names, or a :class:`ConfigError` when torch cannot parse it
    or this machine does not have it."""
    allowed = "auto, cpu, cuda, cuda:<index>, mps"
    try:
        device = resolve_device(str(name))
    except (RuntimeError, ValueError) as err:
        raise ConfigError(f"device={name!r} is not a device: use one of {allowed}") from err
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0 or (device.index is not None and device.index >= count):
            raise ConfigError(
                f"device={name} but this machine has {count} CUDA device(s): use device=cpu "
                f"or device=auto (cuda when available)"
            )
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"device={name} but MPS is not available: use device=cpu")
    return device


def check_int(value: Any, key: str, minimum: int, nullable: bool = False) -> None:
    """A :class:`ConfigError` unless ``value`` is an integer >= ``minimum`` (or null)."""
    if value is None and nullable:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        allowed = f"{'null or ' if nullable else ''}an integer >= {minimum}"
        raise ConfigError(f"{key} must be {allowed}, got {value!r}")


def check_positive(value: Any, key: str) -> None:
    """A :class:`ConfigError` unless ``value`` is null or a finite number > 0."""
    if value is None:
        return
    ok = isinstance(value, int | float) and not isinstance(value, bool)
    if not ok or not math.isfinite(value) or value <= 0:
        raise ConfigError(f"{key} must be null or a number > 0, got {value!r}")


def check_process_counts(cfg: DictConfig) -> tuple[int, int]:
    """(devices, num_nodes) of ``cfg``, both integers >= 1, or a :class:`ConfigError`."""
    for key in ("devices", "num_nodes"):
        check_int(cfg.get(key, 1), key, 1)
    return cfg.get("devices", 1), cfg.get("num_nodes", 1)


def check_settings(cfg: DictConfig) -> None:
    """Evaluate's own settings, before any model is loaded: a task, the process counts, the
    device, the batch sizes, and the task's ``n_examples``, ``n_steps``, ``step_size``."""
    if OmegaConf.is_missing(cfg.task, "name"):
        names = sorted(p.stem for p in TASK_DIR.glob("*.yaml"))
        raise ConfigError(f"task=<name> is required, one of {names} (conf/task/<name>.yaml)")
    check_process_counts(cfg)
    check_device(cfg.device)
    check_int(cfg.batch_size, "batch_size", 1, nullable=True)
    settings = cfg[cfg.task.name]
    name = cfg.task.name
    for key, minimum in (("n_examples", 1), ("n_steps", 0), ("n_samples", 1)):
        if key in settings:
            check_int(settings[key], f"{name}.{key}", minimum, nullable=True)
    if "step_size" in settings:
        check_positive(settings.step_size, f"{name}.step_size")
    check_int(cfg.metrics.batch_size, "metrics.batch_size", 1)


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
    lines = [f"# {title}", "", "| quantity | value |", "|---|---|"]
    lines += [f"| {key} | {shown(value)} |" for key, value in results.items()]
    if any(key.startswith("mse") for key in results):
        lines += ["", MSE_NOTE]
    return "\n".join(lines) + "\n"


def is_number(value: Any) -> bool:
    """A finite int or float (not a bool)."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def spread(per_checkpoint: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, float]]:
    """Per number that every checkpoint reports: ``{"mean": m, "sd": s}`` over the
    checkpoints, s the sample standard deviation (divisor n - 1; 0 for one checkpoint)."""
    runs = list(per_checkpoint.values())
    keys = [k for k in runs[0] if k != "processes" and all(is_number(r.get(k)) for r in runs)]
    out = {}
    for key in keys:
        values = [float(r[key]) for r in runs]
        sd = statistics.stdev(values) if len(values) > 1 else 0.0
        out[key] = {"mean": statistics.fmean(values), "sd": sd}
    return out


def spread_table(
    per_checkpoint: Mapping[str, Mapping[str, Any]], stats: Mapping[str, Mapping[str, float]]
) -> str:
    """Markdown: one row per number, one column per checkpoint, then mean +/- sd."""
    names = list(per_checkpoint)
    lines = [
        "| quantity | " + " | ".join(names) + " | mean +/- sd |",
        "|---|" + "---|" * (len(names) + 1),
    ]
    for key, s in stats.items():
        cells = [shown(per_checkpoint[name][key]) for name in names]
        lines.append(f"| {key} | " + " | ".join(cells) + f" | {s['mean']:.6g} +/- {s['sd']:.3g} |")
    return "\n".join(lines) + "\n"


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


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    """Run the task ``cfg.task`` on the checkpoint(s) ``cfg.ckpt_path``; returns what the
    top-level ``metrics.json`` holds.

    Checks that are cheap come first: evaluate's own settings (:func:`check_settings`), the
    checkpoint paths, then the Inception weights when the task needs them, so a wrong value
    fails before any process is started, model loaded or sample drawn. Every rank returns the
    summary; rank 0's holds the task's results (rank 0 alone computes the FID against the
    training set, KID and IS).
    """
    check_settings(cfg)
    ckpts, several = checkpoint_paths(str(cfg.ckpt_path))
    task_cfg = cfg[cfg.task.name]
    if any(task_cfg.get(key, False) for key in INCEPTION_KEYS):
        resolve_inception_weights(cfg.metrics.inception_weights, cfg.metrics.allow_download)
    out_dir = Path(cfg.paths.output_dir)
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
