"""Plumbing shared by the evaluation tasks: examples, batches, inferred latents, files.

Every task runs batched on the model's device in eval mode; images are (B, C, H, W) in
[-1, 1] and masks (B, 1, H, W) with 1 = observed, as in :mod:`lfbm_lightning.data.datasets`.

**Several ranks** (``evaluate.py devices=N``, :mod:`lfbm_lightning.distributed`): each rank
takes its share of the examples (:func:`rank_share`), scores them, and :func:`all_rows` brings
every rank's per-example rows to every rank, in example order; only rank 0 writes files
(:func:`is_writer`), and figures show rank 0's first examples. A chain's start depends only on
(seed, example index) (:func:`start_latents`), so the scores do not depend on the number of
ranks or the batch size.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig
from torch.utils.data import DataLoader, Dataset, Subset
from tqdm.auto import tqdm

from lfbm_lightning.data.base import ImageDataModule
from lfbm_lightning.distributed import gather_lists, rank_and_world_size, shard_indices
from lfbm_lightning.models import LatentPriorModel


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
    if n_examples < 1:
        raise ValueError(f"n_examples must be null or >= 1, got {n_examples}")
    chosen = np.random.RandomState(seed).choice(len(dataset), n_examples, replace=False)
    return Subset(dataset, np.sort(chosen).tolist())


def split_examples(
    datamodule: ImageDataModule, split: str, n_examples: int | None, seed: int
) -> Dataset:
    """Items of ``datamodule.splits[split]``, subsampled as :func:`select_examples` does."""
    if split not in datamodule.splits:
        raise ValueError(f"split must be one of {sorted(datamodule.splits)}, got {split!r}")
    return select_examples(datamodule.splits[split], n_examples, seed)


def rank_share(dataset: Dataset) -> Dataset:
    """This rank's examples: items ``rank, rank + W, ...`` of ``dataset`` (all of them in one
    process), in order."""
    indices = shard_indices(len(dataset))
    return dataset if len(indices) == len(dataset) else Subset(dataset, list(indices))


def all_rows(rows: Sequence[dict[str, Any]], key: Sequence[str] = ("index",)) -> list[dict]:
    """Every rank's per-example rows, on every rank, sorted by ``key`` (example order)."""
    return sorted(gather_lists(rows), key=lambda row: tuple(row[k] for k in key))


def is_writer() -> bool:
    """Whether this process writes the task's files (rank 0, or the only process)."""
    return rank_and_world_size()[0] == 0


def item_seed(seed: int, item: int) -> int:
    """The seed of item ``item`` (an example, a sample batch, a rank) of a run seeded ``seed``:
    distinct for every item, whatever the batching or the number of ranks."""
    return int(seed) * 1_000_003 + int(item)


def start_latents(
    model: LatentPriorModel, indices: torch.Tensor, seed: int
) -> torch.Tensor | None:
    """Chain starts z0 (B, d) ~ N(0, I), row i drawn from a generator seeded with
    (``seed``, ``indices[i]``): the same start for an example whatever its batch or rank.

    None for a model with an encoder: its chains start at the encoder's mean. The inference
    method's :meth:`~lfbm_lightning.inference.PosteriorInference.seeded_start`.
    """
    return model.posterior.seeded_start(model, indices, seed)


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


def chain_settings(
    model: LatentPriorModel, n_steps: int | None, step_size: float | None
) -> tuple[int, float]:
    """Noise-free Langevin settings; null falls back to the checkpoint's evaluation chain
    (``inference.eval_steps`` = 20 x K, or ``eval_refine_steps`` from the encoder's mean for
    an amortised model) and ``inference.eval_step_size``: the inference method's
    :meth:`~lfbm_lightning.inference.PosteriorInference.eval_settings`."""
    return model.posterior.eval_settings(n_steps, step_size)


def reconstruct(
    model: LatentPriorModel,
    x: torch.Tensor,
    n_steps: int,
    step_size: float,
    mask: torch.Tensor | None = None,
    z0: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Fit z by noise-free Langevin (gradient descent with rate s^2 / 2) on the posterior energy
    E(z) = ||m * (x - g(z))||^2 / (2 sigma^2) - log p(z), then decode.

    Args:
        model: the trained model (its generator, prior and sigma).
        x: images (B, C, H, W).
        n_steps: number of steps.
        step_size: s.
        mask: optional (B, 1, H, W), 1 = observed: only observed pixels enter E.
        z0: initial z (B, d); None: the inference method's start (N(0, I) seeded with the
            model's seed and the position in the batch, or the encoder's mean).

    Returns:
        (g(z) (B, C, H, W), z (B, d)), from the one reconstruction path,
        :meth:`~lfbm_lightning.inference.PosteriorInference.reconstruct` (also ``val/mse``).
    """
    return model.posterior.reconstruct(
        model, x, mask, seed=model.seed, n_steps=n_steps, step_size=step_size, z0=z0
    )


class FirstImages:
    """Keeps the first ``limit`` items of several aligned image streams, on the CPU (figures).

    Args:
        limit: number of items to keep.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.parts: list[list[torch.Tensor]] = []
        self.count = 0

    def add(self, *images: torch.Tensor) -> None:
        """Offer one batch of each stream, all (B, C, H, W) with the same B."""
        take = min(self.limit - self.count, images[0].shape[0])
        if take <= 0:
            return
        if not self.parts:
            self.parts = [[] for _ in images]
        for part, batch in zip(self.parts, images, strict=True):
            part.append(batch[:take].detach().cpu())
        self.count += take

    def streams(self) -> list[torch.Tensor]:
        """The kept items of each stream, (n, C, H, W) with n <= limit."""
        return [torch.cat(part) for part in self.parts]


def write_csv(rows: list[dict[str, float | int]], path: Path) -> Path:
    """Write one CSV row per example (the keys of the first row are the header)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path
