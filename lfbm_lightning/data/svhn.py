"""SVHN (protocols.md): train (73,257, validation carved from it) and test (26,032); the
``extra`` split is unused."""

from __future__ import annotations

import numpy as np

from lfbm_lightning.data.in_memory import TrainTestDataModule
from lfbm_lightning.data.readers import read_svhn


class SVHNDataModule(TrainTestDataModule):
    """SVHN 32 x 32 colour digits in [-1, 1] from ``<root>/svhn/{train,test}_32x32.mat``.

    Args: see :class:`TrainTestDataModule`; ``channels`` and ``image_size`` must be 3 and 32.
    """

    name = "svhn"
    image_shape = (3, 32)

    def read(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        return read_svhn(self.root, split)
