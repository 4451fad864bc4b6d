"""Safe checkpoint loading with clear errors.

Checkpoints are read with ``torch.load(weights_only=True)``: tensors and plain Python
containers only, so loading a file never executes code from it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from lfbm_lightning.errors import CheckpointError, ResumeMismatch
from lfbm_lightning.models import LatentPriorModel
from lfbm_lightning.runtime.checkpoint_io import safe_load

REQUIRED_CONFIG_KEYS = ("prior", "generator", "model", "inference", "dataset", "latent_dim")


def read_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint dict without executing code; raise :class:`CheckpointError` when the
    file is missing, truncated/corrupt, or lacks this project's stored config."""
    path = Path(path)
    checkpoint = safe_load(path, map_location)
    hyper_parameters = checkpoint.get("hyper_parameters")
    config = hyper_parameters.get("config") if isinstance(hyper_parameters, dict) else None
    if not isinstance(config, dict) or "state_dict" not in checkpoint:
        raise CheckpointError(
            f"{path} is not an lfbm-lightning checkpoint: it has no stored run config "
            "(hyper_parameters.config) or no state_dict"
        )
    missing = [k for k in REQUIRED_CONFIG_KEYS if k not in config]
    if missing:
        raise CheckpointError(f"{path}: the stored run config lacks {missing}")
    return checkpoint


SHOWN_KEYS = 3
"""Keys named per kind of difference in :func:`state_dict_differences`."""


def _shape(value: Any) -> str:
    return str(list(value.shape)) if isinstance(value, torch.Tensor) else type(value).__name__


def state_dict_differences(model: dict[str, Any], stored: dict[str, Any]) -> str:
    """How the stored weights ``stored`` differ from the ``model``'s state dict, in one line:
    per kind (keys the checkpoint lacks, keys the model lacks, tensors of another shape) the
    count and the first :data:`SHOWN_KEYS` keys with their shapes; '' when they fit."""
    missing = [k for k in model if k not in stored]
    unexpected = [k for k in stored if k not in model]
    reshaped = [k for k in model if k in stored and _shape(model[k]) != _shape(stored[k])]
    parts = []
    for keys, what, show in (
        (missing, "missing from the checkpoint", lambda k: f"{k} {_shape(model[k])}"),
        (unexpected, "not in the model", lambda k: f"{k} {_shape(stored[k])}"),
        (
            reshaped,
            "of another shape",
            lambda k: (
                f"{k} {_shape(stored[k])} in the checkpoint, {_shape(model[k])} in the model"
            ),
        ),
    ):
        if keys:
            more = f", ... ({len(keys) - SHOWN_KEYS} more)" if len(keys) > SHOWN_KEYS else ""
            shown = ", ".join(show(k) for k in keys[:SHOWN_KEYS])
            parts.append(f"{len(keys)} key(s) {what}: {shown}{more}")
    return "; ".join(parts)


def load_model(path: str | Path, map_location: str | torch.device = "cpu") -> LatentPriorModel:
    """Rebuild the model from the checkpoint alone (config + weights), in eval mode.

    Raises:
        CheckpointError: unreadable file, foreign checkpoint, or weights that do not fit the
            model built from the stored config.
    """
    checkpoint = read_checkpoint(path, map_location)
    model = LatentPriorModel(checkpoint["hyper_parameters"]["config"])
    differences = state_dict_differences(model.state_dict(), checkpoint["state_dict"])
    if differences:
        raise CheckpointError(
            f"{path}: its weights do not fit the model its stored config describes: {differences}"
        )
    model.load_state_dict(checkpoint["state_dict"])
    model.on_load_checkpoint(checkpoint)
    return model.to(map_location).eval()


# Config sections that may change when a run is resumed: where things are written and read,
# how long to train, what is logged, how long DDP ranks wait for each other. Everything else
# must match the checkpoint's config.
RESUMABLE_CHANGES = ("ckpt_path", "paths", "trainer", "logger", "callbacks", "ddp_timeout_min")
RESUMABLE_DATASET_KEYS = ("root", "download", "num_workers", "pin_memory", "persistent_workers")
# What to do about non-finite batches does not change the model: a diverged run may be resumed
# with model.on_divergence=skip (the advice of its error message). Nor does how val/mse is
# monitored (model.validation).
RESUMABLE_MODEL_KEYS = ("on_divergence", "max_skipped_fraction", "validation")


def _flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(node, dict):
        return {prefix: node}
    flat: dict[str, Any] = {}
    for key, value in node.items():
        flat.update(_flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return flat


def epochs_done(checkpoint: dict[str, Any]) -> int:
    """Training epochs a Lightning checkpoint has completed (0 before the first ends).

    Read from the fit loop's epoch progress (``processed``: an end-of-epoch checkpoint is
    written before Lightning counts the epoch ``completed``); a mid-epoch checkpoint (SIGTERM)
    counts only the epochs before it.
    """
    try:
        return int(checkpoint["loops"]["fit_loop"]["epoch_progress"]["current"]["processed"])
    except (KeyError, TypeError):
        return int(checkpoint.get("epoch", -1)) + 1


def check_resume_compatible(
    config: dict[str, Any], path: str | Path, checkpoint: dict[str, Any] | None = None
) -> None:
    """Raise :class:`ResumeMismatch` when resuming ``path`` under ``config`` would change the
    model, the data or the training recipe (the same command plus ``ckpt_path=...`` is the way
    to resume; only paths, trainer limits, loggers and callbacks may differ).

    Args:
        config: the resolved run config.
        path: the checkpoint resumed.
        checkpoint: its content, if already read with :func:`read_checkpoint`.
    """
    checkpoint = checkpoint if checkpoint is not None else read_checkpoint(path)
    stored = checkpoint["hyper_parameters"]["config"]

    def relevant(flat: dict[str, Any]) -> dict[str, Any]:
        return {
            k: v
            for k, v in flat.items()
            if k.split(".")[0] not in RESUMABLE_CHANGES
            and not (k.startswith("dataset.") and k.split(".")[1] in RESUMABLE_DATASET_KEYS)
            and not (k.startswith("model.") and k.split(".")[1] in RESUMABLE_MODEL_KEYS)
        }

    now, then = relevant(_flatten(config)), relevant(_flatten(stored))
    differing = sorted(k for k in now.keys() | then.keys() if now.get(k) != then.get(k))
    if differing:
        shown = ", ".join(f"{k}: {then.get(k)!r} -> {now.get(k)!r}" for k in differing[:8])
        raise ResumeMismatch(
            f"cannot resume {path}: the run config differs from the checkpoint's in {shown}. "
            "Resume with the original command plus ckpt_path=... (only paths, trainer, logger, "
            "callbacks, ddp_timeout_min, model.on_divergence, model.max_skipped_fraction and "
            "model.validation may "
            "change)"
        )
