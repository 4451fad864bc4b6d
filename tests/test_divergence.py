"""NaN injection: the run stops (or skips) before any optimizer step, and the last good
checkpoint stays loadable and finite."""

from __future__ import annotations

import pytest
import pytorch_lightning as pl
import torch

from lfbm_lightning.checkpoints import load_model
from lfbm_lightning.models.latent_model import DivergenceError
from lfbm_lightning.training import train
from tests.conftest import compose_config

SMALL = [
    "trainer.max_epochs=3",
    "trainer.limit_train_batches=3",
    "trainer.limit_val_batches=1",
    "inference.n_steps=3",
    "inference.eval_steps=5",
    "callbacks.image_grids.every_n_epochs=0",
    "+callbacks.nan_injector._target_=tests.test_divergence.NaNInjector",
]


class NaNInjector(pl.Callback):
    """Puts a NaN pixel into the second batch of epoch 1."""

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.current_epoch == 1 and batch_idx == 1:
            batch["image"][0, 0, 0, 0] = float("nan")


def finite_parameters(model) -> bool:
    return all(bool(torch.isfinite(p).all()) for p in model.parameters())


def test_nan_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path):
    cfg = compose_config(SMALL, tmp_path)
    with pytest.raises(DivergenceError, match=r"non-finite z at epoch 1, batch 1"):
        train(cfg)
    last = load_model(tmp_path / "checkpoints" / "last.ckpt")
    assert finite_parameters(last)
    epoch = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)["epoch"]
    assert epoch == 0  # written after epoch 0, never overwritten by the diverged epoch


def test_skip_policy_skips_and_counts_the_bad_batch(tmp_path):
    # 1 of 3 batches is a third of the epoch: allow it (the default stops past 10 %)
    overrides = [*SMALL, "model.on_divergence=skip", "model.max_skipped_fraction=0.5"]
    model, metrics = train(compose_config(overrides, tmp_path))
    assert model.skipped_batches == 1
    assert metrics["train/skipped_batches"] == 1.0
    assert finite_parameters(model)
    assert model.trainer.current_epoch == 3  # the run went on to the end
