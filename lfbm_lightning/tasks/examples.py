"""Which examples a task scores, in which batches, on which rank, and how the rows come back.

Images are (B, C, H, W) in [-1, 1] and masks (B, 1, H, W) with 1 = observed, as in
:mod:`lfbm_lightning.data.datasets`; every item also carries its ``index`` in the split.

**Several ranks** (``evaluate.py devices=N``, :mod:`lfbm_lightning.runtime.distributed`): each rank
takes its share of the examples (:func:`rank_share`), scores them, and :func:`all_rows` brings
every rank's per-example rows to every rank, in example order.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import torch
from omegaconf import DictConfig
from torch.utils.data import DataLoader, Dataset, Subset
from tqdm.auto import tqdm

from lfbm_lightning.checks import check_choice
from lfbm_lightning.data.data_module import ImageDataModule
from lfbm_lightning.data.selection import select_examples
from lfbm_lightning.runtime.distributed import gather_lists, shard_indices


def split_examples(
    datamodule: ImageDataModule, split: str, n_examples: int | None, seed: int
) -> Dataset:
    """Items of ``datamodule.splits[split]``, subsampled as :func:`select_examples` does."""
    check_choice("split", split, sorted(datamodule.splits))
    return select_examples(datamodule.splits[split], n_examples, seed)


def rank_share(dataset: Dataset) -> Dataset:
    """This rank's examples: items ``rank, rank + W, ...`` of ``dataset`` (all of them in one
    process), in order."""
    indices = shard_indices(len(dataset))
    return dataset if len(indices) == len(dataset) else Subset(dataset, list(indices))


def all_rows(rows: Sequence[dict[str, Any]], key: Sequence[str] = ("index",)) -> list[dict]:
    """Every rank's per-example rows, on every rank, sorted by ``key`` (example order)."""
    return sorted(gather_lists(rows), key=lambda row: tuple(row[k] for k in key))


def example_loader(datamodule: ImageDataModule, dataset: Dataset, cfg: DictConfig) -> DataLoader:
    """In-order batches of ``cfg.batch_size`` items (null: the data module's batch size)."""
    return DataLoader(
        dataset,
        batch_size=cfg.batch_size or datamodule.batch_size,
        shuffle=False,
        num_workers=datamodule.num_workers,
        pin_memory=datamodule.pin_memory,
    )


def device_batches(
    loader: DataLoader, device: torch.device, desc: str, progress: bool = True
) -> Iterator[dict[str, torch.Tensor]]:
    """Yield the loader's batch dicts with every tensor on ``device``, under a tqdm bar."""
    for batch in tqdm(loader, desc=desc, unit="batch", disable=not progress, leave=False):
        yield {key: value.to(device, non_blocking=True) for key, value in batch.items()}
