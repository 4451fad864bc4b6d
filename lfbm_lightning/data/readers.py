"""Readers for CIFAR-10, SVHN, CelebA 64 and MNIST in torchvision's on-disk layouts.

Each reader parses the files itself (no torchvision dataset objects), so that what is read is
exactly what the paper's protocol prescribes. Layouts under the data directory ``root``:

    cifar10: ``cifar-10-batches-py/{data_batch_1..5,test_batch}`` (python pickles);
    svhn:    ``svhn/{train_32x32.mat,test_32x32.mat}`` (MATLAB files);
    celeba:  ``celeba/img_align_celeba/*.jpg`` and ``celeba/list_eval_partition.txt``;
    mnist:   ``MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte`` (or their ``.gz``).

In-memory readers return ``images`` uint8 (N, C, H, W) and ``labels`` int64 (N,). CelebA is
too big for memory at full size (162,770 images), so :class:`CelebA64` loads it lazily.
"""

from __future__ import annotations

import gzip
import pickle
from collections.abc import Collection
from pathlib import Path

import numpy as np
import scipy.io
import torch
import torchvision.transforms.functional as TF
from PIL import Image
from torch.utils.data import Dataset
from torchvision import datasets as tv_datasets

from lfbm_lightning.data.datasets import to_unit_range
from lfbm_lightning.errors import DatasetFilesMissing

CIFAR10_DIR = "cifar-10-batches-py"
CIFAR10_SPLITS = {"train": [f"data_batch_{k}" for k in range(1, 6)], "test": ["test_batch"]}
SVHN_DIR = "svhn"
SVHN_SPLITS = {"train": "train_32x32.mat", "test": "test_32x32.mat"}
CELEBA_DIR = "celeba"
CELEBA_IMAGES = "img_align_celeba"
CELEBA_PARTITION = "list_eval_partition.txt"
CELEBA_PARTITIONS = {0: "train", 1: "valid", 2: "test"}
CELEBA_CROP = (45, 25, 128, 128)  # top, left, height, width (protocols.md)
CELEBA_SIZE = 64
MNIST_DIR = "MNIST/raw"
MNIST_SPLITS = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
IDX_IMAGES_MAGIC = 2051
IDX_LABELS_MAGIC = 2049

EXPECTED_FILES: dict[str, tuple[str, ...]] = {
    "cifar10": tuple(f"{CIFAR10_DIR}/{f}" for files in CIFAR10_SPLITS.values() for f in files),
    "svhn": tuple(f"{SVHN_DIR}/{f}" for f in SVHN_SPLITS.values()),
    "celeba": (f"{CELEBA_DIR}/{CELEBA_PARTITION}", f"{CELEBA_DIR}/{CELEBA_IMAGES}/"),
    "mnist": tuple(f"{MNIST_DIR}/{f}" for files in MNIST_SPLITS.values() for f in files),
}
"""Files (and, ending in '/', directories) each data set needs, relative to the data directory.
MNIST files may also be present gzipped (name + '.gz')."""


def _check_choice(value: str, choices: Collection[str], setting: str) -> None:
    """Raise ValueError naming ``setting`` unless ``value`` is one of ``choices``."""
    if value not in choices:
        raise ValueError(f"{setting} must be one of {sorted(choices)}, got {value!r}")


def _is_present(root: Path, relative: str, name: str) -> bool:
    """Whether one expected file (or directory, if ``relative`` ends in '/') exists."""
    path = root / relative
    if relative.endswith("/"):
        return path.is_dir()
    if name == "mnist":
        return path.is_file() or path.with_name(path.name + ".gz").is_file()
    return path.is_file()


def check_files(name: str, root: str | Path) -> None:
    """Check that every file of data set ``name`` is under ``root``, before any heavy work.

    Args:
        name: one of ``EXPECTED_FILES`` (cifar10, svhn, celeba, mnist).
        root: the data directory (setting ``paths.data_dir``).

    Raises:
        DatasetFilesMissing: naming the directory, the expected and missing files, and the two
            settings that fix it.
    """
    _check_choice(name, EXPECTED_FILES, "dataset name")
    root = Path(root).expanduser().resolve()
    expected = EXPECTED_FILES[name]
    missing = [rel for rel in expected if not _is_present(root, rel, name)]
    if not missing:
        return
    gz_note = " (each may also be gzipped, name + '.gz')" if name == "mnist" else ""
    lines = "\n".join(f"  {rel}{'  <- missing' if rel in missing else ''}" for rel in expected)
    raise DatasetFilesMissing(
        f"Data set '{name}' not found in the data directory {root}.\n"
        f"Expected these files there{gz_note}:\n{lines}\n"
        f"Fix: set paths.data_dir=/path/to/data (default: environment variable LFBM_DATA_DIR) "
        f"to the directory that holds them, or set dataset.download=true to fetch them with "
        f"torchvision (needs network)."
    )


def read_cifar10(root: str | Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Read CIFAR-10 from its python pickles.

    Args:
        root: data directory holding ``cifar-10-batches-py/``.
        split: 'train' (50,000 images) or 'test' (10,000).

    Returns:
        images uint8 (N, 3, 32, 32) and labels int64 (N,).
    """
    _check_choice(split, CIFAR10_SPLITS, "CIFAR-10 split")
    check_files("cifar10", root)
    images, labels = [], []
    for file in CIFAR10_SPLITS[split]:
        with open(Path(root) / CIFAR10_DIR / file, "rb") as f:
            batch = pickle.load(f, encoding="bytes")
        images.append(np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
        labels.append(np.asarray(batch[b"labels"], dtype=np.int64))
    return np.concatenate(images), np.concatenate(labels)


def read_svhn(root: str | Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Read SVHN from its .mat file; label 10 (digit 0) becomes 0.

    Args:
        root: data directory holding ``svhn/``.
        split: 'train' (73,257 images) or 'test' (26,032).

    Returns:
        images uint8 (N, 3, 32, 32) and labels int64 (N,) in 0..9.
    """
    _check_choice(split, SVHN_SPLITS, "SVHN split")
    check_files("svhn", root)
    mat = scipy.io.loadmat(Path(root) / SVHN_DIR / SVHN_SPLITS[split], variable_names=["X", "y"])
    images = np.ascontiguousarray(mat["X"].transpose(3, 2, 0, 1), dtype=np.uint8)  # HWCN->NCHW
    labels = mat["y"].reshape(-1).astype(np.int64)
    return images, np.where(labels == 10, 0, labels)


def _read_idx(path: Path, magic: int) -> np.ndarray:
    """Parse one idx file (plain or gzipped): big-endian int32 magic and dims, then uint8 data.

    Returns:
        uint8 array of the dims in the header, e.g. (N, 28, 28) for images, (N,) for labels.
    """
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        raw = f.read()
    found = int(np.frombuffer(raw, dtype=">i4", count=1)[0])
    if found != magic:
        raise ValueError(f"{path} is not an idx file with magic {magic} (found {found})")
    ndim = magic & 0xFF
    dims = np.frombuffer(raw, dtype=">i4", count=ndim, offset=4).astype(np.int64)
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise ValueError(f"{path}: header says {tuple(dims)} but holds {data.size} values")
    return data.reshape(tuple(dims))


def _mnist_path(root: Path, file: str) -> Path:
    """The plain idx file if present, else its .gz variant."""
    path = root / MNIST_DIR / file
    return path if path.is_file() else path.with_name(file + ".gz")


def read_mnist(root: str | Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Read MNIST from its idx files.

    Args:
        root: data directory holding ``MNIST/raw/``.
        split: 'train' (60,000), 'test' (10,000) or 'all' (the 70,000 pooled, train first).

    Returns:
        images uint8 (N, 1, 28, 28) and labels int64 (N,).
    """
    _check_choice(split, [*MNIST_SPLITS, "all"], "MNIST split")
    check_files("mnist", root)
    parts = list(MNIST_SPLITS) if split == "all" else [split]
    images, labels = [], []
    for part in parts:
        image_file, label_file = MNIST_SPLITS[part]
        images.append(_read_idx(_mnist_path(Path(root), image_file), IDX_IMAGES_MAGIC)[:, None])
        labels.append(_read_idx(_mnist_path(Path(root), label_file), IDX_LABELS_MAGIC))
    return np.concatenate(images), np.concatenate(labels).astype(np.int64)


def read_celeba_partition(root: str | Path) -> dict[str, list[str]]:
    """Parse ``celeba/list_eval_partition.txt`` (lines like '000001.jpg 0').

    Returns:
        file names per official partition: {'train': [...], 'valid': [...], 'test': [...]}, in
        file order.
    """
    check_files("celeba", root)
    partition: dict[str, list[str]] = {split: [] for split in CELEBA_PARTITIONS.values()}
    text = (Path(root) / CELEBA_DIR / CELEBA_PARTITION).read_text()
    for number, line in enumerate(text.splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 2 or fields[1] not in ("0", "1", "2"):
            raise ValueError(f"{CELEBA_PARTITION} line {number}: expected 'NAME 0|1|2': {line!r}")
        partition[CELEBA_PARTITIONS[int(fields[1])]].append(fields[0])
    return partition


def load_celeba64(path: str | Path) -> torch.Tensor:
    """Load one aligned CelebA JPEG, crop the protocol's box and resize it to 64 x 64.

    Returns:
        float32 (3, 64, 64) in [-1, 1].
    """
    with Image.open(path) as img:
        img = TF.crop(img.convert("RGB"), *CELEBA_CROP)
    img = TF.resize(img, [CELEBA_SIZE, CELEBA_SIZE], TF.InterpolationMode.BILINEAR, antialias=True)
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
        _check_choice(split, CELEBA_PARTITIONS.values(), "CelebA split")
        self.image_dir = Path(root) / CELEBA_DIR / CELEBA_IMAGES
        self.files = read_celeba_partition(root)[split]
        shape = (len(self.files), 1, CELEBA_SIZE, CELEBA_SIZE)
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


def download(name: str, root: str | Path) -> None:
    """Fetch data set ``name`` into ``root`` with torchvision's own downloaders (needs network).

    Files land in the layouts the readers expect; :func:`check_files` confirms it afterwards.
    CelebA comes from Google Drive (needs the ``gdown`` package; Drive quotas may refuse it).
    """
    _check_choice(name, EXPECTED_FILES, "dataset name")
    root = str(Path(root).expanduser())
    if name == "cifar10":
        for train in (True, False):
            tv_datasets.CIFAR10(root, train=train, download=True)
    elif name == "svhn":
        for split in SVHN_SPLITS:
            tv_datasets.SVHN(str(Path(root) / SVHN_DIR), split=split, download=True)
    elif name == "celeba":
        tv_datasets.CelebA(root, split="all", download=True)
    else:
        for train in (True, False):
            tv_datasets.MNIST(root, train=train, download=True)
    check_files(name, root)
