"""CelebA 64 (protocols.md): aligned images, crop box (top 45, left 25, 128 x 128), 64 x 64.

Splits are the official partitions of ``list_eval_partition.txt``: train = 0 (162,770), val = 1
('valid', 19,867, where the paper evaluates), test = 2 (19,962). Images are decoded lazily.
"""

from __future__ import annotations

from torch.utils.data import Dataset

from lfbm_lightning.data.base import FileDataModule
from lfbm_lightning.data.readers import CelebA64


class CelebADataModule(FileDataModule):
    """CelebA 64 x 64 colour faces in [-1, 1] from ``<root>/celeba``.

    Args: see :class:`FileDataModule`; ``channels`` and ``image_size`` must be 3 and 64.
    """

    name = "celeba"
    image_shape = (3, 64)
    evaluation_split = "val"

    def build_splits(self) -> dict[str, Dataset]:
        return {
            split: CelebA64(self.root, partition)
            for split, partition in (("train", "train"), ("val", "valid"), ("test", "test"))
        }
