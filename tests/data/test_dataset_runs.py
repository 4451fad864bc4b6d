"""Training through the real entry point and config on each data set's files (tiny trees)."""

from __future__ import annotations

import json
import math
import time

import pytest
import torch

from lfbm_lightning.generators import output_shape
from lfbm_lightning.models import LatentPriorModel
from lfbm_lightning.run.training import train
from tests.conftest import run_entry_point
from tests.data.test_dataset_configs import PAPER

# One iteration of the paper's networks (two optimizer steps: prior and generator), then one
# validation batch; every chain and grid kept to a couple of steps.
TINY_RUN = [
    "trainer.max_steps=2",
    "trainer.max_epochs=1",
    "trainer.limit_train_batches=1",
    "trainer.limit_val_batches=1",
    "trainer.check_val_every_n_epoch=1",
    "inference.n_steps=2",
    "inference.eval_steps=2",
    "callbacks.image_grids.n_images=4",
    "dataset.num_workers=0",
    "dataset.pin_memory=false",
    "callbacks.checkpoint.save_top_k=0",  # last.ckpt only: the paper's networks are 50-75 MB
]


@pytest.mark.slow
def test_celeba_with_an_empty_data_dir_fails_fast_with_the_fix(tmp_path):
    empty, run_dir = tmp_path / "empty", tmp_path / "run"
    empty.mkdir()
    start = time.monotonic()
    result = run_entry_point(
        "train.py", ["dataset=celeba", f"paths.data_dir={empty}", f"hydra.run.dir={run_dir}"]
    )
    elapsed = time.monotonic() - start
    assert result.returncode != 0
    assert result.stderr.strip().splitlines()[-1].startswith("error: Data set 'celeba' not found")
    for text in (
        f"data directory {empty.resolve()}",
        "celeba/list_eval_partition.txt <- missing",
        "celeba/img_align_celeba/ <- missing",
        "dataset.download=true",
        "paths.data_dir=",
    ):
        assert text in result.stderr, result.stderr[-2000:]
    assert "Traceback" not in result.stdout and not (run_dir / "checkpoints").exists()
    assert elapsed < 60, elapsed  # no model is built; the import of torch dominates


@pytest.mark.slow
def test_train_py_runs_the_papers_celeba_model_on_a_celeba_tree(celeba_root, tmp_path):
    run_dir = tmp_path / "run"
    result = run_entry_point(
        "train.py",
        [
            "dataset=celeba",
            f"paths.data_dir={celeba_root.root}",
            f"hydra.run.dir={run_dir}",
            "dataset.batch_size=2",
            *TINY_RUN,
            "dataset.num_workers=2",  # CelebA decodes JPEGs in loader workers
        ],
    )
    assert result.returncode == 0, result.stderr[-3000:]
    model = LatentPriorModel.load_from_checkpoint(run_dir / "checkpoints" / "last.ckpt")
    assert model.latent_dim == 100
    assert output_shape(model.generator, 100) == (3, 64, 64)
    n_parameters = sum(p.numel() for p in model.generator.parameters())
    assert n_parameters == PAPER["celeba"]["generator_parameters"] == 12_656_515
    assert model.config["dataset"]["root"] == str(celeba_root.root)
    assert model.config["model"]["lr_generator"] == 3e-4
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert math.isfinite(metrics["train/loss_epoch"]) and math.isfinite(metrics["val/mse"])


@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "fixture", "overrides"),
    [
        ("cifar10", "cifar10_root", ["dataset.val_fraction=0.2"]),
        ("svhn", "svhn_root", ["dataset.val_fraction=0.2"]),
        ("mnist", "mnist_full_root", ["dataset.holdout_digit=1"]),
    ],
)
def test_train_runs_the_papers_model_on_each_data_set(
    request, compose_cfg, name, fixture, overrides
):
    data = request.getfixturevalue(fixture)
    cfg = compose_cfg(
        [f"dataset={name}", f"paths.data_dir={data.root}", "dataset.batch_size=4"]
        + TINY_RUN
        + overrides
    )
    model, metrics = train(cfg)
    paper = PAPER[name]
    assert output_shape(model.generator, model.latent_dim) == paper["shape"]
    assert model.latent_dim == paper["latent_dim"]
    assert sum(p.numel() for p in model.generator.parameters()) == paper["generator_parameters"]
    assert model.trainer.global_step == 2
    assert torch.isfinite(torch.tensor(metrics["val/mse"]))
