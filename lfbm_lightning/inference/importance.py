"""Importance-sampled marginal likelihood log p(x) of a latent-variable model, as pure functions.

For any proposal q(z | x) positive wherever p(z | x) is, with z_k ~ q i.i.d.,
    log p_K(x) = log (1/K) sum_k w_k,   log w_k = log p(x | z_k) + log p(z_k) - log q(z_k | x),
a stochastic lower bound of log p(x), tight as K grows; its standard error sqrt(1 / ESS - 1 / K),
ESS = (sum w)^2 / sum w^2, is trusted where the Pareto k-hat of the weights is <= 0.7. The
proposal (:class:`StudentTMixture`): a Student-t or Gaussian per posterior mode, scaled by the
exact Hessian of -log p(x, z) there and weighted by the mass the Laplace approximation puts
under it, plus a defensive N(0, I) component (docs/likelihood.md).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import torch
from arviz_stats.base import array_stats

from lfbm_lightning.densities import (
    log_mean_exp,
    standard_normal_log_prob,
)

LogJointFn = Callable[[torch.Tensor], torch.Tensor]
"""Maps latents z (B, K, d), K samples for each of B images, to log p(x_b, z_bk) (B, K)."""

CURVATURE_FLOOR = 0.1
"""Least curvature of a Laplace component along any direction (std at most 1 / sqrt(0.1))."""
KHAT_THRESHOLD = 0.7
"""Pareto k-hat above which an importance estimate and its standard error are not trusted."""
KHAT_MIN_SAMPLES = 25
"""Fewest importance samples with a k-hat: it is fitted to the largest K / 5 >= 5 weights."""


def energy_hessian(
    energy: Callable[[torch.Tensor], torch.Tensor], z: torch.Tensor
) -> torch.Tensor:
    """The exact Hessian d^2 E / dz^2 at each row of z (N, d), by autograd: (N, d, d).

    ``energy`` maps z (N, d) to (N,), row n depending on z_n alone (e.g. E(z) = -log p(x, z)
    of N images, prior curvature included). Row i of every Hessian is the gradient of
    (dE/dz)_i, one reverse pass through the gradient's graph: d such passes in all.
    """
    with torch.enable_grad():
        z = z.detach().requires_grad_(True)
        (grad,) = torch.autograd.grad(energy(z).sum(), z, create_graph=True)
        rows = [
            torch.autograd.grad(grad[:, i].sum(), z, retain_graph=i < z.shape[1] - 1)[0]
            for i in range(z.shape[1])
        ]
    return torch.stack(rows, dim=1).detach()


def laplace_precision(hessian: torch.Tensor, floor: float = CURVATURE_FLOOR) -> torch.Tensor:
    """A positive definite precision from Hessians H (N, d, d) of E = -log p(x, z).

    With H = U diag(lambda) U^T (symmetrised), Lambda = U diag(max(|lambda|, floor)) U^T: H
    itself at a strict minimum; along a direction of negative or near-zero curvature (a
    saddle, a flat posterior, a fit stopped early) the proposal is wide, std <= floor^-1/2.
    """
    eigenvalues, vectors = torch.linalg.eigh(0.5 * (hessian + hessian.transpose(-1, -2)))
    curvature = eigenvalues.abs().clamp_min(floor)
    return (vectors * curvature.unsqueeze(-2)) @ vectors.transpose(-1, -2)


def laplace_log_mass(energy: torch.Tensor, precision: torch.Tensor) -> torch.Tensor:
    """Log of the posterior mass the Laplace approximation puts under each mode, (B, M).

    For E(z) = -log p(x, z) + c with modes z_m and precisions Lambda_m (B, M, d, d):
    log int exp(-E) near z_m ~ -E(z_m) + (d / 2) log 2 pi - (1 / 2) log det Lambda_m. Only
    differences between an image's modes matter (c and the 2 pi term cancel in the weights).

    Args:
        energy: E(z_m), (B, M).
        precision: Lambda_m, symmetric positive definite, (B, M, d, d).
    """
    return -energy - 0.5 * torch.logdet(precision)


@dataclass
class StudentTMixture:
    """Per-image proposal q(z | x_b) = a N(z; 0, I) + (1 - a) sum_m pi_bm t_nu(z; mu_bm, S_bm).

    Each component is a multivariate Student-t with nu degrees of freedom (a Gaussian when
    ``df`` is None), location mu and scale S = L L^T:

        log t_nu(z) = lgamma((nu + d) / 2) - lgamma(nu / 2) - (d / 2) log(nu pi)
                      - log|det L| - ((nu + d) / 2) log(1 + |L^-1 (z - mu)|^2 / nu),

    sampled as z = mu + L eps sqrt(nu / u), eps ~ N(0, I_d), u ~ chi^2_nu (a sum of nu squared
    standard normals: ``df`` is an integer). The defensive component, weight a, is N(0, I);
    pi_b = softmax(``mixing_logits``_b), uniform when None.

    Attributes:
        means: mu, (B, M, d).
        scale_tril: L, lower-triangular with positive diagonal, (B, M, d, d).
        df: nu >= 1, or None for Gaussian components.
        defensive_weight: a in [0, 1).
        mixing_logits: unnormalised log pi, (B, M), e.g. :func:`laplace_log_mass`; None: 1 / M.
    """

    means: torch.Tensor
    scale_tril: torch.Tensor
    df: int | None = 5
    defensive_weight: float = 0.1
    mixing_logits: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if self.df is not None and int(self.df) < 1:
            raise ValueError(f"df must be None (Gaussian) or an integer >= 1, got {self.df}")
        if not 0 <= self.defensive_weight < 1:
            raise ValueError(f"defensive_weight must be in [0, 1), got {self.defensive_weight}")

    @classmethod
    def from_precision(
        cls,
        means: torch.Tensor,
        precision: torch.Tensor,
        inflation: float = 1.5,
        df: int | None = 5,
        defensive_weight: float = 0.1,
        mixing_logits: torch.Tensor | None = None,
    ) -> StudentTMixture:
        """Components centred on ``means`` (B, M, d) with scale S = inflation^2 precision^-1.

        Args:
            means: mu, (B, M, d).
            precision: symmetric positive definite, (B, M, d, d).
            inflation: factor on the standard deviations (> 1 widens the proposal).
            df: nu, or None for Gaussian components.
            defensive_weight: a.
            mixing_logits: unnormalised log pi, (B, M); None: uniform.
        """
        covariance = torch.cholesky_inverse(torch.linalg.cholesky(precision))
        scale_tril = inflation * torch.linalg.cholesky(covariance)
        return cls(means, scale_tril, df, defensive_weight, mixing_logits)

    @property
    def n_components(self) -> int:
        return self.means.shape[1]

    def log_mixing_weights(self) -> torch.Tensor:
        """log pi, normalised over the M components, (B, M)."""
        if self.mixing_logits is None:
            return torch.full(self.means.shape[:2], -math.log(self.n_components)).to(self.means)
        return torch.log_softmax(self.mixing_logits.to(self.means), dim=1)

    def sample(self, k: int, rng: torch.Generator | None = None) -> torch.Tensor:
        """K i.i.d. draws per image, (B, K, d): a component is picked for each draw at random
        with the mixture weights, then drawn from."""
        b, m, d = self.means.shape
        device, dtype = self.means.device, self.means.dtype

        def randn(*shape: int) -> torch.Tensor:
            return torch.randn(shape, generator=rng, device=device, dtype=dtype)

        weights = torch.cat(
            [
                (1 - self.defensive_weight) * self.log_mixing_weights().exp(),
                torch.full((b, 1), self.defensive_weight, device=device, dtype=dtype),
            ],
            dim=1,
        )  # (B, M + 1)
        which = torch.multinomial(weights, k, replacement=True, generator=rng)
        comp = which.clamp(max=m - 1)  # (B, K); the defensive draws are replaced below
        mu = torch.gather(self.means, 1, comp.unsqueeze(-1).expand(b, k, d))
        scale = torch.gather(self.scale_tril, 1, comp[..., None, None].expand(b, k, d, d))
        step = (scale @ randn(b, k, d, 1)).squeeze(-1)
        if self.df is not None:
            chi2 = randn(b, k, int(self.df)).pow(2).sum(-1, keepdim=True)
            step = step * torch.sqrt(self.df / chi2)
        return torch.where((which == m).unsqueeze(-1), randn(b, k, d), mu + step)

    def component_log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """log density of every Student-t component at z (B, K, d): (B, K, M)."""
        d = z.shape[-1]
        eye = torch.eye(d, dtype=z.dtype, device=z.device)
        inverse = torch.linalg.solve_triangular(self.scale_tril, eye, upper=False)  # (B, M, d, d)
        diff = z.unsqueeze(2) - self.means.unsqueeze(1)  # (B, K, M, d)
        maha = torch.einsum("bmij,bkmj->bkmi", inverse, diff).pow(2).sum(-1)  # (B, K, M)
        log_det = self.scale_tril.diagonal(dim1=-2, dim2=-1).log().sum(-1).unsqueeze(1)
        if self.df is None:
            return -0.5 * maha - log_det - 0.5 * d * math.log(2 * math.pi)
        nu = float(self.df)
        const = math.lgamma((nu + d) / 2) - math.lgamma(nu / 2) - 0.5 * d * math.log(nu * math.pi)
        return const - log_det - 0.5 * (nu + d) * torch.log1p(maha / nu)

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """log q(z | x_b) for z (B, K, d): (B, K)."""
        weighted = self.component_log_prob(z) + self.log_mixing_weights().unsqueeze(1)
        mixture = torch.logsumexp(weighted, dim=-1)
        if self.defensive_weight == 0:
            return mixture
        return torch.logaddexp(
            mixture + math.log1p(-self.defensive_weight),
            standard_normal_log_prob(z) + math.log(self.defensive_weight),
        )


def importance_log_weights(
    log_joint: LogJointFn,
    proposal: StudentTMixture,
    n_samples: int,
    rng: torch.Generator | None = None,
    chunk: int | None = None,
) -> torch.Tensor:
    """log w_bk = log p(x_b, z_bk) - log q(z_bk | x_b) for K i.i.d. z_bk ~ q(z | x_b).

    Args:
        log_joint: z (B, k, d) -> log p(x_b, z) (B, k), with every normaliser included.
        proposal: q(z | x_b) for the B images.
        n_samples: K >= 1.
        rng: generator of the draws.
        chunk: draws per image handled at once (memory: B x chunk decoded images); None: all.

    Returns:
        log w, shape (B, K).
    """
    if n_samples < 1:
        raise ValueError(f"n_samples must be >= 1, got {n_samples}")
    chunk = n_samples if chunk is None else int(chunk)
    parts = []
    for start in range(0, n_samples, chunk):
        z = proposal.sample(min(chunk, n_samples - start), rng)
        with torch.no_grad():
            parts.append(log_joint(z) - proposal.log_prob(z))
    return torch.cat(parts, dim=1)


def pareto_khat(log_w: torch.Tensor) -> torch.Tensor:
    """Pareto k-hat of the importance weights of each image (Vehtari et al., PSIS), (B,).

    The shape k of a generalized Pareto fitted (Zhang & Stephens) to the M = min(K / 5,
    3 sqrt(K)) largest of the K weights w_k = exp(log w_k) (B, K) (ArviZ's ``psislw``, which
    takes -log w). k < 0.5: the weights have a finite variance; 0.5 <= k <= 0.7: the estimate
    still converges, slowly; k > :data:`KHAT_THRESHOLD`: it cannot be trusted, nor its standard
    error. NaN where K < :data:`KHAT_MIN_SAMPLES` (too few weights for a tail); -inf where the
    largest weights are all equal (no tail at all).
    """
    k = log_w.shape[1]
    khat = torch.full(log_w.shape[:1], math.nan, dtype=torch.float64)
    if k < KHAT_MIN_SAMPLES:
        return khat
    tail = math.floor(3 * math.sqrt(k)) if k > 225 else k // 5  # as ArviZ sizes it
    largest = log_w.detach().double().cpu().topk(tail, dim=1).values
    flat = largest[:, 0] == largest[:, -1]  # ArviZ refuses a tail of equal weights
    khat[flat] = -math.inf
    if not flat.all():
        values = (-log_w[~flat.to(log_w.device)]).detach().double().cpu().numpy()
        with warnings.catch_warnings():  # log1p of <= -1 in its profile grid for near-equal tails
            warnings.simplefilter("ignore", RuntimeWarning)
            khat[~flat] = torch.as_tensor(array_stats.psislw(values, axis=-1)[1]).double()
    return khat


@dataclass
class ImportanceEstimate:
    """The importance-sampling estimate for B images.

    Attributes:
        log_px: log p_K(x) = logmeanexp_k log w_k, (B,).
        mc_se: its Monte-Carlo standard error, sqrt(1 / ESS - 1 / K), (B,); meaningful only
            where :attr:`trusted`.
        ess: effective sample size (sum w)^2 / sum w^2, in [1, K], (B,).
        khat: Pareto k-hat of the weights (:func:`pareto_khat`), (B,) float64.
    """

    log_px: torch.Tensor
    mc_se: torch.Tensor
    ess: torch.Tensor
    khat: torch.Tensor

    @property
    def trusted(self) -> torch.Tensor:
        """k-hat <= :data:`KHAT_THRESHOLD`, (B,) bool (False where k-hat is NaN)."""
        return self.khat <= KHAT_THRESHOLD


def importance_estimate(log_w: torch.Tensor) -> ImportanceEstimate:
    """Combine log weights (B, K) into log p_K(x), its standard error, the ESS and k-hat."""
    k = log_w.shape[1]
    normalised = torch.softmax(log_w, dim=1)
    ess = 1.0 / normalised.pow(2).sum(1)
    mc_se = torch.sqrt((1.0 / ess - 1.0 / k).clamp(min=0.0))
    return ImportanceEstimate(log_mean_exp(log_w, dim=1), mc_se, ess, pareto_khat(log_w))


@dataclass
class LogNormalizer:
    """A Monte-Carlo estimate of log Z = log E_{N(0, I)}[exp(-E(z))] (an EBM's normaliser).

    Attributes:
        log_z: the estimate log Z_n (E[log Z_n] <= log Z by Jensen: an estimate, not exact).
        se: its standard error, sqrt(1 / ESS - 1 / n).
        ess: effective sample size of the n draws.
        n: number of draws.
    """

    log_z: float
    se: float
    ess: float
    n: int


@torch.no_grad()
def tilt_log_normalizer(
    energy: Callable[[torch.Tensor], torch.Tensor],
    latent_dim: int,
    n_samples: int,
    rng: torch.Generator | None = None,
    chunk: int = 10_000,
    device: torch.device | str = "cpu",
) -> LogNormalizer:
    """Estimate log Z for p(z) = exp(-E(z)) N(z; 0, I) / Z by sampling the base N(0, I).

    Z = E_{z ~ N(0, I)}[exp(-E(z))], so log Z_n = logmeanexp_i (-E(z_i)). Reliable while the
    tilt is mild enough that many base draws carry weight (see ``ess``): in low d, or for an
    EBM close to its base.

    Args:
        energy: E, mapping z (n, d) to (n,).
        latent_dim: d.
        n_samples: n >= 2 draws.
        rng: generator of the draws.
        chunk: draws evaluated at once.
        device: where to draw.
    """
    if n_samples < 2:
        raise ValueError(f"n_samples must be >= 2, got {n_samples}")
    parts = []
    for start in range(0, n_samples, chunk):
        n = min(chunk, n_samples - start)
        z = torch.randn(n, latent_dim, generator=rng, device=device)
        parts.append(-energy(z).double())
    log_w = torch.cat(parts).unsqueeze(0)
    estimate = importance_estimate(log_w)
    return LogNormalizer(
        log_z=float(estimate.log_px),
        se=float(estimate.mc_se),
        ess=float(estimate.ess),
        n=n_samples,
    )


__all__ = [
    "ImportanceEstimate",
    "LogJointFn",
    "LogNormalizer",
    "StudentTMixture",
    "energy_hessian",
    "importance_estimate",
    "importance_log_weights",
    "laplace_log_mass",
    "laplace_precision",
    "pareto_khat",
    "tilt_log_normalizer",
]
