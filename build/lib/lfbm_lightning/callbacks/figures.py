"""Send a figure to every logger that stores images: W&B, TensorBoard and MLflow.

Lightning's loggers take images in different ways: ``WandbLogger.log_image``, TensorBoard's
``SummaryWriter.add_image`` and MLflow's ``MlflowClient.log_image``; the CSV logger takes none.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
from pytorch_lightning.loggers import MLFlowLogger, TensorBoardLogger


def log_figure(loggers: Iterable[Any], key: str, picture: np.ndarray, step: int) -> list[str]:
    """Log an (H, W, 3) uint8 figure under ``key`` at ``step`` to each logger that stores
    images; returns the names of the loggers that took it."""
    took = []
    for logger in loggers:
        if isinstance(logger, TensorBoardLogger):
            logger.experiment.add_image(key, picture, global_step=step, dataformats="HWC")
        elif isinstance(logger, MLFlowLogger):
            name = f"{key}_step{step:07d}.png"
            logger.experiment.log_image(logger.run_id, picture, artifact_file=name)
        elif hasattr(logger, "log_image"):  # W&B
            logger.log_image(key=key, images=[picture], step=step)
        else:
            continue
        took.append(type(logger).__name__)
    return took
