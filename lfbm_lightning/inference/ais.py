"""Annealed importance sampling (AIS) of log p(x), and the BDMC upper bound, as pure functions.

Geometric path from the prior to the posterior, 0 = beta_0 < ... < beta_T = 1:
f_t(z) = p(z) p(x | z)^beta_t, Z_0 = 1, Z_T = p(x). A chain z_1 ~ p(z), z_{t+1} ~ HMC_t(. | z_t)
(leaving f_t / Z_t invariant) carries log w = sum_t (beta_t - beta_{t-1}) log p(x | z_t), with
E[w] = p(x): logmeanexp over C chains is a stochastic lower bound of log p(x). Run from an exact
posterior sample with the schedule reversed, the same sum has E[w] = 1 / p(x), so -logmeanexp
is a stochastic upper bound (bidirectional Monte Carlo, Grosse et al. 2015): on data simulated
from the model the true log p(x) lies between them. Tensors: B images x C chains x d latents.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from lfbm_lightning.inference.importance import ImportanceEstimate, importance_estimate

LogDensityFn = Callable[[torch.Tensor], torch.Tensor]
"""Maps latents z (N, d) to a log-density (N,) (N = B x C chains, image-major)."""

SCHEDULES = ("sigmoid", "linear")

ADAPT_FACTOR = 1.1
"""Per transition, each image's step size is multiplied (acceptance above target) or divided
(below) by this factor."""


def beta_schedule(
    n_distributions: int, kind: str = "sigmoid", sharpness: float = 4.0
) -> torch.Tensor:
    """Inverse temperatures beta_0 = 0 < ... < beta_T = 1, T = ``n_distributions``, (T + 1,).

    ``linear``: beta_t = t / T. ``sigmoid`` (Grosse et al. 2015): s_t = sigmoid(sharpness
    (2 t / T - 1)) rescaled to [0, 1], denser near both ends, where log p(x | z) changes most.
    """
    if int(n_distributions) < 1:
        raise ValueError(f"n_distributions must be >= 1, got {n_distributions}")
    u = torch.linspace(0.0, 1.0, int(n_distributions) + 1, dtype=torch.float64)
    if kind == "linear":
        return u
    if kind != "sigmoid":
        raise ValueError(f"schedule must be one of {SCHEDULES}, got {kind!r}")
    s = torch.sigmoid(sharpness * (2 * u - 1))
    return (s - s[0]) / (s[-1] - s[0])


@dataclass
class AISRun:
    """One annealing run over B images with C chains each.

    Attributes:
        log_w: log weights sum_t (beta_t - beta_{t-1}) log p(x | z_t), (B, C).
        accept_rate: mean Metropolis-Hastings acceptance over transitions and chains, (B,).
        step_size: each image's leapfrog step size after adaptation, (B,).
        gradient_passes: forward-and-backward passes of prior and decoder per chain.
    """

    log_w: torch.Tensor
    accept_rate: torch.Tensor
    step_size: torch.Tensor
    gradient_passes: int

    def estimate(self) -> ImportanceEstimate:
        """The C chains' weights combined per image as importance weights: log_px =
        logmeanexp_c log w_c (forward: log p(x); reverse: minus the upper bound), its
        standard error sqrt(1 / ESS - 1 / C) and the ESS over chains, each (B,)."""
        return importance_estimate(self.log_w)


@dataclass
class Point:
    """log p(z), log p(x | z) and their gradients at chain states z (N, d)."""

    z: torch.Tensor
    lp: torch.Tensor
    ll: torch.Tensor
    grad_lp: torch.Tensor
    grad_ll: torch.Tensor

    @classmethod
    def at(cls, z: torch.Tensor, log_prior: LogDensityFn, log_lik: LogDensityFn) -> Point:
        """Both log-densities and their gradients from one forward and one backward pass."""
        with torch.enable_grad():
            leaf = z.detach().requires_grad_(True)
            lp, ll = log_prior(leaf), log_lik(leaf)
            (grad_lp,) = torch.autograd.grad(lp.sum(), leaf, retain_graph=True)
            (grad_ll,) = torch.autograd.grad(ll.sum(), leaf)
        return cls(leaf.detach(), lp.detach(), ll.detach(), grad_lp, grad_ll)

    def log_target(self, beta: float) -> torch.Tensor:
        """log f_beta(z) = log p(z) + beta log p(x | z), (N,)."""
        return self.lp + beta * self.ll

    def grad(self, beta: float) -> torch.Tensor:
        """grad_z log f_beta(z), (N, d)."""
        return self.grad_lp + beta * self.grad_ll

    def where(self, take: torch.Tensor, other: Point) -> Point:
        """``other``'s values where ``take`` (N,) is True, this point's elsewhere."""
        column = take.unsqueeze(-1)
        return Point(
            torch.where(column, other.z, self.z),
            torch.where(take, other.lp, self.lp),
            torch.where(take, other.ll, self.ll),
            torch.where(column, other.grad_lp, self.grad_lp),
            torch.where(column, other.grad_ll, self.grad_ll),
        )


def hmc_transition(
    point: Point,
    beta: float,
    step_size: torch.Tensor,
    n_leapfrog: int,
    log_prior: LogDensityFn,
    log_lik: LogDensityFn,
    rng: torch.Generator | None,
) -> tuple[Point, torch.Tensor]:
    """One HMC step leaving f_beta invariant: momentum r ~ N(0, I), ``n_leapfrog`` leapfrog
    steps of size eps (N, 1), accepted with probability min(1, exp(H_0 - H_L)),
    H = -log f_beta(z) + |r|^2 / 2 (one leapfrog step is MALA). Non-finite proposals are
    rejected. Returns the new point and the acceptances (N,) in {0, 1}."""
    r0 = torch.randn(point.z.shape, generator=rng, device=point.z.device, dtype=point.z.dtype)
    r = r0 + 0.5 * step_size * point.grad(beta)
    proposal = point
    for step in range(n_leapfrog):
        proposal = Point.at(proposal.z + step_size * r, log_prior, log_lik)
        r = r + (0.5 if step == n_leapfrog - 1 else 1.0) * step_size * proposal.grad(beta)
    h0 = -point.log_target(beta) + 0.5 * r0.pow(2).sum(-1)
    h1 = -proposal.log_target(beta) + 0.5 * r.pow(2).sum(-1)
    log_u = torch.rand(h0.shape, generator=rng, device=h0.device, dtype=h0.dtype).log()
    accept = torch.nan_to_num(h0 - h1, nan=-math.inf) > log_u
    return point.where(accept, proposal), accept


def annealed_importance_sampling(
    z0: torch.Tensor,
    log_prior: LogDensityFn,
    log_lik: LogDensityFn,
    betas: torch.Tensor,
    *,
    n_leapfrog: int = 5,
    step_size: float = 0.05,
    target_accept: float | None = 0.65,
    rng: torch.Generator | None = None,
) -> AISRun:
    """Anneal C chains per image along ``betas`` (module docstring), from z0 (B, C, d).

    Forward (lower bound): betas increasing from 0 to 1, z0 ~ p(z). Reverse (BDMC upper bound):
    betas decreasing from 1 to 0, z0 ~ p(z | x) exactly; then -estimate().log_px >= log p(x) in
    expectation. Step t adds (beta_t - beta_{t-1}) log p(x | z) at the current z, then takes an
    HMC transition at beta_t.

    Args:
        z0: starts (B, C, d).
        log_prior: log p(z), (N, d) -> (N,).
        log_lik: log p(x_b | z) with its normaliser, (N, d) -> (N,), row n of image n // C.
        betas: the schedule (T + 1,), from :func:`beta_schedule` or reversed.
        n_leapfrog: leapfrog steps L per transition (1: MALA).
        step_size: initial leapfrog step size eps.
        target_accept: each image's eps adapts toward this mean acceptance over its chains
            (:data:`ADAPT_FACTOR`); None keeps eps fixed (the transitions then leave every f_t
            exactly invariant, so the bounds hold exactly in expectation).
        rng: generator of the momenta and the accept draws.
    """
    b, c, d = z0.shape
    point = Point.at(z0.reshape(b * c, d), log_prior, log_lik)
    eps = torch.full((b, 1), float(step_size), device=z0.device, dtype=z0.dtype)
    log_w = torch.zeros(b * c, device=z0.device, dtype=torch.float64)
    accepted = torch.zeros(b, device=z0.device, dtype=torch.float64)
    betas = [float(beta) for beta in betas]
    for previous, beta in zip(betas[:-1], betas[1:], strict=True):
        log_w += (beta - previous) * point.ll.double()
        point, accept = hmc_transition(
            point, beta, eps.repeat_interleave(c, 0), n_leapfrog, log_prior, log_lik, rng
        )
        rate = accept.view(b, c).double().mean(1)
        accepted += rate
        if target_accept is not None:
            up = (rate > target_accept).unsqueeze(1)
            eps = torch.where(up, eps * ADAPT_FACTOR, eps / ADAPT_FACTOR)
    n_transitions = len(betas) - 1
    return AISRun(
        log_w=log_w.view(b, c),
        accept_rate=accepted / n_transitions,
        step_size=eps.squeeze(1),
        gradient_passes=1 + n_transitions * n_leapfrog,
    )


__all__ = [
    "ADAPT_FACTOR",
    "AISRun",
    "LogDensityFn",
    "Point",
    "SCHEDULES",
    "annealed_importance_sampling",
    "beta_schedule",
    "hmc_transition",
]
