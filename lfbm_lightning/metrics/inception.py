"""torch-fidelity's Inception-v3 (TF-ported FID weights): finding the weights file, loading it
without unpickling, and the feature extractor built from the verified tensors.

This and :mod:`~lfbm_lightning.metrics.fid` are the only modules that import
``torch_fidelity``; the import happens inside the functions that build the network, so
:func:`resolve_inception_weights` stays cheap and can run before any heavy work. Images are
float ``(N, C, H, W)`` in ``[-1, 1]``, ``C`` in ``{1, 3}``; the network takes them as uint8
RGB (:func:`to_uint8_rgb`) and resizes them to 299 x 299 itself.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from functools import lru_cache
from pathlib import Path

import torch
from torch import Tensor

from lfbm_lightning.errors import InceptionWeightsMissing
from lfbm_lightning.runtime.checkpoint_io import load_failure

WEIGHTS_SETTING = "metrics.inception_weights"
DOWNLOAD_SETTING = "metrics.allow_download"
WEIGHTS_ENV_VAR = "LFBM_INCEPTION_WEIGHTS"
WEIGHTS_FILENAME = "weights-inception-2015-12-05-6726825d.pth"
WEIGHTS_URL = (
    "https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/" + WEIGHTS_FILENAME
)
FEATURE_LAYERS = ("64", "192", "768", "2048")
_EXTRACTOR_NAME = "inception-v3-compat"


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
    # The constructor always reads a weights file itself, with torch.load(weights_only=False):
    # it reads a private copy holding only the verified tensors (saved here, so the read runs
    # no code of the user's file); its strict load_state_dict checks every key and shape.
    with tempfile.TemporaryDirectory(prefix="lfbm-inception-") as private:
        copy = Path(private) / WEIGHTS_FILENAME
        torch.save(state, copy)
        del state
        try:
            return tf_inception.FeatureExtractorInceptionV3(
                _EXTRACTOR_NAME, [feature_layer], feature_extractor_weights_path=str(copy)
            )
        except RuntimeError as err:
            reason = str(err).splitlines()[0][:200] if str(err) else type(err).__name__
            raise _not_inception_weights(weights_path, reason) from err


def feature_extractor(weights_path: str | None, feature_layer: str) -> torch.nn.Module:
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
# Images


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
