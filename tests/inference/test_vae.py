"""The VAE row (``experiment=paper/method/vae``): LFBM-VAE's amortised method with the N(0, I)
prior, no Langevin. What differs from LFBM-VAE is tested here: the prior has nothing to train,
reconstruction is g(mu(x)), and the anomaly score -ELBO(x) (``AmortizedInference.elbo``) is
checked against the analytic ELBO and log p(x) of a linear-Gaussian model."""

from __future__ import annotations

import torch

from lfbm_lightning.inference import AmortizedInference
from lfbm_lightning.models import LatentPriorModel
from lfbm_lightning.priors import GaussianPrior
from lfbm_lightning.run.training import resolved_config
from tests.conftest import compose_config
from tests.inference.test_amortized import SIGMA, LinearGaussianEncoder, LinearGaussianModel

CHAIN = {"n_steps": 1, "step_size": 0.1, "eval_steps": 1, "eval_step_size": 0.1}


class LinearLatentModel:
    """The linear-Gaussian model behind the interface an inference method uses."""

    def __init__(self, linear: LinearGaussianModel) -> None:
        self.linear = linear

    def posterior_energy(self, x, mask=None, **options):
        def energy(z):
            saved, self.linear.x = self.linear.x, x
            try:
                return self.linear.energy(z)
            finally:
                self.linear.x = saved

        return energy


def exact_posterior_encoder(model: LinearGaussianModel) -> LinearGaussianEncoder:
    """q(z|x) = p(z|x) = N(S W^T (x - b) / sigma^2, S), S diagonal (orthogonal columns)."""
    encoder = LinearGaussianEncoder()
    gain = model.posterior_var[:, None] * model.w.T / SIGMA**2  # (d, D)
    with torch.no_grad():
        encoder.linear.weight.copy_(gain)
        encoder.linear.bias.copy_(-gain @ model.b)
        encoder.log_var.copy_(model.posterior_var.log())
    return encoder


def test_the_vae_row_is_the_amortised_method_with_the_fixed_gaussian_prior(tmp_path):
    cfg = compose_config(["+experiment/paper/method=vae"], tmp_path)
    model = LatentPriorModel(resolved_config(cfg))
    assert isinstance(model.prior, GaussianPrior) and type(model.posterior) is AmortizedInference
    assert (model.chain_steps, model.eval_chain_steps) == (0, 0)  # no Langevin anywhere
    optimizers, _ = model.configure_optimizers()
    assert len(optimizers) == 1  # nothing to learn in N(0, I): generator + encoder only
    x = torch.rand(3, 1, 8, 8) * 2 - 1
    x_hat, z = model.reconstruct(x)
    with torch.no_grad():
        assert torch.equal(z, model.encode(x)[0])
        assert torch.allclose(x_hat, model.generator(z))


def test_elbo_matches_the_analytic_elbo_and_log_px_with_the_exact_posterior():
    linear = LinearGaussianModel(n=32)
    index = torch.arange(32)
    inexact = exact_posterior_encoder(linear)
    with torch.no_grad():  # a wrong variance and a shifted mean: a known, positive gap
        inexact.log_var.add_(1.0)
        inexact.linear.bias.add_(0.3)
    for encoder, exact in ((inexact, False), (exact_posterior_encoder(linear), True)):
        method = AmortizedInference(encoder, encoder_lr=1e-3, **CHAIN)
        elbo = method.elbo(
            LinearLatentModel(linear), linear.x, None, index, seed=3, n_samples=4000
        )
        with torch.no_grad():
            analytic = linear.analytic_elbo(*encoder(linear.x))
        error = elbo - analytic  # Monte-Carlo error of 4000 draws per image
        assert error.abs().max() < 0.3 and error.mean().abs() < 0.05, error
        assert (elbo <= linear.log_px + 0.3).all()  # ELBO <= log p(x)
        if exact:  # equality with the exact posterior as encoder
            assert torch.allclose(analytic, linear.log_px, atol=1e-9)
        else:
            assert (linear.log_px - analytic).mean() > 0.5
        part = method.elbo(LinearLatentModel(linear), linear.x[5:9], None, index[5:9], 3, 4000)
        assert torch.allclose(part, elbo[5:9], atol=1e-10)  # an image's draws are its own
