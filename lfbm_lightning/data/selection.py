"""Which items of a split an evaluation uses, and where a data set's files moved to.

Shared by the evaluation tasks and the FID statistics of a data set.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from torch.utils.data import Dataset, Subset


def relocate(value: Any, old_dir: str, new_dir: str) -> Any:
    """``value`` with every string path under ``old_dir`` moved under ``new_dir``, recursively
    through mappings and lists (e.g. a data set config after its data moved)."""
    if isinstance(value, Mapping):
        return {k: relocate(v, old_dir, new_dir) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [relocate(v, old_dir, new_dir) for v in value]
    old = old_dir.rstrip("/")
    if isinstance(value, str) and old and (value + "/").startswith(old + "/"):
        return new_dir.rstrip("/") + value[len(old) :]
    return value


def select_examples(dataset: Dataset, n_examples: int | None, seed: int) -> Dataset:
    """The whole dataset, or ``n_examples`` items drawn at random with ``seed``.

    The subset keeps the items' order (and their ``index`` field, the position in the split),
    and a random draw keeps both classes of an anomaly test set, whose anomalies come last.
    """
    if n_examples is None or n_examples >= len(dataset):
        return dataset
    chosen = np.random.RandomState(seed).choice(len(dataset), n_examples, replace=False)
    return Subset(dataset, np.sort(chosen).tolist())
