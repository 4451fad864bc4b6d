"""Held-out log-likelihood log p(x) by importance sampling (every prior) or AIS.

log p(x) = log E_{z ~ p(z)}[N(x; g(z), sigma^2 I_D)] is estimated per image with K importance
samples (:mod:`lfbm_lightning.inference.importance`) from a Laplace mixture at M posterior
modes (E[log p_K(x)] <= log p(x); Pareto k-hat per image says whether the estimate and its
Monte-Carlo error can be trusted), or by AIS (:mod:`lfbm_lightning.tasks.ais_likelihood`; on
simulated images with the BDMC upper bound). An EBM prior's log Z is estimated by Monte Carlo
and subtracted (None when its SE exceeds ``max_log_z_se``). Units: nats per image and bits per
dimension on the continuous [-1, 1] scale. Options: ``conf/task/likelihood.yaml``; the
estimators, their costs and caveats: docs/likelihood.md.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from lfbm_lightning.densities import gaussian_log_likelihood
from lfbm_lightning.errors import ConfigError
from lfbm_lightning.inference.importance import (
    KHAT_THRESHOLD,
    ImportanceEstimate,
    LogJointFn,
    LogNormalizer,
    StudentTMixture,
    energy_hessian,
    importance_estimate,
    importance_log_weights,
    laplace_log_mass,
    laplace_precision,
    tilt_log_normalizer,
)
from lfbm_lightning.langevin import frozen_parameters
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


def proposal_passes(model: LatentPriorModel, settings: DictConfig) -> int:
    """Most generator passes of each proposal fit: ``n_steps``, null falling back to the
    checkpoint's ``inference.eval_steps``."""
    n_steps = settings.n_steps
    return int(model.inference_cfg["eval_steps"] if n_steps is None else n_steps)


@dataclass
class Proposal:
    """The proposal of B images and what building it cost.

    Attributes:
        mixture: q(z | x_b).
        passes: generator passes per image (B,): its M fits, M d Hessian rows and M energies.
    """

    mixture: StudentTMixture
    passes: torch.Tensor


def posterior_proposal(
    model: LatentPriorModel,
    x: torch.Tensor,
    settings: DictConfig,
    rng: torch.Generator,
    start: torch.Tensor | None = None,
) -> Proposal:
    """The Laplace mixture proposal q(z | x) of images x (B, C, H, W) (docs/likelihood.md).

    M = ``n_chains`` L-BFGS fits of E(z) = -log p(x, z) + const per image (the ``fast`` fit,
    at most :func:`proposal_passes` passes each); at every mode z_m the exact Hessian of E,
    prior included (:func:`energy_hessian`, :func:`laplace_precision`), and a mixing weight
    proportional to the Laplace mass under the mode (:func:`laplace_log_mass`). ``start`` (B, d),
    when given, is where each image's first fit starts (e.g. a z already fitted to x);
    otherwise the encoder's mean for a model with one, else N(0, I); the others start N(0, I).
    """
    b, m, d = x.shape[0], int(settings.n_chains), model.latent_dim
    z0 = torch.randn(b, m, d, generator=rng, device=x.device)
    if start is not None:
        z0[:, 0] = start.detach()
    elif model.encoder is not None:
        with torch.no_grad():
            z0[:, 0] = model.encode(x)[0]
    x_rep = x.repeat_interleave(m, dim=0)
    fit = model.posterior.fit(
        model, x_rep, None, z0.flatten(0, 1), proposal_passes(model, settings), 0.0, "fast"
    )
    if not torch.isfinite(fit.z).all():
        raise FloatingPointError("proposal fits diverged: a non-finite z")
    energy = model.posterior_energy(x_rep)
    with frozen_parameters((model.generator, model.prior)):
        hessian = energy_hessian(energy, fit.z)
    with torch.no_grad():
        energy_at_modes = energy(fit.z).view(b, m)
    means = fit.z.view(b, m, d)
    precision = laplace_precision(hessian).view(b, m, d, d)
    mixture = StudentTMixture.from_precision(
        means,
        precision,
        inflation=float(settings.inflation),
        df=None if settings.df is None else int(settings.df),
        defensive_weight=float(settings.defensive_weight),
        mixing_logits=laplace_log_mass(energy_at_modes, precision),
    )
    return Proposal(mixture, fit.passes.view(b, m).sum(1) + m * (d + 1))


def log_joint_fn(model: LatentPriorModel, x: torch.Tensor, log_z: float = 0.0) -> LogJointFn:
    """z (B, K, d) -> log N(x_b; g(z_bk), sigma^2 I) + log p(z_bk) - log_z (B, K), every
    normaliser included, for images x (B, C, H, W)."""
    x_flat = x.flatten(1).unsqueeze(1)  # (B, 1, D)

    def log_joint(z: torch.Tensor) -> torch.Tensor:
        b, k, d = z.shape
        decoded = model.generator(z.reshape(b * k, d)).reshape(b, k, -1)
        log_prior = model.prior.log_prob(z.reshape(b * k, d)).view(b, k)
        return gaussian_log_likelihood(x_flat, decoded, model.sigma) + log_prior - log_z

    return log_joint


@dataclass
class LikelihoodEstimate:
    """Importance-sampled log p(x) of B images and the generator passes per image (B,): the
    proposal's plus K."""

    estimate: ImportanceEstimate
    passes: torch.Tensor


def image_log_likelihood(
    model: LatentPriorModel,
    x: torch.Tensor,
    settings: DictConfig,
    rng: torch.Generator,
    log_z: float = 0.0,
    start: torch.Tensor | None = None,
) -> LikelihoodEstimate:
    """Importance-sampled log p(x) of images x (B, C, H, W), in nats (also the marginal score
    of ``task=anomaly``).

    log w = log N(x; g(z), sigma^2 I) + log p(z) - log_z - log q(z | x), K = ``n_samples``;
    ``start`` (B, d): where the first proposal fit of each image starts (see
    :func:`posterior_proposal`).
    """
    proposal = posterior_proposal(model, x, settings, rng, start)
    k = int(settings.n_samples)
    log_w = importance_log_weights(
        log_joint_fn(model, x, log_z), proposal.mixture, k, rng, int(settings.chunk)
    )
    return LikelihoodEstimate(importance_estimate(log_w), proposal.passes.cpu() + k)


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
    "khat_threshold",
    "khat_above_share",
    "khat_max",
    "log_px_mean_trusted",
    "log_px_mc_se_trusted",
    "log_px_mean_untrusted",
    "ess_mean",
    "ess_min",
    "ess_10pct_share",
)


def summarize(
    log_px: torch.Tensor,
    mc_se: torch.Tensor,
    ess: torch.Tensor,
    khat: torch.Tensor | None,
    n_samples: int,
    dimension: int,
) -> dict[str, float | None]:
    """Means over N images of log p(x) (nats) and bpd with their standard errors, and how far
    the importance estimates can be trusted (k-hat <= :data:`KHAT_THRESHOLD`; NaN k-hat: not).

    ``log_px_mc_se``, the Monte-Carlo error sqrt(sum_i se_i^2) / N of ``log_px_mean`` (separate
    from ``log_px_se``, the spread over images), is None unless every image is trusted;
    ``log_px_mean_trusted`` / ``log_px_mc_se_trusted`` and ``log_px_mean_untrusted`` split the
    images by k-hat (None for an empty part); ``khat_max`` is None where K < 25 (no k-hat);
    ``ess_10pct_share``: share with ESS >= K / 10. ``khat`` None (AIS, whose few chains are not
    importance weights to judge): every image counts as trusted and the k-hat keys are None.
    """
    mean, se = mean_and_se(log_px)
    bits = dimension * math.log(2)
    judged = khat is not None
    trusted = khat <= KHAT_THRESHOLD if judged else torch.ones(len(log_px), dtype=torch.bool)
    n_trusted, n_fitted = int(trusted.sum()), int((~khat.isnan()).sum()) if judged else 0

    def mc_error(rows: torch.Tensor) -> float:
        return float(mc_se[rows].double().pow(2).sum().sqrt() / int(rows.sum()))

    return {
        "log_px_mean": mean,
        "log_px_se": se,
        "bpd_mean": -mean / bits,
        "bpd_se": se / bits,
        "log_px_mc_se": mc_error(trusted) if bool(trusted.all()) else None,
        "khat_threshold": KHAT_THRESHOLD if judged else None,
        "khat_above_share": 1.0 - n_trusted / len(khat) if judged else None,
        "khat_max": float(khat.nan_to_num(-math.inf).max()) if n_fitted else None,
        "log_px_mean_trusted": float(log_px[trusted].mean()) if n_trusted else None,
        "log_px_mc_se_trusted": mc_error(trusted) if n_trusted else None,
        "log_px_mean_untrusted": (
            float(log_px[~trusted].mean()) if n_trusted < len(log_px) else None
        ),
        "ess_mean": float(ess.double().mean()),
        "ess_min": float(ess.min()),
        "ess_10pct_share": float((ess >= 0.1 * n_samples).double().mean()),
    }


IMPORTANCE_SETTINGS = ("n_samples", "n_chains", "n_steps")
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

    Columns: ``index``, ``label``, ``log_px``, ``bpd``, ``mc_se`` (NaN where k-hat says the
    estimate cannot be trusted), ``ess``, ``khat``, ``passes`` (generator passes of the image).

    Results: ``split``, ``n_images``, ``dimension``, ``sigma``, ``n_samples``, ``n_chains``,
    ``n_steps``, ``prior_normalizer`` (and ``log_z``, ``log_z_se``, ``log_z_ess`` for an EBM),
    the :func:`summarize` keys (None and ``log_px_unavailable`` when an EBM's log Z is too
    uncertain), ``passes_per_image``, ``bpd_note`` and, with a known true model,
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
        return {
            "split": self.split,
            "n_images": len(self.examples()),
            "dimension": self.dimension,
            "sigma": self.model.sigma,
            "n_samples": int(self.settings.n_samples),
            "n_chains": int(self.settings.n_chains),
            "n_steps": proposal_passes(self.model, self.settings),
            **normalizer_results(self.normalizer, float(self.settings.max_log_z_se)),
            "bpd_note": BPD_NOTE,
            "estimator": str(self.settings.estimator),
            "simulate": bool(self.settings.simulate),
        } | (self.ais_settings() if self.ais else {})

    def ais_settings(self) -> dict[str, Any]:
        """The AIS options, in place of the importance sampler's ``n_samples``, ``n_chains``,
        ``n_steps`` (None: AIS does not use them); passes per image come from the rows."""
        ais = OmegaConf.to_container(self.settings.ais)
        return dict.fromkeys(IMPORTANCE_SETTINGS) | {
            f"ais_{key}": value for key, value in ais.items()
        }

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
        result = image_log_likelihood(self.model, x, self.settings, self.rng, self.log_z)
        estimate, trusted = result.estimate, result.estimate.trusted
        true = self.true_model(x.cpu()).tolist() if self.true_model is not None else None
        rows = []
        for i, index in enumerate(batch["index"].tolist()):
            row = {
                "index": index,
                "label": int(batch["label"][i]),
                "log_px": float(estimate.log_px[i]),
                "bpd": -float(estimate.log_px[i]) / (self.dimension * math.log(2)),
                "mc_se": float(estimate.mc_se[i]) if trusted[i] else math.nan,
                "ess": float(estimate.ess[i]),
                "khat": float(estimate.khat[i]),
                "passes": int(result.passes[i]),
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
        khat = None if self.ais else column("khat")  # AIS has no importance weights to judge
        n_samples = int(self.settings.ais.n_chains if self.ais else self.settings.n_samples)
        results |= summarize(
            column("log_px"), column("mc_se"), column("ess"), khat, n_samples, dimension
        )
        results["passes_per_image"] = float(column("passes").mean())
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

    def markdown(self, results: dict[str, Any]) -> str:
        """How many estimates k-hat trusts, and the mean log p(x) of each part."""
        if results.get("khat_above_share") is None:
            return ""
        n = int(results["n_images"])
        above = round(float(results["khat_above_share"]) * n)

        def nats(key: str) -> str:
            value = results[key]
            return "-" if value is None else f"{value:.6g}"

        lines = [
            "## Importance-sampling diagnostics",
            "",
            f"Pareto k-hat > {KHAT_THRESHOLD} (or too few samples for it): {above} of {n} "
            f"images ({100 * above / n:.1f}%); their estimates and standard errors cannot be "
            "trusted (docs/likelihood.md).",
            "",
            "| images | n | mean log p(x) (nats) | Monte-Carlo SE |",
            "| --- | --- | --- | --- |",
            f"| k-hat <= {KHAT_THRESHOLD} | {n - above} | {nats('log_px_mean_trusted')} | "
            f"{nats('log_px_mc_se_trusted')} |",
            f"| k-hat > {KHAT_THRESHOLD} | {above} | {nats('log_px_mean_untrusted')} | "
            "not trustworthy |",
        ]
        return "\n".join(lines) + "\n"
