"""The synthetic data set: a seeded known model whose true log p(x) is checked by quadrature."""

from __future__ import annotations

import math

import pytest
import torch
from hydra.utils import instantiate

from lfbm_lightning.data.synthetic import LatentDistribution, SyntheticDataModule
from lfbm_lightning.generators import output_shape

H = 0.03  # grid step of the quadratures: a third of the narrowest posterior std (~0.1 here)


def grid(half_width: float, step: float) -> torch.Tensor:
    """Midpoints of a square grid of cells of side ``step`` over [-w, w]^2, (N, 2) float64."""
    axis = torch.arange(-half_width + step / 2, half_width, step, dtype=torch.float64)
    return torch.cartesian_prod(axis, axis)


def small_module(**kwargs) -> SyntheticDataModule:
    settings = {"n_train": 50, "n_val": 20, "n_test": 30} | kwargs
    module = SyntheticDataModule(**settings)
    module.setup()
    return module


@pytest.mark.parametrize("kind", ["mixture", "ring"])
def test_latent_density_integrates_to_one_and_matches_its_samples(kind):
    latent = LatentDistribution(kind, radius=2.0, std=0.3, n_components=5)
    z = grid(4.0, 0.02)
    density = latent.log_prob(z).exp()
    assert abs(float(density.sum()) * 0.02**2 - 1.0) < 1e-3
    draws, labels = latent.sample(100_000, torch.Generator().manual_seed(0))
    for region in (lambda p: p[:, 0] > 0.5, lambda p: p.norm(dim=1) < 1.8):
        mass = float(density[region(z)].sum()) * 0.02**2
        fraction = float(region(draws).double().mean())
        assert abs(fraction - mass) < 4 * math.sqrt(mass * (1 - mass) / 100_000), (mass, fraction)
    if kind == "mixture":
        nearest = torch.cdist(draws, latent.means).argmin(1)
        assert (nearest == labels).double().mean() > 0.99


@pytest.mark.parametrize("kind", ["mixture", "ring"])
def test_true_log_px_matches_quadrature_over_a_fine_latent_grid(kind):
    module = small_module(latent=kind, reference_samples=200_000)
    x = module.splits["test"].images[:12]
    reference = module.true_log_prob(x)

    # log p(x) = log sum_cells h^2 p*(z) N(x; g*(z), sigma^2 I), cells over all of p*'s mass
    z = grid(module.latent.radius + 7 * module.latent.std, H)
    z = z[module.latent.log_prob(z) > -40]
    with torch.no_grad():
        images = torch.cat([module.generator(part) for part in z.split(50_000)])
    images = images.flatten(1).double()
    sq = torch.cdist(x.flatten(1).double(), images).pow(2)  # (12, N)
    sigma2 = module.noise_std**2
    log_integrand = module.latent.log_prob(z) - sq / (2 * sigma2)
    normaliser = -0.5 * module.dimension * math.log(2 * math.pi * sigma2)
    quadrature = torch.logsumexp(log_integrand, dim=1) + 2 * math.log(H) + normaliser

    difference = reference - quadrature
    assert difference.abs().max() < 0.1, difference
    assert difference.mean().abs() < 0.03, difference


def test_images_are_fixed_by_data_seed_alone_and_carry_the_stated_noise():
    first, again = small_module(seed=1), small_module(seed=7)
    for split in ("train", "val", "test"):
        assert torch.equal(first.splits[split].images, again.splits[split].images)
    other = small_module(data_seed=1)
    assert not torch.allclose(first.splits["test"].images, other.splits["test"].images)
    assert [len(first.splits[s]) for s in ("train", "val", "test")] == [50, 20, 30]

    module = small_module(noise_std=0.3, n_train=2000)
    with torch.no_grad():
        clean = module.generator(module.latents["train"])
    residual = module.splits["train"].images - clean
    assert abs(float(residual.std()) - 0.3) < 0.005  # 128,000 pixels
    assert clean.abs().max() <= 1.0
    labels = module.splits["train"].labels
    assert torch.equal(torch.cdist(module.latents["train"], module.latent.means).argmin(1), labels)


def test_dataset_option_sets_the_models_sigma_to_the_true_noise(compose_cfg):
    cfg = compose_cfg(["dataset=synthetic", "dataset.noise_std=0.25"])
    assert cfg.model.sigma == 0.25 and cfg.latent_dim == 2
    generator = instantiate(cfg.generator)
    assert output_shape(generator, cfg.latent_dim) == (1, 8, 8)
    module = instantiate(cfg.dataset)
    assert module.noise_std == 0.25 and module.data_seed == 0


def test_bad_settings_fail_with_the_key_named():
    with pytest.raises(ValueError, match="dataset.latent"):
        SyntheticDataModule(latent="spiral")
    with pytest.raises(ValueError, match="noise_std"):
        SyntheticDataModule(noise_std=0.0)
