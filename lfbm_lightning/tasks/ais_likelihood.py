"""``likelihood.estimator=ais``: AIS log p(x) of a model, and the BDMC bounds on its own images.

Forward AIS (:mod:`lfbm_lightning.inference.ais`) from C prior samples per image gives a
stochastic lower bound of log p(x). With ``likelihood.simulate=true`` the images are drawn from
the model itself, z ~ p(z), x = g(z) + sigma eps (not clipped to [-1, 1]), so each z is an
exact posterior sample of its x: C reverse chains from it give a stochastic upper bound, and
the true log p(x) lies in between (Grosse et al. 2015). Cost per image: C (1 + T L) gradient
passes of prior and decoder, twice with the upper bound.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from omegaconf import DictConfig
from torch.utils.data import Dataset

from lfbm_lightning.densities import gaussian_log_likelihood
from lfbm_lightning.errors import ConfigError
from lfbm_lightning.inference.ais import annealed_importance_sampling, beta_schedule
from lfbm_lightning.langevin import frozen_parameters
from lfbm_lightning.models import LatentPriorModel
from lfbm_lightning.seeds import item_seed

SIMULATION_ITEM = 1_000_002
"""The simulated images' stream, item_seed(seed, SIMULATION_ITEM): apart from the chains'
streams (``seed`` and item_seed(seed, rank)), so no chain starts where an image was drawn."""


@dataclass
class BoundEstimate:
    """AIS estimates of log p(x) for B images, in nats.

    Attributes:
        lower: forward AIS logmeanexp_c log w_c, E[lower] <= log p(x), (B,).
        lower_se: its Monte-Carlo standard error, sqrt(1 / ESS - 1 / C), (B,).
        ess: effective number of forward chains, (B,).
        accept_rate: mean HMC acceptance of the forward chains, (B,).
        upper: reverse AIS -logmeanexp_c log w_c, E[upper] >= log p(x), (B,), or None.
        upper_se: its standard error, (B,), or None.
    """

    lower: torch.Tensor
    lower_se: torch.Tensor
    ess: torch.Tensor
    accept_rate: torch.Tensor
    upper: torch.Tensor | None = None
    upper_se: torch.Tensor | None = None


def check_ais_prior(model: LatentPriorModel) -> None:
    """AIS starts its chains at exact prior samples and needs the normalised log p(z)."""
    if not model.prior.normalized:
        raise ConfigError(
            f"likelihood.estimator=ais needs a normalised prior with exact samples; "
            f"{type(model.prior).__name__} has neither: use likelihood.estimator=importance"
        )


def ais_passes_per_image(settings: DictConfig) -> int:
    """Gradient passes of prior and decoder per image: C (1 + T L), twice with simulate."""
    ais = settings.ais
    passes = int(ais.n_chains) * (1 + int(ais.n_distributions) * int(ais.n_leapfrog))
    return passes * (2 if settings.simulate else 1)


def model_ais(
    model: LatentPriorModel,
    x: torch.Tensor,
    settings: DictConfig,
    rng: torch.Generator,
    posterior_z: torch.Tensor | None = None,
) -> BoundEstimate:
    """AIS of images x (B, C_img, H, W) under ``settings.ais``; with ``posterior_z`` (B, d),
    exact posterior samples of x, also the BDMC upper bound."""
    ais = settings.ais
    b, c, d = x.shape[0], int(ais.n_chains), model.latent_dim
    x_rows = x.flatten(1).repeat_interleave(c, 0)  # (B C, D), image-major like the chains

    def log_lik(z: torch.Tensor) -> torch.Tensor:
        return gaussian_log_likelihood(x_rows, model.generator(z).flatten(1), model.sigma)

    betas = beta_schedule(int(ais.n_distributions), str(ais.schedule))
    options = {
        "n_leapfrog": int(ais.n_leapfrog),
        "step_size": float(ais.step_size),
        "target_accept": None if ais.target_accept is None else float(ais.target_accept),
        "rng": rng,
    }
    with frozen_parameters([model.generator, model.prior]):
        start = model.prior.sample(b * c, rng).view(b, c, d)
        forward = annealed_importance_sampling(
            start, model.prior.log_prob, log_lik, betas, **options
        )
        lower = forward.estimate()
        estimate = BoundEstimate(lower.log_px, lower.mc_se, lower.ess, forward.accept_rate)
        if posterior_z is not None:
            start = posterior_z.detach().unsqueeze(1).expand(b, c, d).contiguous()
            reverse = annealed_importance_sampling(
                start, model.prior.log_prob, log_lik, betas.flip(0), **options
            )
            upper = reverse.estimate()
            estimate.upper, estimate.upper_se = -upper.log_px, upper.mc_se
    return estimate


class SimulatedImages(Dataset):
    """n images of the model, x = g(z) + sigma eps with z ~ p(z), as the task's examples:
    items ``{"image": (C, H, W), "index": i, "label": -1, "z": (d,)}`` on the CPU."""

    def __init__(self, model: LatentPriorModel, n: int, seed: int) -> None:
        rng = torch.Generator(device=model.device)
        rng.manual_seed(item_seed(seed, SIMULATION_ITEM))
        with torch.no_grad():
            self.z = model.prior.sample(n, rng)
            mean = model.generator(self.z)
            noise = torch.randn(mean.shape, generator=rng, device=mean.device, dtype=mean.dtype)
        self.images = (mean + model.sigma * noise).cpu()
        self.z = self.z.cpu()

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {"image": self.images[i], "index": i, "label": -1, "z": self.z[i]}
