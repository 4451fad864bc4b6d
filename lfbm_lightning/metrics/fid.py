"""Fréchet Inception Distance with torch-fidelity's Inception-v3 (TF-ported FID weights).

This is the only module of the project that imports ``torch_fidelity``; the import happens
inside the functions that need the network, so :func:`resolve_inception_weights` stays cheap
and can run before any heavy work.

Image convention: callers pass float tensors in ``[-1, 1]`` of shape ``(N, C, H, W)`` with
``C`` in ``{1, 3}``. They are mapped to uint8 ``[0, 255]`` (grey repeated to three channels);
torch-fidelity resizes to 299x299 inside the network.

FID between Gaussians fitted to Inception features::

    FID = ||mu_1 - mu_2||^2 + tr(S_1) + tr(S_2) - 2 tr((S_1 S_2)^{1/2})

Typical use: compute the reference statistics once (:func:`reference_stats`, cached in an
``.npz``), then score each set of samples with :func:`compute_feature_stats` and
:func:`frechet_distance`.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from unittest import mock

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from lfbm_lightning.errors import InceptionWeightsMissing
from lfbm_lightning.runtime.checkpoint_io import load_failure

log = logging.getLogger(__name__)

WEIGHTS_SETTING = "metrics.inception_weights"
DOWNLOAD_SETTING = "metrics.allow_download"
WEIGHTS_ENV_VAR = "LFBM_INCEPTION_WEIGHTS"
WEIGHTS_FILENAME = "weights-inception-2015-12-05-6726825d.pth"
WEIGHTS_URL = (
    "https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/" + WEIGHTS_FILENAME
)
FEATURE_LAYERS = ("64", "192", "768", "2048")
_EXTRACTOR_NAME = "inception-v3-compat"
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


# --------------------------------------------------------------------------------------------
# Weights


def torch_fidelity_cache_path() -> Path:
    """Where torch-fidelity stores the downloaded weights: ``$TORCH_HOME/hub/checkpoints/...``."""
    return Path(torch.hub.get_dir()) / "checkpoints" / WEIGHTS_FILENAME


def _existing_file(path: str, source: str) -> str:
    resolved = Path(path).expanduser()
    if resolved.is_file():
        return str(resolved)
    raise InceptionWeightsMissing(
        f"Inception weights file {str(resolved)!r} given by {source} does not exist. Set "
        f"{WEIGHTS_SETTING}=/path/to/{WEIGHTS_FILENAME} (or the environment variable "
        f"{WEIGHTS_ENV_VAR}) to an existing local copy."
    )


def resolve_inception_weights(path: str | None, allow_download: bool = False) -> str | None:
    """Find the Inception-v3 FID weights file without touching the network.

    Lookup order: ``path`` (config key ``metrics.inception_weights``), then the environment
    variable ``LFBM_INCEPTION_WEIGHTS``, then torch-fidelity's download cache
    ``$TORCH_HOME/hub/checkpoints/weights-inception-2015-12-05-6726825d.pth``.

    Args:
        path: Explicit weights file, or ``None``/empty to search the other places.
        allow_download: Config key ``metrics.allow_download``. When nothing is found, return
            ``None`` so that torch-fidelity downloads the file (network needed) instead of raising.

    Returns:
        The path of an existing weights file, or ``None`` when the file is to be downloaded.

    Raises:
        InceptionWeightsMissing: ``path`` or the environment variable names a missing file, or
            no file was found and ``allow_download`` is false. Subclass of ``FileNotFoundError``.
    """
    if path:
        return _existing_file(path, f"the setting {WEIGHTS_SETTING}")
    env_path = os.environ.get(WEIGHTS_ENV_VAR)
    if env_path:
        return _existing_file(env_path, f"the environment variable {WEIGHTS_ENV_VAR}")
    cached = torch_fidelity_cache_path()
    if cached.is_file():
        return str(cached)
    if allow_download:
        return None
    raise InceptionWeightsMissing(
        "Inception-v3 FID weights (pt_inception-2015-12-05, ~95 MB) not found: the setting "
        f"{WEIGHTS_SETTING} is unset, the environment variable {WEIGHTS_ENV_VAR} is unset, and "
        f"torch-fidelity's cache file {cached} does not exist. Point {WEIGHTS_SETTING} or "
        f"{WEIGHTS_ENV_VAR} at a local copy, copy the file to {cached}, or set "
        f"{DOWNLOAD_SETTING}=true to fetch it from {WEIGHTS_URL} (needs network)."
    )


def _file_stamp(path: str | None) -> int:
    return Path(path).stat().st_mtime_ns if path else 0


def _not_inception_weights(path: str, reason: str) -> InceptionWeightsMissing:
    return InceptionWeightsMissing(
        f"Inception weights file {path} is not an Inception-v3 FID state dict ({reason}): set "
        f"{WEIGHTS_SETTING}=/path/to/{WEIGHTS_FILENAME}, a copy of {WEIGHTS_URL}"
    )


def load_inception_weights(path: str) -> dict[str, Tensor]:
    """The tensors of a weights file, read with ``torch.load(weights_only=True)``: tensors and
    plain containers only, so a crafted file cannot run code (torch-fidelity itself reads the
    file with ``weights_only=False``).

    Raises:
        InceptionWeightsMissing: the file does not load that way or is no mapping of names to
            tensors; the message names the file and ``metrics.inception_weights``.
    """
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # pickle, zip and torch errors alike: the file is not usable
        raise _not_inception_weights(path, load_failure(err)) from err
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise _not_inception_weights(path, "not a mapping of parameter names to tensors")
    return state


@lru_cache(maxsize=4)
def _cached_extractor(weights_path: str | None, feature_layer: str, stamp: int):
    from torch_fidelity import feature_extractor_inceptionv3 as tf_inception

    if weights_path is None:  # torch-fidelity downloads the official file
        return tf_inception.FeatureExtractorInceptionV3(_EXTRACTOR_NAME, [feature_layer])
    state = load_inception_weights(weights_path)
    # The constructor always loads weights itself (torch.load(weights_only=False) of a path, or
    # its download function when there is none): hand it the verified tensors through the
    # latter; its strict load_state_dict checks every expected key and shape.
    with mock.patch.object(tf_inception, "load_state_dict_from_url", return_value=state):
        try:
            return tf_inception.FeatureExtractorInceptionV3(_EXTRACTOR_NAME, [feature_layer])
        except RuntimeError as err:
            reason = str(err).splitlines()[0][:200] if str(err) else type(err).__name__
            raise _not_inception_weights(weights_path, reason) from err


def _feature_extractor(weights_path: str | None, feature_layer: str) -> torch.nn.Module:
    """torch-fidelity's Inception-v3 with verified weights, memoised per (file, mtime, layer);
    eval mode, no grad."""
    if feature_layer not in FEATURE_LAYERS:
        raise ValueError(f"feature_layer must be one of {FEATURE_LAYERS}, got {feature_layer!r}")
    return _cached_extractor(weights_path, feature_layer, _file_stamp(weights_path))


@lru_cache(maxsize=4)
def _cached_sha256(path: str, stamp: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def weights_fingerprint(weights_path: str | None) -> str:
    """SHA-256 of the weights file (``None``, the official download, maps to its file name)."""
    if weights_path is None:
        return WEIGHTS_FILENAME
    return _cached_sha256(weights_path, _file_stamp(weights_path))


# --------------------------------------------------------------------------------------------
# Images and features


def to_uint8_rgb(images: Tensor) -> Tensor:
    """Map ``[-1, 1]`` float images to the uint8 RGB images torch-fidelity expects.

    ``u = round(255 * clamp((x + 1) / 2, 0, 1))``; one channel is repeated to three.

    Args:
        images: Float tensor ``(N, C, H, W)``, ``C`` in ``{1, 3}``, values in ``[-1, 1]``.

    Returns:
        uint8 tensor ``(N, 3, H, W)`` on the same device.
    """
    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"expected images of shape (N, 1 or 3, H, W), got {tuple(images.shape)}")
    unit = ((images.detach().float() + 1) / 2).clamp(0, 1)
    uint8 = (unit * 255).round().to(torch.uint8)
    return uint8.repeat(1, 3, 1, 1) if uint8.shape[1] == 1 else uint8


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
    extractor = _feature_extractor(weights_path, feature_layer).to(device)
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
        weights_path: Inception weights file from :func:`resolve_inception_weights`
            (``None`` lets torch-fidelity download them).
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
    key = f"layer={feature_layer};weights={weights_fingerprint(weights_path)}"
    cache_file = Path(cache_file)
    if cache_file.is_file():
        try:
            return load_stats(cache_file, key=key)
        except (ValueError, KeyError, OSError) as err:
            log.warning("Recomputing reference FID statistics: %s", err)
    stats = compute_feature_stats(
        images, weights_path, batch_size, device, feature_layer, progress
    )
    save_stats(stats, cache_file, key=key)
    return stats


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
        weights_path: From :func:`resolve_inception_weights`.
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
    _feature_extractor(weights_path, feature_layer)
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
