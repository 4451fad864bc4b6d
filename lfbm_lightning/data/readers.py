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
import zlib
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
from lfbm_lightning.errors import DataError, DatasetFilesMissing

try:
    from numpy._core.multiarray import _reconstruct as np_reconstruct
except ImportError:  # numpy < 2
    from numpy.core.multiarray import _reconstruct as np_reconstruct

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
SOURCES = {
    "cifar10": "https://www.cs.toronto.edu/~kriz/cifar.html (python version)",
    "svhn": "http://ufldl.stanford.edu/housenumbers/ (format 2, cropped digits)",
    "celeba": "https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html (aligned images)",
    "mnist": "https://yann.lecun.com/exdb/mnist/",
}
"""Official source of each data set's files, named in the fix of a :class:`DataError`."""
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


def bad_file(name: str, path: Path, problem: str) -> DataError:
    """The one-line error for a data file that is there but unreadable or malformed.

    Args:
        name: the data set (a key of :data:`SOURCES`).
        path: the bad file.
        problem: what is wrong with it, e.g. 'is empty (0 bytes)'.
    """
    return DataError(
        f"Data file {path} of data set '{name}' {problem}. Fix: delete it and set "
        f"dataset.download=true to fetch a good copy, or get one from {SOURCES[name]}."
    )


class CIFAR10Unpickler(pickle.Unpickler):
    """Unpickles a CIFAR-10 batch file, resolving only the globals such a file names.

    A batch is a dict of bytes, lists and one numpy array, so it needs numpy's array
    reconstruction (``_reconstruct``, ``ndarray``, ``dtype``) and nothing else; any other
    global (``os.system``, ``builtins.eval``, ...) raises ``pickle.UnpicklingError`` instead of
    being imported, so a crafted file cannot run code.
    """

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"): np_reconstruct,
        ("numpy._core.multiarray", "_reconstruct"): np_reconstruct,
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
    }

    def find_class(self, module: str, name: str) -> object:
        try:
            return self.ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"global {module}.{name} is not allowed") from None


def read_cifar10_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Read one CIFAR-10 batch file with :class:`CIFAR10Unpickler`.

    Returns:
        images uint8 (N, 3, 32, 32) (each row of ``data`` holds the R, G, B planes, 1024 values
        each, row-major) and labels int64 (N,).

    Raises:
        DataError: naming the file, if it is no CIFAR-10 batch (unpicklable, a forbidden
            global, or not a dict with ``data`` uint8 (N, 3072) and ``labels`` of length N).
    """
    try:
        with open(path, "rb") as f:
            batch = CIFAR10Unpickler(f, encoding="bytes").load()
    except Exception as error:  # any failure to parse means a bad file, named below
        raise bad_file("cifar10", path, f"is not a CIFAR-10 python batch ({error})") from None
    data = batch.get(b"data") if isinstance(batch, dict) else None
    labels = batch.get(b"labels") if isinstance(batch, dict) else None
    if not (
        isinstance(data, np.ndarray)
        and data.dtype == np.uint8
        and data.ndim == 2
        and data.shape[1] == 3072
        and isinstance(labels, list)
        and len(labels) == len(data)
    ):
        raise bad_file(
            "cifar10", path, "is not a dict with 'data' uint8 (N, 3072) and 'labels' (N)"
        )
    return data.reshape(-1, 3, 32, 32), np.asarray(labels, dtype=np.int64)


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
    batches = [read_cifar10_batch(Path(root) / CIFAR10_DIR / f) for f in CIFAR10_SPLITS[split]]
    return np.concatenate([b[0] for b in batches]), np.concatenate([b[1] for b in batches])


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
    path = Path(root) / SVHN_DIR / SVHN_SPLITS[split]
    try:
        mat = scipy.io.loadmat(path, variable_names=["X", "y"])
    except Exception as error:  # scipy raises several types for a broken file
        raise bad_file("svhn", path, f"is not a MATLAB file ({error})") from None
    x, y = mat.get("X"), mat.get("y")
    if not (
        isinstance(x, np.ndarray)
        and x.dtype == np.uint8
        and x.shape[:3] == (32, 32, 3)
        and isinstance(y, np.ndarray)
        and y.size == x.shape[3]
    ):
        raise bad_file("svhn", path, "lacks 'X' uint8 (32, 32, 3, N) and 'y' of N labels")
    images = np.ascontiguousarray(x.transpose(3, 2, 0, 1))  # HWCN -> NCHW
    labels = y.reshape(-1).astype(np.int64)
    return images, np.where(labels == 10, 0, labels)


def _read_idx(path: Path, magic: int) -> np.ndarray:
    """Parse one idx file (plain or gzipped): big-endian int32 magic and dims, then uint8 data.

    Returns:
        uint8 array of the dims in the header, e.g. (N, 28, 28) for images, (N,) for labels.
    """
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError, zlib.error) as error:  # a broken gzip stream
        raise bad_file("mnist", path, f"cannot be decompressed ({error})") from None
    ndim = magic & 0xFF
    header = 4 * (1 + ndim)
    if len(raw) < header:
        raise bad_file("mnist", path, f"is truncated: {len(raw)} bytes, the header needs {header}")
    found = int(np.frombuffer(raw, dtype=">i4", count=1)[0])
    if found != magic:
        raise bad_file("mnist", path, f"is not an idx file with magic {magic} (found {found})")
    dims = np.frombuffer(raw, dtype=">i4", count=ndim, offset=4).astype(np.int64)
    data = np.frombuffer(raw, dtype=np.uint8, offset=header)
    if data.size != int(np.prod(dims)):
        raise bad_file(
            "mnist", path, f"is truncated: header says {tuple(dims)} but holds {data.size} values"
        )
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
        image_path, label_path = (_mnist_path(Path(root), f) for f in MNIST_SPLITS[part])
        images.append(_read_idx(image_path, IDX_IMAGES_MAGIC)[:, None])
        labels.append(_read_idx(label_path, IDX_LABELS_MAGIC))
        if len(labels[-1]) != len(images[-1]):
            raise bad_file(
                "mnist",
                label_path,
                f"holds {len(labels[-1])} labels for the {len(images[-1])} images of "
                f"{image_path.name}",
            )
    return np.concatenate(images), np.concatenate(labels).astype(np.int64)


def read_celeba_partition(root: str | Path) -> dict[str, list[str]]:
    """Parse ``celeba/list_eval_partition.txt`` (lines like '000001.jpg 0').

    Returns:
        file names per official partition: {'train': [...], 'valid': [...], 'test': [...]}, in
        file order.
    """
    check_files("celeba", root)
    partition: dict[str, list[str]] = {split: [] for split in CELEBA_PARTITIONS.values()}
    path = Path(root) / CELEBA_DIR / CELEBA_PARTITION
    text = path.read_text(errors="replace")
    for number, line in enumerate(text.splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 2 or fields[1] not in ("0", "1", "2"):
            raise bad_file("celeba", path, f"line {number} is not 'NAME 0|1|2': {line[:80]!r}")
        partition[CELEBA_PARTITIONS[int(fields[1])]].append(fields[0])
    return partition


def load_celeba64(path: str | Path) -> torch.Tensor:
    """Load one aligned CelebA JPEG, crop the protocol's box and resize it to 64 x 64.

    Returns:
        float32 (3, 64, 64) in [-1, 1].
    """
    try:
        with Image.open(path) as img:
            img = TF.crop(img.convert("RGB"), *CELEBA_CROP)
    except (OSError, SyntaxError) as error:  # PIL's errors for unreadable image files
        raise bad_file("celeba", Path(path), f"is not a readable image ({error})") from None
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
