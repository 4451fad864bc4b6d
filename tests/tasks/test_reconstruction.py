"""Reconstruction: small error on the model's own samples; the task end to end."""

from __future__ import annotations

import pytest
import torch

from lfbm_lightning.data.digits import DigitsDataModule
from lfbm_lightning.errors import ConfigError
from lfbm_lightning.models import LatentPriorModel
from tests.helpers.task_outputs import grid_shape, read_rows
from tests.tasks.conftest import HOLDOUT_DIGIT


@pytest.mark.slow
def test_own_samples_are_reconstructed_far_below_the_data_variance(digits_ckpt):
    model = LatentPriorModel.load_from_checkpoint(digits_ckpt).eval()
    torch.manual_seed(0)
    x = model.sample_images(64)  # x = g(z*), z* ~ p(z): an exact solution exists
    variance = x.var(dim=0).mean().item()  # per-pixel variance across the samples
    start_mse = (x - model.reconstruct(x, n_steps=0, step_size=0.1)[0]).pow(2).mean().item()
    fitted_mse = (x - model.reconstruct(x, n_steps=100, step_size=0.1)[0]).pow(2).mean().item()
    assert variance > 0.05  # the samples differ from each other
    assert fitted_mse < 0.05 * variance, (fitted_mse, variance)
    assert fitted_mse < 0.05 * start_mse, (fitted_mse, start_mse)


@pytest.mark.slow
def test_reconstruction_task_writes_csv_grid_and_image_averaged_mse(digits_ckpt, run_task):
    overrides = ["reconstruction.n_examples=64", "reconstruction.grid_size=16"]
    metrics, out = run_task(digits_ckpt, "reconstruction", overrides)
    # defaults: the data module's evaluation split, the checkpoint's eval_steps / eval_step_size
    assert metrics["split"] == "test"
    assert (metrics["n_images"], metrics["n_steps"], metrics["step_size"]) == (64, 50, 0.1)

    rows = read_rows(out / "per_example.csv")
    assert len(rows) == 64 and len({r["index"] for r in rows}) == 64
    mean = sum(r["mse"] for r in rows) / 64
    assert metrics["mse"] == pytest.approx(mean, rel=1e-12)
    assert metrics["mse_01"] == pytest.approx(metrics["mse"] / 4, rel=1e-6)
    for r in rows:
        assert r["mse_01"] == pytest.approx(r["mse"] / 4, rel=1e-5)

    # far better than predicting the mean image, whose MSE is the per-pixel variance (~0.29)
    datamodule = DigitsDataModule(holdout_digit=HOLDOUT_DIGIT)
    datamodule.setup()
    test = datamodule.splits["test"]
    x = torch.stack([test[int(r["index"])]["image"] for r in rows])
    variance = x.var(dim=0).mean().item()
    assert 0 < metrics["mse"] < 0.5 * variance, (metrics["mse"], variance)
    # 16 pairs -> 2 x (originals row, reconstructions row) of 8, each digit enlarged to 32 px
    # 16 examples in 4 blocks of (original | reconstruction) columns
    assert grid_shape(out / "reconstructions.png", labelled=True) == (4, 8)
    assert "| mse | " in (out / "results.md").read_text()


@pytest.mark.slow
def test_fast_fit_matches_the_protocol_mse_with_five_times_fewer_passes(digits_ckpt, run_task):
    """The paper's 400 noise-free steps against the fast fit (cap 400) on the same 200 test
    images of a trained digits checkpoint: MSE within 1% (lower is fine), >= 5x fewer passes,
    and metrics.json says which fit ran and how many passes it took."""
    options = ["reconstruction.n_steps=400", "reconstruction.n_examples=200"]
    protocol, _ = run_task(digits_ckpt, "reconstruction", options)
    fast, _ = run_task(digits_ckpt, "reconstruction", [*options, "reconstruction.fit=fast"])
    assert protocol["fit"] == "protocol" and fast["fit"] == "fast"
    assert protocol["generator_passes"] == 400 * 200
    assert protocol["passes_per_fit"] == 400.0
    assert fast["generator_passes"] == pytest.approx(fast["passes_per_fit"] * 200)
    assert fast["passes_per_fit"] * 5 <= protocol["passes_per_fit"]
    assert fast["mse"] <= 1.01 * protocol["mse"]


@pytest.mark.slow  # its checkpoint fixture trains through train.py
def test_unknown_fit_is_refused(tiny_ckpt, run_task):
    refused = r"reconstruction.fit must be one of \['protocol', 'fast'\]"
    with pytest.raises(ConfigError, match=refused):
        run_task(tiny_ckpt, "reconstruction", ["reconstruction.fit=adam"])
