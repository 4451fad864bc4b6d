"""Safe checkpoint loading with clear errors.

Checkpoints are read with ``torch.load(weights_only=True)``: tensors and plain Python
containers only, so loading a file never executes code from it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from lfbm_lightning.models import LatentPriorModel


class CheckpointError(RuntimeError):
    """A checkpoint that is missing, unreadable, or not one of this project's models."""


REQUIRED_CONFIG_KEYS = ("prior", "generator", "model", "inference", "dataset", "latent_dim")


def read_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint dict without executing code; raise :class:`CheckpointError` when the
    file is missing, truncated/corrupt, or lacks this project's stored config."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(
            f"checkpoint not found: {path} (set ckpt_path=... to an existing .ckpt file, e.g. "
            "<run dir>/checkpoints/last.ckpt)"
        )
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # torch raises several types for truncated or foreign files
        raise CheckpointError(
            f"could not read checkpoint {path}: the file is truncated, corrupt or not a "
            f"PyTorch checkpoint ({type(err).__name__}: {str(err).splitlines()[0][:200]})"
        ) from err
    config = (
        checkpoint.get("hyper_parameters", {}).get("config")
        if isinstance(checkpoint, dict)
        else None
    )
    if not isinstance(config, dict) or "state_dict" not in checkpoint:
        raise CheckpointError(
            f"{path} is not an lfbm-lightning checkpoint: it has no stored run config "
            "(hyper_parameters.config) or no state_dict"
        )
    missing = [k for k in REQUIRED_CONFIG_KEYS if k not in config]
    if missing:
        raise CheckpointError(f"{path}: the stored run config lacks {missing}")
    return checkpoint


def load_model(path: str | Path, map_location: str | torch.device = "cpu") -> LatentPriorModel:
    """Rebuild the model from the checkpoint alone (config + weights), in eval mode.

    Raises:
        CheckpointError: unreadable file, foreign checkpoint, or weights that do not fit the
            model built from the stored config.
    """
    checkpoint = read_checkpoint(path, map_location)
    model = LatentPriorModel(checkpoint["hyper_parameters"]["config"])
    try:
        model.load_state_dict(checkpoint["state_dict"])
    except RuntimeError as err:
        raise CheckpointError(
            f"{path}: its weights do not fit the model its config describes: "
            f"{str(err).splitlines()[0][:300]}"
        ) from err
    model.on_load_checkpoint(checkpoint)
    return model.to(map_location).eval()
