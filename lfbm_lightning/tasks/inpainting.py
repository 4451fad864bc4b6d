"""Supervised inpainting: fill a box hole from g(z) fitted to the observed pixels (protocols.md).

The model was trained on complete images. One fixed hole (the paper: 40 x 40 at rows 20..59,
columns 12..51 of a 64 x 64 image, all channels) is cut; for each restart r, z starts from a
prior sample z_0^r ~ p(z) and follows ``n_steps`` noise-free Langevin steps on the masked
energy E(z) = ||m * (x - g(z))||^2 / (2 sigma^2) - log p(z), m = 1 on observed pixels. The
output keeps the observed pixels and fills the hole: x_r = m * x + (1 - m) * g(z^r).

Config node ``inpainting``: ``split``, ``n_examples``, ``box``, ``n_restarts``, ``n_steps``,
``step_size``, ``figure_examples``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

from lfbm_lightning.data.base import ImageDataModule
from lfbm_lightning.images import save_rows, with_hole
from lfbm_lightning.metrics.reconstruction import per_image_mse
from lfbm_lightning.models import LatentPriorModel
from lfbm_lightning.tasks.common import (
    FirstImages,
    all_rows,
    device_batches,
    example_loader,
    is_writer,
    rank_share,
    reconstruct,
    split_examples,
    write_csv,
)

PAPER_SIZE = 64
PAPER_BOX = (20, 12, 40, 40)  # protocols.md: top, left, height, width for 64 x 64 images
SCORES = ("mse_hole", "mse_hole_01", "mse_image", "mse_image_01")


def hole_box(
    height: int, width: int, box: Sequence[int] | None = None
) -> tuple[int, int, int, int]:
    """The hole as (top, left, height, width) in pixels.

    Args:
        height: image height H.
        width: image width W.
        box: explicit (top, left, height, width), or None for the paper's 64 x 64 box scaled
            to H x W (each coordinate times H / 64 or W / 64, rounded half up): (20, 12, 40, 40)
            at 64 x 64, (10, 6, 20, 20) at 32 x 32, (3, 2, 5, 5) at 8 x 8.

    Raises:
        ValueError: a box that is empty or leaves the image, naming ``inpainting.box``.
    """
    if box is None:
        scales = (height, width, height, width)
        box = [int(v * s / PAPER_SIZE + 0.5) for v, s in zip(PAPER_BOX, scales, strict=True)]
    if len(box) != 4:
        raise ValueError(f"inpainting.box must be [top, left, height, width], got {list(box)}")
    top, left, box_h, box_w = (int(v) for v in box)
    inside = 0 <= top and top + box_h <= height and 0 <= left and left + box_w <= width
    if box_h < 1 or box_w < 1 or not inside:
        raise ValueError(
            f"inpainting.box={[top, left, box_h, box_w]} must be a non-empty "
            f"[top, left, height, width] inside the {height} x {width} image"
        )
    return top, left, box_h, box_w


def box_mask(height: int, width: int, box: tuple[int, int, int, int]) -> torch.Tensor:
    """Mask (1, H, W): 1 = observed, 0 inside the box."""
    top, left, box_h, box_w = box
    mask = torch.ones(1, height, width)
    mask[:, top : top + box_h, left : left + box_w] = 0.0
    return mask


def run(
    model: LatentPriorModel, datamodule: ImageDataModule, cfg: DictConfig, out_dir: Path
) -> dict[str, Any]:
    """Inpaint every selected image from ``n_restarts`` prior samples (each rank its share of
    the images, drawing from its own seeded stream).

    Writes ``per_example.csv`` (one row per image and restart) and ``inpainting.png`` (one
    column per image; rows: original, masked input, then one row per restart).

    Returns:
        ``split``, ``n_images``, ``n_restarts``, ``box``, ``n_steps``, ``step_size`` and the
        means over images and restarts of the MSE in the hole and over the whole image, on
        the [-1, 1] and [0, 1] scales.
    """
    settings = cfg.inpainting
    split = settings.split or datamodule.evaluation_split
    dataset = split_examples(datamodule, split, settings.n_examples, cfg.seed)
    size = datamodule.image_size
    box = hole_box(size, size, settings.box)
    observed = box_mask(size, size, box).to(model.device)
    rows: list[dict[str, Any]] = []
    shown = FirstImages(settings.figure_examples)
    loader = example_loader(datamodule, rank_share(dataset), cfg)
    for batch in device_batches(loader, model.device, "inpainting", cfg.progress):
        x = batch["image"]
        mask = observed.expand(x.shape[0], -1, -1, -1)
        fills = []
        for restart in range(settings.n_restarts):
            z0 = model.prior.sample(x.shape[0])
            g, _ = reconstruct(model, x, settings.n_steps, settings.step_size, mask, z0)
            filled = x * mask + g * (1.0 - mask)
            scores = [
                per_image_mse(x, filled, 1.0 - mask).tolist(),
                per_image_mse(x, filled, 1.0 - mask, "[0,1]").tolist(),
                per_image_mse(x, filled).tolist(),
                per_image_mse(x, filled, scale="[0,1]").tolist(),
            ]
            for i, index in enumerate(batch["index"].tolist()):
                row = {"index": index, "restart": restart}
                rows.append(row | {name: s[i] for name, s in zip(SCORES, scores, strict=True)})
            fills.append(filled)
        shown.add(x, with_hole(x, mask), *fills)
    rows = all_rows(rows, key=("index", "restart"))
    if is_writer():
        write_csv(rows, out_dir / "per_example.csv")
        save_rows(shown.streams(), out_dir / "inpainting.png")
    means = {name: sum(r[name] for r in rows) / len(rows) for name in SCORES}
    return {
        "split": split,
        "n_images": len(rows) // settings.n_restarts,
        "n_restarts": settings.n_restarts,
        "box": list(box),
        "n_steps": settings.n_steps,
        "step_size": settings.step_size,
        **means,
    }
