"""``dataset=X`` alone composes to the paper's setting for X (docs/paper.md)."""

from __future__ import annotations

import pytest
import torch
from hydra.utils import instantiate

from lfbm_lightning.data.data_module import FileDataModule
from lfbm_lightning.errors import DatasetFilesMissing
from lfbm_lightning.generators import output_shape
from tests.conftest import CONF
from tests.helpers.toy_files import write_toy_files

DATASETS = sorted(path.stem for path in (CONF / "dataset").glob("*.yaml"))
SMALL_LOADER = {"batch_size": 2, "num_workers": 0, "pin_memory": False}


@pytest.mark.parametrize("name", DATASETS)
def test_every_dataset_config_is_one_module_that_fits_its_generator(compose_cfg, tmp_path, name):
    """The contract of a data set (``conf/dataset/<name>.yaml`` + its module): it composes with
    the train config, its generator draws images of its (channels, image_size), and its data
    module yields them in every split. A file-based one checks its files first; its toy copy
    of the on-disk format is ``write_<name>`` of tests/helpers/toy_files.py."""
    cfg = compose_cfg([f"dataset={name}", f"paths.data_dir={tmp_path / 'data'}"])
    shape = (cfg.dataset.channels, cfg.dataset.image_size, cfg.dataset.image_size)
    generator = instantiate(cfg.generator)
    assert output_shape(generator, cfg.latent_dim) == shape

    datamodule = instantiate(cfg.dataset, **SMALL_LOADER, persistent_workers=False)
    if isinstance(datamodule, FileDataModule):
        with pytest.raises(DatasetFilesMissing, match=datamodule.files.expected[0]):
            datamodule.prepare_data()
        write_toy_files(name, datamodule.root)
    datamodule.prepare_data()
    datamodule.setup()
    assert {"train", "val", "test", datamodule.evaluation_split} <= set(datamodule.splits)
    assert datamodule.evaluation_split != "val"  # val/mse never monitors the evaluation split
    for split, dataset in datamodule.splits.items():
        item = dataset[len(dataset) - 1]
        assert item["image"].shape == shape, split
        assert item["index"].item() == len(dataset) - 1, split
        assert torch.isfinite(item["image"]).all(), split
    batch = next(iter(datamodule.train_dataloader()))
    with torch.no_grad():
        fake = generator(torch.randn(len(batch["image"]), cfg.latent_dim))
    assert fake.shape == batch["image"].shape


def convt_parameters(latent_dim: int, layers: list[tuple[int, int]]) -> int:
    """Weights and biases of a ConvTranspose stack given (out_channels, kernel) per layer."""
    total, in_ch = 0, latent_dim
    for out_ch, kernel in layers:
        total += in_ch * out_ch * kernel * kernel + out_ch
        in_ch = out_ch
    return total


def mnist_generator_parameters(d: int) -> int:
    """docs/paper.md's MNIST generator: Linear d->1024 + BN; ->128*7*7 + BN; ConvT 128->64 k2 + BN;
    ConvT 64->1 k2 (BN: weight and bias per channel)."""
    linear = d * 1024 + 1024 + 2 * 1024 + 1024 * 6272 + 6272 + 2 * 6272
    return linear + 128 * 64 * 4 + 64 + 2 * 64 + 64 * 1 * 4 + 1


# docs/paper.md: d, generator table, K, learning rates, epochs; docs/paper.md: eval steps = 20 * K
PAPER = {
    "cifar10": {
        "target": "lfbm_lightning.data.cifar10.CIFAR10DataModule",
        "latent_dim": 128,
        "shape": (3, 32, 32),
        "generator_parameters": convt_parameters(128, [(1024, 8), (512, 4), (256, 4), (3, 3)]),
        "n_steps": 40,
        "eval_steps": 800,
        "lr": 3.8e-4,
        "max_epochs": 201,
    },
    "svhn": {
        "target": "lfbm_lightning.data.svhn.SVHNDataModule",
        "latent_dim": 100,
        "shape": (3, 32, 32),
        "generator_parameters": convt_parameters(100, [(512, 4), (256, 4), (128, 4), (3, 4)]),
        "n_steps": 20,
        "eval_steps": 400,
        "lr": 4e-4,
        "max_epochs": 201,
    },
    "celeba": {
        "target": "lfbm_lightning.data.celeba.CelebADataModule",
        "latent_dim": 100,
        "shape": (3, 64, 64),
        "generator_parameters": convt_parameters(
            100, [(1024, 4), (512, 4), (256, 4), (128, 4), (3, 4)]
        ),
        "n_steps": 20,
        "eval_steps": 400,
        "lr": 3e-4,
        "max_epochs": 201,
    },
    "mnist": {
        "target": "lfbm_lightning.data.mnist.MNISTDataModule",
        "latent_dim": 20,
        "shape": (1, 28, 28),
        "generator_parameters": mnist_generator_parameters(20),
        "n_steps": 20,
        "eval_steps": 400,
        "lr": 4e-4,
        "max_epochs": 21,
    },
}


@pytest.mark.parametrize("name", sorted(PAPER))
def test_dataset_option_brings_the_papers_setting(compose_cfg, name):
    paper = PAPER[name]
    cfg = compose_cfg([f"dataset={name}"])
    assert cfg.dataset._target_ == paper["target"]
    assert cfg.latent_dim == paper["latent_dim"]
    assert (cfg.dataset.channels, cfg.dataset.image_size, cfg.dataset.image_size) == paper["shape"]
    assert (cfg.inference.n_steps, cfg.inference.eval_steps) == (
        paper["n_steps"],
        paper["eval_steps"],
    )
    assert cfg.inference.step_size == cfg.inference.eval_step_size == 0.1
    assert cfg.model.lr_prior == cfg.model.lr_generator == paper["lr"]
    assert cfg.model.prior_optimizer.lr == cfg.model.generator_optimizer.lr == paper["lr"]
    assert cfg.trainer.max_epochs == paper["max_epochs"]
    assert cfg.dataset.batch_size == 100
    assert (cfg.model.sigma, cfg.model.lr_gamma, cfg.seed) == (0.3, 0.998, 1)
    assert cfg.prior._target_.endswith("FlowPrior") and cfg.prior.latent_dim == paper["latent_dim"]
    assert cfg.dataset.download is False and cfg.dataset.occlusion.kind is None

    generator = instantiate(cfg.generator)
    assert output_shape(generator, cfg.latent_dim) == paper["shape"]
    assert sum(p.numel() for p in generator.parameters()) == paper["generator_parameters"]
    datamodule = instantiate(cfg.dataset)  # lazy: reads nothing yet
    assert (datamodule.channels, datamodule.image_size) == paper["shape"][:2]
    assert not datamodule.occluded


def test_mnist_defaults_to_the_standard_split_with_the_protocol_seed(compose_cfg):
    cfg = compose_cfg(["dataset=mnist"])
    assert cfg.dataset.holdout_digit is None and cfg.dataset.holdout_seed == 1
    assert cfg.dataset.protocol == "pooled_80_20"
    cfg = compose_cfg(["dataset=mnist", "dataset.holdout_digit=7"])
    assert instantiate(cfg.dataset).holdout_digit == 7


@pytest.mark.parametrize("name", ["cifar10", "svhn", "mnist", "celeba"])
def test_paper_datasets_train_on_the_whole_split_by_default(compose_cfg, name):
    cfg = compose_cfg([f"dataset={name}"])
    assert cfg.dataset.val_size == 1000 and cfg.dataset.get("val_fraction") is None
    assert instantiate(cfg.dataset).val_size == 1000
    carved = compose_cfg(["dataset=cifar10", "dataset.val_fraction=0.02"])
    assert instantiate(carved.dataset).val_fraction == 0.02


def test_only_mnist_drops_the_last_training_batch(compose_cfg):
    for name in DATASETS:
        datamodule = instantiate(compose_cfg([f"dataset={name}"]).dataset)
        assert datamodule.drop_last == (name == "mnist"), name


def test_data_dir_comes_from_lfbm_data_dir_unless_overridden(compose_cfg, monkeypatch, tmp_path):
    monkeypatch.setenv("LFBM_DATA_DIR", str(tmp_path / "from_env"))
    cfg = compose_cfg(["dataset=cifar10"])
    assert cfg.dataset.root == str(tmp_path / "from_env")
    assert instantiate(cfg.dataset).root == tmp_path / "from_env"
    cfg = compose_cfg(["dataset=cifar10", f"paths.data_dir={tmp_path}/flag"])
    assert cfg.dataset.root == f"{tmp_path}/flag"
    monkeypatch.delenv("LFBM_DATA_DIR")
    assert compose_cfg(["dataset=svhn"]).dataset.root == "data"


@pytest.mark.parametrize(
    ("overrides", "n_holes_or_size"),
    [
        (["dataset.occlusion.kind=salt_pepper", "dataset.occlusion.coverage=0.5"], 48),
        (["dataset.occlusion.kind=salt_pepper"], 24),  # default coverage 0.3
        (["dataset.occlusion={kind:single_region,size:40}"], 40),
    ],
)
def test_occlusion_is_switched_on_from_the_command_line(compose_cfg, overrides, n_holes_or_size):
    cfg = compose_cfg(["dataset=celeba", *overrides])
    masks = instantiate(cfg.dataset).occlusion
    assert masks.kind == cfg.dataset.occlusion.kind
    assert (masks.n_holes if masks.kind == "salt_pepper" else masks.size) == n_holes_or_size


def test_digits_occlusion_uses_2x2_holes(compose_cfg):
    cfg = compose_cfg(["dataset.occlusion.kind=salt_pepper"])
    masks = instantiate(cfg.dataset).occlusion
    assert (masks.hole_size, masks.height, masks.coverage) == (2, 8, 0.3)
