"""Fréchet Inception Distance: feature moments, reference statistics on disk, the distance,
and torch-fidelity's FID / KID / IS (the network itself: :mod:`~lfbm_lightning.metrics.inception`).

FID between Gaussians fitted to Inception features::

    FID = ||mu_1 - mu_2||^2 + tr(S_1) + tr(S_2) - 2 tr((S_1 S_2)^{1/2})

Typical use: compute the reference statistics once (:func:`reference_stats`, cached in an
``.npz``), then score each set of samples with :func:`compute_feature_stats` and
:func:`frechet_distance`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from lfbm_lightning.metrics.inception import feature_extractor, to_uint8_rgb, weights_fingerprint

log = logging.getLogger(__name__)

_PROGRESS_DELAY_S = 5.0


@dataclass(frozen=True)
class FeatureStats:
    """Gaussian statistics of Inception features.

    Attributes:
        mu: Feature mean, shape ``(D,)``, float64.
        sigma: Unbiased feature covariance (divisor ``n - 1``), shape ``(D, D)``, float64.
        n: Number of images the statistics were computed from.
    """

    mu: np.ndarray
    sigma: np.ndarray
    n: int


def _batches(images: Tensor | Iterable, batch_size: int) -> Iterator[Tensor]:
    """Yield image batches ``(B, C, H, W)``; ``(images, labels)`` pairs give their images."""
    if isinstance(images, Tensor):
        yield from images.split(batch_size)
        return
    for batch in images:
        yield batch[0] if isinstance(batch, tuple | list) else batch


def _num_images(images: Tensor | Iterable) -> int | None:
    if isinstance(images, Tensor):
        return images.shape[0]
    dataset = getattr(images, "dataset", None)
    return len(dataset) if dataset is not None and hasattr(dataset, "__len__") else None


# Why not torchmetrics' FrechetInceptionDistance: on the same features it gives the same
# numbers (tests/metrics/test_fid_torchmetrics_parity.py; its states are these sums), but it
# cannot take precomputed reference statistics (the cached training-set mu, Sigma: only by
# writing its private sum states), its compute() is a collective that every rank must call
# while the reference statistics are rank 0's alone, and its built-in extractor reads
# feature_extractor_weights_path with torch-fidelity's torch.load(weights_only=False).
class FeatureMoments:
    """Streaming first and second moments of feature rows, in float64.

    ``mu = s1 / n`` and ``sigma = (s2 - n mu mu^T) / (n - 1)`` with ``s1 = sum_i f_i`` and
    ``s2 = sum_i f_i f_i^T``: memory is ``O(D^2)`` whatever the number of images. Moments of
    disjoint sets of images add up (:meth:`merge`), so ranks can each feature their share of
    the images and pool the sums.
    """

    def __init__(self) -> None:
        self.n = 0
        self.s1: Tensor | None = None
        self.s2: Tensor | None = None

    def update(self, features: Tensor) -> None:
        """Add feature rows ``(B, D)``."""
        f = features.detach().to("cpu", torch.float64)
        if self.s1 is None:
            self.s1 = torch.zeros(f.shape[1], dtype=torch.float64)
            self.s2 = torch.zeros(f.shape[1], f.shape[1], dtype=torch.float64)
        self.s1 += f.sum(0)
        self.s2 += f.T @ f
        self.n += f.shape[0]

    def merge(self, other: FeatureMoments) -> FeatureMoments:
        """Add the moments of another, disjoint set of images (in place; returns self)."""
        if other.s1 is not None:
            if self.s1 is None:
                self.s1, self.s2 = other.s1.clone(), other.s2.clone()
            else:
                self.s1 += other.s1
                self.s2 += other.s2
            self.n += other.n
        return self

    def stats(self) -> FeatureStats:
        """Mean and unbiased covariance of every row added."""
        if self.n < 2:
            raise ValueError(f"FID statistics need at least 2 images, got {self.n}")
        mu = self.s1 / self.n
        sigma = (self.s2 - self.n * torch.outer(mu, mu)) / (self.n - 1)
        return FeatureStats(mu=mu.numpy(), sigma=sigma.numpy(), n=self.n)


@torch.no_grad()
def compute_feature_moments(
    images: Tensor | Iterable,
    weights_path: str | None,
    batch_size: int = 64,
    device: str | torch.device = "cpu",
    feature_layer: str = "2048",
    progress: bool = True,
) -> FeatureMoments:
    """Moments of the Inception features of a set of images (arguments as in
    :func:`compute_feature_stats`); an empty iterable gives empty moments (``n = 0``)."""
    extractor = feature_extractor(weights_path, feature_layer).to(device)
    moments = FeatureMoments()
    with tqdm(
        total=_num_images(images),
        desc=f"Inception features ({feature_layer})",
        unit="img",
        disable=not progress,
        delay=_PROGRESS_DELAY_S,
        leave=False,
    ) as bar:
        for batch in _batches(images, batch_size):
            (features,) = extractor(to_uint8_rgb(batch.to(device)))
            moments.update(features)
            bar.update(batch.shape[0])
    return moments


def compute_feature_stats(
    images: Tensor | Iterable,
    weights_path: str | None,
    batch_size: int = 64,
    device: str | torch.device = "cpu",
    feature_layer: str = "2048",
    progress: bool = True,
) -> FeatureStats:
    """Mean and covariance of Inception features over a set of images.

    Args:
        images: Float tensor ``(N, C, H, W)`` in ``[-1, 1]`` (split into ``batch_size``
            batches), or an iterable of such batches or of ``(images, labels)`` pairs, e.g. a
            DataLoader (its own batch size is used).
        weights_path: Inception weights file from
            :func:`~lfbm_lightning.metrics.inception.resolve_inception_weights` (``None`` lets
            torch-fidelity download them).
        batch_size: Images per forward pass when ``images`` is a tensor.
        device: Where the network runs.
        feature_layer: ``"2048"`` (pool3, the FID standard) or a cheaper ``"64"``, ``"192"``,
            ``"768"`` (spatially averaged earlier blocks; for tests and quick checks).
        progress: Show a tqdm bar (it appears only once the work takes over a few seconds).

    Returns:
        :class:`FeatureStats` with ``mu (D,)`` and ``sigma (D, D)``, ``D = int(feature_layer)``.
    """
    return compute_feature_moments(
        images, weights_path, batch_size, device, feature_layer, progress
    ).stats()


# --------------------------------------------------------------------------------------------
# Statistics on disk


def save_stats(stats: FeatureStats, path: str | Path, key: str = "") -> None:
    """Write statistics to an ``.npz`` (arrays ``mu``, ``sigma``, ``n``, ``key``).

    Args:
        stats: Statistics to save.
        path: Output file; parent directories are created.
        key: Free-form identity of how the statistics were made (layer, weights), checked by
            :func:`load_stats`.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as handle:
        np.savez(handle, mu=stats.mu, sigma=stats.sigma, n=stats.n, key=key)


def load_stats(path: str | Path, key: str | None = None) -> FeatureStats:
    """Read statistics written by :func:`save_stats`.

    Args:
        path: ``.npz`` file.
        key: When given, the stored key must equal it.

    Raises:
        ValueError: Key mismatch or inconsistent shapes.
    """
    with np.load(path) as data:
        stored_key = str(data["key"]) if "key" in data.files else ""
        stats = FeatureStats(mu=data["mu"], sigma=data["sigma"], n=int(data["n"]))
    if key is not None and stored_key != key:
        raise ValueError(f"{path}: statistics key {stored_key!r} does not match {key!r}")
    dim = stats.mu.shape[0]
    if stats.mu.ndim != 1 or stats.sigma.shape != (dim, dim):
        raise ValueError(f"{path}: mu {stats.mu.shape} and sigma {stats.sigma.shape} disagree")
    return stats


def reference_stats(
    images: Tensor | Iterable,
    cache_file: str | Path,
    weights_path: str | None,
    batch_size: int = 64,
    device: str | torch.device = "cpu",
    feature_layer: str = "2048",
    progress: bool = True,
) -> FeatureStats:
    """Reference (dataset) statistics, computed once and cached in ``cache_file``.

    The cache is used when it loads and its key (feature layer and SHA-256 of the weights
    file) matches; otherwise the statistics are recomputed from ``images`` and saved. The
    cache does not identify the dataset: use one file per dataset, split and resolution.

    Args:
        images: As in :func:`compute_feature_stats`; not iterated when the cache is valid.
        cache_file: ``.npz`` path.
        weights_path, batch_size, device, feature_layer, progress: As in
            :func:`compute_feature_stats`.

    Returns:
        :class:`FeatureStats` of the reference images.
    """
    key = reference_key(weights_path, feature_layer)
    stats = cached_stats(cache_file, key)
    if stats is None:
        stats = compute_feature_stats(
            images, weights_path, batch_size, device, feature_layer, progress
        )
        save_stats(stats, cache_file, key=key)
    return stats


def reference_key(weights_path: str | None, feature_layer: str) -> str:
    """The key that cached reference statistics are stored under: layer and weights' SHA-256."""
    return f"layer={feature_layer};weights={weights_fingerprint(weights_path)}"


def cached_stats(cache_file: str | Path, key: str) -> FeatureStats | None:
    """The statistics cached in ``cache_file`` under ``key``; None when missing or stale."""
    cache_file = Path(cache_file)
    if not cache_file.is_file():
        return None
    try:
        return load_stats(cache_file, key=key)
    except (ValueError, KeyError, OSError) as err:
        log.warning("Recomputing reference FID statistics: %s", err)
        return None


# --------------------------------------------------------------------------------------------
# Distance


def _psd_sqrt(sigma: np.ndarray) -> np.ndarray:
    """Symmetric square root of a PSD matrix by ``eigh`` (negative round-off clipped to 0)."""
    values, vectors = np.linalg.eigh(sigma)
    return (vectors * np.sqrt(np.clip(values, 0.0, None))) @ vectors.T


def _trace_sqrt_product(sigma1: np.ndarray, sigma2: np.ndarray) -> float:
    """tr((S_1 S_2)^{1/2}) for PSD S_1, S_2.

    (S_1 S_2)^{1/2} is similar to (S_1^{1/2} S_2 S_1^{1/2})^{1/2}, so its trace is the sum of
    the singular values of S_1^{1/2} S_2^{1/2}: two ``eigh`` and one SVD, real by construction
    and accurate for singular covariances (fewer images than features), where
    ``scipy.linalg.sqrtm`` of the product is slow (8-60 s at D = 2048 here) and loses digits.
    """
    product = _psd_sqrt(sigma1) @ _psd_sqrt(sigma2)
    return float(np.linalg.svd(product, compute_uv=False).sum())


def frechet_distance(stats1: FeatureStats, stats2: FeatureStats) -> float:
    """Fréchet distance between two Gaussians ``N(mu_1, S_1)`` and ``N(mu_2, S_2)``.

    ``d^2 = ||mu_1 - mu_2||^2 + tr(S_1) + tr(S_2) - 2 tr((S_1 S_2)^{1/2})``, computed in
    float64 (see :func:`_trace_sqrt_product`).

    Args:
        stats1: First statistics, ``mu (D,)``, ``sigma (D, D)``.
        stats2: Second statistics, same ``D``.

    Returns:
        The distance (the FID when the statistics are Inception pool3 features).
    """
    mu1, mu2 = np.asarray(stats1.mu, np.float64), np.asarray(stats2.mu, np.float64)
    sigma1, sigma2 = np.asarray(stats1.sigma, np.float64), np.asarray(stats2.sigma, np.float64)
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape:
        raise ValueError(f"statistics differ in shape: {mu1.shape} vs {mu2.shape}")
    diff = mu1 - mu2
    trace_term = _trace_sqrt_product(sigma1, sigma2)
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * trace_term)


# --------------------------------------------------------------------------------------------
# torch-fidelity's own metrics (FID, KID, IS)


class _UInt8Images(Dataset):
    """In-memory dataset of uint8 ``(3, H, W)`` images, as torch-fidelity's inputs expect."""

    def __init__(self, images: Tensor) -> None:
        self.images = to_uint8_rgb(images).cpu()

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index: int) -> Tensor:
        return self.images[index]


def fidelity_metrics(
    samples: Tensor,
    reference: Tensor | None,
    weights_path: str | None,
    fid: bool = True,
    kid: bool = False,
    isc: bool = False,
    feature_layer: str = "2048",
    batch_size: int = 64,
    device: str | torch.device = "cpu",
    kid_subset_size: int = 1000,
    verbose: bool = False,
) -> dict[str, float]:
    """FID / KID / Inception Score through ``torch_fidelity.calculate_metrics``, in memory.

    Args:
        samples: ``(N, C, H, W)`` in ``[-1, 1]``; ``N >= 10`` for the Inception Score.
        reference: ``(M, C, H, W)`` in ``[-1, 1]``; needed for FID and KID only.
        weights_path: From :func:`~lfbm_lightning.metrics.inception.resolve_inception_weights`.
        fid: Compute ``frechet_inception_distance``.
        kid: Compute ``kernel_inception_distance_mean`` / ``_std``.
        isc: Compute ``inception_score_mean`` / ``_std`` (logits layer, 10 splits).
        feature_layer: Layer for FID and KID.
        batch_size: Images per forward pass.
        device: ``"cpu"`` or a CUDA device (torch-fidelity then uses the current CUDA device).
        kid_subset_size: KID subset size, capped at ``min(N, M)``.
        verbose: Let torch-fidelity print progress.

    Returns:
        torch-fidelity's result dict (keys as above).
    """
    from torch_fidelity import calculate_metrics

    # torch-fidelity reads the file again with weights_only=False; a file that loads with
    # weights_only=True and fits the network holds tensors only, so that read runs no code
    feature_extractor(weights_path, feature_layer)
    needs_reference = fid or kid
    if needs_reference and reference is None:
        raise ValueError("FID and KID need reference images")
    input2 = _UInt8Images(reference) if needs_reference else None
    subset = min(kid_subset_size, samples.shape[0])
    if input2 is not None:
        subset = min(subset, len(input2))
    return calculate_metrics(
        input1=_UInt8Images(samples),
        input2=input2,
        fid=fid,
        kid=kid,
        isc=isc,
        feature_layer_fid=feature_layer,
        feature_layer_kid=feature_layer,
        feature_extractor_weights_path=weights_path,
        kid_subset_size=subset,
        batch_size=batch_size,
        cuda=torch.device(device).type == "cuda",
        cache=False,
        save_cpu_ram=True,
        verbose=verbose,
    )
