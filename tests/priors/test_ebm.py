"""The latent EBM prior against exponential tilts with known answers.

With E_a(z) = a |z|^2 / 2 the tilted density exp(-E_a(z)) N(z; 0, I) / Z is N(0, I / (1 + a)).
Langevin with step s on U(z) = (1 + a) |z|^2 / 2 is the linear recursion
z <- c z + s eps, c = 1 - (s^2 / 2)(1 + a), whose variance after K steps from N(0, I) is
v_K = v_inf + (1 - v_inf) c^(2K) with v_inf = s^2 / (1 - c^2), the discretised tilt.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from lfbm_lightning.densities import standard_normal_log_prob
from lfbm_lightning.priors import EnergyMLP, EnergyPrior


class QuadraticEnergy(nn.Module):
    """E_a(z) = a |z|^2 / 2 with a learnable scalar a; returns (B,)."""

    def __init__(self, a: float) -> None:
        super().__init__()
        self.a = nn.Parameter(torch.tensor(float(a)))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return 0.5 * self.a * z.pow(2).sum(-1)


def discretised_variance(a: float, step: float, n_steps: int) -> float:
    """Exact per-coordinate variance of the Langevin chain above after n_steps from N(0, I)."""
    c = 1 - 0.5 * step**2 * (1 + a)
    v_inf = step**2 / (1 - c**2)
    return v_inf + (1 - v_inf) * c ** (2 * n_steps)


def test_log_prob_is_the_unnormalised_tilt():
    prior = EnergyPrior(3, energy_net=QuadraticEnergy(1.5))
    z = torch.randn(5, 3)
    assert prior.normalized is False
    expected = standard_normal_log_prob(z) - 0.75 * z.pow(2).sum(-1)
    assert torch.allclose(prior.log_prob(z), expected)


@pytest.mark.parametrize("a", [0.5, 3.0])
def test_prior_samples_match_the_tilted_gaussian(a):
    """A small step removes the discretisation bias: the variance is 1 / (1 + a)."""
    torch.manual_seed(0)
    prior = EnergyPrior(2, n_steps=3000, step_size=0.05, energy_net=QuadraticEnergy(a))
    with torch.no_grad():
        z = prior.sample(16_000)
    target = 1 / (1 + a)  # 0.667 and 0.25
    assert z.mean(0).abs().max() < 4 * math.sqrt(target / 16_000)
    assert z.var(0).mean().item() == pytest.approx(target, rel=0.03)


@pytest.mark.parametrize("a", [0.5, 3.0])
def test_paper_sampler_matches_the_discretised_tilt(a):
    """LEBM's K0 = 60, s0 = 0.4: the variance is the chain's exact finite-step value, 6% above
    1 / (1 + a) for a = 0.5 and 19% above for a = 3."""
    torch.manual_seed(1)
    prior = EnergyPrior(2, energy_net=QuadraticEnergy(a))
    assert (prior.n_steps, prior.step_size) == (60, 0.4)
    z = prior.sample(16_000)
    expected = discretised_variance(a, 0.4, 60)  # 0.7092 and 0.2976
    assert z.var(0).mean().item() == pytest.approx(expected, rel=0.03)
    assert z.mean(0).abs().max() < 0.03


def test_loss_is_the_energy_difference_against_fresh_prior_samples():
    torch.manual_seed(2)
    prior = EnergyPrior(4)
    z_post = torch.randn(32, 4)
    torch.manual_seed(3)
    loss = prior.loss(z_post)
    torch.manual_seed(3)
    z_prior = prior.sample(32)
    expected = prior.energy(z_post).mean() - prior.energy(z_prior).mean()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)


def test_one_step_lowers_the_energy_of_posterior_samples_relative_to_prior_samples():
    """Posterior-like samples from the tilt a = 1 (N(0, I / 2)); the MLP EBM starts near the
    untilted N(0, I). One gradient step on the loss must make the posterior samples more
    likely relative to the prior's own samples, i.e. lower their energy gap."""
    torch.manual_seed(4)
    prior = EnergyPrior(2)
    z_post = torch.randn(500, 2) / math.sqrt(2)
    z_prior = prior.sample(500)

    def gap() -> float:
        with torch.no_grad():
            return (prior.energy(z_post).mean() - prior.energy(z_prior).mean()).item()

    before = gap()
    optimizer = torch.optim.SGD(prior.parameters(), lr=1e-2)
    prior.loss(z_post).backward()
    optimizer.step()
    assert gap() < before - 5e-4, (before, gap())  # -0.0012 with seed 4


def test_maximum_likelihood_recovers_the_tilt():
    """Learning a alone: the fixed point of the loss is the a whose tilt has the posterior
    samples' second moment, a_hat = d / mean|z|^2 - 1 (about 1 here)."""
    torch.manual_seed(5)
    energy = QuadraticEnergy(0.0)
    prior = EnergyPrior(2, n_steps=300, step_size=0.1, energy_net=energy)
    z_post = torch.randn(4000, 2) / math.sqrt(2)
    a_hat = 2 / z_post.pow(2).sum(-1).mean().item() - 1
    optimizer = torch.optim.SGD(prior.parameters(), lr=1.0)
    trace = []
    for _ in range(25):
        optimizer.zero_grad()
        prior.loss(z_post).backward()
        optimizer.step()
        trace.append(energy.a.item())
    assert sum(trace[-5:]) / 5 == pytest.approx(a_hat, abs=0.05), trace[-5:]


def test_energy_mlp_shape_and_activations():
    for activation, kind in (("gelu", nn.GELU), ("leaky_relu", nn.LeakyReLU)):
        net = EnergyMLP(6, width=32, activation=activation)
        linears = [m for m in net.modules() if isinstance(m, nn.Linear)]
        assert [(m.in_features, m.out_features) for m in linears] == [(6, 32), (32, 32), (32, 1)]
        assert sum(isinstance(m, kind) for m in net.modules()) == 2
        assert net(torch.randn(5, 6)).shape == (5,)
    assert [m.negative_slope for m in net.modules() if isinstance(m, nn.LeakyReLU)] == [0.2] * 2
    with pytest.raises(ValueError, match="activation"):
        EnergyMLP(6, activation="tanh")


def test_samples_and_loss_draw_from_the_given_generator_only():
    """With a generator, the start and every Langevin noise come from it: the same seed gives
    the same samples and the same loss, and the global torch RNG is neither read nor moved."""
    prior = EnergyPrior(3, n_steps=10)
    z_post = torch.randn(8, 3)
    state = torch.get_rng_state()
    first = prior.sample(16, rng=torch.Generator().manual_seed(5))
    torch.manual_seed(123)  # a different global state must not matter
    second = prior.sample(16, rng=torch.Generator().manual_seed(5))
    assert torch.equal(first, second)
    assert not torch.equal(first, prior.sample(16, rng=torch.Generator().manual_seed(6)))
    torch.set_rng_state(state)
    loss = prior.loss(z_post, rng=torch.Generator().manual_seed(7))
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(loss, prior.loss(z_post, rng=torch.Generator().manual_seed(7)))
