"""CIFAR-10 (protocols.md): train (50,000, validation carved from it) and test (10,000)."""

from __future__ import annotations

import numpy as np

from lfbm_lightning.data.in_memory import TrainTestDataModule
from lfbm_lightning.data.readers import read_cifar10


class CIFAR10DataModule(TrainTestDataModule):
    """CIFAR-10 32 x 32 colour images in [-1, 1] from ``<root>/cifar-10-batches-py``.

    Args: see :class:`TrainTestDataModule`; ``channels`` and ``image_size`` must be 3 and 32.
    """

    name = "cifar10"
    image_shape = (3, 32)

    def read(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        return read_cifar10(self.root, split)
