"""AUPRC as published (trapezoid over scikit-learn's PR curve), AP, chance level, validation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import precision_recall_curve

from lfbm_lightning.metrics.precision_recall import (
    anomaly_report,
    auprc,
    average_precision,
    chance_level,
)

# Five test images, two anomalies (label 1); higher score = more anomalous.
SCORES = [0.9, 0.8, 0.7, 0.6, 0.2]
LABELS = [1, 0, 1, 0, 0]
# Thresholding at each score, from the highest (TP, FP -> precision P, recall R):
#   >= 0.9: TP 1, FP 0 -> P 1,   R 1/2
#   >= 0.8: TP 1, FP 1 -> P 1/2, R 1/2
#   >= 0.7: TP 2, FP 1 -> P 2/3, R 1
#   >= 0.6: TP 2, FP 2 -> P 1/2, R 1    (zero width: no area)
#   >= 0.2: TP 2, FP 3 -> P 2/5, R 1    (zero width: no area)
# plus scikit-learn's end point (R 0, P 1). Trapezoids along recall:
#   R 0 -> 1/2 (P 1 -> 1):       1/2 * (1 + 1) / 2     = 1/2
#   R 1/2 -> 1/2 (P 1 -> 1/2):   width 0               = 0
#   R 1/2 -> 1 (P 1/2 -> 2/3):   1/2 * (1/2 + 2/3) / 2 = 7/24
# AUPRC = 1/2 + 7/24 = 19/24. Average precision (steps, no interpolation):
#   (1/2 - 0) * 1 + (1 - 1/2) * 2/3 = 5/6.
HAND_PR_POINTS = [(0.0, 1.0), (0.5, 1.0), (0.5, 0.5), (1.0, 2 / 3), (1.0, 0.5), (1.0, 0.4)]


def test_hand_computed_example():
    precision, recall, _ = precision_recall_curve(LABELS, SCORES)
    curve = set(zip(np.round(recall, 12), np.round(precision, 12), strict=True))
    for r, p in HAND_PR_POINTS:
        assert (round(r, 12), round(p, 12)) in curve
    assert auprc(SCORES, LABELS) == pytest.approx(19 / 24, abs=1e-12)
    assert average_precision(SCORES, LABELS) == pytest.approx(5 / 6, abs=1e-12)


def test_perfect_ranking_is_one_and_reversed_ranking_is_far_below_chance():
    labels = [1, 1, 0, 0, 0, 0]
    scores = np.array([6.0, 5.0, 4.0, 3.0, 2.0, 1.0])
    assert auprc(scores, labels) == pytest.approx(1.0)
    # Reversed: the four normals come first (P 0 at R 0), then P 1/5 at R 1/2, P 1/3 at R 1:
    # 1/2 * (0 + 1/5) / 2 + 1/2 * (1/5 + 1/3) / 2 = 1/20 + 2/15 = 11/60
    reversed_value = auprc(-scores, labels)
    assert reversed_value == pytest.approx(11 / 60, abs=1e-12)
    assert chance_level(labels) == pytest.approx(1 / 3)
    assert reversed_value < chance_level(labels)


def test_chance_level_is_anomaly_fraction_and_random_scores_land_near_it():
    rng = np.random.default_rng(0)
    labels = (rng.random(20_000) < 0.3).astype(int)
    assert chance_level(labels) == pytest.approx(labels.mean())
    assert chance_level([0, 1, 0, 0]) == 0.25
    assert auprc(rng.random(labels.size), labels) == pytest.approx(labels.mean(), abs=0.02)


def test_report_bundles_metrics_and_counts_and_accepts_tensors():
    report = anomaly_report(torch.tensor(SCORES), torch.tensor(LABELS))
    assert report["auprc"] == pytest.approx(19 / 24)
    assert report["average_precision"] == pytest.approx(5 / 6)
    assert report["chance_level"] == pytest.approx(2 / 5)
    assert (report["n"], report["n_anomalies"], report["n_normal"]) == (5, 2, 3)


@pytest.mark.parametrize(
    ("scores", "labels", "message"),
    [
        ([0.1, 0.2, 0.3], [0, 0, 0], "only normal"),
        ([0.1, 0.2], [1, 1], "only anomalies"),
        ([0.1, 0.2, 0.3], [0, 1], "length"),
        ([0.1, 0.2, 0.3], [0, 1, 2], "0 \\(normal\\) or 1"),
        ([0.1, float("nan"), 0.3], [0, 1, 1], "NaN"),
    ],
)
def test_invalid_inputs_raise_clear_errors(scores, labels, message):
    with pytest.raises(ValueError, match=message):
        auprc(scores, labels)
