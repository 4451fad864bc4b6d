"""Anomaly-detection metrics: AUPRC as published, average precision, chance level.

Convention: label 1 = anomaly (the positive class), label 0 = normal; a higher score means
more anomalous (for LFBM, ``score = ||x - g(z)||^2 / (2 sigma^2) - log p(z)``).
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.metrics import auc, average_precision_score, precision_recall_curve

ArrayLike = np.ndarray | torch.Tensor | list


def _as_numpy(values: ArrayLike) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().numpy()
    return np.asarray(values).reshape(-1)


def _validate(scores: ArrayLike, labels: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Flatten to 1-d arrays ``(N,)``, checking lengths, finiteness and labels in {0, 1}."""
    scores, labels = _as_numpy(scores).astype(np.float64), _as_numpy(labels)
    if scores.shape != labels.shape:
        raise ValueError(f"scores ({scores.size}) and labels ({labels.size}) differ in length")
    if not np.isfinite(scores).all():
        raise ValueError("anomaly scores contain NaN or infinity")
    if not np.isin(labels, (0, 1)).all():
        raise ValueError(f"labels must be 0 (normal) or 1 (anomaly), got {np.unique(labels)}")
    labels = labels.astype(np.int64)
    if labels.min() == labels.max():
        only = "anomalies" if labels.min() == 1 else "normal images"
        raise ValueError(f"labels contain only {only}: both classes are needed")
    return scores, labels


def auprc(scores: ArrayLike, labels: ArrayLike) -> float:
    """Area under the precision-recall curve, as in the published tables.

    ``precision, recall = precision_recall_curve(labels, scores)`` then the trapezoid rule
    ``sum_k (r_{k+1} - r_k) (p_{k+1} + p_k) / 2`` via ``sklearn.metrics.auc``. scikit-learn
    appends the point ``(recall 0, precision 1)``. (The trapezoid interpolates linearly and so
    can differ from :func:`average_precision`.)

    Args:
        scores: Anomaly scores ``(N,)``, higher = more anomalous.
        labels: ``(N,)`` in ``{0, 1}``, 1 = anomaly.

    Returns:
        AUPRC in ``[0, 1]``.
    """
    scores, labels = _validate(scores, labels)
    precision, recall, _ = precision_recall_curve(labels, scores, pos_label=1)
    return float(auc(recall, precision))


def average_precision(scores: ArrayLike, labels: ArrayLike) -> float:
    """Average precision ``sum_k (R_k - R_{k-1}) P_k`` (step rule, scikit-learn).

    Args:
        scores: Anomaly scores ``(N,)``, higher = more anomalous.
        labels: ``(N,)`` in ``{0, 1}``, 1 = anomaly.
    """
    scores, labels = _validate(scores, labels)
    return float(average_precision_score(labels, scores, pos_label=1))


def chance_level(labels: ArrayLike) -> float:
    """AUPRC of a random scorer: the fraction of anomalies ``mean(labels)``.

    Args:
        labels: ``(N,)`` in ``{0, 1}``, 1 = anomaly.
    """
    labels = _as_numpy(labels)
    if labels.size == 0 or not np.isin(labels, (0, 1)).all():
        raise ValueError("labels must be a non-empty array of 0 (normal) and 1 (anomaly)")
    return float(labels.mean())


def anomaly_report(scores: ArrayLike, labels: ArrayLike) -> dict[str, float | int]:
    """All anomaly metrics in one dict.

    Args:
        scores: Anomaly scores ``(N,)``, higher = more anomalous.
        labels: ``(N,)`` in ``{0, 1}``, 1 = anomaly.

    Returns:
        ``auprc``, ``average_precision``, ``chance_level``, ``n``, ``n_anomalies``,
        ``n_normal``.
    """
    scores, labels = _validate(scores, labels)
    n_anomalies = int(labels.sum())
    return {
        "auprc": auprc(scores, labels),
        "average_precision": average_precision(scores, labels),
        "chance_level": chance_level(labels),
        "n": int(labels.size),
        "n_anomalies": n_anomalies,
        "n_normal": int(labels.size) - n_anomalies,
    }
