"""CelebA 64 (docs/paper.md): aligned images, crop box (top 45, left 25, 128 x 128), 64 x 64.

The official partitions of ``list_eval_partition.txt`` are train = 0 (162,770), valid = 1
(19,867, where the paper evaluates) and test = 2 (19,962). Images are decoded lazily. The data
module trains on the whole train partition; its ``val`` split (``val/mse``, image grids) is a
fixed seeded subset of ``val_size`` training images, never the evaluation partition ``valid``.

On disk (torchvision's layout): ``<root>/celeba/img_align_celeba/*.jpg`` (178 x 218) and
``<root>/celeba/list_eval_partition.txt`` (lines like '000001.jpg 0').
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import torchvision.transforms.functional as TF
from PIL import Image
from torch.utils.data import Dataset
from torchvision import datasets as tv_datasets

from lfbm_lightning.checks import check_choice
from lfbm_lightning.data.data_module import FileDataModule
from lfbm_lightning.data.datasets import IndexedSubset, to_unit_range
from lfbm_lightning.data.readers import DataFiles
from lfbm_lightning.data.splits import train_val_rows

DIRECTORY = "celeba"
IMAGES = "img_align_celeba"
PARTITION = "list_eval_partition.txt"
PARTITIONS = {0: "train", 1: "valid", 2: "test"}
CROP = (45, 25, 128, 128)  # top, left, height, width (docs/paper.md)
SIZE = 64
FILES = DataFiles(
    name="celeba",
    expected=(f"{DIRECTORY}/{PARTITION}", f"{DIRECTORY}/{IMAGES}/"),
    source="https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html (Align&Cropped images)",
)


def read_celeba_partition(root: str | Path) -> dict[str, list[str]]:
    """Parse ``celeba/list_eval_partition.txt`` (lines like '000001.jpg 0').

    Returns:
        file names per official partition: {'train': [...], 'valid': [...], 'test': [...]}, in
        file order.

    Raises:
        DataError: naming the file and the first line that is not 'NAME 0|1|2'.
    """
    FILES.check(root)
    partition: dict[str, list[str]] = {split: [] for split in PARTITIONS.values()}
    path = Path(root) / DIRECTORY / PARTITION
    for number, line in enumerate(path.read_text(errors="replace").splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 2 or fields[1] not in ("0", "1", "2"):
            raise FILES.bad_file(path, f"line {number} is not 'NAME 0|1|2': {line[:80]!r}")
        partition[PARTITIONS[int(fields[1])]].append(fields[0])
    return partition


def load_celeba64(path: str | Path) -> torch.Tensor:
    """Load one aligned CelebA JPEG, crop the protocol's box and resize it to 64 x 64.

    Returns:
        float32 (3, 64, 64) in [-1, 1].

    Raises:
        DataError: naming the file, if PIL cannot decode it.
    """
    try:
        with Image.open(path) as img:
            img = TF.crop(img.convert("RGB"), *CROP)
    except (OSError, SyntaxError) as error:  # PIL's errors for unreadable image files
        raise FILES.bad_file(path, f"is not a readable image ({error})") from None
    img = TF.resize(img, [SIZE, SIZE], TF.InterpolationMode.BILINEAR, antialias=True)
    return to_unit_range(np.asarray(img).transpose(2, 0, 1)[None])[0]


class CelebA64(Dataset):
    """CelebA 64 x 64 read lazily from the aligned JPEGs, one official partition.

    Items follow the batch-dict convention of ``datasets.py``: image float32 (3, 64, 64) in
    [-1, 1], label int64 0, index int64 i, and mask float32 (1, 64, 64) if ``masks`` is given.

    Args:
        root: data directory holding ``celeba/``.
        split: 'train' (162,770 images), 'valid' (19,867) or 'test' (19,962).
        masks: optional float tensor (N, 1, 64, 64), 1 = observed, one per image of the split.
    """

    def __init__(
        self, root: str | Path, split: str = "train", masks: torch.Tensor | None = None
    ) -> None:
        check_choice("CelebA split", split, sorted(PARTITIONS.values()))
        self.image_dir = Path(root) / DIRECTORY / IMAGES
        self.files = read_celeba_partition(root)[split]
        shape = (len(self.files), 1, SIZE, SIZE)
        if masks is not None and tuple(masks.shape) != shape:
            raise ValueError(f"masks must have shape {shape}, got {tuple(masks.shape)}")
        self.masks = masks

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        item = {
            "image": load_celeba64(self.image_dir / self.files[i]),
            "label": torch.tensor(0),
            "index": torch.tensor(i),
        }
        if self.masks is not None:
            item["mask"] = self.masks[i].float()
        return item


def download(root: str | Path) -> None:
    """Fetch CelebA into ``root/celeba`` with torchvision (needs network and the ``gdown``
    package; Google Drive quotas may refuse it), then check that the files are there."""
    tv_datasets.CelebA(str(Path(root).expanduser()), split="all", download=True)
    FILES.check(root)


class CelebADataModule(FileDataModule):
    """CelebA 64 x 64 colour faces in [-1, 1] from ``<root>/celeba``.

    Splits: ``train`` = the train partition, ``val`` = ``val_size`` of its images (seeded by
    ``seed``; they stay in training), ``valid`` = the valid partition (the evaluation split),
    ``test`` = the test partition.

    Args:
        val_size: training images that ``val`` monitors.
        **kwargs: see :class:`FileDataModule`; ``channels`` and ``image_size`` must be 3 and 64.
    """

    files = FILES
    image_shape = (3, 64)
    evaluation_split = "valid"

    def __init__(self, val_size: int = 1000, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.val_size = val_size

    def fetch(self) -> None:
        download(self.root)

    def build_splits(self) -> dict[str, Dataset]:
        train = CelebA64(self.root, "train")
        _, val = train_val_rows(np.arange(len(train)), self.val_size, None, self.seed)
        return {
            "train": train,
            "val": IndexedSubset(train, val),
            "valid": CelebA64(self.root, "valid"),
            "test": CelebA64(self.root, "test"),
        }
