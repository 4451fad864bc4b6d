"""The fixed standard-normal prior N(0, I_d) of ABP (Han et al. 2017)."""

from __future__ import annotations

import torch

from lfbm_lightning.densities import standard_normal_log_prob
from lfbm_lightning.priors.prior import Prior


class GaussianPrior(Prior):
    """p(z) = N(z; 0, I_d). No parameters; ``loss`` is constant in every parameter."""

    def __init__(self, latent_dim: int) -> None:
        super().__init__(latent_dim)
        # A buffer only so the prior follows the model to its device.
        self.register_buffer("_anchor", torch.zeros(()), persistent=False)

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        return standard_normal_log_prob(z)

    def sample(self, n: int, rng: torch.Generator | None = None) -> torch.Tensor:
        anchor = self._anchor
        return torch.randn(
            n, self.latent_dim, generator=rng, device=anchor.device, dtype=anchor.dtype
        )
