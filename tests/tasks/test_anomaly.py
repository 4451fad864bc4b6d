"""Anomaly detection through the real evaluate.py; AUPRC recomputed from the CSV."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.metrics import auc, average_precision_score, precision_recall_curve

from lfbm_lightning.data.digits import DigitsDataModule
from lfbm_lightning.tasks.anomaly import check_holdout
from tests.conftest import run_entry_point
from tests.helpers.task_outputs import read_rows
from tests.tasks.conftest import HOLDOUT_DIGIT


@pytest.mark.slow
def test_anomaly_csv_reproduces_the_reported_auprc(digits_ckpt, tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    out = tmp_path / "anomaly"
    args = [f"ckpt_path={digits_ckpt}", "task=anomaly", "anomaly.n_steps=100"]
    result = run_entry_point("evaluate.py", [*args, f"hydra.run.dir={out}"])
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())

    # one row per test image of the held-out split, with its label
    datamodule = DigitsDataModule(holdout_digit=HOLDOUT_DIGIT)
    datamodule.setup()
    test = datamodule.splits["test"]
    rows = read_rows(out / "per_example.csv")
    assert sorted(int(r["index"]) for r in rows) == list(range(len(test)))
    labels = np.array([r["label"] for r in rows])
    expected = np.array([int(test[int(r["index"])]["label"]) for r in rows])
    np.testing.assert_array_equal(labels, expected)
    assert metrics["n_anomalies"] == expected.sum() > 0
    assert metrics["holdout_digit"] == HOLDOUT_DIGIT and metrics["n_steps"] == 100

    # score = ||x - g(z)||^2 / (2 sigma^2) - log p(z)
    for r in rows:
        assert r["score"] == pytest.approx(r["reconstruction_energy"] - r["log_prior"], rel=1e-9)

    # independent recomputation: trapezoid under scikit-learn's PR curve, as published
    scores = np.array([r["score"] for r in rows])
    precision, recall, _ = precision_recall_curve(labels, scores)
    assert metrics["auprc"] == pytest.approx(auc(recall, precision), abs=1e-12)
    assert metrics["average_precision"] == pytest.approx(
        average_precision_score(labels, scores), abs=1e-12
    )
    assert metrics["chance_level"] == pytest.approx(labels.mean(), abs=1e-12)
    # the trained model separates the held-out digit (about 0.60 against chance 0.36)
    assert metrics["auprc"] > metrics["chance_level"] + 0.1, metrics
    assert (out / "pr_curve.png").stat().st_size > 1000
    assert "| auprc |" in (out / "results.md").read_text()

    # the default scores beside the paper's, each a column, each AUPRC from the CSV
    assert metrics["scores"] == ["joint", "reconstruction", "prior"]
    for r in rows:
        assert r["score_reconstruction"] == r["reconstruction_energy"]
        assert r["score_prior"] == -r["log_prior"]
    for name in ("reconstruction", "prior"):
        check_score_metrics(metrics, rows, name)
        assert metrics[f"passes_{name}"] == metrics["passes_joint"] == 101
    assert "score_marginal" not in rows[0] and "auprc_marginal" not in metrics
    table = (out / "results.md").read_text()
    assert f"| {metrics['auprc']:.4f} |" in table and "-log p(z)" in table


def check_score_metrics(metrics: dict, rows: list[dict], name: str) -> None:
    """``auprc_<name>`` and ``ap_<name>`` recomputed from the CSV column ``score_<name>``."""
    labels = np.array([r["label"] for r in rows])
    scores = np.array([r[f"score_{name}"] for r in rows])
    precision, recall, _ = precision_recall_curve(labels, scores)
    assert metrics[f"auprc_{name}"] == pytest.approx(auc(recall, precision), abs=1e-12)
    assert metrics[f"ap_{name}"] == pytest.approx(
        average_precision_score(labels, scores), abs=1e-12
    )


@pytest.mark.slow
def test_all_four_scores_from_one_run(digits_ckpt, run_task):
    overrides = [
        "anomaly.n_examples=60",
        "anomaly.n_steps=50",
        "anomaly.scores=[joint,reconstruction,prior,marginal]",
        "anomaly.marginal.n_samples=32",
        "anomaly.marginal.n_steps=20",
        "anomaly.marginal.chunk=32",
    ]
    metrics, out = run_task(digits_ckpt, "anomaly", overrides)
    rows = read_rows(out / "per_example.csv")
    assert len(rows) == metrics["n"] == 60 and metrics["n_anomalies"] > 0
    for name in ("reconstruction", "prior", "marginal"):
        check_score_metrics(metrics, rows, name)
    se, khat = (np.array([r[k] for r in rows]) for k in ("score_marginal_se", "marginal_khat"))
    trusted = khat <= 0.7  # K = 32 >= 25: every image has a k-hat
    assert np.isfinite(khat).all() and np.isnan(se[~trusted]).all() and (se[trusted] >= 0).all()
    assert metrics["marginal_khat_above_share"] == pytest.approx(1 - trusted.mean())
    if trusted.any():
        assert metrics["marginal_mc_se_mean"] == pytest.approx(se[trusted].mean())
    # passes: the fit (50 + 1), then per image 2 L-BFGS fits (1..20 passes each), 2 x d = 32
    # Hessian rows, the 2 modes' energies and 32 samples
    passes = np.array([r["marginal_passes"] for r in rows])
    assert (passes >= 2 + 34 + 32).all() and (passes <= 40 + 34 + 32).all()
    assert metrics["passes_marginal"] == pytest.approx(51 + passes.mean())
    # -log p(x) >= -log p(x, z*) - log of the posterior volume: close to the joint score
    marginal, joint = (np.array([r[k] for r in rows]) for k in ("score_marginal", "score"))
    assert np.corrcoef(marginal, joint)[0, 1] > 0.9
    assert (out / "pr_curve.png").stat().st_size > 1000


def test_anomaly_needs_a_held_out_digit():
    with pytest.raises(ValueError, match=r"dataset.holdout_digit=0..9"):
        check_holdout(DigitsDataModule(holdout_digit=None))
    assert check_holdout(DigitsDataModule(holdout_digit=7)) == 7


@pytest.mark.slow  # its checkpoint fixture trains through train.py
def test_fast_fit_scores_with_fewer_counted_passes(digits_ckpt, run_task):
    common = ["anomaly.n_examples=40", "anomaly.n_steps=100"]
    protocol, _ = run_task(digits_ckpt, "anomaly", common)
    fast, _ = run_task(digits_ckpt, "anomaly", [*common, "anomaly.fit=fast"])
    assert (protocol["fit"], fast["fit"]) == ("protocol", "fast")
    assert protocol["generator_passes"] == 40 * 100  # every image, every step
    assert fast["generator_passes"] < protocol["generator_passes"]
    assert fast["passes_per_fit"] == pytest.approx(fast["generator_passes"] / 40)
    assert abs(fast["auprc"] - protocol["auprc"]) < 0.05
    # each score's cost per image is the fit's measured passes plus the decode
    assert protocol["passes_joint"] == 101
    assert fast["passes_joint"] == pytest.approx(fast["passes_per_fit"] + 1)
