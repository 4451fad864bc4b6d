"""A conditional diffusion model Q(z | x) in latent space: the amortised sampler of DAMC.

Variance-preserving diffusion in log-SNR time (Kingma et al. 2021): z_u = alpha_u z + s_u eps,
alpha_u^2 = sigmoid(lambda_u), s_u^2 = sigmoid(-lambda_u), with the cosine schedule
lambda_u = -2 log tan(a u + b), u in [0, 1], running from ``log_snr_max`` to ``log_snr_min``.
A network eps_hat(z_u, lambda_u, c) predicts the noise; c embeds the image x, or is a learned
"no image" vector where the context mask is 0 (the unconditional path, a sampler of the
aggregate posterior). Sampling: ancestral steps over ``n_intervals`` equal steps of u.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from lfbm_lightning.checks import check_choice, check_int
from lfbm_lightning.errors import ConfigError
from lfbm_lightning.inference.amortized import ConvEncoder

VARIANCES = ("large", "small")


def log_snr(u: torch.Tensor, log_snr_min: float, log_snr_max: float) -> torch.Tensor:
    """lambda(u) = -2 log tan(a u + b), shape of u (in [0, 1]): lambda(0) = ``log_snr_max``,
    lambda(1) = ``log_snr_min`` (b = atan(exp(-max / 2)), a = atan(exp(-min / 2)) - b)."""
    b = math.atan(math.exp(-0.5 * log_snr_max))
    a = math.atan(math.exp(-0.5 * log_snr_min)) - b
    return -2.0 * torch.log(torch.tan(a * u + b))


def reverse_step(
    z_t: torch.Tensor,
    z0_hat: torch.Tensor,
    lambda_t: torch.Tensor,
    lambda_s: torch.Tensor,
    variance: str = "large",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and std (both (B, d)) of z_s given z_t and a prediction z0_hat of the clean z, for
    lambda_s > lambda_t (s is less noisy), both (B, 1).

    With alpha_{t|s} = alpha_t / alpha_s and s_{t|s}^2 = s_t^2 - alpha_{t|s}^2 s_s^2, the
    forward posterior q(z_s | z_t, z0) has mean (alpha_{t|s} s_s^2 z_t + alpha_s s_{t|s}^2 z0)
    / s_t^2 and variance s_{t|s}^2 s_s^2 / s_t^2 (``small``); ``large`` uses s_{t|s}^2.
    """
    alpha2_t, alpha2_s = torch.sigmoid(lambda_t), torch.sigmoid(lambda_s)
    var_t, var_s = torch.sigmoid(-lambda_t), torch.sigmoid(-lambda_s)
    alpha_ts = torch.sqrt(alpha2_t / alpha2_s)
    var_ts = -torch.expm1(lambda_t - lambda_s) * var_t  # s_t^2 - alpha_{t|s}^2 s_s^2, stably
    mean = (alpha_ts * var_s * z_t + torch.sqrt(alpha2_s) * var_ts * z0_hat) / var_t
    var = var_ts if variance == "large" else var_ts * var_s / var_t
    return mean, torch.sqrt(var)


class GatedLayer(nn.Module):
    """h -> W h * sigmoid(G c) + B c: a linear layer whose output is gated and shifted by the
    context c (B, context_dim)."""

    def __init__(self, in_dim: int, out_dim: int, context_dim: int) -> None:
        super().__init__()
        self.linear = nn.Linear(in_dim, out_dim)
        self.gate = nn.Linear(context_dim, out_dim)
        self.shift = nn.Linear(context_dim, out_dim, bias=False)

    def forward(self, h: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        return self.linear(h) * torch.sigmoid(self.gate(context)) + self.shift(context)


class LatentDenoiser(nn.Module):
    """eps_hat(z_u, lambda_u, c) = s_u z_u + f(z_u, lambda_u, c), (B, d) -> (B, d).

    s_u z_u (s_u^2 = sigmoid(-lambda_u)) is the exact noise prediction for z ~ N(0, I); f, an
    MLP of :class:`GatedLayer` s whose last layer starts at zero, learns the difference. An
    untrained sampler thus draws N(0, I), the Langevin recipe's start, and training moves it
    towards the posterior. The context of every layer is [time embedding, c]: the time
    embedding is an MLP of the sinusoidal features of u' = atan(exp(-lambda / 2)) / (pi / 2).

    Args:
        latent_dim: d.
        context_dim: size of the image embedding c.
        width: hidden width.
        depth: hidden layers (>= 1).
        time_dim: size of the time embedding (even).
    """

    def __init__(
        self,
        latent_dim: int,
        context_dim: int,
        width: int = 256,
        depth: int = 3,
        time_dim: int = 64,
    ) -> None:
        super().__init__()
        if int(time_dim) % 2:
            raise ConfigError(f"inference.sampler.time_dim must be even, got {time_dim!r}")
        self.time_dim = int(time_dim)
        self.time_mlp = nn.Sequential(
            nn.Linear(time_dim, time_dim), nn.SiLU(), nn.Linear(time_dim, time_dim)
        )
        sizes = [latent_dim] + [width] * depth + [latent_dim]
        ctx = context_dim + time_dim
        self.layers = nn.ModuleList(
            GatedLayer(sizes[i], sizes[i + 1], ctx) for i in range(len(sizes) - 1)
        )
        last = self.layers[-1]
        for tensor in (last.linear.weight, last.linear.bias, last.shift.weight):
            nn.init.zeros_(tensor)

    def time_features(self, lam: torch.Tensor) -> torch.Tensor:
        """Sinusoidal features (B, time_dim) of the log-SNR lam (B,)."""
        u = torch.atan(torch.exp(-0.5 * lam.clamp(-20.0, 20.0))) / (0.5 * math.pi)
        half = self.time_dim // 2
        freqs = torch.exp(-math.log(10_000.0) * torch.arange(half, device=lam.device) / half)
        angles = 1000.0 * u[:, None] * freqs[None, :]
        return torch.cat([angles.sin(), angles.cos()], dim=1)

    def forward(self, z: torch.Tensor, lam: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        ctx = torch.cat([self.time_mlp(self.time_features(lam)), context], dim=1)
        h = z
        for i, layer in enumerate(self.layers):
            h = layer(h, ctx)
            if i < len(self.layers) - 1:
                h = F.leaky_relu(h, 0.01)
        return torch.sigmoid(-lam).sqrt()[:, None] * z + h


class ImageEmbedding(ConvEncoder):
    """Images (B, C, H, W) -> features (B, dim): the generator's ConvNet run backwards
    (:class:`~lfbm_lightning.inference.amortized.ConvEncoder`, whose 2 d output channels are
    here the ``dim`` features), no batch statistics.

    Args:
        in_channels: C.
        dim: number of features (even).
        layers: the generator's blocks (``conf/generator/*.yaml``).
        image_size: H = W.
    """

    def __init__(
        self, in_channels: int, dim: int, layers: Sequence[Sequence[int]], image_size: int
    ) -> None:
        if int(dim) < 2 or int(dim) % 2:
            raise ConfigError(
                f"inference.sampler.embedding.dim must be an even integer >= 2, got {dim!r}"
            )
        super().__init__(in_channels, int(dim) // 2, layers, image_size)
        self.dim = int(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).flatten(1)


class LatentDiffusion(nn.Module):
    """Q(z | x): a diffusion model in latent space conditioned on an image embedding.

    Args:
        latent_dim: d.
        embedding: images (B, C, H, W) -> features (B, context_dim), with no batch statistics
            (an image's features do not depend on its batch), e.g. :class:`ImageEmbedding`.
        context_dim: size of the features.
        width, depth, time_dim: of the :class:`LatentDenoiser`.
        n_intervals: sampling steps T (>= 2).
        log_snr_min: lambda at u = 1 (the noise end).
        log_snr_max: lambda at u = 0 (the data end).
        variance: ``large`` or ``small`` reverse-step variance (:func:`reverse_step`).
    """

    def __init__(
        self,
        latent_dim: int,
        embedding: nn.Module,
        context_dim: int,
        width: int = 256,
        depth: int = 3,
        time_dim: int = 64,
        n_intervals: int = 100,
        log_snr_min: float = -5.1,
        log_snr_max: float = 9.8,
        variance: str = "large",
    ) -> None:
        super().__init__()
        self.latent_dim = int(latent_dim)
        self.embedding = embedding
        width = check_int("inference.sampler.width", width, 1)
        depth = check_int("inference.sampler.depth", depth, 1)
        time_dim = check_int("inference.sampler.time_dim", time_dim, 2)
        self.denoiser = LatentDenoiser(self.latent_dim, int(context_dim), width, depth, time_dim)
        self.null_context = nn.Parameter(torch.zeros(1, int(context_dim)))
        self.n_intervals = check_int("inference.sampler.n_intervals", n_intervals, 2)
        self.log_snr_min = float(log_snr_min)
        self.log_snr_max = float(log_snr_max)
        if not self.log_snr_min < self.log_snr_max:
            raise ConfigError(
                "inference.sampler.log_snr_min must be below log_snr_max, got "
                f"{log_snr_min!r} and {log_snr_max!r}"
            )
        self.variance = check_choice("inference.sampler.variance", variance, VARIANCES)

    def context(
        self, x: torch.Tensor | None, mask: torch.Tensor | None, n: int, conditional: bool
    ) -> torch.Tensor:
        """Context (n, context_dim): the embedding of x (missing pixels, mask 0, zeroed) when
        ``conditional``, else the learned "no image" vector for every row."""
        if not conditional or x is None:
            return self.null_context.expand(n, -1)
        features = self.embedding(x if mask is None else x * mask)
        return features.flatten(1)

    def loss(
        self,
        z: torch.Tensor,
        x: torch.Tensor | None,
        mask: torch.Tensor | None = None,
        *,
        conditional: bool = True,
        rng: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Denoising loss mean_i 1/2 ||eps_i - eps_hat(z_u, lambda_u, c_i)||^2 on latents z
        (B, d) of images x, u ~ U(0, 1) and eps ~ N(0, I) per row, drawn from ``rng``."""
        u = torch.rand(z.shape[0], generator=rng, device=z.device, dtype=z.dtype)
        eps = torch.randn(z.shape, generator=rng, device=z.device, dtype=z.dtype)
        lam = log_snr(u, self.log_snr_min, self.log_snr_max)
        z_u = (
            torch.sqrt(torch.sigmoid(lam))[:, None] * z
            + torch.sqrt(torch.sigmoid(-lam))[:, None] * eps
        )
        eps_hat = self.denoiser(z_u, lam, self.context(x, mask, z.shape[0], conditional))
        return 0.5 * (eps - eps_hat).pow(2).sum(1).mean()

    @torch.no_grad()
    def sample(
        self,
        x: torch.Tensor | None,
        mask: torch.Tensor | None,
        noise: torch.Tensor,
        *,
        conditional: bool = True,
    ) -> torch.Tensor:
        """Ancestral sampling of z (B, d) from z_1 = noise[0], one reverse step per interval.

        Args:
            x: images (B, C, H, W), or None for the unconditional path.
            mask: optional (B, 1, H, W), 1 = observed.
            noise: (T, B, d) standard normal draws: the start and the noise of the T - 1
                stochastic steps (the last step returns the prediction z0_hat itself).
            conditional: use x (else the "no image" context).
        """
        steps, batch, _ = noise.shape
        if steps != self.n_intervals:
            raise ValueError(
                f"noise has {steps} draws per row, not n_intervals {self.n_intervals}"
            )
        ctx = self.context(x, mask, batch, conditional)
        last = self.n_intervals - 1
        z = noise[0]
        for i in range(last, 0, -1):
            lam_t, lam_s = self._log_snr_at(i / last, z), self._log_snr_at((i - 1) / last, z)
            mean, std = reverse_step(z, self._predict(z, lam_t, ctx), lam_t, lam_s, self.variance)
            z = mean + std * noise[last - i + 1]
        return self._predict(z, self._log_snr_at(0.0, z), ctx)

    def _log_snr_at(self, u: float, z: torch.Tensor) -> torch.Tensor:
        """lambda(u) as a (B, 1) column for the rows of z (B, d)."""
        column = torch.full((z.shape[0], 1), u, device=z.device, dtype=z.dtype)
        return log_snr(column, self.log_snr_min, self.log_snr_max)

    def _predict(self, z: torch.Tensor, lam: torch.Tensor, ctx: torch.Tensor) -> torch.Tensor:
        """z0_hat = (z_u - s_u eps_hat) / alpha_u (B, d) at log-SNR lam (B, 1)."""
        eps_hat = self.denoiser(z, lam[:, 0], ctx)
        noise = eps_hat * torch.rsqrt(1.0 + torch.exp(lam))
        return torch.sqrt(1.0 + torch.exp(-lam)) * (z - noise)
