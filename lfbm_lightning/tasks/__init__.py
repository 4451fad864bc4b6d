"""The evaluation tasks behind evaluate.py (protocols.md), one module each.

A task is a function ``run(model, datamodule, cfg, out_dir) -> dict`` of the trained model, its
rebuilt data module, the evaluate config and the output directory: it writes its own files
(per-example CSV, PNG figures) and returns the numbers for ``metrics.json``.

Naming: an MSE without suffix is on the images' [-1, 1] scale (the paper's), ``_01`` marks the
[0, 1] scale (a quarter of it); every MSE is a per-pixel mean per image, averaged over images.
"""

from collections.abc import Callable
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from lfbm_lightning.tasks import (
    anomaly,
    inpainting,
    likelihood,
    reconstruction,
    recovery,
    synthesis,
)

Task = Callable[[Any, Any, DictConfig, Path], dict[str, Any]]

TASKS: dict[str, Task] = {
    "synthesis": synthesis.run,
    "reconstruction": reconstruction.run,
    "inpainting": inpainting.run,
    "anomaly": anomaly.run,
    "recovery": recovery.run,
    "likelihood": likelihood.run,
}

__all__ = ["TASKS", "Task"]
