"""Bad data files fail with a DataError naming the file and the fix; CIFAR-10 pickles cannot
run code."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import scipy.io

from lfbm_lightning.data.celeba import CelebA64
from lfbm_lightning.data.cifar10 import read_cifar10, read_cifar10_batch
from lfbm_lightning.data.mnist import read_mnist
from lfbm_lightning.data.svhn import read_svhn
from lfbm_lightning.errors import DataError
from tests.conftest import run_entry_point


class CreatesFile:
    """Unpickling an instance calls ``open(path, 'w')``: it creates ``path``."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (str(self.path), "w"))


def crafted_batch(path: Path, marker: Path) -> None:
    """A CIFAR-10-looking batch whose unpickling would create ``marker``."""
    batch = {b"data": CreatesFile(marker), b"labels": [0]}
    path.write_bytes(pickle.dumps(batch, protocol=3))


def test_crafted_cifar10_pickle_runs_no_code(cifar10_root, tmp_path):
    marker = tmp_path / "marker"
    # the crafted file is live: a plain unpickler creates the marker
    crafted_batch(tmp_path / "probe", marker)
    with open(tmp_path / "probe", "rb") as f:
        pickle.load(f, encoding="bytes")
    assert marker.exists()
    marker.unlink()

    bad = cifar10_root.root / "cifar-10-batches-py" / "data_batch_1"
    crafted_batch(bad, marker)
    with pytest.raises(DataError) as raised:
        read_cifar10(cifar10_root.root, "train")
    assert not marker.exists()
    message = str(raised.value)
    assert str(bad) in message and "open is not allowed" in message
    assert "dataset.download=true" in message and "\n" not in message
    # the real-format files beside it still read
    images, labels = read_cifar10(cifar10_root.root, "test")
    np.testing.assert_array_equal(images, cifar10_root.splits["test"][0])
    np.testing.assert_array_equal(labels, cifar10_root.splits["test"][1])


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (pickle.dumps({b"data": np.zeros((2, 3072), np.uint8), b"labels": [1]}), "'labels'"),
        (pickle.dumps({b"data": np.zeros((2, 100), np.uint8), b"labels": [1, 2]}), "'data'"),
        (pickle.dumps([1, 2, 3], protocol=3), "not a dict"),
        (b"\x00garbage" * 50, "not a CIFAR-10 python batch"),
        (b"", "not a CIFAR-10 python batch"),
    ],
    ids=["short-labels", "wrong-width", "a-list", "garbage", "empty"],
)
def test_malformed_cifar10_batches_are_named(tmp_path, content, problem):
    path = tmp_path / "data_batch_1"
    path.write_bytes(content)
    with pytest.raises(DataError, match=problem) as raised:
        read_cifar10_batch(path)
    assert str(path) in str(raised.value)


def _mnist_file(root: Path, name: str) -> Path:
    return root / "MNIST" / "raw" / name


@pytest.mark.parametrize(
    ("file", "corrupt", "problem"),
    [
        ("train-images-idx3-ubyte", lambda raw: b"", "0 bytes"),
        ("train-images-idx3-ubyte", lambda raw: raw[:-5], "truncated"),
        ("t10k-labels-idx1-ubyte", lambda raw: b"\x00\x00\x08\x03" + raw[4:], "magic 2049"),
    ],
    ids=["empty", "truncated", "bad-magic"],
)
def test_broken_idx_files_are_named(mnist_plain_root, file, corrupt, problem):
    mnist_root = mnist_plain_root
    path = _mnist_file(mnist_root.root, file)
    path.write_bytes(corrupt(path.read_bytes()))
    with pytest.raises(DataError, match=problem) as raised:
        read_mnist(mnist_root.root, "all")
    assert str(path) in str(raised.value) and "dataset.download=true" in str(raised.value)


def _shorten_labels(path: Path) -> None:
    """Rewrite an idx1 label file with its last label dropped (a consistent header)."""
    raw = path.read_bytes()
    n = int(np.frombuffer(raw, ">i4", count=1, offset=4)[0])
    path.write_bytes(raw[:4] + np.array([n - 1], ">i4").tobytes() + raw[8:-1])


def test_fewer_labels_than_images_is_named(mnist_plain_root):
    path = _mnist_file(mnist_plain_root.root, "train-labels-idx1-ubyte")
    _shorten_labels(path)
    with pytest.raises(DataError, match="3 labels for the 4 images") as raised:
        read_mnist(mnist_plain_root.root, "train")
    assert str(path) in str(raised.value)


def test_broken_gzip_is_named(mnist_root):
    path = next((mnist_root.root / "MNIST" / "raw").glob("t10k-images*"))
    path.write_bytes(b"\x1f\x8b\x08\x00" + b"junk" * 10)
    if path.suffix != ".gz":  # the plain variant: a 4-byte magic that is wrong
        match = "magic"
    else:
        match = "decompressed"
    with pytest.raises(DataError, match=match) as raised:
        read_mnist(mnist_root.root, "test")
    assert str(path) in str(raised.value)


@pytest.mark.parametrize(
    ("content", "problem"),
    [(b"MATLAB garbage" * 30, "not a MATLAB file"), (b"", "not a MATLAB file"), (None, "'X'")],
    ids=["garbage", "empty", "no-X"],
)
def test_broken_svhn_mat_files_are_named(svhn_root, content, problem):
    path = svhn_root.root / "svhn" / "test_32x32.mat"
    if content is None:
        scipy.io.savemat(path, {"images": np.zeros((2, 2), np.uint8)})
    else:
        path.write_bytes(content)
    with pytest.raises(DataError, match=problem) as raised:
        read_svhn(svhn_root.root, "test")
    assert str(path) in str(raised.value) and "dataset.download=true" in str(raised.value)


def test_unreadable_celeba_jpeg_is_named(celeba_root):
    path = celeba_root.root / "celeba" / "img_align_celeba" / "000003.jpg"
    path.write_bytes(b"not a jpeg")
    data = CelebA64(celeba_root.root, "train")
    with pytest.raises(DataError, match="not a readable image") as raised:
        data[1]
    assert str(path) in str(raised.value)


# ---------------------------------------------------------- through train.py, as a user meets it


def _empty(path: Path) -> None:
    path.write_bytes(b"")


def _garbage(path: Path) -> None:
    path.write_bytes(b"\x80\x03garbage, not a data file" * 20)


BAD_TREES = [
    ("mnist", "mnist_plain_root", "MNIST/raw/train-images-idx3-ubyte", _empty),
    ("mnist", "mnist_plain_root", "MNIST/raw/train-labels-idx1-ubyte", _shorten_labels),
    ("cifar10", "cifar10_root", "cifar-10-batches-py/data_batch_2", _garbage),
    ("svhn", "svhn_root", "svhn/train_32x32.mat", _garbage),
]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "fixture", "file", "corrupt"),
    BAD_TREES,
    ids=["idx-0-bytes", "idx-short-labels", "cifar10-garbage", "svhn-garbage"],
)
def test_train_py_names_the_bad_file_and_trains_nothing(
    request, tmp_path, name, fixture, file, corrupt
):
    data = request.getfixturevalue(fixture)
    corrupt(data.root / file)
    run_dir = tmp_path / "run"
    result = run_entry_point(
        "train.py",
        [
            f"dataset={name}",
            f"paths.data_dir={data.root}",
            f"hydra.run.dir={run_dir}",
            "dataset.num_workers=0",
            "dataset.pin_memory=false",
            "trainer.max_steps=1",
        ],
    )
    assert result.returncode != 0
    assert str(data.root / file) in result.stderr, result.stderr[-2000:]
    assert "dataset.download=true" in result.stderr
    assert not (run_dir / "checkpoints").exists()
