"""Fixtures writing tiny data sets in each one's real on-disk format (torchvision layouts).

Each fixture returns a :class:`FakeData`: the data directory and, per split, the exact arrays
that were written (images uint8 (N, C, H, W), labels int64 (N,)), so tests can check what the
readers give back.
"""

from __future__ import annotations

import gzip
import pickle
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import scipy.io
from PIL import Image


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


def _random_images(rng: np.random.Generator, n: int, c: int, h: int, w: int) -> np.ndarray:
    return rng.integers(0, 256, size=(n, c, h, w), dtype=np.uint8)


@pytest.fixture
def cifar10_root(tmp_path: Path) -> FakeData:
    """CIFAR-10 python pickles: 5 train batches of 2 images and a test batch of 3."""
    rng = np.random.default_rng(0)
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    written = {"train": ([], []), "test": ([], [])}
    batches = [(f"data_batch_{k}", "train", 2) for k in range(1, 6)] + [("test_batch", "test", 3)]
    for file, split, n in batches:
        images = _random_images(rng, n, 3, 32, 32)
        labels = rng.integers(0, 10, size=n)
        batch = {
            b"batch_label": file.encode(),
            b"labels": [int(y) for y in labels],
            b"data": images.reshape(n, 3072),  # row-major R, G, B planes
            b"filenames": [f"img_{i}.png".encode() for i in range(n)],
        }
        with open(folder / file, "wb") as f:
            pickle.dump(batch, f, protocol=3)  # bytes as bytes, like the py2 originals
        written[split][0].append(images)
        written[split][1].append(labels.astype(np.int64))
    splits = {s: (np.concatenate(x), np.concatenate(y)) for s, (x, y) in written.items()}
    return FakeData(tmp_path, splits)


@pytest.fixture
def svhn_root(tmp_path: Path) -> FakeData:
    """SVHN .mat files ('X' (32, 32, 3, N) uint8, 'y' (N, 1) with 10 for digit 0)."""
    rng = np.random.default_rng(1)
    folder = tmp_path / "svhn"
    folder.mkdir()
    splits = {}
    for split, n in (("train", 5), ("test", 4)):
        images = _random_images(rng, n, 3, 32, 32)
        digits = np.concatenate([[0, 7], rng.integers(0, 10, size=n - 2)]).astype(np.int64)
        y = np.where(digits == 0, 10, digits).astype(np.uint8)[:, None]
        scipy.io.savemat(
            folder / f"{split}_32x32.mat", {"X": images.transpose(2, 3, 1, 0), "y": y}
        )
        splits[split] = (images, digits)
    return FakeData(tmp_path, splits)


def _idx_bytes(array: np.ndarray, magic: int) -> bytes:
    """An idx file: big-endian int32 magic and dims, then the uint8 values."""
    header = struct.pack(f">{1 + array.ndim}i", magic, *array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_mnist(root: Path, gz: bool) -> FakeData:
    """MNIST idx files (4 train and 3 test images) under ``root``, plain or gzipped."""
    rng = np.random.default_rng(2)
    folder = root / "MNIST" / "raw"
    folder.mkdir(parents=True)
    splits = {}
    for split, prefix, n in (("train", "train", 4), ("test", "t10k", 3)):
        images = _random_images(rng, n, 1, 28, 28)
        labels = rng.integers(0, 10, size=n).astype(np.int64)
        for file, data in (
            (f"{prefix}-images-idx3-ubyte", _idx_bytes(images[:, 0], 2051)),
            (f"{prefix}-labels-idx1-ubyte", _idx_bytes(labels, 2049)),
        ):
            if gz:
                (folder / f"{file}.gz").write_bytes(gzip.compress(data))
            else:
                (folder / file).write_bytes(data)
        splits[split] = (images, labels)
    return FakeData(root, splits)


@pytest.fixture(params=["plain", "gz"])
def mnist_root(request: pytest.FixtureRequest, tmp_path: Path) -> FakeData:
    """MNIST idx files (4 train and 3 test images), plain or gzipped."""
    return write_mnist(tmp_path, gz=request.param == "gz")


@pytest.fixture
def mnist_plain_root(tmp_path: Path) -> FakeData:
    """MNIST plain idx files (4 train and 3 test images)."""
    return write_mnist(tmp_path, gz=False)


CELEBA_CODES = [0, 1, 0, 2, 0, 1]  # partition of 000001.jpg .. 000006.jpg


def celeba_image(blue: int) -> np.ndarray:
    """A 218 x 178 aligned-CelebA-sized image, uint8 (3, 218, 178) that encodes position.

    Red = 2 * (column - 25) and green = 2 * (row - 45), clipped to 0..255: ramps from 0 to 254
    across the crop box (top 45, left 25, 128 x 128), flat outside it. Blue is constant.
    Smooth, so JPEG keeps it within a level or two.
    """
    rows, cols = np.mgrid[0:218, 0:178]
    red, green = np.clip(2 * (cols - 25), 0, 255), np.clip(2 * (rows - 45), 0, 255)
    return np.stack([red, green, np.full_like(rows, blue)]).astype(np.uint8)


@pytest.fixture
def celeba_root(tmp_path: Path) -> FakeData:
    """CelebA: ``celeba/img_align_celeba/00000k.jpg`` (178 x 218) and the partition file."""
    folder = tmp_path / "celeba"
    (folder / "img_align_celeba").mkdir(parents=True)
    names: dict[str, list[str]] = {"train": [], "valid": [], "test": []}
    images: dict[str, list[np.ndarray]] = {"train": [], "valid": [], "test": []}
    lines = []
    for k, code in enumerate(CELEBA_CODES, start=1):
        name, split = f"{k:06d}.jpg", ("train", "valid", "test")[code]
        image = celeba_image(blue=30 * k)
        Image.fromarray(image.transpose(1, 2, 0)).save(
            folder / "img_align_celeba" / name, quality=95, subsampling=0
        )
        lines.append(f"{name} {code}\n")
        names[split].append(name)
        images[split].append(image)
    (folder / "list_eval_partition.txt").write_text("".join(lines))
    splits = {s: (np.stack(x), np.zeros(len(x), dtype=np.int64)) for s, x in images.items()}
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
            (f"{prefix}-images-idx3-ubyte.gz", _idx_bytes(images, 2051)),
            (f"{prefix}-labels-idx1-ubyte.gz", _idx_bytes(labels, 2049)),
        ):
            (folder / file).write_bytes(gzip.compress(data, compresslevel=1))
        splits[split] = (images[:, None], labels)  # a broadcast view: no memory
    return FakeData(root, splits)
