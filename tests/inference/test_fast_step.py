"""The fast-step options compute the same chain (benchmarks/README.md): correctness only."""

from __future__ import annotations

import copy

import pytest
import torch
from hydra.utils import instantiate

from lfbm_lightning.generators import ConvTransposeGenerator
from lfbm_lightning.inference import energy_grad, langevin
from lfbm_lightning.langevin import frozen_parameters
from lfbm_lightning.models import LatentPriorModel
from lfbm_lightning.models.energy import latent_decoder, posterior_energy_fn
from lfbm_lightning.priors import FlowPrior, GaussianPrior
from lfbm_lightning.priors.flow_layers import InvertibleLinear
from lfbm_lightning.run.training import resolved_config

D = 8
LAYERS = {  # small stacks with the paper's block types: stems with and without padding
    "celeba-like": [[32, 4, 1, 0], [16, 4, 2, 1], [3, 4, 2, 1]],
    "cifar-like": [[32, 4, 1, 0], [16, 4, 2, 1], [3, 3, 1, 1]],
    "padded stem": [[32, 6, 2, 1], [3, 4, 2, 1]],
}


def setup(layers, channels_last: bool = False, batch: int = 6):
    torch.manual_seed(0)
    generator = ConvTransposeGenerator(D, 3, layers)
    if channels_last:
        generator.to(memory_format=torch.channels_last)
    prior = FlowPrior(D, depth=2, width=16)
    z = torch.randn(batch, D)
    with torch.no_grad():
        x = generator(torch.randn(batch, D))
    return generator, prior, x + 0.3 * torch.randn_like(x), z


def chain(energy, z0, n_steps=20, frozen=()):
    return langevin(z0, energy, n_steps, 0.1, rng=torch.Generator().manual_seed(3), frozen=frozen)


@pytest.mark.parametrize("layers", LAYERS.values(), ids=LAYERS.keys())
@pytest.mark.parametrize("channels_last", [False, True])
def test_latent_decoder_is_the_generator(layers, channels_last):
    generator, _, _, z = setup(layers, channels_last)
    decode = latent_decoder(generator)
    assert decode is not generator  # the GEMM stem is used for these stacks
    z = z.requires_grad_(True)
    ours, theirs = decode(z), generator(z)
    assert torch.allclose(ours, theirs, atol=1e-6)
    if channels_last:
        assert ours.is_contiguous(memory_format=torch.channels_last)
    # same gradients to z and to every parameter
    weights = torch.randn_like(theirs)
    params = [z, *generator.parameters()]
    g_ours = torch.autograd.grad((ours * weights).sum(), params)
    g_theirs = torch.autograd.grad((theirs * weights).sum(), params)
    for a, b in zip(g_ours, g_theirs, strict=True):
        assert torch.allclose(a, b, atol=1e-5, rtol=1e-5)


def test_latent_decoder_leaves_other_generators_alone():
    generator = torch.nn.Sequential(torch.nn.Linear(D, 5))
    assert latent_decoder(generator) is generator


def test_channels_last_fast_decoder_and_frozen_chain_match_the_plain_chain():
    generator, prior, x, z0 = setup(LAYERS["celeba-like"])
    plain = chain(posterior_energy_fn(x, generator, prior, 0.3, fast_decoder=False), z0).z
    fast_gen = copy.deepcopy(generator).to(memory_format=torch.channels_last)
    energy = posterior_energy_fn(x, fast_gen, prior, 0.3)
    fast = chain(energy, z0, frozen=(fast_gen, prior)).z
    assert (fast - plain).abs().max() < 1e-4


def test_bf16_autocast_chain_stays_close_to_float32():
    """K = 20 posterior steps: max |dz| against the float32 chain, beside how far z moves."""
    generator, prior, x, z0 = setup(LAYERS["cifar-like"])
    ref = chain(posterior_energy_fn(x, generator, prior, 0.3), z0).z
    energy = posterior_energy_fn(x, generator, prior, 0.3, autocast_dtype=torch.bfloat16)
    low = chain(energy, z0).z
    assert (low - ref).abs().max() < 1e-2 < (ref - z0).abs().max()


def test_frozen_parameters_restores_flags_and_leaves_grads_alone():
    generator, prior, x, z0 = setup(LAYERS["cifar-like"])
    prior.layers[0].bias.requires_grad_(False)  # a parameter that was frozen before stays so
    with pytest.raises(RuntimeError), frozen_parameters([generator, prior]):
        assert not any(p.requires_grad for p in generator.parameters())
        raise RuntimeError
    assert all(p.requires_grad for p in generator.parameters())
    assert not prior.layers[0].bias.requires_grad
    assert all(p.requires_grad for p in prior.layers[1].parameters())
    energy = posterior_energy_fn(x, generator, prior, 0.3)
    frozen = chain(energy, z0, n_steps=3, frozen=(generator, prior)).z
    assert torch.allclose(frozen, chain(energy, z0, n_steps=3).z, atol=1e-6)
    assert all(p.grad is None for p in [*generator.parameters(), *prior.parameters()])


def test_log_det_cache_is_exact_and_follows_updates():
    torch.manual_seed(0)
    layer = InvertibleLinear(5)
    fresh = torch.linalg.slogdet(layer.weight.double())[1].float()
    with torch.no_grad():
        assert torch.equal(layer.log_abs_det(), fresh)
        assert layer.log_abs_det() is layer.log_abs_det()  # cached
    with torch.enable_grad():
        value = layer.log_abs_det()  # needs a gradient to W: fresh, differentiable
        assert value.requires_grad
        value.backward()
    assert torch.allclose(layer.weight.grad, torch.linalg.inv(layer.weight).T, atol=1e-5)
    torch.optim.SGD(layer.parameters(), lr=0.1).step()  # in-place update: cache invalidated
    with torch.no_grad():
        moved = torch.linalg.slogdet(layer.weight.double())[1].float()
        assert not torch.equal(moved, fresh) and torch.equal(layer.log_abs_det(), moved)


def test_compiled_energy_gives_the_same_gradient():
    torch.manual_seed(0)
    generator = ConvTransposeGenerator(D, 1, [[16, 2, 1, 0], [1, 3, 1, 1]])  # small: quick compile
    prior, z = GaussianPrior(D), torch.randn(4, D)
    x = torch.rand(4, 1, 2, 2) * 2 - 1
    energy = posterior_energy_fn(x, generator, prior, 0.3)
    compiled = posterior_energy_fn(x, generator, prior, 0.3, compile=True)
    with frozen_parameters([generator, prior]):
        e_ref, g_ref = energy_grad(z, energy)
        e_c, g_c = energy_grad(z, compiled)
    assert torch.allclose(e_c, e_ref, rtol=1e-5) and torch.allclose(g_c, g_ref, atol=1e-4)


def test_step_options_compose_and_run(compose_cfg):
    cfg = compose_cfg(["inference.autocast=bfloat16"])
    config = resolved_config(cfg)
    model = LatentPriorModel(config)
    assert config["inference"]["channels_last"]
    conv = model.generator.net[2]
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    datamodule = instantiate(cfg.dataset)
    datamodule.setup("fit")
    x = torch.stack([datamodule.splits["val"][i]["image"] for i in range(4)])
    result = model.infer(x, n_steps=2)
    assert result.z.shape == (4, model.latent_dim) and torch.isfinite(result.z).all()
