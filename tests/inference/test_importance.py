"""The importance-sampling estimator against answers known in closed form.

Linear-Gaussian model: x = W z + b + sigma eps, z ~ N(0, I_d), so p(x) = N(x; b, W W^T +
sigma^2 I) and p(z | x) = N(mu, Lambda^-1) with Lambda = W^T W / sigma^2 + I and
mu = Lambda^-1 W^T (x - b) / sigma^2.
"""

from __future__ import annotations

import math

import pytest
import torch

from lfbm_lightning.densities import gaussian_log_likelihood, log_mean_exp
from lfbm_lightning.inference.importance import (
    StudentTMixture,
    energy_hessian,
    importance_estimate,
    importance_log_weights,
    laplace_log_mass,
    laplace_precision,
    pareto_khat,
    tilt_log_normalizer,
)

D, LATENT, SIGMA = 12, 3, 0.25  # 2 pi sigma^2 far from 1: the normaliser matters


class LinearGaussian:
    """x = W z + b + sigma eps with z ~ N(0, I): the analytic log p(x) and posterior."""

    def __init__(self, seed: int = 0) -> None:
        rng = torch.Generator().manual_seed(seed)
        self.weight = torch.randn(D, LATENT, generator=rng, dtype=torch.float64)
        self.bias = 0.3 * torch.randn(D, generator=rng, dtype=torch.float64)
        self.rng = rng

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return z @ self.weight.T + self.bias

    def sample(self, n: int) -> torch.Tensor:
        z = torch.randn(n, LATENT, generator=self.rng, dtype=torch.float64)
        return self.decode(z) + SIGMA * torch.randn(n, D, generator=self.rng, dtype=torch.float64)

    def log_px(self, x: torch.Tensor) -> torch.Tensor:
        cov = self.weight @ self.weight.T + SIGMA**2 * torch.eye(D, dtype=torch.float64)
        return torch.distributions.MultivariateNormal(self.bias, cov).log_prob(x)

    def precision(self) -> torch.Tensor:
        eye = torch.eye(LATENT, dtype=torch.float64)
        return self.weight.T @ self.weight / SIGMA**2 + eye

    def posterior_mean(self, x: torch.Tensor) -> torch.Tensor:
        rhs = (x - self.bias) @ self.weight / SIGMA**2  # (B, d)
        return torch.linalg.solve(self.precision(), rhs.T).T

    def log_joint(self, x: torch.Tensor):
        def fn(z: torch.Tensor) -> torch.Tensor:  # z (B, K, d) -> (B, K)
            log_lik = gaussian_log_likelihood(x.unsqueeze(1), self.decode(z), SIGMA)
            log_prior = -0.5 * (z.pow(2).sum(-1) + LATENT * math.log(2 * math.pi))
            return log_lik + log_prior

        return fn


def test_gaussian_log_likelihood_has_its_normaliser():
    x, mean = torch.randn(5, D, dtype=torch.float64), torch.randn(5, D, dtype=torch.float64)
    expected = torch.distributions.Normal(mean, SIGMA).log_prob(x).sum(-1)
    torch.testing.assert_close(gaussian_log_likelihood(x, mean, SIGMA), expected)


def test_energy_hessian_is_the_posterior_precision_with_the_prior_curvature():
    # E(z) = |x - W z - b|^2 / (2 sigma^2) + (z - m)^T P (z - m) / 2: H = W^T W / sigma^2 + P
    model = LinearGaussian()
    factor = torch.randn(LATENT, LATENT, generator=model.rng, dtype=torch.float64)
    prior_precision = factor @ factor.T + torch.eye(LATENT, dtype=torch.float64)
    x = model.sample(4)

    def energy(z: torch.Tensor) -> torch.Tensor:
        residual = x - model.decode(z)
        return residual.pow(2).sum(1) / (2 * SIGMA**2) + 0.5 * ((z @ prior_precision) * z).sum(1)

    z = torch.randn(4, LATENT, dtype=torch.float64)
    expected = model.weight.T @ model.weight / SIGMA**2 + prior_precision
    torch.testing.assert_close(energy_hessian(energy, z), expected.expand(4, -1, -1))
    # and a curvature that changes with z: E = sum z_i^4 / 4 + z_1 z_2, H = diag(3 z^2) + offdiag
    hessian = energy_hessian(lambda z: z.pow(4).sum(1) / 4 + z[:, 0] * z[:, 1], z)
    coupling = torch.zeros(LATENT, LATENT, dtype=torch.float64)
    coupling[0, 1] = coupling[1, 0] = 1.0
    torch.testing.assert_close(hessian, torch.diag_embed(3 * z.pow(2)) + coupling)


def test_laplace_precision_keeps_a_minimum_and_widens_along_flat_or_negative_curvature():
    rotation = torch.linalg.qr(torch.randn(3, 3, dtype=torch.float64))[0]
    minimum = (
        rotation @ torch.diag(torch.tensor([4.0, 1.0, 0.5], dtype=torch.float64)) @ rotation.T
    )
    saddle = (
        rotation @ torch.diag(torch.tensor([4.0, -2.0, 1e-6], dtype=torch.float64)) @ rotation.T
    )
    precision = laplace_precision(torch.stack([minimum, saddle]), floor=0.1)
    torch.testing.assert_close(precision[0], minimum)
    eigenvalues = torch.linalg.eigvalsh(precision[1])
    torch.testing.assert_close(eigenvalues, torch.tensor([0.1, 2.0, 4.0], dtype=torch.float64))


@pytest.mark.parametrize("shape", [0.3, 0.9])
def test_pareto_khat_recovers_the_tail_shape_of_pareto_weights(shape):
    # w = U^-k, U ~ Uniform(0, 1): a Pareto tail of shape k; 4000 weights, the 189 largest
    # fitted, so each k-hat has a standard error of about (1 + k) / sqrt(189) < 0.14
    uniform = torch.rand(8, 4000, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    khat = pareto_khat(-shape * uniform.log())
    assert (khat - shape).abs().max() < 0.4 and abs(khat.mean() - shape) < 0.1, khat


def test_pareto_khat_is_undefined_below_25_weights_and_trusts_equal_weights():
    assert pareto_khat(torch.randn(2, 24)).isnan().all()
    equal = importance_estimate(torch.zeros(3, 64, dtype=torch.float64))
    assert equal.trusted.all() and (equal.ess == 64).all() and (equal.mc_se == 0).all()
    assert not importance_estimate(torch.randn(2, 24)).trusted.any()  # no k-hat: not trusted


def test_exact_posterior_proposal_gives_the_exact_log_px_with_zero_spread():
    model = LinearGaussian()
    x = model.sample(6)
    precision = model.precision().expand(6, 1, -1, -1)
    proposal = StudentTMixture.from_precision(
        model.posterior_mean(x).unsqueeze(1),
        precision,
        inflation=1.0,
        df=None,
        defensive_weight=0.0,
    )
    log_w = importance_log_weights(
        model.log_joint(x), proposal, 16, torch.Generator().manual_seed(1)
    )
    estimate = importance_estimate(log_w)
    torch.testing.assert_close(estimate.log_px, model.log_px(x))
    assert torch.allclose(estimate.ess, torch.full((6,), 16.0, dtype=torch.float64))


def test_imperfect_proposal_matches_the_analytic_log_px_within_its_standard_error():
    model = LinearGaussian()
    x = model.sample(20)
    rng = torch.Generator().manual_seed(2)
    mu = model.posterior_mean(x)
    # two components, one off the posterior mean; too wide, heavy-tailed, defensive part
    means = torch.stack([mu, mu + 0.5], dim=1)
    precision = model.precision().expand(20, 2, -1, -1)
    proposal = StudentTMixture.from_precision(means, precision, inflation=1.6, df=4)
    estimate = importance_estimate(importance_log_weights(model.log_joint(x), proposal, 4000, rng))
    error = estimate.log_px - model.log_px(x)
    assert (estimate.ess < 3000).all() and (estimate.mc_se > 1e-3).all()  # not a trivial case
    assert (error.abs() < 4 * estimate.mc_se).all(), (error, estimate.mc_se)
    assert error.mean().abs() < 4 * estimate.mc_se.pow(2).sum().sqrt() / 20


def test_importance_weighted_bound_grows_with_k_and_stays_below_log_px():
    model = LinearGaussian()
    x = model.sample(1)
    rng = torch.Generator().manual_seed(3)
    # a poor single Gaussian proposal: shifted and too narrow
    proposal = StudentTMixture.from_precision(
        (model.posterior_mean(x) + 0.4).unsqueeze(1),
        model.precision().expand(1, 1, -1, -1),
        inflation=0.7,
        df=None,
        defensive_weight=0.0,
    )
    reps = 2000
    x_rep = x.expand(reps, -1)
    proposal_rep = StudentTMixture(
        proposal.means.expand(reps, -1, -1),
        proposal.scale_tril.expand(reps, -1, -1, -1),
        None,
        0.0,
    )
    log_w = importance_log_weights(model.log_joint(x_rep), proposal_rep, 50, rng)  # (reps, 50)
    bounds = {k: log_mean_exp(log_w[:, :k], dim=1) for k in (1, 5, 50)}
    means = {k: b.mean() for k, b in bounds.items()}
    truth = model.log_px(x)[0]
    for small, large in ((1, 5), (5, 50)):
        diff = bounds[large] - bounds[small]
        assert diff.mean() > 3 * diff.std() / math.sqrt(reps), (small, large, means)
    assert means[50] < truth + 3 * bounds[50].std() / math.sqrt(reps)
    assert truth - means[1] > 0.1  # the K = 1 bound (the ELBO) is visibly loose here


def test_laplace_mass_weights_make_a_two_mode_posterior_proposal_exact():
    # p(x, z) = c (0.8 N(z; m_1, Lambda_1^-1) + 0.2 N(z; m_2, Lambda_2^-1)), the modes 40 standard
    # deviations apart: the Laplace mass under each mode is exactly c x its share, so the
    # mass-weighted mixture of the two Laplace components is p(z | x) itself
    log_c = -2.5
    means = torch.tensor([[[0.0, 0.0, 0.0], [40.0, 0.0, 0.0]]], dtype=torch.float64)
    precision = torch.tensor(
        [[[1.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, 4.0]],
         [[2.0, 0.5, 0.0], [0.5, 1.0, 0.0], [0.0, 0.0, 3.0]]],
        dtype=torch.float64,
    ).unsqueeze(0)  # fmt: skip
    modes = [
        torch.distributions.MultivariateNormal(means[0, m], precision_matrix=precision[0, m])
        for m in range(2)
    ]

    def log_joint(z: torch.Tensor) -> torch.Tensor:
        parts = [
            math.log(share) + mode.log_prob(z)
            for share, mode in zip((0.8, 0.2), modes, strict=True)
        ]
        return log_c + torch.logsumexp(torch.stack(parts), dim=0)

    mixing_logits = laplace_log_mass(-log_joint(means), precision)
    torch.testing.assert_close(
        torch.softmax(mixing_logits, 1), torch.tensor([[0.8, 0.2]], dtype=torch.float64)
    )

    def estimate(logits: torch.Tensor | None):
        proposal = StudentTMixture.from_precision(
            means, precision, inflation=1.0, df=None, defensive_weight=0.0, mixing_logits=logits
        )
        log_w = importance_log_weights(log_joint, proposal, 64, torch.Generator().manual_seed(7))
        return proposal, importance_estimate(log_w)

    proposal, weighted = estimate(mixing_logits)
    torch.testing.assert_close(weighted.log_px, torch.tensor([log_c], dtype=torch.float64))
    torch.testing.assert_close(weighted.ess, torch.tensor([64.0], dtype=torch.float64))
    draws = proposal.sample(20_000, torch.Generator().manual_seed(8))[0]
    share = float((draws[:, 0] > 20).double().mean())  # drawn from the second mode
    assert abs(share - 0.2) < 4 * math.sqrt(0.2 * 0.8 / 20_000), share
    # equal weights: w = 1.6 c or 0.4 c, ESS = K / E_q[(w / c)^2] = K / 1.36 on average
    _, uniform = estimate(None)
    assert float(uniform.ess) < 0.9 * 64 and abs(float(uniform.log_px) - log_c) > 1e-3


def test_student_t_mixture_density_integrates_to_one_and_matches_its_samples():
    means = torch.tensor([[[0.5, -0.5], [-1.0, 1.0]]], dtype=torch.float64)
    precision = torch.tensor([[4.0, 1.0], [1.0, 2.0]], dtype=torch.float64).expand(1, 2, 2, 2)
    proposal = StudentTMixture.from_precision(means, precision, inflation=1.2, df=3)
    h = 0.1  # cell midpoints, so the box |z| < 1 below is a union of whole cells
    axis = torch.arange(-40 + h / 2, 40, h, dtype=torch.float64)
    grid = torch.cartesian_prod(axis, axis).unsqueeze(0)  # (1, N, 2)
    density = proposal.log_prob(grid).exp()[0]
    assert abs(float(density.sum()) * h * h - 1.0) < 5e-3  # heavy tails beyond +-40 cut off

    draws = proposal.sample(100_000, torch.Generator().manual_seed(4))[0]
    in_box = (grid[0].abs() < 1).all(-1)
    box_mass = float(density[in_box].sum()) * h * h
    fraction = float((draws.abs() < 1).all(-1).double().mean())
    assert abs(fraction - box_mass) < 4 * math.sqrt(box_mass * (1 - box_mass) / 100_000)


@pytest.mark.parametrize("tilt", [0.7, 1.5])
def test_tilt_log_normalizer_of_a_linear_tilt(tilt):
    # E(z) = -a z_1: Z = E_{N(0, I)}[exp(a z_1)] = exp(a^2 / 2)
    estimate = tilt_log_normalizer(
        lambda z: -tilt * z[:, 0], 3, 200_000, torch.Generator().manual_seed(5)
    )
    assert abs(estimate.log_z - tilt**2 / 2) < 4 * estimate.se
    assert 0 < estimate.se < 0.05 and estimate.ess < 200_000
