"""Data modules on small files in each data set's real format: splits, scaling, batches, masks."""

from __future__ import annotations

import importlib

import numpy as np
import pytest
import torch

from lfbm_lightning.data import cifar10 as cifar10_module
from lfbm_lightning.data.celeba import CelebADataModule
from lfbm_lightning.data.cifar10 import CIFAR10DataModule
from lfbm_lightning.data.digits import DigitsDataModule
from lfbm_lightning.data.mnist import MNISTDataModule
from lfbm_lightning.data.occlusion import MaskMaker, expected_coverage
from lfbm_lightning.data.svhn import SVHNDataModule
from lfbm_lightning.errors import DatasetFilesMissing
from lfbm_lightning.run.training import prepare_before_fit
from tests.data.conftest import MNIST_COUNTS, mnist_grey

LOADER = {"batch_size": 4, "num_workers": 0, "seed": 1}


def cifar10(root, **kwargs):
    return CIFAR10DataModule(root=root, channels=3, image_size=32, **{**LOADER, **kwargs})


def svhn(root, **kwargs):
    return SVHNDataModule(root=root, channels=3, image_size=32, **{**LOADER, **kwargs})


def mnist(root, **kwargs):
    return MNISTDataModule(root=root, channels=1, image_size=28, **{**LOADER, **kwargs})


def celeba(root, **kwargs):
    return CelebADataModule(root=root, channels=3, image_size=64, **{**LOADER, **kwargs})


def as_uint8(images: torch.Tensor) -> np.ndarray:
    """Back from [-1, 1] to 0..255 (exact for images that came from uint8)."""
    return images.add(1).mul(127.5).round().to(torch.uint8).numpy()


def stack(dataset, key: str = "image") -> torch.Tensor:
    return torch.stack([dataset[i][key] for i in range(len(dataset))])


@pytest.mark.parametrize(
    ("make", "fixture", "sizes"),
    [(cifar10, "cifar10_root", (8, 2, 3)), (svhn, "svhn_root", (4, 1, 4))],
    ids=["cifar10", "svhn"],
)
def test_train_test_sets_carve_val_from_train(request, make, fixture, sizes):
    data = request.getfixturevalue(fixture)
    dm = make(data.root, val_fraction=0.2)
    dm.prepare_data()
    dm.setup()
    assert tuple(len(dm.splits[s]) for s in ("train", "val", "test")) == sizes
    train_images, train_labels = data.splits["train"]
    rows = np.concatenate([dm.splits["train"].indices, dm.splits["val"].indices])
    assert sorted(rows.tolist()) == list(range(len(train_images)))  # a partition of train
    assert (np.diff(dm.splits["train"].indices) > 0).all()  # training keeps the file order
    for split in ("train", "val"):
        rows = dm.splits[split].indices
        assert np.array_equal(as_uint8(stack(dm.splits[split])), train_images[rows])
        assert np.array_equal(stack(dm.splits[split], "label").numpy(), train_labels[rows])
    assert np.array_equal(as_uint8(stack(dm.splits["test"])), data.splits["test"][0])
    assert np.array_equal(stack(dm.splits["test"], "label").numpy(), data.splits["test"][1])


@pytest.mark.parametrize(
    ("make", "fixture"), [(cifar10, "cifar10_root"), (svhn, "svhn_root")], ids=["cifar10", "svhn"]
)
def test_default_trains_on_the_whole_split_and_monitors_a_seeded_subset(request, make, fixture):
    data = request.getfixturevalue(fixture)
    n = len(data.splits["train"][1])
    dm = make(data.root, val_size=3)
    dm.setup()
    train, val = dm.splits["train"], dm.splits["val"]
    assert np.array_equal(train.indices, np.arange(n))  # every training image, in file order
    assert len(val) == 3 and len(set(val.indices.tolist())) == 3
    assert [val[i]["index"].item() for i in range(3)] == [0, 1, 2]
    assert np.array_equal(as_uint8(stack(val)), data.splits["train"][0][val.indices])
    # the same images the opt-in carve of the same count holds out, fixed by the seed
    carved = make(data.root, val_fraction=3 / n)
    carved.setup()
    assert np.array_equal(val.indices, carved.splits["val"].indices)
    other_seed = make(data.root, val_size=3, seed=2)
    other_seed.setup()
    assert not np.array_equal(val.indices, other_seed.splits["val"].indices)
    everything = make(data.root)  # val_size 1000 > n: all training images
    everything.setup()
    assert sorted(everything.splits["val"].indices.tolist()) == list(range(n))


def test_val_size_below_one_is_rejected(cifar10_root):
    with pytest.raises(ValueError, match=r"dataset\.val_size"):
        cifar10(cifar10_root.root, val_size=0).setup()


def test_images_are_scaled_to_minus_one_one(cifar10_root):
    dm = cifar10(cifar10_root.root, val_fraction=0.2)
    dm.setup()
    images = stack(dm.splits["test"])
    assert images.dtype == torch.float32
    assert images.min().item() == -1.0 and images.max().item() == 1.0  # 0 -> -1, 255 -> 1
    raw = torch.from_numpy(cifar10_root.splits["test"][0]).float()
    assert torch.allclose(images, raw / 127.5 - 1.0)


def test_batches_carry_image_label_index(cifar10_root):
    dm = cifar10(cifar10_root.root, val_fraction=0.2)
    batch = next(iter(dm.train_dataloader()))
    assert set(batch) == {"image", "label", "index"}
    assert batch["image"].shape == (4, 3, 32, 32) and batch["label"].dtype == torch.int64
    assert batch["index"].tolist() != [0, 1, 2, 3]  # shuffled, with the data module's seed
    again = next(iter(cifar10(cifar10_root.root, val_fraction=0.2).train_dataloader()))
    assert torch.equal(batch["index"], again["index"])
    assert torch.equal(batch["image"], stack(dm.splits["train"])[batch["index"]])


def test_validation_carve_is_seeded(cifar10_root):
    def val_rows(seed: int) -> list[int]:
        dm = cifar10(cifar10_root.root, val_fraction=0.3, seed=seed)
        dm.setup()
        return sorted(dm.splits["val"].indices.tolist())

    assert val_rows(1) == val_rows(1)
    assert val_rows(1) != val_rows(2)


@pytest.mark.parametrize("fraction", [0.0, 0.01, 0.99])
def test_empty_train_or_val_part_is_rejected(svhn_root, fraction):
    with pytest.raises(ValueError, match=r"dataset\.val_fraction"):
        svhn(svhn_root.root, val_fraction=fraction).setup()


def test_wrong_image_shape_is_rejected(tmp_path):
    with pytest.raises(ValueError, match=r"channels must be 3 and dataset\.image_size 64"):
        CelebADataModule(root=tmp_path, channels=3, image_size=32)


def test_mnist_standard_split(mnist_root):
    dm = mnist(mnist_root.root, val_fraction=0.25)
    dm.prepare_data()
    dm.setup()
    assert [len(dm.splits[s]) for s in ("train", "val", "test")] == [3, 1, 3]
    assert np.array_equal(as_uint8(stack(dm.splits["test"])), mnist_root.splits["test"][0])
    assert np.array_equal(stack(dm.splits["test"], "label").numpy(), mnist_root.splits["test"][1])


def test_mnist_full_standard_split_sizes(mnist_full_root):
    dm = mnist(mnist_full_root.root, val_fraction=0.02)  # the opt-in carve
    dm.setup()
    assert [len(dm.splits[s]) for s in ("train", "val", "test")] == [58_800, 1_200, 10_000]


def test_mnist_trains_on_all_60000_by_default(mnist_full_root):
    dm = mnist(mnist_full_root.root)
    dm.setup()
    assert [len(dm.splits[s]) for s in ("train", "val", "test")] == [60_000, 1_000, 10_000]
    assert np.array_equal(dm.splits["train"].indices, np.arange(60_000))
    assert np.isin(dm.splits["val"].indices, dm.splits["train"].indices).all()


# docs/paper.md: train / test normal / test anomalies for each held-out digit
HOLDOUT_SIZES = {
    1: (49_698, 12_425, 7_877),
    4: (50_540, 12_636, 6_824),
    5: (50_949, 12_738, 6_313),
    7: (50_165, 12_542, 7_293),
    9: (50_433, 12_609, 6_958),
}


@pytest.mark.parametrize("digit", sorted(HOLDOUT_SIZES))
def test_mnist_holdout_protocol_sizes_and_labels(mnist_full_root, digit):
    n_train, n_normal, n_anomalies = HOLDOUT_SIZES[digit]
    dm = mnist(mnist_full_root.root, holdout_digit=digit, val_fraction=0.02)  # the opt-in carve
    dm.setup()
    train, val, test = (dm.splits[s] for s in ("train", "val", "test"))
    assert len(val) == round(0.02 * n_train) and len(train) + len(val) == n_train
    assert len(test) == n_normal + n_anomalies
    anomaly = test.labels.numpy()
    assert anomaly.sum() == n_anomalies
    # the pixels say which digit each image is: the held-out digit never reaches training
    grey = mnist_grey(digit)
    for split in (train, val):
        assert not (split.images[split.indices, 0, 0, 0] == grey).any()
        assert not (split.labels.numpy() == digit).any()
    test_grey = test.images[test.indices, 0, 0, 0]
    assert np.array_equal(test_grey == grey, anomaly == 1)
    assert np.intersect1d(test.indices, np.concatenate([train.indices, val.indices])).size == 0
    assert as_uint8(test[len(test) - 1]["image"]).flat[0] == grey  # anomalies come last


@pytest.mark.parametrize("digit", [1, 9])
def test_mnist_holdout_trains_on_the_whole_80_percent_by_default(mnist_full_root, digit):
    n_train, n_normal, n_anomalies = HOLDOUT_SIZES[digit]
    dm = mnist(mnist_full_root.root, holdout_digit=digit)
    dm.setup()
    train, val, test = (dm.splits[s] for s in ("train", "val", "test"))
    assert (len(train), len(val), len(test)) == (n_train, 1_000, n_normal + n_anomalies)
    assert np.isin(val.indices, train.indices).all()  # val monitors training images
    assert np.intersect1d(test.indices, train.indices).size == 0


def test_mnist_holdout_split_is_fixed_by_the_holdout_seed(mnist_full_root):
    first = mnist(mnist_full_root.root, holdout_digit=4)
    other_run_seed = mnist(mnist_full_root.root, holdout_digit=4, seed=7)
    first.setup()
    other_run_seed.setup()
    test = first.splits["test"].indices
    assert np.array_equal(test, other_run_seed.splits["test"].indices)
    reshuffled = mnist(mnist_full_root.root, holdout_digit=4, holdout_seed=0)
    reshuffled.setup()
    assert not np.array_equal(test, reshuffled.splits["test"].indices)


@pytest.mark.parametrize("digit", [1, 5])
def test_mnist_official_protocol_keeps_the_official_split(mnist_full_root, digit):
    """protocol=official: the 60,000 training images less digit k; all 10,000 test images, digit
    k the anomalies, so the chance level is k's share of the test split (0.1135 for 1, 0.0892
    for 5), not the pooled protocol's 0.388 / 0.331."""
    dm = mnist(mnist_full_root.root, holdout_digit=digit, protocol="official")
    dm.setup()
    train, val, test = (dm.splits[s] for s in ("train", "val", "test"))
    n_digit_train, n_digit_test = MNIST_COUNTS["train"][digit], MNIST_COUNTS["test"][digit]
    assert (len(train), len(val), len(test)) == (60_000 - n_digit_train, 1_000, 10_000)
    assert (train.indices < 60_000).all() and (test.indices >= 60_000).all()
    assert sorted(test.indices - 60_000) == list(range(10_000))
    anomaly = test.labels.numpy()
    assert anomaly.sum() == n_digit_test
    assert anomaly.mean() == pytest.approx({1: 0.1135, 5: 0.0892}[digit])
    grey = mnist_grey(digit)
    assert not (train.images[train.indices, 0, 0, 0] == grey).any()
    assert np.array_equal(test.images[test.indices, 0, 0, 0] == grey, anomaly == 1)


def test_mnist_pooled_protocol_chance_levels(mnist_full_root):
    """The anomaly fraction of the pooled 80/20 test set, docs/paper.md's chance-level row."""
    for digit, chance in {1: 0.388, 4: 0.351, 5: 0.331, 7: 0.368, 9: 0.356}.items():
        dm = mnist(mnist_full_root.root, holdout_digit=digit, protocol="pooled_80_20")
        dm.setup()
        assert dm.splits["test"].labels.numpy().mean() == pytest.approx(chance, abs=5e-4)


def test_mnist_unknown_protocol_is_refused(mnist_full_root):
    with pytest.raises(ValueError, match="dataset.protocol must be one of"):
        mnist(mnist_full_root.root, holdout_digit=1, protocol="zenati")


def test_celeba_uses_the_official_partitions(celeba_root):
    dm = celeba(celeba_root.root)
    dm.prepare_data()
    dm.setup()
    assert [len(dm.splits[s]) for s in ("train", "val", "valid", "test")] == [3, 3, 2, 1]
    assert dm.splits["valid"].files == celeba_root.names["valid"]  # evaluation = 'valid'
    assert dm.evaluation_split == "valid"
    batch = next(iter(dm.val_dataloader()))
    assert set(batch) == {"image", "label", "index"}
    assert batch["image"].shape == (3, 3, 64, 64)
    assert -1.0 <= batch["image"].min() and batch["image"].max() <= 1.0
    assert batch["image"].max() > 0.9 and batch["image"].min() < -0.9  # the ramps span the range


def test_celeba_val_monitors_training_images(celeba_root):
    dm = celeba(celeba_root.root, val_size=2)
    dm.setup()
    train, val = dm.splits["train"], dm.splits["val"]
    assert len(val) == 2
    for i in range(2):
        item = val[i]
        assert item["index"].item() == i
        same = [j for j in range(len(train)) if torch.equal(train[j]["image"], item["image"])]
        assert len(same) == 1 and val.rows[i] == same[0]
    assert "val" != dm.evaluation_split


PREPARE = [
    ("cifar10", cifar10, "cifar-10-batches-py/data_batch_1"),
    ("svhn", svhn, "svhn/train_32x32.mat"),
    ("mnist", mnist, "MNIST/raw/train-images-idx3-ubyte"),
    ("celeba", celeba, "celeba/list_eval_partition.txt"),
]


@pytest.mark.parametrize(("name", "make", "expected"), PREPARE, ids=[p[0] for p in PREPARE])
def test_prepare_data_names_dir_files_and_flag_when_files_are_missing(
    tmp_path, name, make, expected
):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DatasetFilesMissing) as error:
        make(empty).prepare_data()
    message = str(error.value)
    for text in (str(empty.resolve()), expected, "dataset.download=true", "paths.data_dir"):
        assert text in message


@pytest.mark.parametrize(("name", "make", "expected"), PREPARE, ids=[p[0] for p in PREPARE])
def test_download_true_fetches_instead_of_checking(monkeypatch, tmp_path, name, make, expected):
    # the real download needs network; here only the hand-over to the module's download is
    # checked
    calls = []
    module = importlib.import_module(f"lfbm_lightning.data.{name}")
    monkeypatch.setattr(module, "download", lambda root: calls.append((name, root)))
    make(tmp_path, download=True).prepare_data()
    assert calls == [(name, tmp_path)]


def test_drop_last_drops_only_the_incomplete_training_batch(mnist_plain_root):
    dm = mnist(mnist_plain_root.root, batch_size=3, drop_last=True)  # 4 training images
    assert [len(b["image"]) for b in dm.train_dataloader()] == [3]
    assert [len(b["image"]) for b in dm.val_dataloader()] == [3, 1]  # val keeps every image
    assert [len(b["image"]) for b in dm.test_dataloader()] == [3]
    keep = mnist(mnist_plain_root.root, batch_size=3)
    assert [len(b["image"]) for b in keep.train_dataloader()] == [3, 1]


# ---------------------------------------------------------------- occlusion


DIGITS_SALT_PEPPER = {"kind": "salt_pepper", "coverage": 0.3, "hole_size": 2, "seed": 5}


def test_occluded_digits_masks_are_fixed_2x2_holes_on_training_items_only():
    dm = DigitsDataModule(occlusion=DIGITS_SALT_PEPPER, **LOADER)
    dm.setup()
    train = dm.splits["train"]
    masks = stack(train, "mask")
    assert masks.shape == (len(train), 1, 8, 8) and len(train) == 1438
    for i in (0, 7, len(train) - 1):
        assert torch.equal(masks[i], MaskMaker("salt_pepper", 8, 8, 5, 0.3, hole_size=2)(i))
    missing = masks[:, 0] == 0
    # every missing pixel lies in a 2 x 2 block of missing pixels whose corner is in 0..5
    blocks = missing[:, :-1, :-1] & missing[:, 1:, :-1] & missing[:, :-1, 1:] & missing[:, 1:, 1:]
    blocks[:, 6:, :] = False
    blocks[:, :, 6:] = False
    covered = torch.zeros_like(missing)
    for dr in (0, 1):
        for dc in (0, 1):
            covered[:, dr : dr + 7, dc : dc + 7] |= blocks
    assert torch.equal(covered, missing)
    coverage = missing.float().mean().item()
    assert abs(coverage - expected_coverage(dm.occlusion.n_holes, 8, 8, 2)) < 0.01
    assert abs(coverage - 0.3) < 0.02
    assert "mask" not in dm.splits["val"][0] and "mask" not in dm.splits["test"][0]


def test_masks_are_the_same_in_loader_workers():
    dm = DigitsDataModule(occlusion=DIGITS_SALT_PEPPER, **{**LOADER, "num_workers": 2})
    batch = next(iter(dm.train_dataloader()))
    assert set(batch) == {"image", "label", "index", "mask"}
    expected = torch.stack(
        [MaskMaker("salt_pepper", 8, 8, 5, 0.3, hole_size=2)(int(i)) for i in batch["index"]]
    )
    assert torch.equal(batch["mask"], expected)


def test_recovery_loader_gives_training_images_in_order_with_masks():
    single = {"kind": "single_region", "size": 3, "seed": 0}
    dm = DigitsDataModule(occlusion=single, **LOADER)
    batch = next(iter(dm.recovery_dataloader()))
    assert batch["index"].tolist() == [0, 1, 2, 3]
    assert (batch["mask"] == 0).sum(dim=(1, 2, 3)).tolist() == [9, 9, 9, 9]
    with pytest.raises(ValueError, match=r"dataset\.occlusion\.kind"):
        DigitsDataModule(**LOADER).recovery_dataloader()


def test_occluded_celeba_draws_the_protocol_masks_per_item(celeba_root):
    occlusion = {"kind": "salt_pepper", "coverage": 0.5, "size": 20, "hole_size": 8, "seed": 3}
    dm = celeba(celeba_root.root, occlusion=occlusion)
    dm.setup()
    assert dm.occlusion.n_holes == 48  # docs/paper.md: 50% -> 48 holes of 8 x 8
    train = dm.splits["train"]
    for i in range(len(train)):
        assert torch.equal(train[i]["mask"], MaskMaker("salt_pepper", 64, 64, 3, 0.5)(i))
    assert train.dataset.masks is None  # no mask tensor is materialised
    assert "mask" not in dm.splits["val"][0]


@pytest.mark.parametrize(
    ("occlusion", "match"),
    [
        ({"kind": "salt_pepper", "coverage": 0.3, "holes": 3}, r"unknown dataset\.occlusion"),
        ({"kind": "salt_pepper", "coverage": 1.3, "hole_size": 2}, r"occlusion\.coverage"),
        ({"kind": "salt_pepper", "coverage": 0.3}, "larger than 8"),  # 8x8 holes in 8x8 digits
        ({"kind": "single_region", "size": 9}, r"dataset\.occlusion\.size"),
        ({"kind": "stripes"}, "'salt_pepper', 'single_region'"),
    ],
)
def test_bad_occlusion_settings_fail_at_construction(occlusion, match):
    with pytest.raises(ValueError, match=match):
        DigitsDataModule(occlusion=occlusion, **LOADER)


def test_kind_null_means_complete_images():
    dm = DigitsDataModule(occlusion={"kind": None, "coverage": 0.3, "size": 4}, **LOADER)
    assert not dm.occluded
    assert "mask" not in next(iter(dm.train_dataloader()))


@pytest.mark.parametrize(("download", "rank", "fetches"), [(True, 0, 1), (True, 1, 0)])
def test_only_rank_zero_fetches_before_fit(monkeypatch, tmp_path, download, rank, fetches):
    # other ranks leave fetching to Lightning's prepare_data (first rank per node, barrier)
    calls = []
    monkeypatch.setattr(cifar10_module, "download", lambda root: calls.append(root))
    prepare_before_fit(PREPARE[0][1](tmp_path, download=download), rank)
    assert len(calls) == fetches


@pytest.mark.parametrize("rank", [0, 1])
def test_every_rank_checks_the_files_before_fit(tmp_path, rank):
    with pytest.raises(DatasetFilesMissing):
        prepare_before_fit(PREPARE[0][1](tmp_path), rank)


def test_mnist_holdout_val_fraction_moves_anomalies_from_test_to_validation(mnist_full_root):
    n_train, n_normal, n_anomalies = HOLDOUT_SIZES[9]
    base = mnist(mnist_full_root.root, holdout_digit=9)
    base.setup()
    dm = mnist(mnist_full_root.root, holdout_digit=9, holdout_val_fraction=0.1)
    dm.setup()
    held = round(0.1 * n_anomalies)
    test, checks = dm.splits["test"], dm.splits["val_anomaly"]
    assert "val_anomaly" not in base.splits  # by default the protocol's test split, unchanged
    assert len(test) == n_normal + n_anomalies - held and test.labels.sum() == n_anomalies - held
    assert np.array_equal(dm.splits["train"].indices, base.splits["train"].indices)
    val = dm.splits["val"].indices
    assert len(checks) == len(val) + held and checks.labels.sum() == held
    assert np.array_equal(checks.indices[: len(val)], val)
    # the pixels say which digit each image is: the held-back ones are the held-out digit's,
    # gone from test, and validation's normal images are training images
    grey = checks.images[checks.indices, 0, 0, 0] == mnist_grey(9)
    assert np.array_equal(grey, checks.labels.numpy() == 1)
    assert np.intersect1d(checks.indices[len(val) :], test.indices).size == 0
    assert np.isin(checks.indices[len(val) :], base.splits["test"].indices).all()
