"""Unsupervised recovery: fill the occluded pixels of the training images (protocols.md).

The model was trained on occluded images (each training image x has one fixed mask m,
1 = observed), missing pixels never entering its likelihood. On those training images, z is
fitted by noise-free Langevin on the masked energy
E(z) = ||m * (x - g(z))||^2 / (2 sigma^2) - log p(z) and the recovered image g(z) is compared
with the complete x on the [0, 1] scale: on the missing pixels (the recovery error), on the
observed ones and on all of them; each a per-image MSE averaged over images. Optionally the
FID of the recovered images against the (complete) training set.

Config node ``recovery``: ``n_examples``, ``n_steps``, ``step_size``, ``fid``,
``figure_examples``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

from lfbm_lightning.data.base import ImageDataModule
from lfbm_lightning.images import save_rows, with_hole
from lfbm_lightning.metrics.fid import frechet_distance
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
from lfbm_lightning.tasks.inception import (
    InceptionSettings,
    pooled_stats,
    training_reference_stats,
)

SCORES = ("mse_missing_01", "mse_observed_01", "mse_all_01")


def check_occluded(model: LatentPriorModel, datamodule: ImageDataModule) -> None:
    """A clear error unless the checkpoint was trained on occluded images."""
    if not datamodule.occluded:
        kind = (model.config["dataset"].get("occlusion") or {}).get("kind")
        raise ValueError(
            "task=recovery needs a checkpoint trained on occluded images "
            "(train.py dataset.occlusion.kind=salt_pepper|single_region); this checkpoint's "
            f"dataset.occlusion.kind is {kind!r}"
        )


def nan_mean(values: list[float]) -> float:
    """Mean over the finite values (an image without missing pixels has no missing MSE)."""
    finite = [v for v in values if not math.isnan(v)]
    return sum(finite) / len(finite) if finite else math.nan


def run(
    model: LatentPriorModel, datamodule: ImageDataModule, cfg: DictConfig, out_dir: Path
) -> dict[str, Any]:
    """Recover every selected training image (each rank its share); write
    ``per_example.csv`` and ``recovery.png`` (one column per image; rows: original, occluded,
    recovered).

    Returns:
        ``n_images``, ``n_steps``, ``step_size``, ``missing_fraction`` (mean over images),
        the three mean MSEs on [0, 1], and with ``recovery.fid`` the ``fid`` of the recovered
        images with ``fid_n_samples``, ``fid_n_reference`` and ``feature_layer``.
    """
    settings = cfg.recovery
    check_occluded(model, datamodule)
    dataset = split_examples(datamodule, "train", settings.n_examples, cfg.seed)
    n_steps, step_size = chain_settings(model, settings.n_steps, settings.step_size)
    rows: list[dict[str, Any]] = []
    shown = FirstImages(settings.figure_examples)

    def recovered() -> Iterator[torch.Tensor]:
        """Recover batch after batch, recording scores; yields g(z) (B, C, H, W)."""
        loader = example_loader(datamodule, rank_share(dataset), cfg)
        for batch in device_batches(loader, model.device, "recovery", cfg.progress):
            x, mask = batch["image"], batch["mask"]
            z0 = start_latents(model, batch["index"], cfg.seed)
            x_hat, _ = reconstruct(model, x, n_steps, step_size, mask, z0)
            scores = [
                per_image_mse(x, x_hat, 1.0 - mask, "[0,1]").tolist(),
                per_image_mse(x, x_hat, mask, "[0,1]").tolist(),
                per_image_mse(x, x_hat, scale="[0,1]").tolist(),
            ]
            missing = (1.0 - mask).flatten(1).mean(1).tolist()
            for i, index in enumerate(batch["index"].tolist()):
                row = {"index": index, "missing_fraction": missing[i]}
                rows.append(row | {name: s[i] for name, s in zip(SCORES, scores, strict=True)})
            shown.add(x, with_hole(x, mask), x_hat)
            yield x_hat

    results: dict[str, Any] = {}
    if settings.fid:
        inception = InceptionSettings.from_config(cfg.metrics, model.device, cfg.progress)
        # streams: recovers while computing features; pooled over the ranks
        stats = pooled_stats(inception.moments(recovered()))
        if is_writer():
            reference = training_reference_stats(
                model.config,
                datamodule.splits["train"],
                cfg.metrics.stats_dir,
                inception,
                cfg.metrics.reference_images,
            )
            results = {
                "fid": frechet_distance(stats, reference),
                "fid_n_samples": stats.n,
                "fid_n_reference": reference.n,
                "feature_layer": inception.feature_layer,
            }
    else:
        for _ in recovered():
            pass
    rows = all_rows(rows)
    if is_writer():
        write_csv(rows, out_dir / "per_example.csv")
        save_rows(shown.streams(), out_dir / "recovery.png")
    return {
        "n_images": len(rows),
        "n_steps": n_steps,
        "step_size": step_size,
        "missing_fraction": nan_mean([r["missing_fraction"] for r in rows]),
        **{name: nan_mean([r[name] for r in rows]) for name in SCORES},
        **results,
    }
