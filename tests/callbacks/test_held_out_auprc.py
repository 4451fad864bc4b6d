"""The held-out AUPRC during training (lfbm_lightning/callbacks/held_out_auprc.py)."""

from __future__ import annotations

import csv
import json

import pytest
import torch

from lfbm_lightning.callbacks.held_out_auprc import scored_rows
from lfbm_lightning.errors import ConfigError
from lfbm_lightning.run.training import train
from tests.conftest import TINY, compose_config
from tests.helpers.train_runs import callback, run_train


def test_the_periodic_auprc_is_off_by_default(tmp_path):
    cfg = compose_config([], tmp_path)
    assert cfg.callbacks.auprc.every_n_epochs == 0
    assert cfg.dataset.holdout_val_fraction == 0


def test_a_subset_keeps_each_class_in_its_share_and_is_fixed():
    labels = torch.tensor([0] * 70 + [1] * 30)
    rows = scored_rows(labels, 20)
    assert rows == sorted(rows) == scored_rows(labels, 20) and len(set(rows)) == 20
    assert int(labels[rows].sum()) == 6
    rare = torch.tensor([0] * 99 + [1])
    assert rare[scored_rows(rare, 2)].tolist() == [0, 1]  # at least one of each class
    assert scored_rows(labels, None) == scored_rows(labels, 100) == list(range(100))


@pytest.mark.slow
def test_logged_auprc_is_the_anomaly_tasks_and_leaves_training_alone(tmp_path):
    """One run with the callback checks what it logs against the anomaly task's AUPRC of the
    same last-epoch model (the same fit, another code path) and that it draws nothing from the
    training's random streams (the EBM prior draws from torch's global RNG at every step)."""
    run = [*TINY, "prior=ebm", "trainer.max_epochs=2", "dataset.holdout_digit=9"]
    run.append("dataset.holdout_val_fraction=0.2")
    plain, _ = train(compose_config(run, tmp_path / "plain"))
    periodic = ["callbacks.auprc.every_n_epochs=1", "callbacks.auprc.n_steps=5"]
    after_fit = [
        "evaluate_after_fit=[anomaly]",
        'evaluate_overrides=["device=cpu","progress=false","anomaly.n_steps=5"]',
    ]
    watched, metrics = train(compose_config([*run, *periodic, *after_fit], tmp_path / "auprc"))
    for name, value in plain.state_dict().items():
        assert torch.equal(value, watched.state_dict()[name]), name
    assert metrics["test/auprc"] == pytest.approx(metrics["anomaly/auprc"], abs=1e-6)
    assert 0 < metrics["val/auprc"] <= 1


@pytest.mark.parametrize(
    "missing",
    [
        ["callbacks.auprc.every_n_epochs=1"],  # no validation anomalies
        ["dataset.holdout_val_fraction=0.2"],  # no periodic AUPRC
        [
            "callbacks.auprc.every_n_epochs=1",
            "dataset.holdout_val_fraction=0.2",
            "callbacks.auprc.best_checkpoint=null",
        ],
    ],
)
def test_auprc_best_evaluation_needs_the_validation_auprc_and_its_checkpoint(tmp_path, missing):
    run = [*TINY, "dataset.holdout_digit=9", "evaluate_after_fit=[anomaly]"]
    cfg = compose_config([*run, "evaluate_checkpoint=auprc_best", *missing], tmp_path)
    with pytest.raises(ConfigError, match="evaluate_checkpoint=auprc_best needs"):
        train(cfg)
    assert not (tmp_path / "checkpoints").exists()


@pytest.mark.slow
def test_sigterm_stops_the_periodic_auprc_and_keeps_the_run(tmp_path):
    """A preemption while the held-out AUPRC is scored stops it after its current batch, as in
    training: exit 143, an honest record, last.ckpt kept, and no AUPRC logged for that epoch."""
    run_dir = tmp_path / "run"
    periodic = ["callbacks.auprc.every_n_epochs=1", "callbacks.auprc.n_steps=5"]
    args = [f"hydra.run.dir={run_dir}", "dataset.holdout_digit=9", *periodic, *TINY]
    proc = run_train([*args, "trainer.max_epochs=2", *callback("SigtermInPeriodicAUPRC")])
    assert proc.returncode == 143, proc.stderr[-3000:]
    record = json.loads((run_dir / "metrics.json").read_text())
    assert (record["status"], record["signal"]) == ("interrupted", "SIGTERM")
    with (run_dir / "csv" / "metrics.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert rows and not any(r.get("test/auprc") for r in rows)
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
