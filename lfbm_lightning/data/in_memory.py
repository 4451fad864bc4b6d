"""Data sets held in memory as uint8 and scaled to [-1, 1] per item (CIFAR-10, SVHN, MNIST).

uint8 keeps the memory at a quarter of float32 (CIFAR-10's 50,000 x 3 x 32 x 32 images take
150 MB), and the splits index into one shared array instead of copying it.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from lfbm_lightning.data.data_module import FileDataModule
from lfbm_lightning.data.datasets import to_unit_range
from lfbm_lightning.data.splits import train_val_rows


class UInt8ImageDataset(Dataset):
    """Items ``image`` = images[indices[i]] scaled to [-1, 1], ``label`` = labels[i], ``index``.

    Args:
        images: uint8 (N, C, H, W), shared, never copied.
        labels: int (M,), one per item.
        indices: int (M,) rows of ``images`` (default: all N in order).
    """

    def __init__(
        self, images: np.ndarray, labels: np.ndarray, indices: np.ndarray | None = None
    ) -> None:
        if images.dtype != np.uint8 or images.ndim != 4:
            raise ValueError(
                f"images must be uint8 (N, C, H, W), got {images.dtype} {images.shape}"
            )
        self.images = images
        self.indices = np.arange(len(images)) if indices is None else np.asarray(indices)
        self.labels = torch.as_tensor(np.asarray(labels), dtype=torch.long)
        if len(self.labels) != len(self.indices):
            raise ValueError(f"{len(self.labels)} labels for {len(self.indices)} images")

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        row = int(self.indices[i])
        return {
            "image": to_unit_range(self.images[row : row + 1])[0],
            "label": self.labels[i],
            "index": torch.tensor(i),
        }


class TrainTestDataModule(FileDataModule):
    """A data set with official train and test splits; ``val`` is drawn from train
    (:func:`~lfbm_lightning.data.splits.train_val_rows`).

    Subclasses set ``files``, ``image_shape``, :meth:`fetch` and :meth:`read`.

    Args:
        val_size: images of the training split that ``val`` monitors (they stay in training).
        val_fraction: None (the paper: train on the whole split), or the share of the training
            split carved out for ``val`` instead.
        **kwargs: see :class:`FileDataModule`.
    """

    def __init__(
        self, val_size: int = 1000, val_fraction: float | None = None, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.val_size = val_size
        self.val_fraction = val_fraction

    def read(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        """Images uint8 (N, C, H, W) and labels int64 (N,) of an official split."""
        raise NotImplementedError

    def build_splits(self) -> dict[str, Dataset]:
        images, labels = self.read("train")
        rows = np.arange(len(images))
        train, val = train_val_rows(rows, self.val_size, self.val_fraction, self.seed)
        return {
            "train": UInt8ImageDataset(images, labels[train], train),
            "val": UInt8ImageDataset(images, labels[val], val),
            "test": UInt8ImageDataset(*self.read("test")),
        }
