"""Reconstruction: test-split MSE of noise-free Langevin reconstructions (protocols.md).

For each image x, z starts from N(0, I) (from the encoder's mean for a model with an encoder)
and follows gradient descent on E(z) = ||x - g(z)||^2 / (2 sigma^2) - log p(z) for
``n_steps`` (default 20 x K) steps of rate s^2 / 2; the score is the per-pixel MSE between
x and g(z), on the [-1, 1] scale (the paper's) and on [0, 1] (a quarter of it), averaged over
images (not over batches).

Config node ``reconstruction``: ``split``, ``n_examples``, ``n_steps``, ``step_size``,
``grid_size``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

from lfbm_lightning.data.base import ImageDataModule
from lfbm_lightning.images import save_rows
from lfbm_lightning.metrics.reconstruction import per_image_mse
from lfbm_lightning.models import LatentPriorModel
from lfbm_lightning.tasks.common import (
    FirstImages,
    all_rows,
    chain_settings,
    device_batches,
    example_loader,
    is_writer,
    rank_share,
    reconstruct,
    split_examples,
    start_latents,
    write_csv,
)

GRID_COLUMNS = 8


def save_pairs(x: torch.Tensor, x_hat: torch.Tensor, path: Path) -> Path:
    """Rows of up to 8 originals, each followed by the row of their reconstructions (full rows
    only)."""
    columns = min(GRID_COLUMNS, x.shape[0])
    n = x.shape[0] // columns * columns
    rows = [images[s : s + columns] for s in range(0, n, columns) for images in (x, x_hat)]
    return save_rows(rows, path)


def run(
    model: LatentPriorModel, datamodule: ImageDataModule, cfg: DictConfig, out_dir: Path
) -> dict[str, Any]:
    """Reconstruct every selected image (each rank its share); write ``per_example.csv`` and
    ``reconstructions.png``.

    Returns:
        ``split``, ``n_images``, ``n_steps``, ``step_size``, ``mse`` ([-1, 1] scale) and
        ``mse_01`` ([0, 1] scale), means over images.
    """
    settings = cfg.reconstruction
    split = settings.split or datamodule.evaluation_split
    dataset = split_examples(datamodule, split, settings.n_examples, cfg.seed)
    n_steps, step_size = chain_settings(model, settings.n_steps, settings.step_size)
    rows: list[dict[str, Any]] = []
    shown = FirstImages(settings.grid_size)
    loader = example_loader(datamodule, rank_share(dataset), cfg)
    for batch in device_batches(loader, model.device, "reconstruction", cfg.progress):
        x = batch["image"]
        z0 = start_latents(model, batch["index"], cfg.seed)
        x_hat, _ = reconstruct(model, x, n_steps, step_size, z0=z0)
        mse = per_image_mse(x, x_hat).tolist()
        mse_01 = per_image_mse(x, x_hat, scale="[0,1]").tolist()
        for i, index in enumerate(batch["index"].tolist()):
            rows.append(
                {
                    "index": index,
                    "label": int(batch["label"][i]),
                    "mse": mse[i],
                    "mse_01": mse_01[i],
                }
            )
        shown.add(x, x_hat)
    rows = all_rows(rows)
    if is_writer():
        write_csv(rows, out_dir / "per_example.csv")
        save_pairs(*shown.streams(), out_dir / "reconstructions.png")
    return {
        "split": split,
        "n_images": len(rows),
        "n_steps": n_steps,
        "step_size": step_size,
        "mse": sum(r["mse"] for r in rows) / len(rows),
        "mse_01": sum(r["mse_01"] for r in rows) / len(rows),
    }
