"""The prior interface every latent prior implements.

A prior is a distribution p(z) over the latent vector z in R^d of the generator. The training
loop only needs four things from it, so that the Gaussian (ABP), the latent EBM (LEBM) and the
flow (LFBM) priors are interchangeable behind one API.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch
from torch import nn


class Prior(nn.Module, ABC):
    """Base class of latent priors p(z), z in R^d.

    Attributes:
        latent_dim: d, the size of the latent vector.
        normalized: True when ``log_prob`` is the exact normalised log-density; False for
            energy-based priors whose ``log_prob`` is known only up to an additive constant,
            and for priors whose ``log_prob`` is a lower bound (the two-stage VAE's ELBO).
        ex_post: True for a density fitted to the training codes after each epoch
            (:meth:`fit_codes`) rather than by gradient steps.
    """

    normalized: bool = True
    ex_post: bool = False
    chains_in_loss: bool = False  # True: ``loss`` runs the prior's own sampling chains

    def __init__(self, latent_dim: int) -> None:
        super().__init__()
        if int(latent_dim) < 1:
            raise ValueError(f"latent_dim must be a positive integer, got {latent_dim}")
        self.latent_dim = int(latent_dim)

    @abstractmethod
    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """log p(z) for a batch z of shape (B, d); returns shape (B,)."""

    @abstractmethod
    def sample(self, n: int, rng: torch.Generator | None = None) -> torch.Tensor:
        """Draw n samples, shape (n, d), on the prior's device, from ``rng`` (a generator on
        that device; None: the global torch RNG)."""

    def training_log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """The log-density (B, d) -> (B,) the generator and inference are trained under: the
        training chains' and the encoder's energies use it. ``log_prob`` itself by default; a
        prior fitted after the first stage (two-stage VAE, RAE) trains that stage under
        N(0, I) and keeps ``log_prob`` for sampling and evaluation."""
        return self.log_prob(z)

    def fit_codes(self, codes: torch.Tensor) -> None:
        """Fit an ex-post prior to the training set's codes (N, d); only for ``ex_post``."""
        raise NotImplementedError(f"{type(self).__name__} is not fitted ex post")

    def loss(
        self,
        z_posterior: torch.Tensor,
        rng: torch.Generator | None = None,
        start: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Maximum-likelihood surrogate on posterior samples z of shape (B, d).

        Its gradient with respect to the prior's parameters is
        ``-E_{p(z|x)}[grad log p(z)]``, the prior's part of the gradient of ``-log p(x)``.
        Defaults to ``-log_prob(z).mean()``, exact for normalised priors; a prior whose loss
        needs its own samples (the EBM, ``chains_in_loss``) draws them from ``rng``, its chains
        started at ``start`` (B, d) when given (else N(0, I)).
        """
        return -self.log_prob(z_posterior).mean()

    @property
    def device(self) -> torch.device:
        """Device of the prior's parameters or buffers (CPU when it has neither)."""
        for tensor in list(self.parameters()) + list(self.buffers()):
            return tensor.device
        return torch.device("cpu")
