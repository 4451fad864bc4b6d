"""End to end through the real config and entry point on embedded digits."""

from __future__ import annotations

import csv

import pytest
import torch

from lfbm_lightning.models import LatentPriorModel
from lfbm_lightning.run.training import train
from tests.conftest import TINY, run_entry_point


@pytest.mark.slow
def test_train_py_leaves_checkpoint_metrics_and_pictures(tmp_path):
    out = tmp_path / "run"
    result = run_entry_point("train.py", [f"hydra.run.dir={out}", *TINY])
    assert result.returncode == 0, result.stderr[-3000:]
    for name in [
        "checkpoints/last.ckpt",
        "csv/metrics.csv",
        "metrics.json",
        "samples.png",
        "reconstructions.png",
        ".hydra/config.yaml",
    ]:
        assert (out / name).is_file(), name


def test_gaussian_prior_trains_with_a_single_optimizer(compose_cfg):
    cfg = compose_cfg(["prior=gaussian", *TINY])
    model, metrics = train(cfg)
    assert len(model.trainer.optimizers) == 1
    assert torch.isfinite(torch.tensor(metrics["train/loss_epoch"]))


def epoch_losses(metrics_csv) -> list[float]:
    with open(metrics_csv) as f:
        rows = [r for r in csv.DictReader(f) if r.get("train/loss_epoch")]
    return [float(r["train/loss_epoch"]) for r in rows]


def reconstruction_mse(model: LatentPriorModel, x: torch.Tensor) -> float:
    torch.manual_seed(0)
    x_hat, _ = model.reconstruct(x, n_steps=100)
    return (x - x_hat).pow(2).mean().item()


@pytest.mark.slow
def test_training_lowers_loss_and_the_checkpoint_rebuilds_the_model(compose_cfg, tmp_path):
    overrides = [
        "trainer.max_epochs=6",
        "trainer.check_val_every_n_epoch=3",
        "inference.eval_steps=50",
        "callbacks.image_grids.every_n_epochs=0",
    ]
    cfg = compose_cfg(overrides)
    model, _ = train(cfg)
    losses = epoch_losses(tmp_path / "csv" / "metrics.csv")
    assert len(losses) == 6
    assert losses[-1] < 0.6 * losses[0], losses

    loaded = LatentPriorModel.load_from_checkpoint(tmp_path / "checkpoints" / "last.ckpt")
    model.eval()
    loaded.eval()
    z = torch.randn(16, model.latent_dim)
    with torch.no_grad():
        assert torch.allclose(loaded.prior.log_prob(z), model.prior.log_prob(z), atol=1e-5)
        assert torch.allclose(loaded.generator(z), model.generator(z), atol=1e-6)
    assert loaded.config == model.config

    # held-out digits: the trained model reconstructs far better than an untrained one
    test_x = torch.stack([model.trainer.datamodule.splits["test"][i]["image"] for i in range(64)])
    untrained = LatentPriorModel(model.config).eval()
    trained_mse = reconstruction_mse(loaded, test_x)
    untrained_mse = reconstruction_mse(untrained, test_x)
    assert trained_mse < 0.5 * untrained_mse, (trained_mse, untrained_mse)
