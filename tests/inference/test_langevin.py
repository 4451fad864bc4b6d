"""Langevin dynamics against targets with known answers."""

import torch
from torch import nn

from lfbm_lightning.inference import energy_grad, langevin
from lfbm_lightning.models.energy import posterior_energy_fn
from lfbm_lightning.priors import GaussianPrior


def gaussian_energy(mean: torch.Tensor, precision: torch.Tensor):
    """E(z) = (z - m)^T P (z - m) / 2 for a batch z (B, d)."""

    def energy(z):
        diff = z - mean
        return 0.5 * ((diff @ precision) * diff).sum(1)

    return energy


def ula_stationary_cov(precision: torch.Tensor, step: float) -> torch.Tensor:
    """Exact stationary covariance of z <- z - (s^2/2) P (z - m) + s eps: (P - s^2 P^2 / 4)^-1.

    Derivation: A = I - (s^2/2) P is symmetric, Sigma = A Sigma A + s^2 I gives
    Sigma = s^2 (I - A^2)^-1 = (P - (s^2/4) P^2)^-1.
    """
    return torch.linalg.inv(precision - step**2 / 4 * precision @ precision)


def test_recovers_mean_and_variance_of_a_gaussian_target():
    torch.manual_seed(0)
    mean = torch.tensor([1.0, -2.0], dtype=torch.float64)
    variances = torch.tensor([0.5, 2.0], dtype=torch.float64)
    precision = torch.diag(1 / variances)
    step = 0.6  # large enough that the discretisation bias is far outside the tolerance
    z0 = torch.randn(20_000, 2, dtype=torch.float64)
    z = langevin(z0, gaussian_energy(mean, precision), n_steps=200, step_size=step).z
    expected_var = torch.diagonal(ula_stationary_cov(precision, step))  # 0.6098, 2.0930
    assert torch.allclose(z.mean(0), mean, atol=0.03)
    assert torch.allclose(z.var(0), expected_var, rtol=0.04)
    # the step-size bias is resolved: the continuous-time variance 0.5 is far outside
    assert abs(z.var(0)[0].item() - 0.5) > 0.08


def test_noise_free_chain_descends_to_the_mode():
    mean = torch.tensor([[0.5, -1.5, 3.0]])
    precision = torch.diag(torch.tensor([1.0, 2.0, 4.0]))
    z = langevin(torch.zeros(4, 3), gaussian_energy(mean, precision), 500, 0.3, noise=False).z
    assert torch.allclose(z, mean.expand(4, 3), atol=1e-4)


def test_recovers_the_analytic_posterior_of_a_linear_gaussian_generator():
    """x = W z + b + sigma eps, z ~ N(0, I): the posterior is N(mu, S) with
    S = (I + W^T W / sigma^2)^-1 and mu = S W^T (x - b) / sigma^2."""
    torch.manual_seed(1)
    d, dim_x, sigma, step = 2, 5, 0.8, 0.25
    generator = nn.Linear(d, dim_x).double()
    w, b = generator.weight.detach(), generator.bias.detach()
    x = torch.randn(1, dim_x, dtype=torch.float64)
    posterior_precision = torch.eye(d, dtype=torch.float64) + w.T @ w / sigma**2
    post_cov = torch.linalg.inv(posterior_precision)
    post_mean = post_cov @ w.T @ (x[0] - b) / sigma**2

    n_chains = 20_000
    energy = posterior_energy_fn(x.expand(n_chains, dim_x), generator, GaussianPrior(d), sigma)
    z0 = torch.randn(n_chains, d, dtype=torch.float64)
    z = langevin(z0, energy, n_steps=400, step_size=step).z

    sample_cov = torch.cov(z.T)
    assert torch.allclose(z.mean(0), post_mean, atol=0.02)
    assert torch.allclose(sample_cov, ula_stationary_cov(posterior_precision, step), atol=0.012)
    assert torch.allclose(sample_cov, post_cov, rtol=0.1, atol=0.01)


def test_energy_grad_matches_finite_differences():
    torch.manual_seed(2)
    generator = nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 6)).double()
    x = torch.randn(4, 6, dtype=torch.float64)
    energy = posterior_energy_fn(x, generator, GaussianPrior(3), sigma=0.3)
    z = torch.randn(4, 3, dtype=torch.float64)
    _, grad = energy_grad(z, energy)
    eps = 1e-6
    for j in range(3):
        dz = torch.zeros_like(z)
        dz[:, j] = eps
        numeric = (energy(z + dz) - energy(z - dz)) / (2 * eps)
        assert torch.allclose(grad[:, j], numeric, rtol=1e-6, atol=1e-8)


def test_parameter_grads_are_untouched():
    torch.manual_seed(3)
    generator = nn.Sequential(nn.Linear(2, 8), nn.Tanh(), nn.Linear(8, 4))
    for p in generator.parameters():
        p.grad = torch.full_like(p, 7.0)
    fresh = nn.Linear(2, 4)
    x = torch.randn(5, 4)
    langevin(torch.randn(5, 2), posterior_energy_fn(x, generator, GaussianPrior(2), 0.3), 10, 0.1)
    langevin(torch.randn(5, 2), posterior_energy_fn(x, fresh, GaussianPrior(2), 0.3), 10, 0.1)
    assert all(torch.equal(p.grad, torch.full_like(p, 7.0)) for p in generator.parameters())
    assert all(p.grad is None for p in fresh.parameters())


def test_noise_is_reproducible_from_a_generator():
    energy = gaussian_energy(torch.zeros(1, 2), torch.eye(2))
    runs = []
    for _ in range(2):
        rng = torch.Generator().manual_seed(5)
        runs.append(langevin(torch.ones(3, 2), energy, 5, 0.1, rng=rng).z)
    other = langevin(torch.ones(3, 2), energy, 5, 0.1, rng=torch.Generator().manual_seed(6)).z
    assert torch.equal(runs[0], runs[1])
    assert not torch.equal(runs[0], other)
