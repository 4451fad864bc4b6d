"""A mixture of K diagonal Gaussians with learnable weights (the slides' prior form 3)."""

from __future__ import annotations

import math

import torch
from torch import nn

from lfbm_lightning.priors.learnable_gaussian import diag_normal_log_prob
from lfbm_lightning.priors.prior import Prior


class MixturePrior(Prior):
    """p(z) = sum_k pi_k N(z; mu_k, diag sigma_k^2), all parameters learned.

    pi = softmax(logits). The density is evaluated stably in log space:

        log p(z) = logsumexp_k [log pi_k + log N(z; mu_k, diag sigma_k^2)].

    Sampling is exact (ancestral): k ~ Categorical(pi), then z ~ N(mu_k, diag sigma_k^2).
    Weights start uniform, means at N(0, init_spread^2 I) draws (the global torch RNG, seeded
    by the run) so the components differ, every sigma at ``init_std``.

    Args:
        latent_dim: d.
        n_components: K >= 1.
        init_spread: standard deviation of the initial means.
        init_std: initial standard deviation of every component.
    """

    def __init__(
        self,
        latent_dim: int,
        n_components: int = 10,
        init_spread: float = 1.0,
        init_std: float = 1.0,
    ) -> None:
        super().__init__(latent_dim)
        if n_components < 1:
            raise ValueError(f"n_components must be >= 1, got {n_components}")
        if init_std <= 0:
            raise ValueError(f"init_std must be > 0, got {init_std}")
        self.logits = nn.Parameter(torch.zeros(n_components))
        self.means = nn.Parameter(torch.randn(n_components, self.latent_dim) * init_spread)
        self.log_stds = nn.Parameter(
            torch.full((n_components, self.latent_dim), math.log(init_std))
        )

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        # (B, 1, d) against (K, d) -> per-component log densities (B, K)
        component = diag_normal_log_prob(z.unsqueeze(1), self.means, self.log_stds)
        return torch.logsumexp(torch.log_softmax(self.logits, 0) + component, dim=1)

    @torch.no_grad()
    def sample(self, n: int, rng: torch.Generator | None = None) -> torch.Tensor:
        k = torch.multinomial(torch.softmax(self.logits, 0), n, replacement=True, generator=rng)
        eps = torch.randn(
            n, self.latent_dim, generator=rng, device=self.device, dtype=self.means.dtype
        )
        return self.means[k] + torch.exp(self.log_stds[k]) * eps
