"""Shared LightningDataModule plumbing: loaders, seeds and the split contract."""

from __future__ import annotations

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset


class ImageDataModule(pl.LightningDataModule):
    """Base class: subclasses fill ``self.splits`` ({"train", "val", "test"} -> Dataset) in
    ``setup`` and declare the image shape; this class builds the loaders.

    Items follow :mod:`lfbm_lightning.data.datasets` (dicts with image, label, index, [mask]).

    Args:
        channels: C of the images.
        image_size: H = W of the images.
        batch_size: images per batch (per device under DDP).
        num_workers: DataLoader worker processes (0 = load in the main process).
        pin_memory: pin host memory for faster host-to-GPU copies.
        persistent_workers: keep workers alive between epochs (needs num_workers > 0).
        seed: seed of the splits and of the training-set shuffling.
    """

    def __init__(
        self,
        channels: int,
        image_size: int,
        batch_size: int = 100,
        num_workers: int = 0,
        pin_memory: bool = False,
        persistent_workers: bool = False,
        seed: int = 1,
    ) -> None:
        super().__init__()
        if batch_size < 1:
            raise ValueError(f"dataset.batch_size must be >= 1, got {batch_size}")
        if num_workers < 0:
            raise ValueError(f"dataset.num_workers must be >= 0, got {num_workers}")
        self.channels = channels
        self.image_size = image_size
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.pin_memory = pin_memory
        self.persistent_workers = persistent_workers and num_workers > 0
        self.seed = seed
        self.splits: dict[str, Dataset] = {}

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        if split not in self.splits:
            self.setup()
        return DataLoader(
            self.splits[split],
            batch_size=self.batch_size,
            shuffle=shuffle,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.persistent_workers,
            generator=torch.Generator().manual_seed(self.seed) if shuffle else None,
            drop_last=False,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)
