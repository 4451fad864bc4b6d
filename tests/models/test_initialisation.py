"""Initial parameters as in the authors' code: the flow's coupling networks (hidden layers
bias-free with N(0, 0.05^2) weights, zero output layer with a learnable exp(3 * logs) scale)
and the generators (Xavier-normal transposed convolutions with PyTorch's default biases;
the MNIST generator's BatchNorm weights N(1, 0.02^2), biases 0)."""

from __future__ import annotations

import math

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from lfbm_lightning.generators import ConvTransposeGenerator, MNISTGenerator
from lfbm_lightning.priors import FlowPrior
from lfbm_lightning.priors.flow_layers import AffineCoupling, ZeroLinear
from tests.conftest import CONF


def xavier_std(conv: nn.ConvTranspose2d) -> float:
    """sqrt(2 / (fan_in + fan_out)) of a (in, out, k, k) weight, as torch counts the fans."""
    c_in, c_out, kh, kw = conv.weight.shape
    return math.sqrt(2.0 / ((c_in + c_out) * kh * kw))


def test_coupling_hidden_layers_are_bias_free_with_n_0_005_weights():
    torch.manual_seed(0)
    flow = FlowPrior(latent_dim=16, depth=2, width=512)
    couplings = [layer for layer in flow.layers if isinstance(layer, AffineCoupling)]
    assert len(couplings) == 2
    for coupling in couplings:
        for linear in coupling.net.hidden:
            assert linear.bias is None
        weight = coupling.net.hidden[1].weight  # 512 x 512 draws
        assert weight.std().item() == pytest.approx(0.05, rel=0.02)
        assert abs(weight.mean().item()) < 0.001


def test_coupling_output_layer_starts_at_zero_and_scales_by_exp_3_logs():
    torch.manual_seed(1)
    coupling = AffineCoupling(dim=6, width=32)
    out = coupling.net.out
    assert isinstance(out, ZeroLinear)
    for p in (out.weight, out.bias, out.logs):
        assert p.requires_grad and torch.equal(p, torch.zeros_like(p))
    h = torch.randn(5, 32)
    assert torch.equal(coupling.net(torch.randn(5, 3)), torch.zeros(5, 6))
    with torch.no_grad():
        out.weight.normal_()
        plain = out(h)
        out.logs.fill_(0.1)
    assert torch.allclose(out(h), plain * math.exp(0.3), rtol=1e-6)


def test_each_coupling_starts_at_the_identity_up_to_the_sigmoid_2_scale():
    torch.manual_seed(2)
    flow = FlowPrior(latent_dim=7, depth=3, width=64)
    z = torch.randn(10, 7)
    scale = torch.sigmoid(torch.tensor(2.0))
    for layer in flow.layers:
        if not isinstance(layer, AffineCoupling):
            continue
        y, log_det = layer(z)
        d1 = layer.d1
        assert torch.equal(y[:, :d1], z[:, :d1])
        assert torch.allclose(y[:, d1:], scale * z[:, d1:])
        assert torch.allclose(log_det, torch.full((10,), (7 - d1) * math.log(scale)))
        assert torch.allclose(layer.inverse(y), z, atol=1e-6)


def test_convtranspose_generator_weights_are_xavier_normal_and_biases_torch_default():
    torch.manual_seed(3)
    layers = OmegaConf.to_container(OmegaConf.load(CONF / "generator" / "celeba.yaml"))["layers"]
    generator = ConvTransposeGenerator(100, 3, layers)
    convs = [m for m in generator.modules() if isinstance(m, nn.ConvTranspose2d)]
    big = convs[1]  # 1024 -> 512, k4: 8.4 M weights
    assert big.weight.std().item() == pytest.approx(xavier_std(big), rel=0.01)
    assert abs(big.weight.mean().item()) < 0.01 * xavier_std(big)
    for conv in convs:
        # PyTorch's default: U(-1/sqrt(fan_in), 1/sqrt(fan_in)), fan_in = weight.size(1) k^2
        bound = 1.0 / math.sqrt(conv.weight.shape[1] * conv.weight[0, 0].numel())
        assert conv.bias.abs().max().item() <= bound
        assert conv.bias.abs().max().item() > 0.5 * bound  # not zeroed
    assert big.bias.std().item() == pytest.approx(
        1.0 / math.sqrt(big.weight.shape[1] * 16) / math.sqrt(3), rel=0.1
    )


def test_mnist_generator_init():
    torch.manual_seed(4)
    generator = MNISTGenerator(latent_dim=20)
    convs = [m for m in generator.modules() if isinstance(m, nn.ConvTranspose2d)]
    assert convs[0].weight.std().item() == pytest.approx(xavier_std(convs[0]), rel=0.05)
    norms = [m for m in generator.modules() if isinstance(m, nn.BatchNorm1d | nn.BatchNorm2d)]
    assert len(norms) == 3
    for norm in norms:
        assert torch.equal(norm.bias, torch.zeros_like(norm.bias))
    wide = norms[1].weight  # 6272 draws of N(1, 0.02^2)
    assert wide.mean().item() == pytest.approx(1.0, abs=0.002)
    assert wide.std().item() == pytest.approx(0.02, rel=0.05)
