"""Seeded index splits: the validation subset, the held-out-digit anomaly protocol.

:func:`train_val_rows`: by default ``val`` is a fixed seeded subset of ``val_size`` training
images that stay in training (it monitors the fit); ``dataset.val_fraction`` carves a share out
of training instead. ``PROTOCOLS``: ``pooled_80_20`` and ``official``, label 1 = the
held-out digit; :func:`hold_back_anomalies` moves a share of the held-out digit's images from
test to validation. The protocols: docs/paper.md ("MNIST held-out-digit protocol").
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lfbm_lightning.errors import ConfigError

PROTOCOLS = {
    "pooled_80_20": "pooled train + test, held-out digit removed, permuted, 80% train / 20% "
    "test + every held-out image",
    "official": "official train split without the held-out digit / the whole official test split",
}


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
    labels: np.ndarray, holdout_digit: int, seed: int, train_fraction: float = 0.8
) -> HoldoutSplit:
    """Split pooled data by the held-out-digit protocol.

    Args:
        labels: class label of every pooled image, shape (N,).
        holdout_digit: the anomalous class, 0..9.
        seed: seed of the permutation of the normal images.
        train_fraction: share of the normal images used for training.
    """
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


def official_holdout_split(labels: np.ndarray, n_train: int, holdout_digit: int) -> HoldoutSplit:
    """Split data pooled as (official train, then official test) by the ``official`` protocol.

    Args:
        labels: class label of every pooled image, shape (N,); the first ``n_train`` are the
            official training split.
        n_train: size of the official training split (60,000 for MNIST).
        holdout_digit: the anomalous class, 0..9.

    Returns:
        train: the official training images of every other digit; test: every official test
        image, normal ones first, then the held-out digit's (``test_is_anomaly`` 0, then 1).
    """
    if not 0 <= int(holdout_digit) <= 9:
        raise ValueError(f"dataset.holdout_digit must be in 0..9, got {holdout_digit}")
    labels = np.asarray(labels)
    rows = np.arange(len(labels))
    train = rows[:n_train][labels[:n_train] != holdout_digit]
    test_rows, test_labels = rows[n_train:], labels[n_train:]
    normal = test_rows[test_labels != holdout_digit]
    anomalous = test_rows[test_labels == holdout_digit]
    is_anomaly = np.concatenate(
        [np.zeros(len(normal), dtype=np.int64), np.ones(len(anomalous), dtype=np.int64)]
    )
    test = np.concatenate([normal, anomalous])
    return HoldoutSplit(train=train, test=test, test_is_anomaly=is_anomaly)


def hold_back_anomalies(
    split: HoldoutSplit, fraction: float, seed: int
) -> tuple[HoldoutSplit, np.ndarray]:
    """Move a seeded ``fraction`` of the held-out digit's test images to validation.

    The validation anomalies let a run choose its checkpoint by a held-out AUPRC without
    looking at the test split (docs/runs.md, "Checkpoint rules"); the test split keeps the
    other anomalies and every normal image.

    Args:
        split: a held-out-digit split.
        fraction: share of its anomalies held back, in [0, 1); 0 holds back none.
        seed: seed of the choice.

    Returns:
        (the split without the held-back images, their indices (M,) in seeded order).
    """
    if not 0 <= fraction < 1:
        raise ConfigError(f"dataset.holdout_val_fraction must be in [0, 1), got {fraction}")
    anomalous = np.flatnonzero(split.test_is_anomaly == 1)
    n_held = int(round(fraction * len(anomalous)))
    held = anomalous[np.random.RandomState(seed).permutation(len(anomalous))[:n_held]]
    keep = np.ones(len(split.test), dtype=bool)
    keep[held] = False
    rest = HoldoutSplit(split.train, split.test[keep], split.test_is_anomaly[keep])
    return rest, split.test[held]


def random_split_indices(n: int, fractions: tuple[float, ...], seed: int) -> list[np.ndarray]:
    """Permute range(n) with ``seed`` and cut it into consecutive parts of the given fractions.

    The last part takes the remainder, so the parts always cover range(n) exactly once.
    """
    order = np.random.RandomState(seed).permutation(n)
    cuts = np.cumsum([int(round(f * n)) for f in fractions[:-1]])
    return np.split(order, cuts)


def carve_validation(
    indices: np.ndarray, fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Hold out a seeded ``fraction`` of ``indices`` for validation.

    Args:
        indices: (N,) the training pool.
        fraction: share for validation, rounded to a count that must leave both parts non-empty.
        seed: seed of the choice.

    Returns:
        (train, val): train keeps the pool's order; val in the seeded random order.
    """
    indices = np.asarray(indices)
    n_val = int(round(fraction * len(indices)))
    if not 0 < n_val < len(indices):
        raise ConfigError(
            f"dataset.val_fraction={fraction} holds out {n_val} of {len(indices)} training "
            "images: both the training and the validation part must be non-empty"
        )
    chosen = np.random.RandomState(seed).permutation(len(indices))[:n_val]
    keep = np.ones(len(indices), dtype=bool)
    keep[chosen] = False
    return indices[keep], indices[chosen]


def train_val_rows(
    indices: np.ndarray, val_size: int, val_fraction: float | None, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """The training rows and the validation rows of a training pool (module docstring).

    Args:
        indices: (N,) the training pool.
        val_size: with ``val_fraction`` None, validation = min(val_size, N) rows of the pool,
            drawn with ``seed`` (the first ones of the permutation :func:`carve_validation`
            draws, so both choose the same images for the same count); training = all N.
        val_fraction: None, or the share carved out of training (:func:`carve_validation`).
        seed: seed of the choice.

    Returns:
        (train, val): train in the pool's order; val in the seeded random order.
    """
    indices = np.asarray(indices)
    if val_fraction is not None:
        return carve_validation(indices, val_fraction, seed)
    if val_size < 1:
        raise ConfigError(f"dataset.val_size must be >= 1, got {val_size}")
    chosen = np.random.RandomState(seed).permutation(len(indices))[:val_size]
    return indices, indices[chosen]
