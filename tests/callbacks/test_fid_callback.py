"""The FID-every-N-epochs training callback (lfbm_lightning/callbacks/metrics.py)."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest
import torch

from lfbm_lightning.errors import InceptionWeightsMissing
from lfbm_lightning.run.training import train
from tests.conftest import TINY, compose_config


def test_fid_callback_is_off_by_default(tmp_path):
    cfg = compose_config([], tmp_path)
    assert cfg.callbacks.fid.every_n_epochs == 0
    assert cfg.callbacks.fid.stats_dir == f"{cfg.paths.data_dir}/fid_stats"


def fid_every_epoch(weights: str, stats_dir: Path) -> list[str]:
    return [
        "callbacks.fid.every_n_epochs=1",
        "callbacks.fid.n_samples=12",
        "callbacks.fid.reference_images=12",
        "callbacks.fid.feature_layer=64",
        f"callbacks.fid.inception_weights={weights}",
        f"callbacks.fid.stats_dir={stats_dir}",
    ]


@pytest.mark.slow
def test_fid_callback_logs_val_fid_every_epoch_and_leaves_training_randomness_alone(
    tmp_path, inception_weights
):
    """One run with the callback checks both what it logs and that it draws nothing from the
    training's random streams: the EBM prior draws its prior samples from torch's global RNG at
    every step, so a callback drawing from it would change the trained weights."""
    run = [*TINY, "prior=ebm", "trainer.max_epochs=2"]
    plain, _ = train(compose_config(run, tmp_path / "plain"))
    fid = fid_every_epoch(inception_weights, tmp_path / "stats")
    with_fid, metrics = train(compose_config([*run, *fid], tmp_path / "with_fid"))
    for name, value in plain.state_dict().items():
        assert torch.equal(value, with_fid.state_dict()[name]), name

    with open(tmp_path / "with_fid" / "csv" / "metrics.csv") as handle:
        logged = [
            (int(r["epoch"]), float(r["val/fid"])) for r in csv.DictReader(handle) if r["val/fid"]
        ]
    assert [epoch for epoch, _ in logged] == [0, 1]
    assert all(math.isfinite(v) and v > 0 for _, v in logged)
    assert metrics["val/fid"] == logged[-1][1]
    assert len(list((tmp_path / "stats").glob("DigitsDataModule-*-train-12-layer64.npz"))) == 1


def test_fid_callback_without_weights_fails_before_training(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty_torch_home"))
    monkeypatch.delenv("LFBM_INCEPTION_WEIGHTS", raising=False)
    cfg = compose_config([*TINY, "callbacks.fid.every_n_epochs=1"], tmp_path)
    with pytest.raises(InceptionWeightsMissing, match="callbacks.fid.inception_weights"):
        train(cfg)
    assert not (tmp_path / "checkpoints" / "last.ckpt").exists()
