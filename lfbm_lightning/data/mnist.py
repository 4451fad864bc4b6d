"""MNIST: the standard train/test split, or the held-out-digit anomaly protocol (protocols.md).

Held-out digit k: pool all 70,000 images, drop digit k, permute the rest with seed 42; the first
80% is the training pool (of which ``val_fraction`` is held out for validation); the test set is
the other 20% plus every image of digit k, label 1 = anomaly.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from torch.utils.data import Dataset

from lfbm_lightning.data.in_memory import TrainTestDataModule, UInt8ImageDataset, carve_validation
from lfbm_lightning.data.readers import read_mnist
from lfbm_lightning.data.splits import holdout_digit_split


class MNISTDataModule(TrainTestDataModule):
    """MNIST 28 x 28 grey digits in [-1, 1] from ``<root>/MNIST/raw``.

    Args:
        holdout_digit: None (standard split: train 60,000 with validation carved from it, test
            10,000, labels = digits) or the anomalous digit 0..9 (labels of the test set:
            1 = anomaly).
        holdout_seed: permutation seed of the held-out-digit protocol (42 in the reference).
        **kwargs: see :class:`TrainTestDataModule`; ``channels`` and ``image_size`` must be 1
            and 28.
    """

    name = "mnist"
    image_shape = (1, 28)

    def __init__(
        self, holdout_digit: int | None = None, holdout_seed: int = 42, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        if holdout_digit is not None and not 0 <= int(holdout_digit) <= 9:
            raise ValueError(f"dataset.holdout_digit must be in 0..9, got {holdout_digit}")
        self.holdout_digit = holdout_digit
        self.holdout_seed = holdout_seed

    def read(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        return read_mnist(self.root, split)

    def build_splits(self) -> dict[str, Dataset]:
        if self.holdout_digit is None:
            return super().build_splits()
        images, labels = self.read("all")
        split = holdout_digit_split(labels, self.holdout_digit, self.holdout_seed)
        train, val = carve_validation(split.train, self.val_fraction, self.seed)
        return {
            "train": UInt8ImageDataset(images, labels[train], train),
            "val": UInt8ImageDataset(images, labels[val], val),
            "test": UInt8ImageDataset(images, split.test_is_anomaly, split.test),
        }
