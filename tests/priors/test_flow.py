"""FlowPrior: log-determinants against autograd Jacobians, and exact invertibility (float64)."""

from __future__ import annotations

import pytest
import torch
from torch.autograd.functional import jacobian

from lfbm_lightning.densities import standard_normal_log_prob
from lfbm_lightning.priors import FlowPrior


@pytest.fixture
def flow() -> FlowPrior:
    """A float64 flow on d = 5 (an odd d: the coupling halves differ) whose couplings are
    moved off their zero-initialised identity start."""
    torch.manual_seed(0)
    prior = FlowPrior(latent_dim=5, depth=3, width=16).double()
    with torch.no_grad():
        for layer in prior.layers:
            if hasattr(layer, "net"):
                layer.net.out.weight.normal_(0, 0.3)
                layer.net.out.bias.normal_(0, 0.3)
    return prior


def per_sample_slogdet(fn, z: torch.Tensor) -> torch.Tensor:
    """log|det d fn(z_i) / d z_i| for each row z_i of z (B, d), from autograd Jacobians."""
    return torch.stack(
        [torch.linalg.slogdet(jacobian(lambda v: fn(v[None])[0], row))[1] for row in z]
    )


def test_log_det_is_the_slogdet_of_the_inverse_map_jacobian(flow):
    z = torch.randn(6, 5, dtype=torch.float64)
    _, log_det = flow.to_noise(z)
    expected = per_sample_slogdet(lambda v: flow.to_noise(v)[0], z)
    assert torch.allclose(log_det, expected, rtol=1e-10, atol=1e-10)
    assert log_det.std() > 1e-3  # the couplings make the log-det depend on z


def test_log_prob_is_the_change_of_variables_formula(flow):
    z = torch.randn(6, 5, dtype=torch.float64)
    z0 = flow.to_noise(z)[0]
    expected = standard_normal_log_prob(z0) + per_sample_slogdet(lambda v: flow.to_noise(v)[0], z)
    assert torch.allclose(flow.log_prob(z), expected, rtol=1e-10, atol=1e-10)


def test_inverse_and_forward_are_each_others_inverse(flow):
    z = 2 * torch.randn(64, 5, dtype=torch.float64)
    with torch.no_grad():
        assert torch.allclose(flow.from_noise(flow.to_noise(z)[0]), z, atol=1e-10)
        assert torch.allclose(flow.to_noise(flow.from_noise(z))[0], z, atol=1e-10)


def test_each_layer_log_det_and_inverse(flow):
    z = torch.randn(4, 5, dtype=torch.float64)
    for layer in flow.layers:
        y, log_det = layer(z)
        assert log_det.shape == (4,)
        expected = per_sample_slogdet(lambda v, layer=layer: layer(v)[0], z)
        assert torch.allclose(log_det, expected, rtol=1e-10, atol=1e-10), type(layer).__name__
        assert torch.allclose(layer.inverse(y), z, atol=1e-10), type(layer).__name__
        z = y.detach()
