"""In-memory image datasets yielding the batch dictionaries the model consumes.

Every item is a dict:
    ``image``: float32 (C, H, W) in [-1, 1];
    ``label``: int64 scalar (class, or 1 = anomaly for anomaly-detection test sets);
    ``index``: int64 scalar, the item's position in this dataset (for per-example state);
    ``mask`` (only for occluded data): float32 (1, H, W), 1 = observed, 0 = missing.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset


def to_unit_range(images_uint8: np.ndarray) -> torch.Tensor:
    """uint8 (N, C, H, W) in 0..255 to float32 in [-1, 1] (ToTensor then Normalize(0.5, 0.5))."""
    return torch.from_numpy(np.ascontiguousarray(images_uint8)).float().div(127.5).sub(1.0)


class TensorImageDataset(Dataset):
    """Images already in memory as a float tensor (N, C, H, W) in [-1, 1].

    Args:
        images: float tensor (N, C, H, W) in [-1, 1].
        labels: int tensor (N,).
        masks: optional float tensor (N, 1, H, W), 1 = observed.
    """

    def __init__(
        self, images: torch.Tensor, labels: torch.Tensor, masks: torch.Tensor | None = None
    ) -> None:
        if images.ndim != 4:
            raise ValueError(f"images must be (N, C, H, W), got shape {tuple(images.shape)}")
        if len(labels) != len(images) or (masks is not None and len(masks) != len(images)):
            raise ValueError("images, labels and masks must have the same length")
        self.images = images.float()
        self.labels = labels.long()
        self.masks = masks

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        item = {"image": self.images[i], "label": self.labels[i], "index": torch.tensor(i)}
        if self.masks is not None:
            item["mask"] = self.masks[i]
        return item


class IndexedSubset(Dataset):
    """Items ``dataset[rows[i]]`` renumbered: their ``index`` is i, the position in the subset.

    Args:
        dataset: a dataset of batch dicts.
        rows: int (M,) positions in ``dataset``.
    """

    def __init__(self, dataset: Dataset, rows: np.ndarray) -> None:
        self.dataset = dataset
        self.rows = np.asarray(rows)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {**self.dataset[int(self.rows[i])], "index": torch.tensor(i)}
