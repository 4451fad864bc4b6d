"""The second stage of the two-stage VAE (Dai and Wipf 2019): a small VAE in latent space.

Stage 1 is a VAE under N(0, I) (``training_log_prob``); stage 2 models its codes z in R^d
with u ~ N(0, I_d), z | u ~ N(f(u), gamma I_d), q(u | z) = N(m(z), diag s^2(z)), f, m, s MLPs
and gamma learned. It is fitted alongside stage 1, one step per batch on the batch's codes
(``loss`` = -ELBO), and samples z by ancestral sampling. ``log_prob`` is its ELBO, a lower
bound on log p(z), so the prior is not ``normalized``.
"""

from __future__ import annotations

import torch
from torch import nn

from lfbm_lightning.densities import standard_normal_log_prob
from lfbm_lightning.priors.learnable_gaussian import diag_normal_log_prob
from lfbm_lightning.priors.prior import Prior


def mlp(d_in: int, d_out: int, width: int, hidden_layers: int) -> nn.Sequential:
    """``hidden_layers`` Linear + ReLU blocks of ``width``, then a Linear to d_out (0: linear)."""
    layers: list[nn.Module] = []
    for _ in range(hidden_layers):
        layers += [nn.Linear(d_in, width), nn.ReLU()]
        d_in = width
    return nn.Sequential(*layers, nn.Linear(d_in, d_out))


class TwoStageVAEPrior(Prior):
    """p(z) = int N(z; f(u), gamma I) N(u; 0, I) du, the second-stage VAE of Dai and Wipf.

    For codes z (B, d) and draws u = m(z) + s(z) * eps (eps (P, B, d)) the ELBO estimate is

        ELBO(z) = mean_p [ log N(z; f(u_p), gamma I) + log N(u_p; 0, I) - log q(u_p | z) ],

    exact (equal to log p(z) for every draw) when q is the true posterior p(u | z).
    ``log_prob`` uses ``n_probes`` fixed draws (a buffer), so it is deterministic, per example
    and differentiable in z; ``loss`` uses one fresh draw per code from ``rng``.

    Args:
        latent_dim: d (u has the same size, as in Dai and Wipf).
        width: hidden width of the encoder m, s and the decoder f.
        hidden_layers: hidden layers of each MLP (0: linear maps).
        n_probes: P, fixed draws of ``log_prob``.
    """

    normalized = False

    def __init__(
        self, latent_dim: int, width: int = 256, hidden_layers: int = 2, n_probes: int = 16
    ) -> None:
        super().__init__(latent_dim)
        d = self.latent_dim
        self.encoder = mlp(d, 2 * d, int(width), int(hidden_layers))
        self.decoder = mlp(d, d, int(width), int(hidden_layers))
        self.log_gamma = nn.Parameter(torch.zeros(()))
        probes = torch.randn(int(n_probes), 1, d, generator=torch.Generator().manual_seed(0))
        self.register_buffer("probes", probes)

    def training_log_prob(self, z: torch.Tensor) -> torch.Tensor:
        return standard_normal_log_prob(z)

    def elbo(self, z: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """The ELBO estimate (B,) of codes z (B, d), averaged over draws eps (P, B or 1, d)."""
        mean, log_var = self.encoder(z).chunk(2, dim=-1)
        log_std = 0.5 * log_var
        u = mean + torch.exp(log_std) * eps  # (P, B, d)
        log_std_z = 0.5 * self.log_gamma.expand(z.shape[-1])
        log_joint = diag_normal_log_prob(z, self.decoder(u), log_std_z)
        log_joint = log_joint + standard_normal_log_prob(u)
        return (log_joint - diag_normal_log_prob(u, mean, log_std)).mean(0)

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        return self.elbo(z, self.probes.to(z.dtype))

    def loss(
        self,
        z_posterior: torch.Tensor,
        rng: torch.Generator | None = None,
        start: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """-mean ELBO of the codes with one reparameterised draw each: fits stage 2 (no
        chains: ``start`` is unused)."""
        eps = torch.randn(
            (1, *z_posterior.shape),
            generator=rng,
            device=z_posterior.device,
            dtype=z_posterior.dtype,
        )
        return -self.elbo(z_posterior, eps).mean()

    @torch.no_grad()
    def sample(self, n: int, rng: torch.Generator | None = None) -> torch.Tensor:
        like = {"device": self.log_gamma.device, "dtype": self.log_gamma.dtype}
        u = torch.randn(n, self.latent_dim, generator=rng, **like)
        noise = torch.randn(n, self.latent_dim, generator=rng, **like)
        return self.decoder(u) + torch.exp(0.5 * self.log_gamma) * noise
