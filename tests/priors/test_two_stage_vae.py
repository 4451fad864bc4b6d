"""The two-stage VAE's second stage against a linear-Gaussian model where log p(z) is analytic:
z = W u + b + sqrt(gamma) eps, u ~ N(0, I)  =>  z ~ N(b, W W^T + gamma I). With W = diag(w) the
posterior p(u | z) is diagonal and linear in z, so a linear encoder represents it exactly."""

from __future__ import annotations

import math

import pytest
import torch

from lfbm_lightning.densities import standard_normal_log_prob
from lfbm_lightning.priors import TwoStageVAEPrior

D = 3
W = torch.tensor([2.0, 0.5, 1.2], dtype=torch.float64)
B = torch.tensor([0.3, -1.0, 0.7], dtype=torch.float64)
GAMMA = 0.25


def linear_stage_two(exact: bool, n_probes: int = 16) -> TwoStageVAEPrior:
    """hidden_layers=0: f(u) = W u + b, and q(u | z) the exact posterior (or a perturbed one):
    mean S W (z - b) / gamma, variance S = 1 / (1 + w^2 / gamma)."""
    prior = TwoStageVAEPrior(D, hidden_layers=0, n_probes=n_probes).double()
    post_var = 1 / (1 + W**2 / GAMMA)
    gain = post_var * W / GAMMA
    with torch.no_grad():
        prior.decoder[0].weight.copy_(torch.diag(W))
        prior.decoder[0].bias.copy_(B)
        prior.log_gamma.fill_(math.log(GAMMA))
        weight = torch.zeros(2 * D, D, dtype=torch.float64)
        weight[:D] = torch.diag(gain)
        bias = torch.cat([-gain * B, post_var.log()])
        if not exact:
            bias = bias + torch.cat([torch.full((D,), 0.4), torch.full((D,), 0.8)])
        prior.encoder[0].weight.copy_(weight)
        prior.encoder[0].bias.copy_(bias)
    return prior


def analytic_log_prob(z: torch.Tensor) -> torch.Tensor:
    cov = torch.diag(W**2 + GAMMA)
    return torch.distributions.MultivariateNormal(B, cov).log_prob(z)


def test_elbo_equals_log_p_with_the_exact_posterior_and_stays_below_it_otherwise():
    z = torch.randn(50, D, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) * 2
    exact = linear_stage_two(exact=True)
    assert torch.allclose(exact.log_prob(z), analytic_log_prob(z), atol=1e-10)
    loose = linear_stage_two(exact=False, n_probes=4000)  # many probes: the expectation
    gap = analytic_log_prob(z) - loose.log_prob(z)
    assert (gap > 0).all() and gap.mean() > 0.1, gap


def test_loss_is_minus_the_mean_elbo_of_one_fresh_draw():
    exact = linear_stage_two(exact=True)
    z = torch.randn(20, D, dtype=torch.float64)
    loss = exact.loss(z, rng=torch.Generator().manual_seed(1))
    assert loss.item() == pytest.approx(-analytic_log_prob(z).mean().item(), abs=1e-10)


def test_samples_follow_the_second_stage_model():
    prior = linear_stage_two(exact=True)
    samples = prior.sample(40_000, rng=torch.Generator().manual_seed(2))
    assert torch.allclose(samples.mean(0), B, atol=0.05)
    assert torch.allclose(samples.var(0), W**2 + GAMMA, rtol=0.05)


def test_stage_one_is_trained_under_the_standard_normal():
    prior = TwoStageVAEPrior(D)
    z = torch.randn(5, D)
    assert torch.equal(prior.training_log_prob(z), standard_normal_log_prob(z))
    assert not prior.normalized and not prior.ex_post  # fitted alongside, by its own loss
