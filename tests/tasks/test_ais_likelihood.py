"""AIS and its BDMC bounds (``likelihood.estimator=ais``) against known answers at real scale:
a linear decoder x = W z + b + sigma eps at D = 784, d = 20, sigma = 0.3, under a non-isotropic
Gaussian prior (analytic log p(x)) and under a flow prior with random weights (no closed form:
AIS and importance sampling must agree). The images are simulated from each model, so the
latents that drew them are exact posterior samples for the reverse chains.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from omegaconf import OmegaConf

from lfbm_lightning.errors import ConfigError
from lfbm_lightning.models import LatentPriorModel
from lfbm_lightning.tasks import likelihood
from lfbm_lightning.tasks.ais_likelihood import SimulatedImages, check_ais_prior, model_ais

D, LATENT, SIGMA = 784, 20, 0.3
N_IMAGES = 6


def ais_settings(n_distributions: int, **ais) -> OmegaConf:
    options = {
        "n_distributions": n_distributions,
        "n_chains": 6,
        "schedule": "sigmoid",
        "n_leapfrog": 5,
        "step_size": 0.05,
        "target_accept": 0.65,
    }
    return OmegaConf.create({"simulate": True, "ais": options | ais})


def linear_model(prior: dict) -> LatentPriorModel:
    """x = W z + b (a Linear layer, images (B, D)) with W ~ N(0, 0.1^2): a posterior about
    ten times narrower than the prior in every direction, as for a trained decoder."""
    config = {
        "seed": 0,
        "prior": prior,
        "generator": {"_target_": "torch.nn.Linear", "in_features": LATENT, "out_features": D},
        "model": {"sigma": SIGMA},
        "inference": {"n_steps": 20, "step_size": 0.1, "eval_steps": 300, "eval_step_size": 0.05},
    }
    model = LatentPriorModel(config)
    rng = torch.Generator().manual_seed(0)
    with torch.no_grad():
        model.generator.weight.copy_(0.1 * torch.randn(D, LATENT, generator=rng))
        model.generator.bias.copy_(0.1 * torch.randn(D, generator=rng))
    return model.eval()


@pytest.fixture(scope="module")
def gaussian_case():
    """The model with prior N(m, diag s^2), its simulated images and their analytic log p(x):
    x ~ N(W m + b, W diag(s^2) W^T + sigma^2 I)."""
    model = linear_model(
        {"_target_": "lfbm_lightning.priors.LearnableGaussianPrior", "latent_dim": LATENT}
    )
    rng = torch.Generator().manual_seed(1)
    with torch.no_grad():
        model.prior.mean.copy_(0.5 * torch.randn(LATENT, generator=rng))
        model.prior.log_std.copy_(0.5 * torch.randn(LATENT, generator=rng))
    images = SimulatedImages(model, N_IMAGES, seed=0)
    weight, bias = model.generator.weight.double(), model.generator.bias.double()
    variance = torch.exp(2 * model.prior.log_std.detach().double())
    cov = weight @ torch.diag(variance) @ weight.T + SIGMA**2 * torch.eye(D, dtype=torch.float64)
    mean = weight @ model.prior.mean.detach().double() + bias
    truth = torch.distributions.MultivariateNormal(mean, cov).log_prob(images.images.double())
    return model, images, truth.detach()


@pytest.fixture(scope="module")
def gaussian_bounds(gaussian_case):
    """BDMC bounds with T = 10, 50 and 250 intermediate distributions."""
    model, images, _ = gaussian_case
    rng = torch.Generator().manual_seed(2)
    return {
        t: model_ais(model, images.images, ais_settings(t), rng, images.z) for t in (10, 50, 250)
    }


def test_bounds_sandwich_the_analytic_log_px(gaussian_case, gaussian_bounds):
    truth = gaussian_case[2]
    for t, bounds in gaussian_bounds.items():
        lower, upper = bounds.lower.double(), bounds.upper.double()
        # stochastic bounds: each holds in expectation, so each image has its Monte-Carlo error
        assert (lower < truth + 4 * bounds.lower_se).all(), (t, lower - truth)
        assert (upper > truth - 4 * bounds.upper_se).all(), (t, upper - truth)
    accept_rate = gaussian_bounds[250].accept_rate  # the step size adapted to its target
    assert (accept_rate > 0.5).all() and (accept_rate < 0.8).all(), accept_rate


def test_bdmc_gap_closes_as_intermediate_distributions_grow(gaussian_bounds):
    gaps = {t: float((b.upper - b.lower).mean()) for t, b in gaussian_bounds.items()}
    assert gaps[10] > 2 * gaps[50] > 4 * gaps[250], gaps
    assert gaps[250] < 20, gaps  # of |log p(x)| ~ 400 nats, and ~230 nats at T = 10


IS_SETTINGS = OmegaConf.create(
    {
        "n_samples": 1000,
        "n_chains": 3,
        "n_steps": 300,
        "inflation": 1.5,
        "df": 5,
        "defensive_weight": 0.1,
        "chunk": 250,
    }
)


def test_flow_prior_importance_sampling_lies_within_the_ais_bounds():
    torch.manual_seed(3)
    prior = {"_target_": "lfbm_lightning.priors.FlowPrior", "latent_dim": LATENT, "depth": 2}
    model = linear_model(prior | {"width": 32})
    rng = torch.Generator().manual_seed(4)
    with torch.no_grad():  # random weights everywhere: a curved, non-Gaussian prior
        for parameter in model.prior.parameters():
            parameter.add_(0.05 * torch.randn(parameter.shape, generator=rng))
    images = SimulatedImages(model, 4, seed=0)
    bounds = model_ais(model, images.images, ais_settings(250, n_chains=8), rng, images.z)
    estimate = likelihood.image_log_likelihood(model, images.images, IS_SETTINGS, rng).estimate
    importance = estimate.log_px.double()
    assert (estimate.mc_se < 0.2).all()
    assert (importance > bounds.lower - 4 * bounds.lower_se).all(), importance - bounds.lower
    assert (importance < bounds.upper + 4 * bounds.upper_se).all(), bounds.upper - importance
    assert float((bounds.upper - bounds.lower).mean()) < 20  # of |log p(x)| ~ 220 nats


def test_ais_refuses_a_prior_without_normaliser_or_exact_samples():
    model = SimpleNamespace(prior=SimpleNamespace(normalized=False))
    with pytest.raises(ConfigError, match="estimator=ais needs a normalised prior"):
        check_ais_prior(model)
