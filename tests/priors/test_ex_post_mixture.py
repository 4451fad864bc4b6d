"""RAE's ex-post density: the EM fit to codes drawn from a known two-component mixture, its
log-density against scikit-learn's and against a grid integral, and its sampler."""

from __future__ import annotations

import pytest
import torch
from sklearn.mixture import GaussianMixture

from lfbm_lightning.densities import standard_normal_log_prob
from lfbm_lightning.priors import ExPostMixturePrior

MEANS = torch.tensor([[-3.0, 0.0], [2.0, 1.0]], dtype=torch.float64)
SCALES = torch.tensor([[[0.5, 0.0], [0.2, 0.3]], [[1.0, 0.0], [-0.4, 0.6]]], dtype=torch.float64)
WEIGHTS = torch.tensor([0.3, 0.7], dtype=torch.float64)


def codes(n: int = 4000) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    k = torch.multinomial(WEIGHTS, n, replacement=True, generator=g)
    eps = torch.randn(n, 2, 1, generator=g, dtype=torch.float64)
    return MEANS[k] + (SCALES[k] @ eps).squeeze(-1)


@pytest.fixture(scope="module")
def fitted() -> ExPostMixturePrior:
    prior = ExPostMixturePrior(2, n_components=2).double()
    prior.fit_codes(codes())
    return prior


def test_before_the_first_fit_it_is_the_standard_normal():
    prior = ExPostMixturePrior(3)
    z = torch.randn(6, 3)
    assert torch.allclose(prior.log_prob(z), standard_normal_log_prob(z), atol=1e-5)
    assert prior.ex_post and list(prior.parameters()) == []


def test_fit_recovers_the_mixture_and_log_prob_is_scikit_learns(fitted):
    order = fitted.means[:, 0].argsort()
    assert torch.allclose(fitted.weights[order], WEIGHTS, atol=0.03)
    assert torch.allclose(fitted.means[order], MEANS, atol=0.1)
    covariances = fitted.scale_tril @ fitted.scale_tril.transpose(-1, -2)
    assert torch.allclose(covariances[order], SCALES @ SCALES.transpose(-1, -2), atol=0.1)
    data = codes()
    gmm = GaussianMixture(2, covariance_type="full", random_state=0).fit(data.numpy())
    z = torch.randn(20, 2, dtype=torch.float64) * 2
    expected = torch.as_tensor(gmm.score_samples(z.numpy()))
    assert torch.allclose(fitted.log_prob(z), expected, atol=1e-8)
    assert torch.equal(fitted.training_log_prob(z), standard_normal_log_prob(z))  # the RAE's


def test_density_integrates_to_one_and_samples_follow_it(fitted):
    axis = torch.linspace(-10.0, 10.0, 401, dtype=torch.float64)
    points = torch.cartesian_prod(axis, axis)
    masses = fitted.log_prob(points).exp() * (axis[1] - axis[0]) ** 2
    assert masses.sum().item() == pytest.approx(1.0, abs=2e-3)
    samples = fitted.sample(20_000, rng=torch.Generator().manual_seed(1))
    assert torch.allclose(samples.mean(0), masses @ points, atol=0.05)


def test_too_few_codes_are_refused_with_the_setting_to_change():
    with pytest.raises(ValueError, match="prior.n_components"):
        ExPostMixturePrior(2, n_components=10).fit_codes(torch.randn(5, 2))
