"""scikit-learn's handwritten digits (1,797 real 8x8 images): the embedded default data set."""

from __future__ import annotations

import numpy as np
import torch
from sklearn.datasets import load_digits
from torch.utils.data import Dataset

from lfbm_lightning.data.data_module import ImageDataModule
from lfbm_lightning.data.datasets import TensorImageDataset
from lfbm_lightning.data.splits import (
    hold_back_anomalies,
    holdout_digit_split,
    random_split_indices,
)


def load_digit_images() -> tuple[torch.Tensor, np.ndarray]:
    """All 1,797 digits as float32 (N, 1, 8, 8) in [-1, 1] (grey levels 0..16 mapped
    linearly) and their labels (N,)."""
    bunch = load_digits()
    images = torch.from_numpy(bunch.images.astype(np.float32)).unsqueeze(1) / 8.0 - 1.0
    return images, bunch.target.astype(np.int64)


class DigitsDataModule(ImageDataModule):
    """Digits with a seeded train/val/test split, or the held-out-digit anomaly split.

    Without a held-out digit: a seeded permutation cut into ``fractions`` (train, val, test).
    With ``holdout_digit=k`` (docs/paper.md): the normal digits are permuted with
    ``holdout_seed`` and 80% of them are the training pool, of which ``val_fraction`` is kept
    for validation; the test set is the other 20% plus every image of digit k, label 1 =
    anomaly. ``holdout_val_fraction`` > 0 moves that share of digit k's images from test to
    the ``val_anomaly`` split (the validation images, label 0, then those, label 1), on which
    the periodic held-out AUPRC chooses checkpoints without the test split.

    Args:
        holdout_digit: None, or the anomalous digit 0..9.
        fractions: (train, val, test) shares for the plain split.
        holdout_seed: permutation seed of the held-out-digit protocol (42: chosen here; the
            authors seed their MNIST permutation with 1, on a data set of another size).
        val_fraction: share of the held-out protocol's training pool kept for validation.
        holdout_val_fraction: share of the held-out digit's images moved from test to
            ``val_anomaly`` (0: none, the protocol's test split).
        channels, image_size: must be 1 and 8 (declared in the config for the generator).
        **kwargs: loader and occlusion settings, see :class:`ImageDataModule` (salt-and-pepper
            holes of 8 x 8 pixels cannot fit: use ``occlusion.hole_size`` 2).
    """

    image_shape = (1, 8)

    def __init__(
        self,
        channels: int = 1,
        image_size: int = 8,
        holdout_digit: int | None = None,
        fractions: tuple[float, float, float] = (0.8, 0.1, 0.1),
        holdout_seed: int = 42,
        val_fraction: float = 0.1,
        holdout_val_fraction: float = 0.0,
        **kwargs,
    ) -> None:
        super().__init__(channels=channels, image_size=image_size, **kwargs)
        self.holdout_digit = holdout_digit
        self.fractions = tuple(fractions)
        self.holdout_seed = holdout_seed
        self.val_fraction = val_fraction
        self.holdout_val_fraction = holdout_val_fraction

    def build_splits(self) -> dict[str, Dataset]:
        images, labels = load_digit_images()
        if self.holdout_digit is None:
            parts = random_split_indices(len(images), self.fractions, self.seed)
            return {
                name: TensorImageDataset(images[idx], torch.from_numpy(labels[idx]))
                for name, idx in zip(("train", "val", "test"), parts, strict=True)
            }
        split = holdout_digit_split(labels, self.holdout_digit, self.holdout_seed)
        split, held = hold_back_anomalies(split, self.holdout_val_fraction, self.holdout_seed)
        n_val = int(round(self.val_fraction * len(split.train)))
        val_idx, train_idx = split.train[:n_val], split.train[n_val:]
        splits = {
            "train": TensorImageDataset(images[train_idx], torch.from_numpy(labels[train_idx])),
            "val": TensorImageDataset(images[val_idx], torch.from_numpy(labels[val_idx])),
            "test": TensorImageDataset(
                images[split.test], torch.from_numpy(split.test_is_anomaly)
            ),
        }
        if len(held):
            rows = np.concatenate([val_idx, held])
            is_anomaly = np.concatenate([np.zeros(len(val_idx)), np.ones(len(held))])
            splits["val_anomaly"] = TensorImageDataset(
                images[rows], torch.from_numpy(is_anomaly.astype(np.int64))
            )
        return splits
