"""Lightning callbacks: image grids, run guards (skipped batches, SIGTERM) and, in
:mod:`~lfbm_lightning.callbacks.metrics`, evaluation metrics during training."""

from lfbm_lightning.callbacks.images import ImageGridCallback
from lfbm_lightning.callbacks.run_guards import CheckpointOnSigterm, SkippedBatchesGuard

__all__ = ["CheckpointOnSigterm", "ImageGridCallback", "SkippedBatchesGuard"]
