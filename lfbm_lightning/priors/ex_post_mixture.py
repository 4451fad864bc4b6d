"""The RAE's ex-post density (Ghosh et al. 2020): a Gaussian mixture fitted to training codes.

p(z) = sum_k w_k N(z; mu_k, L_k L_k^T) with full covariances, fitted by scikit-learn's EM
(``GaussianMixture``) to the encoder's codes of the training set after every epoch. The
autoencoder itself is trained under N(0, I) (``training_log_prob``: the RAE's ||z||^2 / 2).
"""

from __future__ import annotations

import torch
from sklearn.mixture import GaussianMixture

from lfbm_lightning.densities import standard_normal_log_prob
from lfbm_lightning.priors.prior import Prior


class ExPostMixturePrior(Prior):
    """A full-covariance Gaussian mixture fitted ex post to codes; N(0, I) until then.

    log p(z) = logsumexp_k [log w_k + log N(z; mu_k, L_k L_k^T)], z (B, d) -> (B,); exact and
    normalised. Sampling: k ~ Categorical(w), z = mu_k + L_k eps. The mixture lives in buffers
    (weights (K,), means (K, d), scale_tril (K, d, d)), so checkpoints keep it; it has no
    parameters, and ``loss`` is constant in every parameter.

    Args:
        latent_dim: d.
        n_components: K (Ghosh et al. use 10).
        reg_covar: added to each covariance's diagonal by the fit (scikit-learn's).
        seed: the fit's ``random_state`` (the same fit on every DDP rank).
    """

    ex_post = True

    def __init__(
        self, latent_dim: int, n_components: int = 10, reg_covar: float = 1e-6, seed: int = 0
    ) -> None:
        super().__init__(latent_dim)
        if int(n_components) < 1:
            raise ValueError(f"n_components must be a positive integer, got {n_components}")
        k, d = int(n_components), self.latent_dim
        self.n_components = k
        self.reg_covar = float(reg_covar)
        self.seed = int(seed)
        self.register_buffer("weights", torch.full((k,), 1.0 / k))
        self.register_buffer("means", torch.zeros(k, d))
        self.register_buffer("scale_tril", torch.eye(d).expand(k, d, d).clone())

    def training_log_prob(self, z: torch.Tensor) -> torch.Tensor:
        return standard_normal_log_prob(z)

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        components = torch.distributions.MultivariateNormal(self.means, scale_tril=self.scale_tril)
        log_p = components.log_prob(z.unsqueeze(-2))  # (B, K)
        return torch.logsumexp(log_p + self.weights.log(), dim=-1)

    @torch.no_grad()
    def sample(self, n: int, rng: torch.Generator | None = None) -> torch.Tensor:
        k = torch.multinomial(self.weights, n, replacement=True, generator=rng)
        eps = torch.randn(
            n, self.latent_dim, generator=rng, device=self.means.device, dtype=self.means.dtype
        )
        return self.means[k] + (self.scale_tril[k] @ eps.unsqueeze(-1)).squeeze(-1)

    def fit_codes(self, codes: torch.Tensor) -> None:
        """EM fit of the K components to codes (N, d), N >= K, in float64 on the CPU."""
        if codes.shape[0] < self.n_components:
            raise ValueError(
                f"fitting {self.n_components} mixture components needs at least as many codes, "
                f"got {codes.shape[0]}: lower prior.n_components"
            )
        gmm = GaussianMixture(
            self.n_components,
            covariance_type="full",
            reg_covar=self.reg_covar,
            random_state=self.seed,
        ).fit(codes.detach().double().cpu().numpy())
        like = {"device": self.means.device, "dtype": self.means.dtype}
        self.weights.copy_(torch.as_tensor(gmm.weights_).to(**like))
        self.means.copy_(torch.as_tensor(gmm.means_).to(**like))
        scale = torch.linalg.cholesky(torch.as_tensor(gmm.covariances_))
        self.scale_tril.copy_(scale.to(**like))
