"""CIFAR-10 (docs/paper.md): train (50,000) and test (10,000), 32 x 32 colour images.

On disk (torchvision's layout): ``<root>/cifar-10-batches-py/{data_batch_1..5,test_batch}``,
python pickles of dicts ``{b"data": uint8 (N, 3072), b"labels": [N ints], ...}`` whose rows
hold the R, G, B planes (1024 values each, row-major). They are read with
:class:`CIFAR10Unpickler`, which resolves numpy's array pieces and nothing else.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
from torchvision import datasets as tv_datasets

from lfbm_lightning.checks import check_choice
from lfbm_lightning.data.in_memory import TrainTestDataModule
from lfbm_lightning.data.readers import DataFiles

try:
    from numpy._core.multiarray import _reconstruct as np_reconstruct
except ImportError:  # numpy < 2
    from numpy.core.multiarray import _reconstruct as np_reconstruct

DIRECTORY = "cifar-10-batches-py"
SPLITS = {"train": [f"data_batch_{k}" for k in range(1, 6)], "test": ["test_batch"]}
FILES = DataFiles(
    name="cifar10",
    expected=tuple(f"{DIRECTORY}/{f}" for files in SPLITS.values() for f in files),
    source="https://www.cs.toronto.edu/~kriz/cifar.html (CIFAR-10 python version)",
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
        images uint8 (N, 3, 32, 32) and labels int64 (N,).

    Raises:
        DataError: naming the file, if it is no CIFAR-10 batch (unpicklable, a forbidden
            global, or not a dict with ``data`` uint8 (N, 3072) and ``labels`` of length N).
    """
    try:
        with open(path, "rb") as f:
            batch = CIFAR10Unpickler(f, encoding="bytes").load()
    except Exception as error:  # any failure to parse means a bad file, named below
        raise FILES.bad_file(path, f"is not a CIFAR-10 python batch ({error})") from None
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
        raise FILES.bad_file(path, "is not a dict with 'data' uint8 (N, 3072) and 'labels' (N)")
    return data.reshape(-1, 3, 32, 32), np.asarray(labels, dtype=np.int64)


def read_cifar10(root: str | Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Read CIFAR-10 from its python pickles.

    Args:
        root: data directory holding ``cifar-10-batches-py/``.
        split: 'train' (50,000 images) or 'test' (10,000).

    Returns:
        images uint8 (N, 3, 32, 32) and labels int64 (N,).
    """
    check_choice("CIFAR-10 split", split, sorted(SPLITS))
    FILES.check(root)
    batches = [read_cifar10_batch(Path(root) / DIRECTORY / file) for file in SPLITS[split]]
    return np.concatenate([b[0] for b in batches]), np.concatenate([b[1] for b in batches])


def download(root: str | Path) -> None:
    """Fetch CIFAR-10 into ``root`` with torchvision's downloader (needs network), then check
    that every expected file is there."""
    for train in (True, False):
        tv_datasets.CIFAR10(str(Path(root).expanduser()), train=train, download=True)
    FILES.check(root)


class CIFAR10DataModule(TrainTestDataModule):
    """CIFAR-10 32 x 32 colour images in [-1, 1] from ``<root>/cifar-10-batches-py``.

    Args: see :class:`TrainTestDataModule`; ``channels`` and ``image_size`` must be 3 and 32.
    """

    files = FILES
    image_shape = (3, 32)

    def fetch(self) -> None:
        download(self.root)

    def read(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        return read_cifar10(self.root, split)
