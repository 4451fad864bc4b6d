"""NaN injection: the run stops (or skips) before any optimizer step, and the last good
checkpoint stays loadable and finite."""

from __future__ import annotations

import json

import pytest
import pytorch_lightning as pl
import torch

from lfbm_lightning.models.latent_prior_model import DivergenceError
from lfbm_lightning.run.training import train
from lfbm_lightning.runtime.checkpoints import load_model
from tests.conftest import compose_config
from tests.helpers.train_runs import callback, error_lines, run_train

SMALL = [
    "trainer.max_epochs=3",
    "trainer.limit_train_batches=3",
    "trainer.limit_val_batches=1",
    "inference.n_steps=3",
    "inference.eval_steps=5",
    "callbacks.image_grids.every_n_epochs=0",
    "+callbacks.nan_injector._target_=tests.run.test_divergence.NaNInjector",
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


SUBPROCESS_RUN = [
    "trainer.max_epochs=3",
    "trainer.limit_train_batches=3",
    "trainer.limit_val_batches=0",
    "inference.n_steps=2",
    "callbacks.image_grids.every_n_epochs=0",
    "callbacks.progress_bar.refresh_rate=0",
]


@pytest.mark.slow
def test_skipping_every_batch_stops_the_run_and_says_no_checkpoint_exists(tmp_path):
    run = tmp_path / "run"
    overrides = [*SUBPROCESS_RUN, "model.on_divergence=skip", *callback("NaNEveryBatch")]
    result = run_train([f"hydra.run.dir={run}", *overrides])
    assert result.returncode == 1, result.stderr[-2000:]
    [line] = error_lines(result.stderr)
    assert "1 of the 3 batches of epoch 0 were skipped as non-finite" in line, line
    assert "more than model.max_skipped_fraction=0.1" in line
    assert f"no checkpoint was written yet ({run / 'checkpoints' / 'last.ckpt'}" in line
    assert "Traceback" not in result.stderr
    record = json.loads((run / "metrics.json").read_text())
    assert record["status"] == "diverged"
    assert record["progress"]["skipped_batches"] == 1
    assert not (run / "checkpoints" / "last.ckpt").exists()


@pytest.mark.slow
def test_stop_names_the_last_good_checkpoint_and_its_epoch(tmp_path):
    run = tmp_path / "run"
    last = run / "checkpoints" / "last.ckpt"
    overrides = [*SUBPROCESS_RUN, *callback("NaNEveryBatch", epoch=1)]
    result = run_train([f"hydra.run.dir={run}", *overrides])
    assert result.returncode == 1, result.stderr[-2000:]
    [line] = error_lines(result.stderr)
    assert "non-finite z at epoch 1, batch 0" in line, line
    assert f"the last good checkpoint is {last} (epoch 0): resume with ckpt_path={last}" in line
    assert json.loads((run / "metrics.json").read_text())["status"] == "diverged"
    assert finite_parameters(load_model(last))
