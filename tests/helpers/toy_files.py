"""Tiny copies of each file-based data set in its real on-disk format, for the tests.

One function per data set, ``write_<name>(root)`` with ``<name>`` its config
(``conf/dataset/<name>.yaml``), found by :func:`write_toy_files`. Each writes under ``root``
(the data directory) and returns, per split, the arrays written: images uint8 (N, C, H, W),
labels int64 (N,). A new file-based data set adds its one function here.
"""

from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path

import numpy as np
import scipy.io
from PIL import Image

from lfbm_lightning.data import celeba, cifar10, mnist, svhn

Written = dict[str, tuple[np.ndarray, np.ndarray]]


def write_toy_files(name: str, root: str | Path) -> Written:
    """The toy copy of data set ``name`` (``conf/dataset/<name>.yaml``) under ``root``."""
    return globals()[f"write_{name}"](root)


def data_folder(root: str | Path, directory: str) -> Path:
    """``root/directory``, created (it must not exist yet: a toy copy is written once)."""
    folder = Path(root) / directory
    folder.mkdir(parents=True)
    return folder


def random_images(rng: np.random.Generator, n: int, channels: int, size: int) -> np.ndarray:
    """Uniformly random uint8 images (n, channels, size, size)."""
    return rng.integers(0, 256, size=(n, channels, size, size), dtype=np.uint8)


def write_cifar10(root: str | Path) -> Written:
    """5 training batches of 2 random images and a test batch of 3, pickled with bytes keys
    as the originals."""
    rng = np.random.default_rng(0)
    folder = data_folder(root, cifar10.DIRECTORY)
    written: dict[str, tuple[list, list]] = {"train": ([], []), "test": ([], [])}
    for split, files in cifar10.SPLITS.items():
        for file in files:
            n = 2 if split == "train" else 3
            images = random_images(rng, n, 3, 32)
            labels = rng.integers(0, 10, size=n)
            batch = {
                b"batch_label": file.encode(),
                b"labels": [int(y) for y in labels],
                b"data": images.reshape(n, 3072),
                b"filenames": [f"img_{i}.png".encode() for i in range(n)],
            }
            # protocol 3 stores bytes as bytes, as the Python 2 originals' str; (protocol 2
            # from Python 3 would name _codecs.encode, which no real file does)
            (folder / file).write_bytes(pickle.dumps(batch, protocol=3))
            written[split][0].append(images)
            written[split][1].append(labels.astype(np.int64))
    return {s: (np.concatenate(x), np.concatenate(y)) for s, (x, y) in written.items()}


def write_svhn(root: str | Path) -> Written:
    """5 training and 4 test random images, the first two digits of each split 0 and 7 (0
    stored as label 10); the labels returned are the digits."""
    rng, folder, written = np.random.default_rng(1), data_folder(root, svhn.DIRECTORY), {}
    for split, n in (("train", 5), ("test", 4)):
        images = random_images(rng, n, 3, 32)
        digits = np.concatenate([[0, 7], rng.integers(0, 10, size=n - 2)]).astype(np.int64)
        y = np.where(digits == 0, 10, digits).astype(np.uint8)[:, None]
        scipy.io.savemat(folder / svhn.SPLITS[split], {"X": images.transpose(2, 3, 1, 0), "y": y})
        written[split] = (images, digits)
    return written


def idx_bytes(array: np.ndarray, magic: int) -> bytes:
    """An idx file's content: big-endian int32 magic and dims, then the uint8 values."""
    header = struct.pack(f">{1 + array.ndim}i", magic, *array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_mnist(root: str | Path, gz: bool = False) -> Written:
    """4 training and 3 test random images, as plain idx files or (``gz``) gzipped ones."""
    rng, folder, written = np.random.default_rng(2), data_folder(root, mnist.DIRECTORY), {}
    for split, n in (("train", 4), ("test", 3)):
        images = random_images(rng, n, 1, 28)
        labels = rng.integers(0, 10, size=n).astype(np.int64)
        image_file, label_file = mnist.SPLITS[split]
        for file, data in (
            (image_file, idx_bytes(images[:, 0], mnist.IMAGES_MAGIC)),
            (label_file, idx_bytes(labels, mnist.LABELS_MAGIC)),
        ):
            if gz:
                (folder / f"{file}.gz").write_bytes(gzip.compress(data))
            else:
                (folder / file).write_bytes(data)
        written[split] = (images, labels)
    return written


CELEBA_PARTITION = (0, 1, 0, 2, 0, 1)
"""Partition codes of the toy files 000001.jpg .. 000006.jpg (:func:`write_celeba`)."""


def toy_image(blue: int) -> np.ndarray:
    """A 218 x 178 aligned-CelebA-sized image, uint8 (3, 218, 178) that encodes position.

    Red = 2 * (column - 25) and green = 2 * (row - 45), clipped to 0..255: ramps from 0 to 254
    across the crop box (top 45, left 25, 128 x 128), flat outside it. Blue is constant.
    Smooth, so JPEG keeps it within a level or two.
    """
    rows, cols = np.mgrid[0:218, 0:178]
    red, green = np.clip(2 * (cols - 25), 0, 255), np.clip(2 * (rows - 45), 0, 255)
    return np.stack([red, green, np.full_like(rows, blue)]).astype(np.uint8)


def write_celeba(root: str | Path) -> Written:
    """Six JPEGs ``00000k.jpg`` = :func:`toy_image` (blue 30 k) in the partitions of
    :data:`CELEBA_PARTITION` and the partition file; per partition the full-size images before
    JPEG coding (N, 3, 218, 178), labels 0, in partition-file order."""
    folder = data_folder(root, celeba.DIRECTORY)
    (folder / celeba.IMAGES).mkdir()
    images: dict[str, list[np.ndarray]] = {split: [] for split in celeba.PARTITIONS.values()}
    lines = []
    for k, code in enumerate(CELEBA_PARTITION, start=1):
        name, image = f"{k:06d}.jpg", toy_image(blue=30 * k)
        Image.fromarray(image.transpose(1, 2, 0)).save(
            folder / celeba.IMAGES / name, quality=95, subsampling=0
        )
        lines.append(f"{name} {code}\n")
        images[celeba.PARTITIONS[code]].append(image)
    (folder / celeba.PARTITION).write_text("".join(lines))
    return {s: (np.stack(x), np.zeros(len(x), dtype=np.int64)) for s, x in images.items()}
