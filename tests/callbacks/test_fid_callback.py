"""The FID-every-N-epochs training callback (lfbm_lightning/callbacks/metrics.py)."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
import torch

from lfbm_lightning.errors import ConfigError, InceptionWeightsMissing
from lfbm_lightning.run.training import train
from lfbm_lightning.runtime.checkpoint_io import safe_load
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


@pytest.mark.slow
def test_fid_best_checkpoint_is_the_lowest_logged_fid_and_is_evaluated_after_fit(
    tmp_path, inception_weights
):
    """The authors' model selection: fid_best.ckpt holds the epoch of the lowest val/fid, and
    evaluate_checkpoint=fid_best scores that checkpoint after fit. With the EBM prior and this
    generator rate the stand-in FID of epochs 0..4 reads 5.93, 6.59, 7.19, 7.52, 7.46: the
    best is not the last epoch, and the last beats the one before it."""
    stats, out = tmp_path / "stats", tmp_path / "run"
    evaluate = [
        "device=cpu",
        "progress=false",
        "synthesis.n_samples=12",
        "synthesis.grid_size=4",
        f"metrics.inception_weights={inception_weights}",
        f"metrics.stats_dir={stats}",
        "metrics.feature_layer=64",
        "metrics.reference_images=12",
    ]
    cfg = compose_config(
        [
            *TINY,
            "prior=ebm",
            "model.lr_generator=3e-4",
            "trainer.max_epochs=5",
            *fid_every_epoch(inception_weights, stats),
            "evaluate_after_fit=[synthesis]",
            "evaluate_checkpoint=fid_best",
            "evaluate_overrides=[" + ",".join(f'"{o}"' for o in evaluate) + "]",
        ],
        out,
    )
    _, metrics = train(cfg)

    with open(out / "csv" / "metrics.csv") as handle:
        rows = [r for r in csv.DictReader(handle) if r["val/fid"]]
    logged = {int(r["epoch"]): float(r["val/fid"]) for r in rows}
    assert sorted(logged) == [0, 1, 2, 3, 4]
    best_epoch = min(logged, key=logged.get)
    assert best_epoch != 4, logged  # else a checkpoint of every epoch would pass too

    best = out / "checkpoints" / "fid_best.ckpt"
    checkpoint = safe_load(best)
    assert checkpoint["epoch"] == best_epoch
    (state,) = [v for k, v in checkpoint["callbacks"].items() if "FIDCallback" in k]
    assert state == {"best_fid": pytest.approx(logged[best_epoch]), "best_epoch": best_epoch}
    last = safe_load(out / "checkpoints" / "last.ckpt")
    assert not torch.equal(
        checkpoint["state_dict"]["generator.net.0.weight"],
        last["state_dict"]["generator.net.0.weight"],
    )
    assert metrics["val/fid_best"] == pytest.approx(logged[best_epoch])
    assert metrics["val/fid_best_epoch"] == best_epoch

    record = json.loads((out / "metrics.json").read_text())
    assert record["evaluation"] == {"synthesis": "completed"}
    assert record["evaluated_checkpoint"] == str(best)
    assert record["synthesis/fid_of"] == "prior samples"
    evaluated = json.loads((out / "eval" / "synthesis" / "metrics.json").read_text())
    assert evaluated["ckpt_path"] == str(best)


def test_fid_best_evaluation_needs_the_fid_callback(tmp_path):
    cfg = compose_config(
        [*TINY, "evaluate_after_fit=[synthesis]", "evaluate_checkpoint=fid_best"], tmp_path
    )
    with pytest.raises(ConfigError, match="callbacks.fid.every_n_epochs"):
        train(cfg)
    assert not (tmp_path / "checkpoints").exists()
