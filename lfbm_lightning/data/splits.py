"""Seeded index splits, including the held-out-digit anomaly protocol.

Held-out-digit protocol (Zenati et al. 2018, followed by MEG and LEBM): pool every image, remove
the held-out digit, permute the rest with a fixed seed; the first ``train_fraction`` is the
training set (normal digits only); the test set is the remainder plus every image of the
held-out digit, with label 1 = anomaly.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class HoldoutSplit:
    """Indices into the pooled data set.

    Attributes:
        train: indices of normal training images.
        test: indices of test images (normal remainder first, then all held-out images).
        test_is_anomaly: 1 where ``test`` points at a held-out-digit image, else 0.
    """

    train: np.ndarray
    test: np.ndarray
    test_is_anomaly: np.ndarray


def holdout_digit_split(
    labels: np.ndarray, holdout_digit: int, seed: int = 42, train_fraction: float = 0.8
) -> HoldoutSplit:
    """Split pooled data by the held-out-digit protocol.

    Args:
        labels: class label of every pooled image, shape (N,).
        holdout_digit: the anomalous class, 0..9.
        seed: seed of the permutation of the normal images (42 in the reference code).
        train_fraction: share of the normal images used for training.
    """
    if not 0 <= int(holdout_digit) <= 9:
        raise ValueError(f"dataset.holdout_digit must be in 0..9, got {holdout_digit}")
    labels = np.asarray(labels)
    normal = np.flatnonzero(labels != holdout_digit)
    anomalous = np.flatnonzero(labels == holdout_digit)
    normal = normal[np.random.RandomState(seed).permutation(len(normal))]
    n_train = int(len(normal) * train_fraction)
    test = np.concatenate([normal[n_train:], anomalous])
    is_anomaly = np.concatenate(
        [np.zeros(len(normal) - n_train, dtype=np.int64), np.ones(len(anomalous), dtype=np.int64)]
    )
    return HoldoutSplit(train=normal[:n_train], test=test, test_is_anomaly=is_anomaly)


def random_split_indices(n: int, fractions: tuple[float, ...], seed: int) -> list[np.ndarray]:
    """Permute range(n) with ``seed`` and cut it into consecutive parts of the given fractions.

    The last part takes the remainder, so the parts always cover range(n) exactly once.
    """
    order = np.random.RandomState(seed).permutation(n)
    cuts = np.cumsum([int(round(f * n)) for f in fractions[:-1]])
    return np.split(order, cuts)
