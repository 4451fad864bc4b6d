"""Synthetic images with a known latent structure and an exactly known model.

    z* ~ p*(z)  (d* = 2, non-Gaussian),    x = g*(z*) + sigma * eps,    eps ~ N(0, I_D),

``g*`` a seeded random MLP with tanh outputs (:class:`RandomImageGenerator`), ``p*`` a mixture
of K Gaussians on a circle of radius R or a ring (:class:`LatentDistribution`). The true
held-out log p*(x) = log E_{z ~ p*}[N(x; g*(z), sigma^2 I)] is known by Monte Carlo over a
fixed bank of latent draws (:meth:`SyntheticDataModule.true_log_prob`; checked against
quadrature in ``tests/data/test_synthetic.py``).
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.utils.data import Dataset

from lfbm_lightning.data.data_module import ImageDataModule
from lfbm_lightning.data.datasets import TensorImageDataset
from lfbm_lightning.densities import gaussian_log_normalizer, log_mean_exp

LATENT_KINDS = ("mixture", "ring")
LATENT_DIM = 2
SPLITS = ("train", "val", "test")


class LatentDistribution:
    """The true latent distribution p*(z) in d* = 2, exactly sampled and exactly evaluated.

    Densities (z in R^2, r = |z|, phi_s = the N(0, s^2) density):

    - mixture: p(z) = (1/K) sum_k N(z; mu_k, s^2 I), mu_k = R (cos 2 pi k / K, sin 2 pi k / K);
    - ring: z = rho u, rho ~ N(R, s^2), u uniform on the unit circle, so both rho = r and
      rho = -r land on z: p(z) = [phi_s(r - R) + phi_s(r + R)] / (2 pi r).

    Args:
        kind: ``"mixture"`` or ``"ring"``.
        radius: R.
        std: s, the component (mixture) or radial (ring) standard deviation.
        n_components: K (mixture only).
    """

    def __init__(self, kind: str, radius: float, std: float, n_components: int = 4) -> None:
        if kind not in LATENT_KINDS:
            raise ValueError(f"dataset.latent must be one of {LATENT_KINDS}, got {kind!r}")
        if radius <= 0 or std <= 0 or n_components < 1:
            raise ValueError(
                "dataset.radius and dataset.latent_std must be > 0 and dataset.n_components "
                f">= 1, got {radius}, {std}, {n_components}"
            )
        self.kind = kind
        self.radius = float(radius)
        self.std = float(std)
        self.n_components = int(n_components)
        angles = 2 * math.pi * torch.arange(self.n_components, dtype=torch.float64)
        angles = angles / self.n_components
        self.means = self.radius * torch.stack([angles.cos(), angles.sin()], dim=1)  # (K, 2)

    def sample(self, n: int, rng: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """n draws z (n, 2) float64 and their labels (n,): the component k (mixture), 0 (ring)."""
        if self.kind == "mixture":
            labels = torch.randint(self.n_components, (n,), generator=rng)
            eps = torch.randn(n, LATENT_DIM, generator=rng, dtype=torch.float64)
            return self.means[labels] + self.std * eps, labels
        theta = 2 * math.pi * torch.rand(n, generator=rng, dtype=torch.float64)
        rho = self.radius + self.std * torch.randn(n, generator=rng, dtype=torch.float64)
        z = rho.unsqueeze(1) * torch.stack([theta.cos(), theta.sin()], dim=1)
        return z, torch.zeros(n, dtype=torch.long)

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """log p*(z) for z (B, 2); returns (B,) in z's dtype."""
        means = self.means.to(z)
        s2 = self.std**2
        if self.kind == "mixture":
            sq = (z.unsqueeze(1) - means).pow(2).sum(-1)  # (B, K)
            log_comp = -sq / (2 * s2) - math.log(2 * math.pi * s2)
            return torch.logsumexp(log_comp, dim=1) - math.log(self.n_components)
        r = z.norm(dim=1)
        radial = torch.logaddexp(
            -((r - self.radius) ** 2) / (2 * s2), -((r + self.radius) ** 2) / (2 * s2)
        )
        return radial - 0.5 * math.log(2 * math.pi * s2) - torch.log(2 * math.pi * r)


class RandomImageGenerator(nn.Module):
    """The fixed true generator g*: R^2 -> [-1, 1]^(C x H x W), a random MLP.

    g*(z) = tanh(W3 tanh(W2 tanh(W1 z + b1) + b2) + b3), reshaped to (C, H, W). Weights are
    drawn from N(0, gain^2 / fan_in) and biases from N(0, 0.1^2) by a generator seeded with
    ``seed``, so the same seed always gives the same function; nothing is trainable.

    Args:
        channels: C.
        image_size: H = W.
        hidden: width of the two hidden layers.
        gain: scale of the weights (larger: a more curved image manifold, saturated pixels).
        seed: seed of the weights.
    """

    def __init__(
        self, channels: int, image_size: int, hidden: int = 64, gain: float = 1.0, seed: int = 0
    ) -> None:
        super().__init__()
        self.shape = (channels, image_size, image_size)
        rng = torch.Generator().manual_seed(int(seed))
        sizes = [LATENT_DIM, hidden, hidden, channels * image_size * image_size]
        self.layers = nn.ModuleList()
        for fan_in, fan_out in zip(sizes[:-1], sizes[1:], strict=True):
            layer = nn.Linear(fan_in, fan_out)
            with torch.no_grad():
                layer.weight.copy_(
                    torch.randn(fan_out, fan_in, generator=rng) * gain / fan_in**0.5
                )
                layer.bias.copy_(0.1 * torch.randn(fan_out, generator=rng))
            layer.requires_grad_(False)
            self.layers.append(layer)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """Images (B, C, H, W) in [-1, 1] for latents z (B, 2)."""
        h = z.to(self.layers[0].weight.dtype)
        for layer in self.layers:
            h = torch.tanh(layer(h))
        return h.view(z.shape[0], *self.shape)


class SyntheticDataModule(ImageDataModule):
    """Images of a known latent-variable model (module docstring), split train / val / test.

    Everything about the data is fixed by ``data_seed``: the generator weights, then for each
    split (in the order train, val, test, each from its own seed) the latents and the pixel
    noise; so training runs with different ``seed`` values see the same images. ``seed`` only
    shuffles the training batches.

    Items carry ``label`` = the mixture component of the image's latent (0 for the ring); the
    latents themselves are kept in ``latents[split]`` (float64 (N, 2)).

    Args:
        latent: ``"mixture"`` or ``"ring"`` (:class:`LatentDistribution`).
        n_components, radius, latent_std: the latent distribution's K, R and s.
        noise_std: sigma of the pixel noise, on the [-1, 1] scale.
        hidden, gain: the true generator's width and weight scale.
        n_train, n_val, n_test: split sizes.
        data_seed: seed of everything above.
        reference_samples: latent draws in the bank behind :meth:`true_log_prob`.
        channels, image_size: C and H = W of the images.
        **kwargs: loader settings, see :class:`ImageDataModule`.
    """

    def __init__(
        self,
        latent: str = "mixture",
        n_components: int = 4,
        radius: float = 2.0,
        latent_std: float = 0.3,
        noise_std: float = 0.2,
        hidden: int = 64,
        gain: float = 1.0,
        n_train: int = 2000,
        n_val: int = 500,
        n_test: int = 500,
        data_seed: int = 0,
        reference_samples: int = 100_000,
        channels: int = 1,
        image_size: int = 8,
        **kwargs,
    ) -> None:
        super().__init__(channels=channels, image_size=image_size, **kwargs)
        if noise_std <= 0:
            raise ValueError(f"dataset.noise_std must be > 0, got {noise_std}")
        if min(n_train, n_val, n_test, reference_samples) < 1:
            raise ValueError("dataset.n_train, n_val, n_test and reference_samples must be >= 1")
        self.latent = LatentDistribution(latent, radius, latent_std, n_components)
        self.noise_std = float(noise_std)
        self.sizes = {"train": int(n_train), "val": int(n_val), "test": int(n_test)}
        self.data_seed = int(data_seed)
        self.reference_samples = int(reference_samples)
        self.generator = RandomImageGenerator(channels, image_size, hidden, gain, data_seed)
        self.latents: dict[str, torch.Tensor] = {}
        self._bank: torch.Tensor | None = None

    @property
    def dimension(self) -> int:
        """D = C H W, the number of pixels of an image."""
        return math.prod(self.generator.shape)

    def _rng(self, offset: int) -> torch.Generator:
        return torch.Generator().manual_seed(self.data_seed * 1000 + offset)

    @torch.no_grad()
    def sample(
        self, n: int, rng: torch.Generator, noise: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """n fresh draws of the true model.

        Returns:
            (x (n, C, H, W) float32, z (n, 2) float64, labels (n,)); x = g*(z) + sigma eps,
            or the noise-free g*(z) with ``noise=False``.
        """
        z, labels = self.latent.sample(n, rng)
        x = self.generator(z)
        if noise:
            x = x + self.noise_std * torch.randn(x.shape, generator=rng)
        return x, z, labels

    def build_splits(self) -> dict[str, Dataset]:
        splits = {}
        for offset, name in enumerate(SPLITS, start=1):
            x, z, labels = self.sample(self.sizes[name], self._rng(offset))
            self.latents[name] = z
            splits[name] = TensorImageDataset(x, labels)
        return splits

    @torch.no_grad()
    def true_log_prob(self, x: torch.Tensor, chunk: int = 20_000) -> torch.Tensor:
        """The true model's log p*(x), in nats, for images x (B, C, H, W); returns (B,) float64.

        log p*(x) ~= log (1/M) sum_m N(x; g*(z_m), sigma^2 I) over a fixed bank of
        M = ``reference_samples`` draws z_m ~ p*(z) (its own seed, decoded once and cached):
        a consistent Monte-Carlo estimate, biased low by Jensen (O(1/M)) with spread
        O(1/sqrt(M)); the tests bound it against grid quadrature. The squared distances are
        expanded as |x|^2 + |g|^2 - 2 x.g (float32, exact to ~1e-4 nats here), chunk by chunk.
        """
        if self._bank is None:
            z, _ = self.latent.sample(self.reference_samples, self._rng(len(SPLITS) + 1))
            self._bank = self.generator(z).flatten(1)
        x = x.flatten(1).to(self._bank)
        x_sq = x.pow(2).sum(1, keepdim=True)
        parts = []
        for bank in self._bank.split(chunk):
            sq = (x_sq + bank.pow(2).sum(1) - 2 * x @ bank.T).clamp(min=0.0)  # (B, chunk)
            parts.append(-sq / (2 * self.noise_std**2))
        log_norm = gaussian_log_normalizer(self.dimension, self.noise_std)
        return log_mean_exp(torch.cat(parts, dim=1), dim=1).double() + log_norm
