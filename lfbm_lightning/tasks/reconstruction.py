"""Reconstruction: test-split MSE of noise-free Langevin reconstructions (docs/paper.md).

For each image x, z starts from N(0, I) (from the encoder's mean for a model with an encoder)
and follows gradient descent on E(z) = ||x - g(z)||^2 / (2 sigma^2) - log p(z) for
``n_steps`` (default 20 x K) steps of rate s^2 / 2; the score is the per-pixel MSE between
x and g(z), on the [-1, 1] scale (the paper's) and on [0, 1] (a quarter of it), averaged over
images (not over batches).

Options (``conf/task/reconstruction.yaml``, node ``reconstruction``): ``split``, ``n_examples``,
``n_steps``, ``step_size``, ``grid_size``.
"""

from __future__ import annotations

from typing import Any

import torch

from lfbm_lightning.metrics.mse import per_image_mse
from lfbm_lightning.reporting.image_grids import save_comparison
from lfbm_lightning.tasks.outputs import FirstImages
from lfbm_lightning.tasks.task import ExampleTask, mean

FIGURE_GROUPS = 4
"""Blocks of (original | reconstruction) columns side by side in reconstructions.png."""


class Reconstruction(ExampleTask):
    """Reconstruct every selected image (each rank its share); write ``per_example.csv`` and
    ``reconstructions.png``.

    Results: ``split``, ``n_images``, ``n_steps``, ``step_size``, ``mse`` ([-1, 1] scale) and
    ``mse_01`` ([0, 1] scale), means over images.
    """

    files = ("per_example.csv", "reconstructions.png")

    def check(self) -> None:
        self.n_steps, self.step_size = self.model.posterior.eval_settings(
            self.settings.n_steps, self.settings.step_size
        )
        self.shown = FirstImages(self.settings.grid_size)

    def score(self, batch: dict[str, torch.Tensor]) -> list[dict[str, Any]]:
        x = batch["image"]
        steps = {"n_steps": self.n_steps, "step_size": self.step_size}
        z0 = self.start_of(x, None, batch["index"], self.cfg.seed)
        x_hat, _ = self.model.reconstruct(
            x, index=batch["index"], z0=z0, **steps, **self.fit_options
        )
        mse = per_image_mse(x, x_hat).tolist()
        mse_01 = per_image_mse(x, x_hat, scale="[0,1]").tolist()
        self.shown.add(x, x_hat)
        return [
            {"index": index, "label": int(batch["label"][i]), "mse": mse[i], "mse_01": mse_01[i]}
            for i, index in enumerate(batch["index"].tolist())
        ]

    def summarize(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "split": self.split,
            "n_images": len(rows),
            "n_steps": self.n_steps,
            "step_size": self.step_size,
            "mse": mean(rows, "mse"),
            "mse_01": mean(rows, "mse_01"),
        }

    def write_figures(self, rows: list[dict[str, Any]], results: dict[str, Any]) -> None:
        save_comparison(
            self.shown.streams(),
            ["original", "reconstruction"],
            self.out_dir / "reconstructions.png",
            groups=FIGURE_GROUPS,
        )
