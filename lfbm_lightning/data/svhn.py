"""SVHN (docs/paper.md): train (73,257) and test (26,032) 32 x 32 colour digits; ``extra`` is
unused.

On disk: ``<root>/svhn/{train,test}_32x32.mat``, MATLAB files holding ``X`` uint8
(32, 32, 3, N) and ``y`` (N, 1) with label 10 for digit 0.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import scipy.io
from torchvision import datasets as tv_datasets

from lfbm_lightning.checks import check_choice
from lfbm_lightning.data.in_memory import TrainTestDataModule
from lfbm_lightning.data.readers import DataFiles

DIRECTORY = "svhn"
SPLITS = {"train": "train_32x32.mat", "test": "test_32x32.mat"}
FILES = DataFiles(
    name="svhn",
    expected=tuple(f"{DIRECTORY}/{f}" for f in SPLITS.values()),
    source="http://ufldl.stanford.edu/housenumbers/ (format 2: cropped digits)",
)


def read_svhn(root: str | Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Read SVHN from its .mat file; label 10 (digit 0) becomes 0.

    Args:
        root: data directory holding ``svhn/``.
        split: 'train' (73,257 images) or 'test' (26,032).

    Returns:
        images uint8 (N, 3, 32, 32) and labels int64 (N,) in 0..9.

    Raises:
        DataError: naming the file, if it is no MATLAB file or lacks ``X`` and ``y``.
    """
    check_choice("SVHN split", split, sorted(SPLITS))
    FILES.check(root)
    path = Path(root) / DIRECTORY / SPLITS[split]
    try:
        mat = scipy.io.loadmat(path, variable_names=["X", "y"])
    except Exception as error:  # scipy raises several types for a broken file
        raise FILES.bad_file(path, f"is not a MATLAB file ({error})") from None
    x, y = mat.get("X"), mat.get("y")
    if not (
        isinstance(x, np.ndarray)
        and x.dtype == np.uint8
        and x.shape[:3] == (32, 32, 3)
        and isinstance(y, np.ndarray)
        and y.size == x.shape[3]
    ):
        raise FILES.bad_file(path, "lacks 'X' uint8 (32, 32, 3, N) and 'y' of N labels")
    images = np.ascontiguousarray(x.transpose(3, 2, 0, 1))  # HWCN -> NCHW
    labels = y.reshape(-1).astype(np.int64)
    return images, np.where(labels == 10, 0, labels)


def download(root: str | Path) -> None:
    """Fetch SVHN's train and test files into ``root/svhn`` with torchvision (needs network),
    then check that both are there."""
    for split in SPLITS:
        tv_datasets.SVHN(str(Path(root).expanduser() / DIRECTORY), split=split, download=True)
    FILES.check(root)


class SVHNDataModule(TrainTestDataModule):
    """SVHN 32 x 32 colour digits in [-1, 1] from ``<root>/svhn/{train,test}_32x32.mat``.

    Args: see :class:`TrainTestDataModule`; ``channels`` and ``image_size`` must be 3 and 32.
    """

    files = FILES
    image_shape = (3, 32)

    def fetch(self) -> None:
        download(self.root)

    def read(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        return read_svhn(self.root, split)
