"""The latent energy-based prior of LEBM (Pang et al., NeurIPS 2020)."""

from __future__ import annotations

import torch
from torch import nn

from lfbm_lightning.densities import standard_normal_log_prob
from lfbm_lightning.langevin import langevin
from lfbm_lightning.priors.prior import Prior

ACTIVATIONS = {"gelu": nn.GELU, "leaky_relu": lambda: nn.LeakyReLU(0.2)}


class EnergyMLP(nn.Module):
    """E_a(z): an MLP d -> width -> width -> 1, returning energies of shape (B,).

    Args:
        latent_dim: d.
        width: hidden width (200 in LEBM, 1000 for CelebA 128).
        activation: ``"gelu"`` or ``"leaky_relu"`` (slope 0.2), after each hidden layer.
    """

    def __init__(self, latent_dim: int, width: int = 200, activation: str = "gelu") -> None:
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(
                f"activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}"
            )
        act = ACTIVATIONS[activation]
        self.net = nn.Sequential(
            nn.Linear(latent_dim, width),
            act(),
            nn.Linear(width, width),
            act(),
            nn.Linear(width, 1),
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z).squeeze(-1)


class EnergyPrior(Prior):
    """p(z) = exp(-E_a(z)) N(z; 0, I) / Z(a): an exponential tilt of the standard normal.

    ``log_prob`` is unnormalised (``normalized = False``): -E_a(z) + log N(z; 0, I), missing
    -log Z(a). Prior samples: short-run Langevin on U(z) = E_a(z) + |z|^2 / 2 from N(0, I)
    (LEBM's K0 and s0: docs/paper.md); it works inside ``torch.no_grad()`` (the chain enables
    gradients with respect to z itself).

    Maximum likelihood: grad_a of -E_{p(z|x)}[log p_a(z)] equals
    E_{p(z|x)}[grad_a E_a(z)] - E_{p_a(z)}[grad_a E_a(z)], so ``loss`` is
    mean E_a(z_posterior) - mean E_a(z_prior), with as many (detached) prior samples as
    posterior samples.

    Args:
        latent_dim: d.
        width: hidden width of the energy MLP.
        activation: ``"gelu"`` or ``"leaky_relu"``.
        n_steps: K0, Langevin steps per prior sample.
        step_size: s0, the Langevin step size.
        energy_net: optional module mapping z (B, d) to E_a(z) (B,), replacing the MLP.
    """

    normalized = False
    chains_in_loss = True

    def __init__(
        self,
        latent_dim: int,
        width: int = 200,
        activation: str = "gelu",
        n_steps: int = 60,
        step_size: float = 0.4,
        energy_net: nn.Module | None = None,
    ) -> None:
        super().__init__(latent_dim)
        if energy_net is None:
            energy_net = EnergyMLP(self.latent_dim, width, activation)
        self.energy_net = energy_net
        self.n_steps = int(n_steps)
        self.step_size = float(step_size)

    def energy(self, z: torch.Tensor) -> torch.Tensor:
        """The tilt E_a(z), shape (B,)."""
        return self.energy_net(z)

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        return standard_normal_log_prob(z) - self.energy(z)

    def sample(
        self, n: int, rng: torch.Generator | None = None, start: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Short-run Langevin from ``start`` (n, d), or from N(0, I) drawn from ``rng``; the
        noise is drawn from ``rng``."""
        dtype = next((p.dtype for p in self.parameters()), torch.get_default_dtype())
        if start is None:
            z0 = torch.randn(n, self.latent_dim, generator=rng, device=self.device, dtype=dtype)
        else:
            z0 = start.to(dtype)

        def energy(z: torch.Tensor) -> torch.Tensor:
            return -self.log_prob(z)

        return langevin(z0, energy, self.n_steps, self.step_size, rng=rng).z

    def loss(
        self,
        z_posterior: torch.Tensor,
        rng: torch.Generator | None = None,
        start: torch.Tensor | None = None,
    ) -> torch.Tensor:
        z_prior = self.sample(z_posterior.shape[0], rng, start)
        return self.energy(z_posterior).mean() - self.energy(z_prior).mean()
