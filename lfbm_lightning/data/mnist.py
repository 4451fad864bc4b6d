"""MNIST: the standard train/test split, or a held-out-digit anomaly protocol (docs/paper.md).

``protocol=pooled_80_20`` or ``official`` (:mod:`lfbm_lightning.data.splits`); label 1 = anomaly.
On disk (torchvision's layout): ``<root>/MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte``
(each may be gzipped, name + '.gz'): idx files, a big-endian int32 magic (2051 images, 2049
labels) and dims, then the uint8 values.
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.data import Dataset
from torchvision import datasets as tv_datasets

from lfbm_lightning.checks import check_choice
from lfbm_lightning.data.in_memory import TrainTestDataModule, UInt8ImageDataset
from lfbm_lightning.data.readers import DataFiles
from lfbm_lightning.data.splits import (
    PROTOCOLS,
    hold_back_anomalies,
    holdout_digit_split,
    official_holdout_split,
    train_val_rows,
)

DIRECTORY = "MNIST/raw"
SPLITS = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
IMAGES_MAGIC = 2051
LABELS_MAGIC = 2049
FILES = DataFiles(
    name="mnist",
    expected=tuple(f"{DIRECTORY}/{f}" for files in SPLITS.values() for f in files),
    source="https://yann.lecun.com/exdb/mnist/",
    gz_ok=True,
)


def read_idx(path: Path, magic: int) -> np.ndarray:
    """Parse one idx file (plain or gzipped): big-endian int32 magic and dims, then uint8 data.

    Returns:
        uint8 array of the dims in the header, e.g. (N, 28, 28) for images, (N,) for labels.

    Raises:
        DataError: naming the file, if it cannot be decompressed, is shorter than its header
            or its dims, or has another magic number.
    """
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError, zlib.error) as error:  # a broken gzip stream
        raise FILES.bad_file(path, f"cannot be decompressed ({error})") from None
    ndim = magic & 0xFF
    header = 4 * (1 + ndim)
    if len(raw) < header:
        raise FILES.bad_file(path, f"is truncated: {len(raw)} bytes, the header needs {header}")
    found = int(np.frombuffer(raw, dtype=">i4", count=1)[0])
    if found != magic:
        raise FILES.bad_file(path, f"is not an idx file with magic {magic} (found {found})")
    dims = np.frombuffer(raw, dtype=">i4", count=ndim, offset=4).astype(np.int64)
    data = np.frombuffer(raw, dtype=np.uint8, offset=header)
    if data.size != int(np.prod(dims)):
        raise FILES.bad_file(
            path, f"is truncated: header says {tuple(dims)} but holds {data.size} values"
        )
    return data.reshape(tuple(dims))


def read_mnist(root: str | Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Read MNIST from its idx files.

    Args:
        root: data directory holding ``MNIST/raw/``.
        split: 'train' (60,000), 'test' (10,000) or 'all' (the 70,000 pooled, train first).

    Returns:
        images uint8 (N, 1, 28, 28) and labels int64 (N,).

    Raises:
        DataError: naming the file that is broken, or the label file whose count differs from
            its image file's.
    """
    check_choice("MNIST split", split, sorted([*SPLITS, "all"]))
    FILES.check(root)
    parts = list(SPLITS) if split == "all" else [split]
    images, labels = [], []
    for part in parts:
        image_path, label_path = (FILES.path(root, f"{DIRECTORY}/{f}") for f in SPLITS[part])
        images.append(read_idx(image_path, IMAGES_MAGIC)[:, None])
        labels.append(read_idx(label_path, LABELS_MAGIC))
        if len(labels[-1]) != len(images[-1]):
            raise FILES.bad_file(
                label_path,
                f"holds {len(labels[-1])} labels for the {len(images[-1])} images of "
                f"{image_path.name}",
            )
    return np.concatenate(images), np.concatenate(labels).astype(np.int64)


def download(root: str | Path) -> None:
    """Fetch MNIST into ``root/MNIST/raw`` with torchvision's downloader (needs network), then
    check that every expected file is there."""
    for train in (True, False):
        tv_datasets.MNIST(str(Path(root).expanduser()), train=train, download=True)
    FILES.check(root)


class MNISTDataModule(TrainTestDataModule):
    """MNIST 28 x 28 grey digits in [-1, 1] from ``<root>/MNIST/raw``.

    Args:
        holdout_digit: None (standard split: train 60,000, test 10,000, labels = digits) or the
            anomalous digit 0..9 (labels of the test set: 1 = anomaly).
        protocol: the held-out-digit protocol, ``pooled_80_20`` or ``official`` (module
            docstring; :data:`~lfbm_lightning.data.splits.PROTOCOLS`).
        holdout_seed: permutation seed of ``pooled_80_20`` (1: the seed the authors' code gives
            numpy before permuting its own copy of MNIST, docs/paper.md#mnist-holdout).
        holdout_val_fraction: share of the held-out digit's test images moved to the
            ``val_anomaly`` split (the validation images, label 0, then those, label 1) for the
            periodic held-out AUPRC (0: none, the protocol's test split).
        **kwargs: see :class:`TrainTestDataModule`; ``channels`` and ``image_size`` must be 1
            and 28.
    """

    files = FILES
    image_shape = (1, 28)

    def __init__(
        self,
        holdout_digit: int | None = None,
        protocol: str = "pooled_80_20",
        holdout_seed: int = 1,
        holdout_val_fraction: float = 0.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        check_choice("dataset.protocol", protocol, sorted(PROTOCOLS))
        self.holdout_digit = holdout_digit
        self.protocol = protocol
        self.holdout_seed = holdout_seed
        self.holdout_val_fraction = holdout_val_fraction

    def fetch(self) -> None:
        download(self.root)

    def read(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        return read_mnist(self.root, split)

    def build_splits(self) -> dict[str, Dataset]:
        if self.holdout_digit is None:
            return super().build_splits()
        if self.protocol == "official":
            (train_images, train_labels), (test_images, test_labels) = map(
                self.read, ("train", "test")
            )
            images = np.concatenate([train_images, test_images])
            labels = np.concatenate([train_labels, test_labels])
            split = official_holdout_split(labels, len(train_labels), self.holdout_digit)
        else:
            images, labels = self.read("all")
            split = holdout_digit_split(labels, self.holdout_digit, self.holdout_seed)
        split, held = hold_back_anomalies(split, self.holdout_val_fraction, self.holdout_seed)
        train, val = train_val_rows(split.train, self.val_size, self.val_fraction, self.seed)
        splits = {
            "train": UInt8ImageDataset(images, labels[train], train),
            "val": UInt8ImageDataset(images, labels[val], val),
            "test": UInt8ImageDataset(images, split.test_is_anomaly, split.test),
        }
        if len(held):
            rows = np.concatenate([val, held])
            is_anomaly = np.concatenate([np.zeros(len(val)), np.ones(len(held))]).astype(np.int64)
            splits["val_anomaly"] = UInt8ImageDataset(images, is_anomaly, rows)
        return splits
