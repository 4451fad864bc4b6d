"""The fit of z in evaluation chains: the paper's protocol, or a fast fit with fewer passes.

Both minimise E(z) = ||m * (x - g(z))||^2 / (2 sigma^2) - log p(z) per image from z0 (B, d).
``protocol``: ``n_steps`` of gradient descent z <- z - (s^2 / 2) dE/dz (noise-free Langevin).
``fast``: per-image L-BFGS (:data:`FAST_MEMORY` pairs, Armijo backtracking, trust radius
:data:`FAST_MAX_STEP`), at most ``n_steps`` passes; an image stops once |E_t - E_{t-1}| stays
below :data:`FAST_ATOL` nats and :data:`FAST_RTOL` max(|E|, 1) for :data:`FAST_PATIENCE` steps.
A *generator pass* is one forward of g and one backward to z for one image (:class:`FitResult`).
Why these choices, and the rule's known limit: docs/evaluation_fits.md.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from lfbm_lightning.langevin import EnergyFn, energy_grad, langevin

FITS = ("protocol", "fast")
"""The values of a task's ``fit`` option."""

FAST_MEMORY = 10
"""Curvature pairs (s, y) each image keeps for its L-BFGS direction."""
FAST_MAX_STEP = 0.5
"""Trust radius: the longest step ||z_t - z_{t-1}|| an image takes (z ~ N(0, I) scale)."""
FAST_ARMIJO = 1e-4
"""Sufficient decrease: a step t p is accepted if E(z + t p) <= E(z) + FAST_ARMIJO t g.p."""
FAST_BACKTRACKS = 10
"""Halvings of the step length before a line search gives up."""
FAST_ATOL = 0.05
"""Stopping tolerance on |E_t - E_{t-1}|, in nats."""
FAST_RTOL = 1e-3
"""Stopping tolerance on |E_t - E_{t-1}| / max(|E_{t-1}|, 1)."""
FAST_PATIENCE = 2
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


def protocol_fit(
    z0: torch.Tensor, energy_of: EnergyOf, n_steps: int, step_size: float
) -> FitResult:
    """``n_steps`` noise-free Langevin steps of ``step_size`` on every image (B, d)."""
    rows = torch.arange(z0.shape[0], device=z0.device)
    z = langevin(z0, energy_of(rows), n_steps, step_size, noise=False).z
    return FitResult(z=z, passes=torch.full((z0.shape[0],), n_steps, dtype=torch.long))


class _CurvatureHistory:
    """The last ``memory`` L-BFGS pairs of each image: S, Y (B, m, d) and rho = 1 / (s.y) (B, m),
    in slots t mod m of the step count t; a pair with rho = 0 is absent (not yet made, skipped
    because s.y <= 0, or forgotten) and drops out of the recursion."""

    def __init__(self, z: torch.Tensor, memory: int):
        batch, dim = z.shape
        self.s = z.new_zeros(batch, memory, dim)
        self.y = z.new_zeros(batch, memory, dim)
        self.rho = z.new_zeros(batch, memory)
        self.memory = memory

    def direction(self, rows: torch.Tensor, grad: torch.Tensor, t: int) -> torch.Tensor:
        """-H g (A, d) for the images ``rows`` (A,) with gradients g (A, d): the two-loop
        recursion over the pairs, newest (slot (t - 1) mod m) first, with the initial inverse
        Hessian (s.y / y.y) I of the newest pair; with no pair, H = I (steepest descent; the
        trust radius caps the step length)."""
        slots = [(t - 1 - k) % self.memory for k in range(self.memory)]
        s, y, rho = self.s[rows], self.y[rows], self.rho[rows]
        q, alphas = grad.clone(), []
        for j in slots:
            alpha = rho[:, j] * (s[:, j] * q).sum(1)
            q = q - alpha[:, None] * y[:, j]
            alphas.append(alpha)
        s_new, y_new = s[:, slots[0]], y[:, slots[0]]
        scale = (s_new * y_new).sum(1) / y_new.square().sum(1).clamp_min(1e-30)
        r = torch.where(rho[:, slots[0]] > 0, scale, 1.0)[:, None] * q
        for j, alpha in zip(reversed(slots), reversed(alphas), strict=True):
            beta = rho[:, j] * (y[:, j] * r).sum(1)
            r = r + (alpha - beta)[:, None] * s[:, j]
        return -r

    def has_pairs(self, rows: torch.Tensor) -> torch.Tensor:
        return (self.rho[rows] > 0).any(1)

    def add(self, rows: torch.Tensor, s: torch.Tensor, y: torch.Tensor, t: int) -> None:
        """Store the pairs (A, d) of ``rows`` in slot t mod m; a pair with s.y <= 0 (no positive
        curvature along s) is stored as absent."""
        sy = (s * y).sum(1)
        keep = sy > 0
        slot = t % self.memory
        self.s[rows, slot] = torch.where(keep[:, None], s, 0.0)
        self.y[rows, slot] = torch.where(keep[:, None], y, 0.0)
        self.rho[rows, slot] = torch.where(keep, 1.0 / sy.clamp_min(1e-30), 0.0)

    def forget(self, rows: torch.Tensor) -> None:
        self.rho[rows] = 0.0


def fast_fit(
    z0: torch.Tensor,
    energy_of: EnergyOf,
    max_passes: int,
    rtol: float = FAST_RTOL,
    patience: int = FAST_PATIENCE,
    atol: float = FAST_ATOL,
    max_step: float = FAST_MAX_STEP,
    memory: int = FAST_MEMORY,
) -> FitResult:
    """L-BFGS on z from z0 (B, d) with the per-image stopping rule (module docstring), at most
    ``max_passes`` generator passes (energy evaluations) per image.

    A step of image i from z with gradient g: direction p = -H g (:class:`_CurvatureHistory`;
    -g where g.p >= 0), shortened to ||p|| <= ``max_step``; then step lengths 1, 1/2, 1/4, ...
    until E(z + a p) <= E(z) + FAST_ARMIJO a g.p (each try one pass, of the images still
    trying). The accepted step adds the pair (s, y) = (a p, g(z + a p) - g). A line search that
    fails after FAST_BACKTRACKS halvings forgets the image's pairs (the next step is along -g);
    one that fails along -g, or an image out of passes, stops the image at its last accepted z.
    """
    z = z0.detach().clone()
    batch = z.shape[0]
    passes = torch.zeros(batch, dtype=torch.long, device=z.device)
    calm = torch.zeros(batch, dtype=torch.long, device=z.device)
    history = _CurvatureHistory(z, memory)
    rows = torch.arange(batch, device=z.device)
    energy, grad = energy_grad(z, energy_of(rows))
    energy = energy.float()
    passes += 1
    active = rows[passes < max_passes]
    t = 0
    while active.numel() > 0:
        g = grad[active]
        p = history.direction(active, g, t)
        uphill = (g * p).sum(1) >= 0
        p = torch.where(uphill[:, None], -g, p)
        history.forget(active[uphill])
        p = p * (max_step / p.norm(dim=1, keepdim=True).clamp_min(1e-30)).clamp_max(1.0)
        along_gradient = ~history.has_pairs(active)
        found, step, new_energy, new_grad = _backtrack(
            z[active], energy[active], g, p, active, energy_of, passes, max_passes
        )
        history.add(active[found], step[found], new_grad[found] - g[found], t)
        change = (new_energy - energy[active]).abs()
        tolerance = (rtol * energy[active].abs().clamp_min(1.0)).clamp_max(atol)
        moved = active[found]
        z[moved] = z[moved] + step[found]
        energy[moved], grad[moved] = new_energy[found], new_grad[found]
        calm[active] = torch.where(found & (change < tolerance), calm[active] + 1, 0)
        history.forget(active[~found])
        calm[active[~found & along_gradient]] = patience  # no descent along -g: stop
        t += 1
        active = active[(calm[active] < patience) & (passes[active] < max_passes)]
    return FitResult(z=z.detach(), passes=passes.cpu())


def _backtrack(
    z: torch.Tensor,
    energy: torch.Tensor,
    grad: torch.Tensor,
    direction: torch.Tensor,
    rows: torch.Tensor,
    energy_of: EnergyOf,
    passes: torch.Tensor,
    max_passes: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Armijo backtracking of the images ``rows`` (A,) at z (A, d), E (A,), g and p (A, d);
    adds each evaluation to ``passes`` (B,). Returns (found (A,) bool, accepted step a p,
    E and g at z + a p); where not found, the last try's values, unused by the caller."""
    length = torch.ones(rows.numel(), device=z.device)
    slope = (grad * direction).sum(1)
    new_energy, new_grad = torch.empty_like(energy), torch.empty_like(grad)
    found = torch.zeros(rows.numel(), dtype=torch.bool, device=z.device)
    trying = torch.arange(rows.numel(), device=z.device)
    for _ in range(FAST_BACKTRACKS + 1):
        step = length[trying, None] * direction[trying]
        e, g = energy_grad(z[trying] + step, energy_of(rows[trying]))
        passes[rows[trying]] += 1
        new_energy[trying], new_grad[trying] = e.float(), g
        ok = new_energy[trying] <= energy[trying] + FAST_ARMIJO * length[trying] * slope[trying]
        found[trying[ok]] = True
        trying = trying[~ok & (passes[rows[trying]] < max_passes)]
        if trying.numel() == 0:
            break
        length[trying] = length[trying] / 2
    return found, length[:, None] * direction, new_energy, new_grad


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
