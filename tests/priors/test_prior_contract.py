"""The contract every prior must meet, run on every ``conf/prior/*.yaml`` (no edits needed
when a prior is added): shapes and finiteness, grad_z against finite differences, for
normalised priors a density that integrates to 1 and samples that agree with it, a loss with
finite parameter gradients that raises the likelihood, and sampling under ``torch.no_grad()``.
"""

from __future__ import annotations

import functools
import math

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from lfbm_lightning.priors import Prior
from tests.conftest import CONF

OPTIONS = sorted(p.stem for p in (CONF / "prior").glob("*.yaml"))


def build_prior(option: str, latent_dim: int, seed: int = 0) -> Prior:
    """The prior of ``prior=<option>`` with d = latent_dim, its parameters moved off their
    (often symmetric) initial values by a seeded perturbation of relative size ~0.2."""
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("train", overrides=[f"prior={option}", f"latent_dim={latent_dim}"])
    torch.manual_seed(seed)
    prior = instantiate(cfg.prior)
    assert isinstance(prior, Prior)
    generator = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for p in prior.parameters():
            fan_in = p.shape[-1] if p.dim() > 1 else 1
            p.add_(0.2 / math.sqrt(fan_in) * torch.randn(p.shape, generator=generator))
    return prior


@functools.cache
def on_grid(option: str) -> tuple[Prior, torch.Tensor, torch.Tensor]:
    """The d = 2 prior in float64, a 401 x 401 grid over [-20, 20]^2 (wide enough for the
    perturbed flow's tails) as points (n^2, 2), and the cell masses p(z) dz, shape (n^2,)."""
    prior = build_prior(option, 2).double()
    axis = torch.linspace(-20.0, 20.0, 401, dtype=torch.float64)
    points = torch.cartesian_prod(axis, axis)
    with torch.no_grad():
        masses = prior.log_prob(points).exp() * (axis[1] - axis[0]) ** 2
    return prior, points, masses


@pytest.mark.parametrize("option", OPTIONS)
def test_shapes_and_finite_values(option):
    d = 3
    prior = build_prior(option, d)
    assert prior.latent_dim == d
    assert isinstance(prior.normalized, bool)
    z = torch.randn(7, d)
    log_p = prior.log_prob(z)
    assert log_p.shape == (7,)
    assert torch.isfinite(log_p).all()
    samples = prior.sample(5)
    assert samples.shape == (5, d)
    assert torch.isfinite(samples).all()


@pytest.mark.parametrize("option", OPTIONS)
def test_log_prob_is_per_example(option):
    """Each row's log p(z) is independent of the rest of the batch."""
    prior = build_prior(option, 3).double()
    z = torch.randn(6, 3, dtype=torch.float64)
    together = prior.log_prob(z)
    alone = torch.cat([prior.log_prob(z[i : i + 1]) for i in range(6)])
    assert torch.allclose(together, alone, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("option", OPTIONS)
def test_grad_z_matches_central_finite_differences(option):
    d, h = 3, 1e-5
    prior = build_prior(option, d).double()
    z = torch.randn(4, d, dtype=torch.float64, requires_grad=True)
    (grad,) = torch.autograd.grad(prior.log_prob(z).sum(), z)
    numeric = torch.zeros_like(grad)
    with torch.no_grad():
        for j in range(d):
            step = torch.zeros(d, dtype=torch.float64)
            step[j] = h
            numeric[:, j] = (prior.log_prob(z + step) - prior.log_prob(z - step)) / (2 * h)
    assert torch.allclose(grad, numeric, rtol=1e-6, atol=1e-7), (grad, numeric)


@pytest.mark.parametrize("option", OPTIONS)
def test_density_integrates_to_one_in_two_dimensions(option):
    if not build_prior(option, 2).normalized:
        pytest.skip("unnormalised prior: log_prob omits log Z by design")
    _, _, masses = on_grid(option)
    assert masses.sum().item() == pytest.approx(1.0, abs=2e-3)


@pytest.mark.parametrize("option", OPTIONS)
def test_samples_follow_the_density(option):
    """Sample moments and the sample average of log p(z) match their grid integrals."""
    if not build_prior(option, 2).normalized:
        pytest.skip("unnormalised prior: its sampler is tested against a known tilt")
    prior, points, weights = on_grid(option)
    grid_mean = weights @ points
    centred = points - grid_mean
    grid_cov = (weights[:, None] * centred).T @ centred
    with torch.no_grad():
        grid_neg_entropy = (weights * prior.log_prob(points)).sum()
        torch.manual_seed(3)
        samples = prior.sample(15_000)
        sample_neg_entropy = prior.log_prob(samples).mean()
    std = grid_cov.diagonal().sqrt()
    assert torch.allclose(samples.mean(0), grid_mean, atol=0.03 * std.max().item())
    assert torch.allclose(torch.cov(samples.T), grid_cov, rtol=0.05, atol=0.03 * std.max() ** 2)
    assert sample_neg_entropy.item() == pytest.approx(grid_neg_entropy.item(), abs=0.03)


@pytest.mark.parametrize("option", OPTIONS)
def test_loss_has_finite_parameter_gradients_and_raises_the_likelihood(option):
    prior = build_prior(option, 3)
    torch.manual_seed(4)
    z_posterior = 0.7 * torch.randn(64, 3) + 0.3
    loss = prior.loss(z_posterior)
    assert loss.shape == () and torch.isfinite(loss)
    params = [p for p in prior.parameters() if p.requires_grad]
    if not params:  # the fixed N(0, I): nothing to learn, the loss is -mean log p
        assert loss.item() == pytest.approx(-prior.log_prob(z_posterior).mean().item())
        return
    loss.backward()
    grads = [p.grad for p in params]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert sum(g.abs().sum().item() for g in grads) > 0
    if prior.normalized:
        assert loss.item() == pytest.approx(-prior.log_prob(z_posterior).mean().item())
        before = prior.log_prob(z_posterior).mean().item()
        with torch.no_grad():
            for p in params:
                p -= 1e-3 * p.grad
        assert prior.log_prob(z_posterior).mean().item() > before


@pytest.mark.parametrize("option", OPTIONS)
def test_sampling_works_under_no_grad(option):
    prior = build_prior(option, 3)
    with torch.no_grad():
        samples = prior.sample(16)
    assert samples.shape == (16, 3)
    assert not samples.requires_grad
    assert torch.isfinite(samples).all()
    assert samples.std(0).min() > 0.1  # real draws, not a constant
