"""Supervised inpainting: fill a box hole from g(z) fitted to the observed pixels (docs/paper.md).

The model was trained on complete images. One fixed hole (the paper: 40 x 40 at rows 20..59,
columns 12..51 of a 64 x 64 image, all channels) is cut; for each restart r, z starts from a
prior sample z_0^r ~ p(z) and follows ``n_steps`` noise-free Langevin steps on the masked
energy E(z) = ||m * (x - g(z))||^2 / (2 sigma^2) - log p(z), m = 1 on observed pixels. The
output keeps the observed pixels and fills the hole: x_r = m * x + (1 - m) * g(z^r).

Options (``conf/task/inpainting.yaml``, node ``inpainting``): ``split``, ``n_examples``, ``box``,
``n_restarts``, ``n_steps``, ``step_size``, ``figure_examples``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from lfbm_lightning.errors import ConfigError
from lfbm_lightning.metrics.mse import per_image_mse
from lfbm_lightning.reporting.image_grids import save_comparison, with_hole
from lfbm_lightning.tasks.outputs import FirstImages
from lfbm_lightning.tasks.task import ExampleTask, mean

PAPER_SIZE = 64
PAPER_BOX = (20, 12, 40, 40)  # docs/paper.md: top, left, height, width for 64 x 64 images
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
        ConfigError: a box that is empty or leaves the image, naming ``inpainting.box``.
    """
    if box is None:
        scales = (height, width, height, width)
        box = [int(v * s / PAPER_SIZE + 0.5) for v, s in zip(PAPER_BOX, scales, strict=True)]
    if len(box) != 4:
        raise ConfigError(f"inpainting.box must be [top, left, height, width], got {list(box)}")
    top, left, box_h, box_w = (int(v) for v in box)
    inside = 0 <= top and top + box_h <= height and 0 <= left and left + box_w <= width
    if box_h < 1 or box_w < 1 or not inside:
        raise ConfigError(
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


class Inpainting(ExampleTask):
    """Inpaint every selected image from ``n_restarts`` prior samples (each rank its share of
    the images, drawing from its own seeded stream).

    Writes ``per_example.csv`` (one row per image and restart) and ``inpainting.png`` (one
    column per image; rows: original, masked input, then one row per restart).

    Results: ``split``, ``n_images``, ``n_restarts``, ``box``, ``n_steps``, ``step_size`` and
    the means over images and restarts of the MSE in the hole and over the whole image, on the
    [-1, 1] and [0, 1] scales.
    """

    files = ("per_example.csv", "inpainting.png")
    sort_key = ("index", "restart")

    def check(self) -> None:
        size = self.datamodule.image_size
        self.box = hole_box(size, size, self.settings.box)
        self.observed = box_mask(size, size, self.box).to(self.model.device)
        self.shown = FirstImages(self.settings.figure_examples)

    def score(self, batch: dict[str, torch.Tensor]) -> list[dict[str, Any]]:
        x = batch["image"]
        mask = self.observed.expand(x.shape[0], -1, -1, -1)
        rows, fills = [], []
        for restart in range(self.settings.n_restarts):
            z0 = self.start_of(x, mask, batch["index"], self.cfg.seed + restart)
            if z0 is None:
                z0 = self.model.prior.sample(x.shape[0])
            n_steps, step_size = self.settings.n_steps, self.settings.step_size
            g, _ = self.model.reconstruct(
                x, mask, n_steps, step_size=step_size, z0=z0, **self.fit_options
            )
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
        self.shown.add(x, with_hole(x, mask), *fills)
        return rows

    def summarize(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "split": self.split,
            "n_images": len(rows) // self.settings.n_restarts,
            "n_restarts": self.settings.n_restarts,
            "box": list(self.box),
            "n_steps": self.settings.n_steps,
            "step_size": self.settings.step_size,
            **{name: mean(rows, name) for name in SCORES},
        }

    def write_figures(self, rows: list[dict[str, Any]], results: dict[str, Any]) -> None:
        streams = self.shown.streams()
        restarts = [f"restart {r + 1}" for r in range(len(streams) - 2)]
        save_comparison(
            streams, ["original", "with hole", *restarts], self.out_dir / "inpainting.png"
        )
