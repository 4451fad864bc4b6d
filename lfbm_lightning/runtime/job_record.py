"""What a run directory records about the job that wrote it, written only once its checks pass.

Hydra would write ``.hydra/config.yaml``, ``hydra.yaml`` and ``overrides.yaml`` before the job
starts, so a refused command (a locked directory, a fresh run into an earlier run's directory,
an evaluation into a directory holding results) would still replace the record of the run that
owns the directory. The configs set ``hydra.output_subdir: null`` and the job calls
:func:`record_hydra_files` after its checks. The settings a sweep's numbers are filed under
(:func:`job_settings`: overrides, group choices, resolved config) go into ``metrics.json``
beside those numbers, which ``lfbm-gather`` reads (:mod:`lfbm_lightning.reporting.jobs`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from lfbm_lightning.runtime.checkpoint_io import atomic_write_text

HYDRA_SUBDIR = ".hydra"


def record_hydra_files(task_cfg: DictConfig) -> Path | None:
    """Write the three files Hydra writes for a job into ``<job output dir>/.hydra/``, with the
    same content (``hydra.yaml`` says ``output_subdir: .hydra``); returns that directory.

    Does nothing outside a Hydra job, or when ``hydra.output_subdir`` is set (Hydra wrote them
    itself); call it on one process only (DDP rank 0).
    """
    if not HydraConfig.initialized() or HydraConfig.get().output_subdir is not None:
        return None
    hydra_cfg = OmegaConf.create(OmegaConf.to_container(HydraConfig.instance().cfg))
    hydra_cfg.hydra.output_subdir = HYDRA_SUBDIR
    out = Path(hydra_cfg.hydra.runtime.output_dir) / HYDRA_SUBDIR
    for name, node in (
        ("config.yaml", task_cfg),
        ("hydra.yaml", hydra_cfg),
        ("overrides.yaml", hydra_cfg.hydra.overrides.task),
    ):
        atomic_write_text(out / name, OmegaConf.to_yaml(node))
    return out


def job_settings(config: dict[str, Any]) -> dict[str, Any]:
    """The settings of the current job for ``metrics.json``'s ``settings``: ``overrides`` (the
    command line's, as typed), ``choices`` (config group -> option) and ``config`` (the
    resolved run config ``config``); only ``config`` outside a Hydra job."""
    if not HydraConfig.initialized():
        return {"overrides": [], "choices": {}, "config": config}
    hydra_cfg = HydraConfig.get()
    return {
        "overrides": list(hydra_cfg.overrides.task),
        "choices": OmegaConf.to_container(hydra_cfg.runtime.choices),
        "config": config,
    }
