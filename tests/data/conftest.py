"""Fixtures writing tiny data sets in each one's real on-disk format (torchvision layouts).

Each data set's toy copy is written by ``tests/helpers/toy_files.py``; each fixture returns a
:class:`FakeData`: the data directory and, per split, the exact arrays that were written
(images uint8 (N, C, H, W), labels int64 (N,)), so tests can check what the readers give back.
"""

from __future__ import annotations

import gzip
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from lfbm_lightning.data import celeba, mnist
from tests.helpers import toy_files


@dataclass
class FakeData:
    """A data directory written by a fixture.

    Attributes:
        root: the data directory (what ``paths.data_dir`` would point at).
        splits: split name -> (images uint8 (N, C, H, W), labels int64 (N,)) as written; for
            CelebA the full-size images before JPEG coding, and the file names in ``names``.
        names: CelebA only: split name -> image file names, in partition-file order.
    """

    root: Path
    splits: dict[str, tuple[np.ndarray, np.ndarray]]
    names: dict[str, list[str]] | None = None


@pytest.fixture
def cifar10_root(tmp_path: Path) -> FakeData:
    """CIFAR-10 python pickles: 5 train batches of 2 images and a test batch of 3."""
    return FakeData(tmp_path, toy_files.write_cifar10(tmp_path))


@pytest.fixture
def svhn_root(tmp_path: Path) -> FakeData:
    """SVHN .mat files ('X' (32, 32, 3, N) uint8, 'y' (N, 1) with 10 for digit 0)."""
    return FakeData(tmp_path, toy_files.write_svhn(tmp_path))


@pytest.fixture(params=["plain", "gz"])
def mnist_root(request: pytest.FixtureRequest, tmp_path: Path) -> FakeData:
    """MNIST idx files (4 train and 3 test images), plain or gzipped."""
    return FakeData(tmp_path, toy_files.write_mnist(tmp_path, gz=request.param == "gz"))


@pytest.fixture
def mnist_plain_root(tmp_path: Path) -> FakeData:
    """MNIST plain idx files (4 train and 3 test images)."""
    return FakeData(tmp_path, toy_files.write_mnist(tmp_path))


@pytest.fixture
def celeba_root(tmp_path: Path) -> FakeData:
    """CelebA: ``celeba/img_align_celeba/00000k.jpg`` (178 x 218) and the partition file."""
    splits = toy_files.write_celeba(tmp_path)
    names = celeba.read_celeba_partition(tmp_path)
    return FakeData(tmp_path, splits, names)


# Images per digit 0..9 in the real MNIST files (train-*, t10k-*): 60,000 and 10,000.
MNIST_COUNTS = {
    "train": (5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949),
    "test": (980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009),
}


def mnist_grey(labels: np.ndarray) -> np.ndarray:
    """The flat grey level 20 * label + 10 that every image of ``mnist_full_root`` has."""
    return (20 * np.asarray(labels) + 10).astype(np.uint8)


@pytest.fixture(scope="session")
def mnist_full_root(tmp_path_factory: pytest.TempPathFactory) -> FakeData:
    """Gzipped MNIST idx files of the real size, with the real number of images of each digit
    in each split, in a seeded order; every image is flat grey (:func:`mnist_grey`), so an
    image shows its own label."""
    root = tmp_path_factory.mktemp("mnist_full")
    folder = root / "MNIST" / "raw"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(3)
    splits = {}
    for split, prefix in (("train", "train"), ("test", "t10k")):
        labels = rng.permutation(np.repeat(np.arange(10), MNIST_COUNTS[split])).astype(np.int64)
        images = np.broadcast_to(mnist_grey(labels)[:, None, None], (len(labels), 28, 28))
        for file, data in (
            (f"{prefix}-images-idx3-ubyte.gz", toy_files.idx_bytes(images, mnist.IMAGES_MAGIC)),
            (f"{prefix}-labels-idx1-ubyte.gz", toy_files.idx_bytes(labels, mnist.LABELS_MAGIC)),
        ):
            (folder / file).write_bytes(gzip.compress(data, compresslevel=1))
        splits[split] = (images[:, None], labels)  # a broadcast view: no memory
    return FakeData(root, splits)
