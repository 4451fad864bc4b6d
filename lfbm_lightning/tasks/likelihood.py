"""Held-out log-likelihood log p(x) by importance sampling (every prior) or AIS.

log p(x) = log E_{z ~ p(z)}[N(x; g(z), sigma^2 I_D)] is estimated per image with K importance
samples (:mod:`lfbm_lightning.inference.importance`) from a proposal built at the endpoints of
M posterior chains, or by AIS (:mod:`lfbm_lightning.tasks.ais_likelihood`; on images the model
simulates, with the BDMC upper bound). For an EBM prior log Z is estimated by Monte Carlo and
subtracted (None when its standard error exceeds ``max_log_z_se``). Units: nats per image and
bits per dimension on the continuous [-1, 1] scale. Options: ``conf/task/likelihood.yaml``;
the estimators, their costs and caveats: docs/likelihood.md.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from lfbm_lightning.densities import gaussian_log_likelihood
from lfbm_lightning.errors import ConfigError
from lfbm_lightning.inference.importance import (
    ImportanceEstimate,
    LogNormalizer,
    StudentTMixture,
    gauss_newton_precision,
    importance_estimate,
    importance_log_weights,
    tilt_log_normalizer,
)
from lfbm_lightning.models import LatentPriorModel
from lfbm_lightning.runtime.distributed import rank_and_world_size
from lfbm_lightning.seeds import item_seed
from lfbm_lightning.tasks.ais_likelihood import (
    SimulatedImages,
    ais_passes_per_image,
    check_ais_prior,
    model_ais,
)
from lfbm_lightning.tasks.task import ExampleTask

BPD_NOTE = (
    "bpd = -log p(x) / (D ln 2): density of the continuous images on the [-1, 1] scale, "
    "no dequantisation"
)


def prior_log_normalizer(
    model: LatentPriorModel, settings: DictConfig, rng: torch.Generator
) -> LogNormalizer | None:
    """None for a normalised prior; for an energy-based one, the Monte-Carlo log Z; a prior
    whose log_prob is a bound (the two-stage VAE's ELBO) is refused."""
    if model.prior.normalized:
        return None
    if not hasattr(model.prior, "energy"):
        raise ConfigError(
            f"task=likelihood needs a normalised or energy-based prior; "
            f"{type(model.prior).__name__}'s log p(z) is a lower bound (an ELBO), so log p(x) "
            "would be one too"
        )
    return tilt_log_normalizer(
        model.prior.energy,
        model.latent_dim,
        int(settings.log_z_samples),
        rng=rng,
        device=model.device,
    )


def proposal_chain(model: LatentPriorModel, settings: DictConfig) -> tuple[int, float]:
    """Steps and step size of the proposal's chains: ``likelihood.n_steps`` / ``step_size``,
    null falling back to the checkpoint's full evaluation chain, ``inference.eval_steps`` and
    ``eval_step_size`` (also for amortised models: chains from N(0, I) need the full length)."""
    n_steps = settings.n_steps
    step_size = settings.step_size
    return (
        int(model.inference_cfg["eval_steps"] if n_steps is None else n_steps),
        float(model.inference_cfg["eval_step_size"] if step_size is None else step_size),
    )


def posterior_proposal(
    model: LatentPriorModel,
    x: torch.Tensor,
    settings: DictConfig,
    rng: torch.Generator,
    start: torch.Tensor | None = None,
) -> StudentTMixture:
    """The mixture proposal q(z | x) of images x (B, C, H, W) (module docstring, steps 1-3).

    ``start`` (B, d), when given, is where each image's first chain starts (e.g. a z already
    fitted to x); otherwise the encoder's mean for a model with one, else N(0, I).
    """
    b, m, d = x.shape[0], int(settings.n_chains), model.latent_dim
    n_steps, step_size = proposal_chain(model, settings)
    z0 = torch.randn(b, m, d, generator=rng, device=x.device)
    if start is not None:
        z0[:, 0] = start.detach()
    elif model.encoder is not None:
        with torch.no_grad():
            z0[:, 0] = model.encode(x)[0]
    x_rep = x.repeat_interleave(m, dim=0)
    chains = model.infer(
        x_rep,
        n_steps=n_steps,
        step_size=step_size,
        noise=bool(settings.noise),
        z0=z0.flatten(0, 1),
    )
    if not torch.isfinite(chains.z).all():
        raise FloatingPointError(
            "posterior chains diverged: lower likelihood.step_size (or inference.eval_step_size)"
        )
    precision = gauss_newton_precision(model.generator, chains.z, model.sigma)
    return StudentTMixture.from_precision(
        chains.z.view(b, m, d),
        precision.view(b, m, d, d),
        inflation=float(settings.inflation),
        df=None if settings.df is None else int(settings.df),
        defensive_weight=float(settings.defensive_weight),
    )


def image_log_likelihood(
    model: LatentPriorModel,
    x: torch.Tensor,
    settings: DictConfig,
    rng: torch.Generator,
    log_z: float = 0.0,
    start: torch.Tensor | None = None,
) -> ImportanceEstimate:
    """Importance-sampled log p(x) of images x (B, C, H, W), in nats (also the marginal score
    of ``task=anomaly``).

    log w = log N(x; g(z), sigma^2 I) + log p(z) - log_z - log q(z | x), K = ``n_samples``;
    ``start`` (B, d): where the first proposal chain of each image starts (see
    :func:`posterior_proposal`).
    """
    proposal = posterior_proposal(model, x, settings, rng, start)
    x_flat = x.flatten(1).unsqueeze(1)  # (B, 1, D)

    def log_joint(z: torch.Tensor) -> torch.Tensor:
        b, k, d = z.shape
        decoded = model.generator(z.reshape(b * k, d)).reshape(b, k, -1)
        log_prior = model.prior.log_prob(z.reshape(b * k, d)).view(b, k)
        return gaussian_log_likelihood(x_flat, decoded, model.sigma) + log_prior - log_z

    log_w = importance_log_weights(
        log_joint, proposal, int(settings.n_samples), rng, int(settings.chunk)
    )
    return importance_estimate(log_w)


def mean_and_se(values: torch.Tensor) -> tuple[float, float]:
    """Mean over images and its standard error std / sqrt(N) (0 for a single image)."""
    values = values.double()
    se = values.std() / math.sqrt(len(values)) if len(values) > 1 else torch.zeros(())
    return float(values.mean()), float(se)


SUMMARY_KEYS = (  # what :func:`summarize` returns
    "log_px_mean",
    "log_px_se",
    "bpd_mean",
    "bpd_se",
    "log_px_mc_se",
    "ess_mean",
    "ess_min",
)


def summarize(
    log_px: torch.Tensor, mc_se: torch.Tensor, ess: torch.Tensor, dimension: int
) -> dict[str, float]:
    """Means over N images of log p(x) (nats) and bpd, with their standard errors.

    ``log_px_mc_se`` is the Monte-Carlo (importance-sampling) error of ``log_px_mean``,
    sqrt(sum_i se_i^2) / N, separate from ``log_px_se``, the spread over images.
    """
    mean, se = mean_and_se(log_px)
    bits = dimension * math.log(2)
    return {
        "log_px_mean": mean,
        "log_px_se": se,
        "bpd_mean": -mean / bits,
        "bpd_se": se / bits,
        "log_px_mc_se": float(mc_se.double().pow(2).sum().sqrt() / len(mc_se)),
        "ess_mean": float(ess.double().mean()),
        "ess_min": float(ess.min()),
    }


IMPORTANCE_SETTINGS = ("n_samples", "n_chains", "n_steps", "step_size", "noise")
"""Results that describe the importance sampler (None with ``estimator=ais``)."""


def bound_summary(upper: torch.Tensor, gap: torch.Tensor) -> dict[str, float]:
    """Means over images of the BDMC upper bound and of the gap upper - lower (nats), with
    their standard errors over images, and the largest gap."""
    upper_mean, upper_se = mean_and_se(upper)
    gap_mean, gap_se = mean_and_se(gap)
    return {
        "log_px_upper_mean": upper_mean,
        "log_px_upper_se": upper_se,
        "bdmc_gap_mean": gap_mean,
        "bdmc_gap_se": gap_se,
        "bdmc_gap_max": float(gap.max()),
    }


def normalizer_results(normalizer: LogNormalizer | None, max_se: float) -> dict[str, Any]:
    """How the prior's normaliser was handled, for ``metrics.json``."""
    if normalizer is None:
        return {"prior_normalizer": "exact (normalised prior)"}
    return {
        "prior_normalizer": (
            f"Monte-Carlo estimate of log Z from {normalizer.n} N(0, I) draws "
            f"(reported log p(x) uses it; available only if its SE <= {max_se})"
        ),
        "log_z": normalizer.log_z,
        "log_z_se": normalizer.se,
        "log_z_ess": normalizer.ess,
    }


class Likelihood(ExampleTask):
    """Estimate log p(x) of every selected image; write ``per_example.csv``.

    When the data module knows its true model (``true_log_prob``, e.g. ``dataset=synthetic``),
    the true log p*(x) of the same images is reported too, with the gap true - model and its
    paired standard error.

    Results: ``split``, ``n_images``, ``dimension``, ``sigma``, ``n_samples``, ``n_chains``,
    ``n_steps``, ``step_size``, ``noise``, ``prior_normalizer`` (and ``log_z``, ``log_z_se``,
    ``log_z_ess`` for an EBM), the :func:`summarize` keys (None and ``log_px_unavailable``
    when an EBM's log Z is too uncertain), ``bpd_note`` and, with a known true model,
    ``true_log_px_mean``, ``true_log_px_se``, ``true_bpd_mean``, ``gap_mean``, ``gap_se``.

    ``estimator=ais``: ``log_px`` is the AIS lower bound; also ``ais_*`` (its settings),
    ``passes_per_image``, ``accept_rate_mean``; with ``simulate=true`` the BDMC
    upper bound and gap upper - lower per image (``log_px_upper``, ``bdmc_gap``) and
    :func:`bound_summary`. ``simulate=true`` scores the model's own images
    (:class:`SimulatedImages`, ``n_examples`` of them, null: as many as the split has).
    """

    def check(self) -> None:
        model, settings, seed = self.model, self.settings, self.cfg.seed
        self.ais = settings.estimator == "ais"
        if self.ais:
            check_ais_prior(model)
        self.rng = torch.Generator(device=model.device).manual_seed(int(seed))
        self.normalizer = prior_log_normalizer(model, settings, self.rng)
        self.log_z = 0.0 if self.normalizer is None else self.normalizer.log_z
        rank = rank_and_world_size()[0]
        if rank > 0:  # every rank its own stream (rank 0 goes on with the one of log Z)
            self.rng.manual_seed(item_seed(seed, rank))
        self.true_model = getattr(self.datamodule, "true_log_prob", None)
        if settings.simulate:  # the data's true model does not describe the model's images
            self.true_model = None
        self.dimension = math.prod(self.datamodule.splits[self.split][0]["image"].shape)
        self.simulated = None

    def examples(self):
        """The split's examples, or with ``simulate`` the model's own images (seeded)."""
        if not self.settings.simulate:
            return super().examples()
        if self.simulated is None:
            n = self.settings.n_examples or len(self.datamodule.splits[self.split])
            self.simulated = SimulatedImages(self.model, int(n), int(self.cfg.seed))
        return self.simulated

    def settings_results(self) -> dict[str, Any]:
        """What was estimated and how (before any image is scored)."""
        n_steps, step_size = proposal_chain(self.model, self.settings)
        return {
            "split": self.split,
            "n_images": len(self.examples()),
            "dimension": self.dimension,
            "sigma": self.model.sigma,
            "n_samples": int(self.settings.n_samples),
            "n_chains": int(self.settings.n_chains),
            "n_steps": n_steps,
            "step_size": step_size,
            "noise": bool(self.settings.noise),
            **normalizer_results(self.normalizer, float(self.settings.max_log_z_se)),
            "bpd_note": BPD_NOTE,
            "estimator": str(self.settings.estimator),
            "simulate": bool(self.settings.simulate),
        } | (self.ais_settings() if self.ais else {})

    def ais_settings(self) -> dict[str, Any]:
        """The AIS options and the gradient passes they cost per image (in place of the
        importance sampler's ``n_samples`` ... ``noise``, which AIS does not use)."""
        ais = OmegaConf.to_container(self.settings.ais)
        return (
            dict.fromkeys(IMPORTANCE_SETTINGS)
            | {f"ais_{key}": value for key, value in ais.items()}
            | {"passes_per_image": float(ais_passes_per_image(self.settings))}
        )

    def run(self) -> dict[str, Any]:
        self.check()
        normalizer, max_se = self.normalizer, float(self.settings.max_log_z_se)
        if normalizer is not None and normalizer.se > max_se:
            reason = f"SE(log Z) = {normalizer.se:.3g} > likelihood.max_log_z_se"
            unavailable = dict.fromkeys(SUMMARY_KEYS) | {"log_px_unavailable": reason}
            return self.settings_results() | unavailable
        return self.score_examples()

    def score(self, batch: dict[str, torch.Tensor]) -> list[dict[str, Any]]:
        if self.ais:
            return self.score_ais(batch)
        x = batch["image"]
        estimate = image_log_likelihood(self.model, x, self.settings, self.rng, self.log_z)
        true = self.true_model(x.cpu()).tolist() if self.true_model is not None else None
        rows = []
        for i, index in enumerate(batch["index"].tolist()):
            row = {
                "index": index,
                "label": int(batch["label"][i]),
                "log_px": float(estimate.log_px[i]),
                "bpd": -float(estimate.log_px[i]) / (self.dimension * math.log(2)),
                "mc_se": float(estimate.mc_se[i]),
                "ess": float(estimate.ess[i]),
            }
            if true is not None:
                row["true_log_px"] = true[i]
            rows.append(row)
        return rows

    def score_ais(self, batch: dict[str, torch.Tensor]) -> list[dict[str, Any]]:
        """Rows of the AIS estimator: ``log_px`` the lower bound, ``passes`` its gradient
        passes, with ``simulate`` also ``log_px_upper``, ``upper_mc_se`` and ``bdmc_gap`` =
        upper - lower."""
        estimate = model_ais(self.model, batch["image"], self.settings, self.rng, batch.get("z"))
        passes = ais_passes_per_image(self.settings)
        true = self.true_model(batch["image"].cpu()).tolist() if self.true_model else None
        bits = self.dimension * math.log(2)
        rows = []
        for i, index in enumerate(batch["index"].tolist()):
            row = {
                "index": index,
                "label": int(batch["label"][i]),
                "log_px": float(estimate.lower[i]),
                "bpd": -float(estimate.lower[i]) / bits,
                "mc_se": float(estimate.lower_se[i]),
                "ess": float(estimate.ess[i]),
                "accept_rate": float(estimate.accept_rate[i]),
                "passes": passes,
            }
            if estimate.upper is not None:
                row["log_px_upper"] = float(estimate.upper[i])
                row["upper_mc_se"] = float(estimate.upper_se[i])
                row["bdmc_gap"] = row["log_px_upper"] - row["log_px"]
            if true is not None:
                row["true_log_px"] = true[i]
            rows.append(row)
        return rows

    def summarize(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        def column(key: str) -> torch.Tensor:
            return torch.tensor([r[key] for r in rows], dtype=torch.float64)

        dimension = self.dimension
        results = self.settings_results()
        results |= summarize(column("log_px"), column("mc_se"), column("ess"), dimension)
        if self.ais:
            results["accept_rate_mean"] = float(column("accept_rate").mean())
        if "log_px_upper" in rows[0]:
            results |= bound_summary(column("log_px_upper"), column("bdmc_gap"))
        if self.true_model is not None:
            true_mean, true_se = mean_and_se(column("true_log_px"))
            gap_mean, gap_se = mean_and_se(column("true_log_px") - column("log_px"))
            results |= {
                "true_log_px_mean": true_mean,
                "true_log_px_se": true_se,
                "true_bpd_mean": -true_mean / (dimension * math.log(2)),
                "gap_mean": gap_mean,
                "gap_se": gap_se,
            }
        return results
