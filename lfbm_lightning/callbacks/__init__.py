"""Lightning callbacks: image grids (and evaluation metrics during training)."""

from lfbm_lightning.callbacks.images import ImageGridCallback

__all__ = ["ImageGridCallback"]
