"""The fit of z in evaluation chains: the paper's protocol, or a fast fit with fewer passes.

Both minimise the posterior energy E(z) = ||m * (x - g(z))||^2 / (2 sigma^2) - log p(z) of
each image from the same start z0 (B, d); they differ in the optimiser and the stopping rule.

- ``protocol`` (default, docs/paper.md#reconstruction-mse): ``n_steps`` steps of gradient
  descent z <- z - (s^2 / 2) dE/dz, i.e. noise-free Langevin. Every image takes ``n_steps``
  generator passes.
- ``fast``: Adam on z (learning rate :data:`FAST_LR`, moments per coordinate, so each image
  follows its own Adam trajectory although one batched call computes all gradients), at most
  ``n_steps`` steps. An image stops when the change of its energy over a step,
  |dE_t| = |E(z_t) - E(z_{t-1})|, stays below both :data:`FAST_ATOL` nats and
  :data:`FAST_RTOL` max(|E_{t-1}|, 1) for :data:`FAST_PATIENCE` consecutive steps; stopped
  images leave the batch, so later passes run on fewer rows.

  Why an absolute tolerance in nats: dE_t = log p(z_{t-1} | x) - log p(z_t | x) is a log-ratio
  of posterior densities. It does not depend on the additive constants of E (the d/2 log 2 pi
  and log-determinants in -log p(z), log normalisers), nor on the size of E: a step under
  FAST_ATOL changes the posterior density of z by a factor below exp(FAST_ATOL), whatever E
  is. A rule relative to E, |dE_t| / |E_{t-1}|, stops early where the constant part of
  -log p(z) dominates E, e.g. on images fitted to an MSE of 1e-3 (E_rec of a few nats against
  a prior term of order d nats). The reconstruction term's share of the tolerance is direct:
  E_rec = D mse / (2 sigma^2), so a 1% MSE change is 0.01 E_rec nats (0.17 nats on SVHN).
  The relative bound only tightens the rule where |E| is below FAST_ATOL / FAST_RTOL = 50
  nats (an energy with no constant, fitted almost exactly), where 0.05 nats would be a large
  share of what is left; above 50 nats FAST_ATOL alone decides.

A *generator pass* is one forward of g plus one backward to z for one image; :class:`FitResult`
counts them exactly (the sum over calls of the rows in each call).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from lfbm_lightning.errors import ConfigError
from lfbm_lightning.langevin import EnergyFn, energy_grad, langevin

FITS = ("protocol", "fast")
"""The values of a task's ``fit`` option."""

FAST_LR = 0.5
"""Adam's learning rate on z (z ~ N(0, I) scale)."""
FAST_BETAS = (0.9, 0.99)
FAST_ATOL = 0.05
"""Stopping tolerance on |E_t - E_{t-1}|, in nats."""
FAST_RTOL = 1e-3
"""Stopping tolerance on |E_t - E_{t-1}| / max(|E_{t-1}|, 1)."""
FAST_PATIENCE = 3
"""Consecutive steps under the tolerance before an image stops."""

EnergyOf = Callable[[torch.Tensor], EnergyFn]
"""Maps the row indices (A,) of the still-active images to the energy of those images."""


@dataclass
class FitResult:
    """Outcome of a fit.

    Attributes:
        z: fitted latents (B, d), detached.
        passes: generator passes per image (B,), int64: the energy evaluations each took.
    """

    z: torch.Tensor
    passes: torch.Tensor


def check_fit(fit: str, key: str = "fit") -> str:
    """``fit`` if it is one of :data:`FITS`, else :class:`ConfigError` naming ``key``."""
    if fit not in FITS:
        raise ConfigError(f"{key} must be one of {list(FITS)}, got {fit!r}")
    return fit


def protocol_fit(
    z0: torch.Tensor, energy_of: EnergyOf, n_steps: int, step_size: float
) -> FitResult:
    """``n_steps`` noise-free Langevin steps of ``step_size`` on every image (B, d)."""
    rows = torch.arange(z0.shape[0], device=z0.device)
    z = langevin(z0, energy_of(rows), n_steps, step_size, noise=False).z
    return FitResult(z=z, passes=torch.full((z0.shape[0],), n_steps, dtype=torch.long))


def fast_fit(
    z0: torch.Tensor,
    energy_of: EnergyOf,
    max_steps: int,
    lr: float = FAST_LR,
    rtol: float = FAST_RTOL,
    patience: int = FAST_PATIENCE,
    atol: float = FAST_ATOL,
) -> FitResult:
    """Adam on z from z0 (B, d) with the per-image stopping rule (module docstring), at most
    ``max_steps`` steps.

    Adam (bias-corrected, moments m, v per coordinate, g = dE/dz at z_{t-1}):
    m <- b1 m + (1 - b1) g, v <- b2 v + (1 - b2) g^2, z <- z - lr m_hat / (sqrt(v_hat) + 1e-8).
    Image i stops after ``patience`` consecutive steps with |E(z_{t-1}) - E(z_{t-2})| below
    ``atol`` nats and ``rtol`` max(|E(z_{t-2})|, 1); its passes are the energy evaluations it
    took.
    """
    b1, b2 = FAST_BETAS
    z = z0.detach().clone()
    m, v = torch.zeros_like(z), torch.zeros_like(z)
    passes = torch.zeros(z.shape[0], dtype=torch.long)
    calm = torch.zeros(z.shape[0], dtype=torch.long, device=z.device)
    previous = torch.full((z.shape[0],), float("nan"), device=z.device)
    active = torch.arange(z.shape[0], device=z.device)
    for t in range(1, max_steps + 1):
        energy, grad = energy_grad(z[active], energy_of(active))
        passes[active.cpu()] += 1
        m[active] = b1 * m[active] + (1 - b1) * grad
        v[active] = b2 * v[active] + (1 - b2) * grad.square()
        m_hat, v_hat = m[active] / (1 - b1**t), v[active] / (1 - b2**t)
        z[active] = z[active] - lr * m_hat / (v_hat.sqrt() + 1e-8)
        energy = energy.float()
        change = (energy - previous[active]).abs()  # nan at t = 1: not calm
        tolerance = (rtol * previous[active].abs().clamp_min(1.0)).clamp_max(atol)
        calm[active] = torch.where(change < tolerance, calm[active] + 1, 0)
        previous[active] = energy
        active = active[calm[active] < patience]
        if active.numel() == 0:
            break
    return FitResult(z=z.detach(), passes=passes)


@dataclass
class PassCount:
    """Generator passes summed over the fits of a task (for ``metrics.json``)."""

    passes: int = 0
    images: int = 0

    def add(self, result: FitResult) -> None:
        self.passes += int(result.passes.sum())
        self.images += int(result.passes.numel())

    def results(self, fit: str) -> dict[str, object]:
        """``fit``, ``generator_passes`` (total) and ``passes_per_fit`` (mean per image fit)."""
        per_fit = self.passes / self.images if self.images else 0.0
        return {"fit": fit, "generator_passes": self.passes, "passes_per_fit": per_fit}
