"""FID statistics of a data set and of a model's samples (evaluate.py and the FID callback).

FID = ||mu_s - mu_r||^2 + tr(S_s) + tr(S_r) - 2 tr((S_s S_r)^{1/2}) between the Inception
feature Gaussians of prior samples (s) and of the training images (r, docs/paper.md: the whole
training set at native resolution). The reference statistics are computed once per data set
and cached in ``<stats_dir>/<DataModule>-<hash>-train-<n>-layer<L>.npz``, the hash taken over
the data set's config without its loader settings and data location (moving the data keeps
the cache); :func:`lfbm_lightning.metrics.fid.reference_stats` recomputes them when the
Inception weights file changes.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, Subset

from lfbm_lightning.data.selection import relocate, select_examples
from lfbm_lightning.metrics.fid import (
    FeatureMoments,
    FeatureStats,
    cached_stats,
    compute_feature_moments,
    reference_key,
    reference_stats,
    save_stats,
)
from lfbm_lightning.metrics.inception import resolve_inception_weights
from lfbm_lightning.models import LatentPriorModel
from lfbm_lightning.runtime.distributed import gather_lists, rank_and_world_size, shard_indices

# (dataset helpers the tasks share; a leaf module would suit them better)
from lfbm_lightning.seeds import item_seed

LOADER_KEYS = frozenset({"batch_size", "num_workers", "pin_memory", "persistent_workers"})
"""Data set settings that do not change which images a split holds."""

REFERENCE_SUBSET_SEED = 0
"""Seed of the reference subset when ``reference_images`` limits it (fixed: one cache file)."""


@dataclass(frozen=True)
class InceptionSettings:
    """How Inception features are computed.

    Attributes:
        weights: local weights file (None: torch-fidelity downloads them).
        feature_layer: "2048" (pool3, the FID standard) or "64", "192", "768".
        batch_size: images per Inception forward pass.
        device: where the network runs.
        progress: show tqdm bars.
    """

    weights: str | None
    feature_layer: str
    batch_size: int
    device: torch.device
    progress: bool = True

    @classmethod
    def from_config(
        cls, metrics: Mapping[str, Any], device: torch.device, progress: bool = True
    ) -> InceptionSettings:
        """Resolve the weights of a ``metrics`` config node (``inception_weights``,
        ``allow_download``, ``feature_layer``, ``batch_size``); raises
        :class:`~lfbm_lightning.errors.InceptionWeightsMissing` at once when absent."""
        return cls(
            weights=resolve_inception_weights(
                metrics["inception_weights"], bool(metrics["allow_download"])
            ),
            feature_layer=str(metrics["feature_layer"]),
            batch_size=int(metrics["batch_size"]),
            device=device,
            progress=progress,
        )

    def moments(self, images: torch.Tensor | Iterable[torch.Tensor]) -> FeatureMoments:
        """Feature moments of images (N, C, H, W) in [-1, 1], or of an iterable of batches."""
        return compute_feature_moments(
            images,
            self.weights,
            batch_size=self.batch_size,
            device=self.device,
            feature_layer=self.feature_layer,
            progress=self.progress,
        )

    def stats(self, images: torch.Tensor | Iterable[torch.Tensor]) -> FeatureStats:
        """Feature statistics of images (N, C, H, W) in [-1, 1], or of an iterable of batches."""
        return self.moments(images).stats()


def pooled_stats(moments: FeatureMoments) -> FeatureStats:
    """Statistics of the images of every rank, from each rank's moments (a collective: every
    rank calls it); in one process, the statistics of ``moments``."""
    pooled = FeatureMoments()
    for part in gather_lists([moments]):
        pooled.merge(part)
    return pooled.stats()


def dataset_fingerprint(dataset_cfg: Mapping[str, Any], data_dir: str | None) -> str:
    """12 hex digits identifying the images of a data set config.

    Loader settings (:data:`LOADER_KEYS`) are dropped and paths under ``data_dir`` made
    relative, so the same data read faster or from a new place keeps its fingerprint.
    """
    content = {k: v for k, v in dataset_cfg.items() if k not in LOADER_KEYS}
    if data_dir:
        content = relocate(content, str(data_dir), "<data_dir>")
    text = json.dumps(content, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def reference_cache_file(
    stats_dir: str | Path,
    dataset_cfg: Mapping[str, Any],
    data_dir: str | None,
    n_images: int | None,
    feature_layer: str,
) -> Path:
    """Cache file of the training-set statistics of a data set config."""
    name = str(dataset_cfg.get("_target_", "dataset")).rsplit(".", 1)[-1]
    count = "all" if n_images is None else str(n_images)
    fingerprint = dataset_fingerprint(dataset_cfg, data_dir)
    return Path(stats_dir) / f"{name}-{fingerprint}-train-{count}-layer{feature_layer}.npz"


def image_batches(dataset: Dataset, batch_size: int) -> Iterator[torch.Tensor]:
    """The ``image`` tensors (B, C, H, W) of a dataset of batch dicts, in order."""
    for batch in DataLoader(dataset, batch_size=batch_size, shuffle=False):
        yield batch["image"]


def training_reference_stats(
    run_config: Mapping[str, Any],
    train_set: Dataset,
    stats_dir: str | Path,
    inception: InceptionSettings,
    n_images: int | None = None,
) -> FeatureStats | None:
    """Statistics of the training images, read from the cache or computed once and cached.

    A collective under DDP: every rank calls it. Rank 0 reads the cache; when it is missing or
    stale, every rank features its share of the images (items rank, rank + W, ...), the
    moments are pooled and rank 0 writes the cache, so no rank waits alone in a collective
    while rank 0 features the whole training set.

    Args:
        run_config: the training run's resolved config (its ``dataset`` node and
            ``paths.data_dir`` make the cache key).
        train_set: the training split (items with ``image``).
        stats_dir: directory of the cache files.
        inception: feature settings.
        n_images: None (docs/paper.md: every training image) or a random subset of that many
            (seed :data:`REFERENCE_SUBSET_SEED`), for quick checks.

    Returns:
        The statistics on rank 0 (and in one process); None on the other ranks.
    """
    images = select_examples(train_set, n_images, REFERENCE_SUBSET_SEED)
    cache = reference_cache_file(
        stats_dir,
        run_config["dataset"],
        run_config["paths"]["data_dir"],
        n_images,
        inception.feature_layer,
    )
    rank, world_size = rank_and_world_size()
    if world_size == 1:
        return reference_stats(
            image_batches(images, inception.batch_size),
            cache,
            inception.weights,
            batch_size=inception.batch_size,
            device=inception.device,
            feature_layer=inception.feature_layer,
            progress=inception.progress,
        )
    key = reference_key(inception.weights, inception.feature_layer)
    stats = cached_stats(cache, key) if rank == 0 else None
    if gather_lists([stats is not None])[0]:  # rank 0's cache serves
        return stats
    share = Subset(images, list(shard_indices(len(images))))
    stats = pooled_stats(inception.moments(image_batches(share, inception.batch_size)))
    if rank != 0:
        return None
    save_stats(stats, cache, key=key)
    return stats


@contextmanager
def seeded_rng(seed: int, device: torch.device) -> Iterator[None]:
    """Run a block with torch's global RNG (CPU, and CUDA on a CUDA device) seeded with
    ``seed``, and restore the previous state afterwards.

    Prior samples drawn inside do not depend on what ran before (e.g. whether the reference
    statistics came from the cache), and drawing them leaves a training run's RNG untouched.
    """
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        yield


def sample_batches(
    model: LatentPriorModel, n_samples: int, batch_size: int
) -> Iterator[torch.Tensor]:
    """``n_samples`` decoded prior samples g(z), z ~ p(z), in [-1, 1], as batches
    (B, C, H, W) of at most ``batch_size``."""
    for start in range(0, n_samples, batch_size):
        yield model.sample_images(min(batch_size, n_samples - start))


def sample_stats(
    model: LatentPriorModel,
    n_samples: int,
    batch_size: int,
    inception: InceptionSettings,
    seed: int,
) -> FeatureStats:
    """Statistics of ``n_samples`` decoded prior samples, streamed (never all in memory) and
    shared out over the ranks (a collective: every rank calls it).

    Batch b of the ``ceil(n_samples / batch_size)`` batches is drawn by rank ``b % W`` under
    torch's RNG seeded with (``seed``, b) (the caller's RNG state is left alone), so the
    samples, and the statistics up to float rounding, do not depend on the number of ranks.
    """
    sizes = [min(batch_size, n_samples - start) for start in range(0, n_samples, batch_size)]

    def my_batches() -> Iterator[torch.Tensor]:
        for b in shard_indices(len(sizes)):
            with seeded_rng(item_seed(seed, b), model.device):
                images = model.sample_images(sizes[b])
            yield images

    return pooled_stats(inception.moments(my_batches()))
