"""Readers parse tiny files written in each data set's real on-disk format (see conftest.py)."""

from __future__ import annotations

import gzip
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from lfbm_lightning.data import celeba, cifar10, mnist, svhn
from lfbm_lightning.data.celeba import CelebA64, read_celeba_partition
from lfbm_lightning.data.cifar10 import read_cifar10
from lfbm_lightning.data.mnist import read_mnist
from lfbm_lightning.data.svhn import read_svhn
from lfbm_lightning.errors import DatasetFilesMissing

FILES = {m.FILES.name: m.FILES for m in (cifar10, svhn, mnist, celeba)}


def check_files(name: str, root) -> None:
    FILES[name].check(root)


@pytest.mark.parametrize("split", ["train", "test"])
def test_cifar10_round_trips_pixels_and_labels(cifar10_root, split):
    images, labels = read_cifar10(cifar10_root.root, split)
    want_images, want_labels = cifar10_root.splits[split]
    assert images.dtype == np.uint8 and images.shape == (len(want_labels), 3, 32, 32)
    assert labels.dtype == np.int64
    np.testing.assert_array_equal(images, want_images)
    np.testing.assert_array_equal(labels, want_labels)


def test_cifar10_reads_rgb_planes_in_order(cifar10_root):
    """The first 1024 values of a row are the red plane, row by row."""
    images, _ = read_cifar10(cifar10_root.root, "test")
    with open(cifar10_root.root / "cifar-10-batches-py" / "test_batch", "rb") as f:
        raw = pickle.load(f, encoding="bytes")[b"data"]
    assert images[1, 0, 0, 5] == raw[1, 5]
    assert images[1, 1, 2, 3] == raw[1, 1024 + 2 * 32 + 3]
    assert images[2, 2, 31, 31] == raw[2, 3071]


@pytest.mark.parametrize("split", ["train", "test"])
def test_svhn_round_trips_and_maps_label_10_to_0(svhn_root, split):
    images, labels = read_svhn(svhn_root.root, split)
    want_images, want_labels = svhn_root.splits[split]
    assert images.dtype == np.uint8 and images.shape == (len(want_labels), 3, 32, 32)
    np.testing.assert_array_equal(images, want_images)
    np.testing.assert_array_equal(labels, want_labels)
    assert labels.dtype == np.int64 and labels[0] == 0 and labels.max() <= 9


@pytest.mark.parametrize("split", ["train", "test"])
def test_mnist_round_trips(mnist_root, split):
    images, labels = read_mnist(mnist_root.root, split)
    want_images, want_labels = mnist_root.splits[split]
    assert images.dtype == np.uint8 and images.shape == (len(want_labels), 1, 28, 28)
    np.testing.assert_array_equal(images, want_images)
    np.testing.assert_array_equal(labels, want_labels)
    assert labels.dtype == np.int64


def test_mnist_all_pools_train_then_test(mnist_root):
    images, labels = read_mnist(mnist_root.root, "all")
    train, test = mnist_root.splits["train"], mnist_root.splits["test"]
    assert len(images) == len(train[0]) + len(test[0]) == 7
    np.testing.assert_array_equal(images, np.concatenate([train[0], test[0]]))
    np.testing.assert_array_equal(labels, np.concatenate([train[1], test[1]]))


def test_mnist_rejects_a_file_with_the_wrong_magic(mnist_root):
    raw = mnist_root.root / "MNIST" / "raw"
    for path in raw.glob("train-labels-idx1-ubyte*"):  # swap in the image file's bytes
        image_file = raw / path.name.replace("labels-idx1", "images-idx3")
        path.write_bytes(image_file.read_bytes())
    with pytest.raises(ValueError, match="magic 2049"):
        read_mnist(mnist_root.root, "train")


def test_mnist_rejects_a_truncated_file(mnist_root):
    raw = mnist_root.root / "MNIST" / "raw"
    path = next(raw.glob("t10k-images-idx3-ubyte*"))
    data = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    path.write_bytes(gzip.compress(data[:-10]) if path.suffix == ".gz" else data[:-10])
    with pytest.raises(ValueError, match="header says"):
        read_mnist(mnist_root.root, "test")


def test_celeba_partition_is_parsed_per_official_split(celeba_root):
    partition = read_celeba_partition(celeba_root.root)
    assert partition == {
        "train": ["000001.jpg", "000003.jpg", "000005.jpg"],
        "valid": ["000002.jpg", "000006.jpg"],
        "test": ["000004.jpg"],
    }


def test_celeba_partition_rejects_a_malformed_line(celeba_root):
    path = celeba_root.root / "celeba" / "list_eval_partition.txt"
    path.write_text(path.read_text() + "000007.jpg 3\n")
    with pytest.raises(ValueError, match="line 7"):
        read_celeba_partition(celeba_root.root)


def _to_levels(image: torch.Tensor) -> np.ndarray:
    """[-1, 1] float back to 0..255 (unrounded)."""
    return ((image + 1.0) * 127.5).numpy()


@pytest.mark.parametrize("split", ["train", "valid", "test"])
def test_celeba64_items_follow_the_batch_convention(celeba_root, split):
    data = CelebA64(celeba_root.root, split)
    assert len(data) == len(celeba_root.names[split])
    for i in range(len(data)):
        item = data[i]
        assert set(item) == {"image", "label", "index"}
        assert item["image"].dtype == torch.float32 and item["image"].shape == (3, 64, 64)
        assert item["label"].dtype == torch.int64 and item["label"].item() == 0
        assert item["index"].dtype == torch.int64 and item["index"].item() == i
        assert -1.0 <= item["image"].min() and item["image"].max() <= 1.0
        # Blue is constant per file (30 * k for 00000k.jpg): the right file, in partition order.
        k = int(celeba_root.names[split][i][:6])
        np.testing.assert_allclose(_to_levels(item["image"][2]), 30 * k, atol=2.0)


def test_celeba64_applies_the_crop_box_then_halves(celeba_root):
    """Red and green ramp from 0 to 254 across the box (toy_files.toy_image), so each output
    pixel tells where it came from: output (i, j) averages source rows 45 + 2i .. 46 + 2i and
    columns 25 + 2j .. 26 + 2j, hence green 4i + 1 and red 4j + 1. A box one pixel off would
    shift every value by 2."""
    image = _to_levels(CelebA64(celeba_root.root, "train")[0]["image"])
    ramp = 4.0 * np.arange(64) + 1.0
    errors = {"red": image[0] - ramp[None, :], "green": image[1] - ramp[:, None]}
    for channel, error in errors.items():
        assert np.abs(error).max() <= 1.5, channel
        assert abs(error.mean()) < 0.5, channel


def test_celeba64_carries_the_given_masks(celeba_root):
    masks = torch.ones(3, 1, 64, 64)
    masks[1, :, 10:20, 5:9] = 0.0
    data = CelebA64(celeba_root.root, "train", masks=masks)
    item = data[1]
    assert item["mask"].dtype == torch.float32 and item["mask"].shape == (1, 64, 64)
    assert torch.equal(item["mask"], masks[1])
    with pytest.raises(ValueError, match=r"\(3, 1, 64, 64\)"):
        CelebA64(celeba_root.root, "train", masks=torch.ones(2, 1, 64, 64))


@pytest.mark.parametrize(
    ("name", "read"),
    [
        ("cifar10", lambda root: read_cifar10(root, "train")),
        ("svhn", lambda root: read_svhn(root, "test")),
        ("mnist", lambda root: read_mnist(root, "all")),
        ("celeba", lambda root: CelebA64(root, "train")),
    ],
)
def test_missing_files_raise_a_clear_error(tmp_path, name, read):
    with pytest.raises(DatasetFilesMissing) as raised:
        read(tmp_path)
    message = str(raised.value)
    assert isinstance(raised.value, FileNotFoundError)
    assert str(tmp_path.resolve()) in message
    first_file = FILES[name].expected[0]
    assert first_file in message and f"{first_file}  <- missing" in message
    for setting in ("dataset.download=true", "paths.data_dir=", "LFBM_DATA_DIR"):
        assert setting in message


def test_missing_files_are_named_individually(cifar10_root):
    os.remove(cifar10_root.root / "cifar-10-batches-py" / "data_batch_3")
    with pytest.raises(DatasetFilesMissing) as raised:
        check_files("cifar10", cifar10_root.root)
    message = str(raised.value)
    assert "cifar-10-batches-py/data_batch_3  <- missing" in message
    assert "data_batch_1  <- missing" not in message
    assert "cifar-10-batches-py/test_batch\n" in message


def test_mnist_accepts_plain_and_gz_files_mixed(mnist_root):
    raw = mnist_root.root / "MNIST" / "raw"
    path = next(raw.glob("train-images-idx3-ubyte*"))
    if path.suffix == ".gz":
        path.with_suffix("").write_bytes(gzip.decompress(path.read_bytes()))
    else:
        Path(f"{path}.gz").write_bytes(gzip.compress(path.read_bytes()))
    path.unlink()
    check_files("mnist", mnist_root.root)
    np.testing.assert_array_equal(
        read_mnist(mnist_root.root, "train")[0], mnist_root.splits["train"][0]
    )


def test_check_files_passes_on_complete_trees(cifar10_root, svhn_root, celeba_root):
    check_files("cifar10", cifar10_root.root)
    check_files("svhn", svhn_root.root)
    check_files("celeba", celeba_root.root)


def test_unknown_splits_are_rejected(tmp_path):
    with pytest.raises(ValueError, match="'train', 'valid'"):
        CelebA64(tmp_path, "val")
    with pytest.raises(ValueError, match="'all'"):
        read_mnist(tmp_path, "extra")
    with pytest.raises(ValueError, match="'test', 'train'"):
        read_cifar10(tmp_path, "valid")
