"""Unsupervised recovery: fill the occluded pixels of the training images (docs/paper.md).

z is inferred on the masked energy E(z) = ||m * (x - g(z))||^2 / (2 sigma^2) - log p(z)
(m = 1 observed) and g(z) is compared with the complete x on [0, 1]: per-image MSE on the
missing, observed and all pixels, averaged; optionally (``fid``) the FID of the recovered
images. ``chain``: ``sample`` (default: K Langevin steps with noise,
z <- z - (s^2 / 2) dE/dz + s eps) or ``fit`` (noise-free steps).
Options: ``conf/task/recovery.yaml`` (node ``recovery``). Details: docs/tasks.md ("Recovery").
"""

from __future__ import annotations

import math
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from lfbm_lightning.checks import check_choice
from lfbm_lightning.errors import ConfigError
from lfbm_lightning.metrics.fid import FeatureMoments, frechet_distance
from lfbm_lightning.metrics.fid_statistics import (
    InceptionSettings,
    pooled_stats,
    training_reference_stats,
)
from lfbm_lightning.metrics.mse import per_image_mse
from lfbm_lightning.reporting.image_grids import save_comparison, with_hole
from lfbm_lightning.seeds import item_seed
from lfbm_lightning.tasks.outputs import FirstImages, is_writer
from lfbm_lightning.tasks.task import ExampleTask

FIGURE_GROUPS = 2
"""Blocks of (original | occluded | recovered) columns side by side in recovery.png."""

SCORES = ("mse_missing_01", "mse_observed_01", "mse_all_01")
FID_OF = "recovered training images"
"""What ``fid`` scores (``task=synthesis`` scores prior samples, the authors' recovery FID)."""
CHAINS = {
    "sample": "training sampler: Langevin with noise from N(0, I) (inference.n_steps)",
    "fit": "noise-free Langevin fit from N(0, I) (inference.eval_steps)",
}


def nan_mean(values: list[float]) -> float:
    """Mean over the finite values (an image without missing pixels has no missing MSE)."""
    finite = [v for v in values if not math.isnan(v)]
    return sum(finite) / len(finite) if finite else math.nan


class Recovery(ExampleTask):
    """Recover every selected training image (each rank its share); write ``per_example.csv``
    and ``recovery.png`` (one column per image; rows: original, occluded, recovered).

    Results: ``chain`` (and ``chain_description``), ``n_images``, ``n_steps``, ``step_size``,
    ``noise``, ``missing_fraction`` (mean over images), the three mean MSEs on [0, 1], and with
    ``recovery.fid`` the ``fid`` of the recovered images (``fid_of``: :data:`FID_OF`) with
    ``fid_n_samples``,
    ``fid_n_reference`` and ``feature_layer``.
    """

    files = ("per_example.csv", "recovery.png")

    @classmethod
    def check_training(cls, train_cfg: DictConfig) -> None:
        if OmegaConf.select(train_cfg, "dataset.occlusion.kind") is None:
            raise ConfigError(
                "evaluate_after_fit=[recovery] needs a run trained on occluded images: set "
                "dataset.occlusion.kind=salt_pepper or single_region"
            )

    @property
    def split(self) -> str:
        return "train"  # docs/paper.md: recovery is scored on the occluded training images

    def check(self) -> None:
        if not self.datamodule.occluded:
            kind = (self.model.config["dataset"].get("occlusion") or {}).get("kind")
            raise ConfigError(
                "task=recovery needs a checkpoint trained on occluded images "
                "(train.py dataset.occlusion.kind=salt_pepper|single_region); this "
                f"checkpoint's dataset.occlusion.kind is {kind!r}"
            )
        self.chain = check_choice("recovery.chain", str(self.settings.chain), CHAINS)
        n_steps, step_size = self.settings.n_steps, self.settings.step_size
        if self.chain == "fit":
            self.n_steps, self.step_size = self.model.posterior.eval_settings(n_steps, step_size)
        else:
            inference = self.model.inference_cfg
            self.n_steps = self.model.chain_steps if n_steps is None else int(n_steps)
            self.step_size = float(inference["step_size"] if step_size is None else step_size)
        self.shown = FirstImages(self.settings.figure_examples)
        self.inception = None
        if self.settings.fid:
            metrics, device, progress = self.cfg.metrics, self.model.device, self.cfg.progress
            self.inception = InceptionSettings.from_config(metrics, device, progress)
            self.moments = FeatureMoments()  # of the recovered images, streamed

    def recover(self, x: torch.Tensor, mask: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """g(z) (B, C, H, W) of z inferred from the observed pixels of x by the chosen chain."""
        if self.chain == "fit":
            steps = {"n_steps": self.n_steps, "step_size": self.step_size}
            return self.model.reconstruct(x, mask, index=index, **steps, **self.fit_options)[0]
        z0 = self.model.posterior.seeded_start(self.model, index, self.cfg.seed)
        seed = item_seed(self.cfg.seed, int(index[0]))
        rng = torch.Generator(device=x.device).manual_seed(seed)
        z = self.model.infer(
            x, mask, n_steps=self.n_steps, step_size=self.step_size, noise=True, z0=z0, rng=rng
        ).z
        with torch.no_grad():
            return self.model.generator(z)

    def score(self, batch: dict[str, torch.Tensor]) -> list[dict[str, Any]]:
        x, mask = batch["image"], batch["mask"]
        x_hat = self.recover(x, mask, batch["index"])
        scores = [
            per_image_mse(x, x_hat, 1.0 - mask, "[0,1]").tolist(),
            per_image_mse(x, x_hat, mask, "[0,1]").tolist(),
            per_image_mse(x, x_hat, scale="[0,1]").tolist(),
        ]
        missing = (1.0 - mask).flatten(1).mean(1).tolist()
        self.shown.add(x, with_hole(x, mask), x_hat)
        if self.inception is not None:
            self.moments.merge(self.inception.moments(x_hat))
        return [
            {"index": index, "missing_fraction": missing[i]}
            | {name: s[i] for name, s in zip(SCORES, scores, strict=True)}
            for i, index in enumerate(batch["index"].tolist())
        ]

    def fid_results(self) -> dict[str, Any]:
        """FID of the recovered images of every rank against the training set (rank 0)."""
        stats = pooled_stats(self.moments)  # collectives: every rank calls them
        reference = training_reference_stats(
            self.model.config,
            self.datamodule.splits["train"],
            self.cfg.metrics.stats_dir,
            self.inception,
            self.cfg.metrics.reference_images,
        )
        if not is_writer():
            return {}
        return {
            "fid": frechet_distance(stats, reference),
            "fid_of": FID_OF,
            "fid_n_samples": stats.n,
            "fid_n_reference": reference.n,
            "feature_layer": self.inception.feature_layer,
        }

    def summarize(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "chain": self.chain,
            "chain_description": CHAINS[self.chain],
            "n_images": len(rows),
            "n_steps": self.n_steps,
            "step_size": self.step_size,
            "noise": self.chain == "sample",
            "missing_fraction": nan_mean([r["missing_fraction"] for r in rows]),
            **{name: nan_mean([r[name] for r in rows]) for name in SCORES},
            **(self.fid_results() if self.inception is not None else {}),
        }

    def write_figures(self, rows: list[dict[str, Any]], results: dict[str, Any]) -> None:
        save_comparison(
            self.shown.streams(),
            ["original", "occluded", "recovered"],
            self.out_dir / "recovery.png",
            groups=FIGURE_GROUPS,
        )
