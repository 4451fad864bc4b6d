"""The AIS kernel (:mod:`lfbm_lightning.inference.ais`) against answers known in closed form: the
schedules, the weights of a one-step path, and HMC transitions that leave their target exactly
invariant and never accept a non-finite proposal."""

from __future__ import annotations

import math

import pytest
import torch

from lfbm_lightning.inference.ais import (
    Point,
    annealed_importance_sampling,
    beta_schedule,
    hmc_transition,
)


def standard_normal(z: torch.Tensor) -> torch.Tensor:
    return -0.5 * (z.pow(2).sum(-1) + z.shape[-1] * math.log(2 * math.pi))


@pytest.mark.parametrize("kind", ["linear", "sigmoid"])
def test_schedules_rise_strictly_from_zero_to_one(kind):
    betas = beta_schedule(50, kind)
    assert betas.shape == (51,) and betas[0] == 0 and betas[-1] == 1
    assert (betas.diff() > 0).all()


def test_sigmoid_schedule_is_denser_at_both_ends_than_in_the_middle():
    steps = beta_schedule(100, "sigmoid").diff()
    assert steps[0] < steps[50] / 5 and steps[-1] < steps[50] / 5
    torch.testing.assert_close(steps, steps.flip(0))  # symmetric about beta = 1/2


def test_unknown_schedule_and_empty_path_are_refused():
    with pytest.raises(ValueError, match="schedule must be one of"):
        beta_schedule(10, "cosine")
    with pytest.raises(ValueError, match="n_distributions must be >= 1"):
        beta_schedule(0)


def test_a_one_step_path_is_importance_sampling_from_the_prior():
    # T = 1: log w = (1 - 0) log p(x | z_0) at the starts, whatever the transition does
    z0 = torch.randn(3, 4, 2, dtype=torch.float64)

    def log_lik(z: torch.Tensor) -> torch.Tensor:
        return -(z - 1.0).pow(2).sum(-1)

    run = annealed_importance_sampling(z0, standard_normal, log_lik, beta_schedule(1))
    torch.testing.assert_close(run.log_w, log_lik(z0.view(12, 2)).view(3, 4))
    assert run.gradient_passes == 1 + 5  # the starts, then one transition of 5 leapfrog steps


def test_hmc_transitions_leave_a_correlated_gaussian_invariant():
    # target: N(0, I) prior times a likelihood making the posterior at beta = 1 N(mu, Sigma)
    precision = torch.tensor([[5.0, 2.0], [2.0, 3.0]], dtype=torch.float64)
    mu = torch.tensor([0.5, -1.0], dtype=torch.float64)
    like_precision = precision - torch.eye(2, dtype=torch.float64)
    shift = torch.linalg.solve(like_precision, precision @ mu)

    def log_lik(z: torch.Tensor) -> torch.Tensor:
        diff = z - shift
        return -0.5 * torch.einsum("ni,ij,nj->n", diff, like_precision, diff)

    covariance = torch.linalg.inv(precision)
    rng = torch.Generator().manual_seed(0)
    n = 20_000
    noise = torch.randn(n, 2, generator=rng, dtype=torch.float64)
    z = mu + noise @ torch.linalg.cholesky(covariance).T
    point = Point.at(z, standard_normal, log_lik)
    step = torch.full((n, 1), 0.6, dtype=torch.float64)
    accepted = 0.0
    for _ in range(10):
        point, accept = hmc_transition(point, 1.0, step, 3, standard_normal, log_lik, rng)
        accepted += float(accept.double().mean()) / 10
    assert 0.3 < accepted < 0.95  # the chains move and are corrected
    torch.testing.assert_close(point.z.mean(0), mu, atol=0.02, rtol=0)
    torch.testing.assert_close(point.z.T.cov(), covariance, atol=0.02, rtol=0)


def test_non_finite_proposals_are_rejected():
    # log p(x | z) = -inf outside the unit ball: no chain may ever leave it
    def log_lik(z: torch.Tensor) -> torch.Tensor:
        inside = z.pow(2).sum(-1) < 1
        return torch.where(inside, -z.pow(2).sum(-1), torch.full_like(z[:, 0], -math.inf))

    rng = torch.Generator().manual_seed(1)
    z0 = 0.3 * torch.rand(2, 8, 3, generator=rng, dtype=torch.float64)
    run = annealed_importance_sampling(
        z0, standard_normal, log_lik, beta_schedule(20), step_size=0.5, rng=rng
    )
    assert torch.isfinite(run.log_w).all()
    assert (run.accept_rate < 1).all() and (run.accept_rate > 0).all()
