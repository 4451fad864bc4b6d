"""Image synthesis: FID of decoded prior samples against the training set (docs/paper.md).

``n_samples`` (50,000) images x = g(z), z ~ p(z) (flow: exact sampling; EBM: prior Langevin),
are mapped to [0, 1], clamped and scored against the Inception statistics of every training
image at native resolution. Optional KID and Inception Score come from torch-fidelity on
``fidelity_samples`` samples (KID against as many random training images).

Options (``conf/task/synthesis.yaml``, node ``synthesis``): ``fid``, ``n_samples``,
``sample_batch_size``, ``kid``, ``isc``, ``fidelity_samples``, ``grid_size``; Inception and
reference settings in ``metrics``.
"""

from __future__ import annotations

from typing import Any

import torch

from lfbm_lightning.data.selection import select_examples
from lfbm_lightning.metrics.fid import fidelity_metrics, frechet_distance
from lfbm_lightning.metrics.fid_statistics import (
    REFERENCE_SUBSET_SEED,
    InceptionSettings,
    sample_batches,
    sample_stats,
    seeded_rng,
    training_reference_stats,
)
from lfbm_lightning.reporting.image_grids import save_grid
from lfbm_lightning.tasks.outputs import is_writer
from lfbm_lightning.tasks.task import Task

FID_OF = "prior samples"
"""What ``fid`` scores (``fid_of`` in metrics.json and results.md; recovery's scores another)."""


class Synthesis(Task):
    """Write ``samples.png`` and score prior samples (FID, optional KID / IS).

    The FID samples are shared out over the ranks; the figure and KID / IS are rank 0's work.

    Results: ``fid``, ``fid_of`` (what it scored: :data:`FID_OF`), ``fid_n_samples``,
    ``fid_n_reference``, ``feature_layer`` (when ``synthesis.fid``), ``kid_mean``, ``kid_std``,
    ``kid_n_reference`` (``kid``), ``inception_score_mean`` / ``_std`` (``isc``),
    ``fidelity_n_samples``.
    """

    files = ("samples.png",)

    def fid_results(self, inception: InceptionSettings) -> dict[str, Any]:
        """FID of ``n_samples`` prior samples against the training set, with the counts
        (every rank draws its share of the samples and features its share of an uncached
        reference; rank 0 scores them, the others get {})."""
        model, settings, metrics = self.model, self.settings, self.cfg.metrics
        samples = sample_stats(
            model, settings.n_samples, settings.sample_batch_size, inception, self.cfg.seed
        )
        reference = training_reference_stats(  # a collective: every rank its share
            model.config,
            self.datamodule.splits["train"],
            metrics.stats_dir,
            inception,
            metrics.reference_images,
        )
        if not is_writer():
            return {}
        return {
            "fid": frechet_distance(samples, reference),
            "fid_of": FID_OF,
            "fid_n_samples": samples.n,
            "fid_n_reference": reference.n,
            "feature_layer": inception.feature_layer,
        }

    def kid_is_results(self, inception: InceptionSettings) -> dict[str, Any]:
        """KID and / or Inception Score (torch-fidelity) of ``fidelity_samples`` samples."""
        settings, model = self.settings, self.model
        n = settings.fidelity_samples
        with seeded_rng(self.cfg.seed, model.device):
            samples = torch.cat(list(sample_batches(model, n, settings.sample_batch_size))).cpu()
        reference = None
        if settings.kid:
            train = self.datamodule.splits["train"]
            subset = select_examples(train, n, REFERENCE_SUBSET_SEED)
            reference = torch.stack([subset[i]["image"] for i in range(len(subset))])
        scores = fidelity_metrics(
            samples,
            reference,
            inception.weights,
            fid=False,
            kid=bool(settings.kid),
            isc=bool(settings.isc),
            feature_layer=inception.feature_layer,
            batch_size=inception.batch_size,
            device=inception.device,
        )
        results: dict[str, Any] = {"fidelity_n_samples": samples.shape[0]}
        if settings.kid:
            results["kid_mean"] = scores["kernel_inception_distance_mean"]
            results["kid_std"] = scores["kernel_inception_distance_std"]
            results["kid_n_reference"] = reference.shape[0]
        if settings.isc:
            results["inception_score_mean"] = scores["inception_score_mean"]
            results["inception_score_std"] = scores["inception_score_std"]
        return results

    def run(self) -> dict[str, Any]:
        settings = self.settings
        if is_writer():
            columns = max(1, int(settings.grid_size**0.5))
            images = self.model.sample_images(settings.grid_size)
            save_grid(images, self.out_dir / "samples.png", columns)
        results: dict[str, Any] = {}
        if not (settings.fid or settings.kid or settings.isc):
            return results
        inception = InceptionSettings.from_config(
            self.cfg.metrics, self.model.device, self.cfg.progress
        )
        if settings.fid:
            results.update(self.fid_results(inception))
        if (settings.kid or settings.isc) and is_writer():
            results.update(self.kid_is_results(inception))
        return results
