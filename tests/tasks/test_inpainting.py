"""Inpainting: the paper's box scaled to the image, restarts, observed pixels kept."""

from __future__ import annotations

import pytest
import torch

from lfbm_lightning.tasks.inpainting import box_mask, hole_box
from tests.helpers.task_outputs import grid_shape, read_rows


@pytest.mark.parametrize(
    ("size", "box"),
    [(64, (20, 12, 40, 40)), (32, (10, 6, 20, 20)), (28, (9, 5, 18, 18)), (8, (3, 2, 5, 5))],
)
def test_paper_box_scales_with_the_image(size, box):
    assert hole_box(size, size) == box
    mask = box_mask(size, size, box)
    assert mask.shape == (1, size, size)
    assert (mask == 0).sum().item() == box[2] * box[3]
    assert mask[0, box[0], box[1]] == 0 and mask[0, box[0] - 1, box[1]] == 1


def test_configured_box_is_checked():
    assert hole_box(8, 8, [0, 0, 8, 8]) == (0, 0, 8, 8)
    for bad in ([5, 0, 4, 2], [0, 0, 0, 3], [-1, 0, 2, 2], [1, 2, 3]):
        with pytest.raises(ValueError, match="inpainting.box"):
            hole_box(8, 8, bad)


@pytest.mark.slow
def test_inpainting_keeps_observed_pixels_and_restarts_differ(digits_ckpt, run_task):
    common = ["inpainting.n_examples=16", "inpainting.n_restarts=3", "inpainting.step_size=0.1"]
    metrics, out = run_task(
        digits_ckpt,
        "inpainting",
        [*common, "inpainting.n_steps=100", "inpainting.figure_examples=6"],
    )
    assert metrics["box"] == [3, 2, 5, 5]
    assert (metrics["n_images"], metrics["n_restarts"], metrics["n_steps"]) == (16, 3, 100)
    rows = read_rows(out / "per_example.csv")
    assert len(rows) == 48
    for r in rows:  # observed pixels are copied: the image MSE is the hole's diluted by area
        assert r["mse_image"] == pytest.approx(r["mse_hole"] * 25 / 64, rel=1e-5)
        assert r["mse_hole_01"] == pytest.approx(r["mse_hole"] / 4, rel=1e-5)
    by_image: dict[float, set[float]] = {}
    for r in rows:
        by_image.setdefault(r["index"], set()).add(round(r["mse_hole"], 6))
    assert sum(len(v) == 3 for v in by_image.values()) >= 12  # restarts give different fills
    mean_hole = sum(r["mse_hole"] for r in rows) / 48
    assert metrics["mse_hole"] == pytest.approx(mean_hole, rel=1e-9)
    # columns = images; rows = original, masked input, 3 restarts (digits enlarged to 32 px)
    # 6 examples, columns: original, with hole, 3 restarts
    assert grid_shape(out / "inpainting.png", labelled=True) == (6, 5)

    # fitting z to the observed pixels fills the hole better than the initial prior samples
    unfitted, _ = run_task(digits_ckpt, "inpainting", [*common, "inpainting.n_steps=0"])
    assert metrics["mse_hole"] < 0.8 * unfitted["mse_hole"], (metrics, unfitted)
    assert torch.isfinite(torch.tensor(unfitted["mse_hole"]))
