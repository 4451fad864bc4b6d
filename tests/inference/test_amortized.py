"""Amortised inference (LFBM-VAE): the ELBO on a linear-Gaussian model where log p(x) is
analytic, the mirrored ConvNet encoder, and the encoder's wiring in the LightningModule."""

from __future__ import annotations

import math

import pytest
import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torch import nn

from lfbm_lightning.densities import diag_gaussian_entropy
from lfbm_lightning.inference import ConvEncoder, amortized_elbo
from lfbm_lightning.models import LatentPriorModel
from lfbm_lightning.run.training import resolved_config
from tests.conftest import CONF, compose_config, run_entry_point
from tests.helpers.quiet_trainer import quiet_trainer

# ---------------------------------------------------------------- a linear-Gaussian model
# x = W z + b + sigma eps, z ~ N(0, I_d)  =>  x ~ N(b, W W^T + sigma^2 I_D). W has orthogonal
# columns, so the exact posterior N(S W^T (x - b) / sigma^2, S), S = (I + W^T W / sigma^2)^-1,
# is diagonal with a mean linear in x: a linear encoder with a free diagonal variance can
# reach it, and the ELBO gap, KL(q || p(z|x)), can shrink to zero.
D, d, SIGMA = 4, 2, 0.5
COLUMN_NORMS = torch.tensor([2.0, 0.7], dtype=torch.float64)


class LinearGaussianModel:
    def __init__(self, n: int = 256, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        q, _ = torch.linalg.qr(torch.randn(D, d, generator=g, dtype=torch.float64))
        self.w = q * COLUMN_NORMS
        self.b = torch.randn(D, generator=g, dtype=torch.float64)
        z = torch.randn(n, d, generator=g, dtype=torch.float64)
        self.x = z @ self.w.T + self.b + SIGMA * torch.randn(n, D, generator=g, dtype=z.dtype)
        cov = self.w @ self.w.T + SIGMA**2 * torch.eye(D, dtype=torch.float64)
        self.log_px = torch.distributions.MultivariateNormal(self.b, cov).log_prob(self.x)
        self.posterior_var = 1 / (1 + COLUMN_NORMS**2 / SIGMA**2)  # 1/17 and 1/2.96

    def energy(self, z: torch.Tensor) -> torch.Tensor:
        """-log p(x, z) with every constant, shape (B,)."""
        resid = self.x - z @ self.w.T - self.b
        log_lik = -0.5 * resid.pow(2).sum(-1) / SIGMA**2 - D * math.log(SIGMA)
        log_lik = log_lik - 0.5 * D * math.log(2 * math.pi)
        log_prior = -0.5 * z.pow(2).sum(-1) - 0.5 * d * math.log(2 * math.pi)
        return -(log_lik + log_prior)

    def analytic_elbo(self, mean: torch.Tensor, log_var: torch.Tensor) -> torch.Tensor:
        """E_q[log p(x, z)] + H[q] in closed form for q = N(mean, diag exp(log_var)), (B,)."""
        var = log_var.exp()
        resid = self.x - mean @ self.w.T - self.b
        trace = (var * self.w.pow(2).sum(0)).sum(-1)  # tr(W diag(var) W^T)
        e_lik = -(resid.pow(2).sum(-1) + trace) / (2 * SIGMA**2) - D * math.log(SIGMA)
        e_lik = e_lik - 0.5 * D * math.log(2 * math.pi)
        e_prior = -0.5 * (mean.pow(2) + var).sum(-1) - 0.5 * d * math.log(2 * math.pi)
        return e_lik + e_prior + diag_gaussian_entropy(log_var)


class LinearGaussianEncoder(nn.Module):
    """q(z|x) = N(A x + c, diag exp(v)), v shared by all x."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(D, d).double()
        self.log_var = nn.Parameter(torch.zeros(d, dtype=torch.float64))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.linear(x), self.log_var.expand(x.shape[0], d)


def test_entropy_matches_torch_distributions():
    log_var = torch.randn(5, 3, dtype=torch.float64)
    expected = torch.distributions.Normal(0.0, (0.5 * log_var).exp()).entropy().sum(-1)
    assert torch.allclose(diag_gaussian_entropy(log_var), expected)


def test_elbo_estimate_is_unbiased():
    """The single-sample ELBO, averaged over many draws, is the closed-form ELBO."""
    torch.manual_seed(0)
    model, encoder = LinearGaussianModel(n=64), LinearGaussianEncoder()
    repeats = 400
    with torch.no_grad():
        mean, log_var = encoder(model.x)
        exact = model.analytic_elbo(mean, log_var).mean().item()
    x = model.x
    model.x = x.repeat(repeats, 1)
    result = amortized_elbo(mean.repeat(repeats, 1), log_var.repeat(repeats, 1), model.energy)
    model.x = x
    per_draw = result.elbo.view(repeats, -1).mean(1)  # one ELBO average per draw of eps
    stderr = per_draw.std().item() / math.sqrt(repeats)
    assert abs(per_draw.mean().item() - exact) < 4 * stderr, (per_draw.mean().item(), exact)


def test_loss_gradient_is_the_reparameterised_elbo_gradient_and_spares_the_model():
    """The encoder gets exactly -grad ELBO (same eps); parameters inside E get nothing."""
    torch.manual_seed(1)
    model, encoder = LinearGaussianModel(n=16), LinearGaussianEncoder()
    scale = nn.Parameter(torch.tensor(1.0, dtype=torch.float64))  # a "model" parameter in E

    def energy(z):
        return model.energy(scale * z)

    mean, log_var = encoder(model.x)
    result = amortized_elbo(mean, log_var, energy, rng=torch.Generator().manual_seed(7))
    surrogate = torch.autograd.grad(result.loss, list(encoder.parameters()), retain_graph=True)
    result.loss.backward()
    assert scale.grad is None

    mean, log_var = encoder(model.x)
    eps = torch.randn(mean.shape, generator=torch.Generator().manual_seed(7), dtype=mean.dtype)
    z = mean + (0.5 * log_var).exp() * eps
    elbo = -energy(z) + diag_gaussian_entropy(log_var)
    assert torch.allclose(result.elbo, elbo.detach())
    explicit = torch.autograd.grad(-elbo.mean(), list(encoder.parameters()))
    for got, want in zip(surrogate, explicit, strict=True):
        assert torch.allclose(got, want, rtol=1e-10, atol=1e-12)


def test_elbo_stays_below_log_likelihood_and_the_gap_closes_with_training():
    torch.manual_seed(2)
    model, encoder = LinearGaussianModel(), LinearGaussianEncoder()

    def gaps() -> torch.Tensor:
        with torch.no_grad():
            return model.log_px - model.analytic_elbo(*encoder(model.x))

    before = gaps()
    optimizer = torch.optim.Adam(encoder.parameters(), lr=0.05)
    for _ in range(300):
        optimizer.zero_grad()
        amortized_elbo(*encoder(model.x), model.energy).loss.backward()
        optimizer.step()
    after = gaps()
    assert (before >= -1e-9).all() and (after >= -1e-9).all()  # ELBO <= log p(x) everywhere
    assert before.mean() > 10.0  # 18.9 nats
    assert after.mean() < 0.02, after.mean()  # 0.005 nats
    var = encoder.log_var.detach().exp()
    assert torch.allclose(var, model.posterior_var, rtol=0.1), (var, model.posterior_var)


# ---------------------------------------------------------------- the ConvNet encoder
GENERATOR_IMAGE_SIZES = {"digits": 8, "svhn": 32, "cifar10": 32, "celeba": 64}


@pytest.mark.parametrize("generator", sorted(GENERATOR_IMAGE_SIZES))
def test_encoder_mirrors_each_generator(generator):
    layers = OmegaConf.to_container(OmegaConf.load(CONF / "generator" / f"{generator}.yaml"))[
        "layers"
    ]
    size = GENERATOR_IMAGE_SIZES[generator]
    encoder = ConvEncoder(in_channels=3, latent_dim=7, layers=layers, image_size=size)
    convs = [m for m in encoder.modules() if isinstance(m, nn.Conv2d)]
    # the generator's blocks in reverse, channels walked back, 2 d outputs at the end
    assert [c.kernel_size[0] for c in convs] == [block[1] for block in reversed(layers)]
    assert [c.out_channels for c in convs][-1] == 14
    assert [c.in_channels for c in convs][1:] == [block[0] for block in reversed(layers[:-1])]
    mean, log_var = encoder(torch.randn(2, 3, size, size))
    assert mean.shape == log_var.shape == (2, 7)


def test_encoder_rejects_an_image_size_its_layers_do_not_fit():
    layers = [[128, 4, 1, 0], [64, 3, 1, 1], [1, 4, 2, 1]]  # the digits generator: 8 x 8
    with pytest.raises(ValueError, match="not 1x1"):
        ConvEncoder(in_channels=1, latent_dim=4, layers=layers, image_size=16)


# ---------------------------------------------------------------- the LightningModule
def build(tmp_path, overrides: list[str]) -> tuple[LatentPriorModel, pl.LightningDataModule]:
    cfg = compose_config(overrides, tmp_path)
    pl.seed_everything(cfg.seed)
    return LatentPriorModel(resolved_config(cfg)), instantiate(cfg.dataset)


def test_reconstruction_starts_from_the_encoder_mean(tmp_path):
    model, datamodule = build(tmp_path, ["inference=amortized"])
    datamodule.setup()
    x = torch.stack([datamodule.splits["val"][i]["image"] for i in range(8)])
    x_hat, z = model.reconstruct(x)  # eval_refine_steps = 0: the encoder's reconstruction
    with torch.no_grad():
        mean = model.encoder(x)[0]
        assert torch.equal(z, mean) and torch.allclose(x_hat, model.generator(mean))
    refined = model.infer(x, n_steps=30, step_size=0.1, noise=False)
    energy = model.infer(x, n_steps=1, step_size=1e-8, noise=False).energy  # E at the mean
    assert refined.energy.mean() < energy.mean()


@pytest.mark.parametrize(
    ("inference", "steps"),
    [("amortized", (0, 0)), ("amortized_langevin", (5, 100)), ("fast", (0, 0))],
)
def test_dataset_chain_lengths_do_not_change_the_amortised_method(tmp_path, inference, steps):
    """Dataset options set inference.n_steps / eval_steps to their K (SVHN: 20 / 400); the
    amortised options keep their own chain lengths."""
    cfg = compose_config(["dataset=svhn", f"inference={inference}"], tmp_path)
    assert (cfg.inference.n_steps, cfg.inference.eval_steps) == (20, 400)
    model = LatentPriorModel(resolved_config(cfg))
    assert (model.chain_steps, model.eval_chain_steps) == steps
    mean, log_var = model.encode(torch.zeros(2, 3, 32, 32))
    assert mean.shape == log_var.shape == (2, 100)


@pytest.mark.parametrize("inference", ["amortized", "amortized_langevin", "fast"])
def test_one_training_step_updates_encoder_generator_and_prior(tmp_path, inference):
    model, datamodule = build(tmp_path, [f"inference={inference}", "inference.refine_steps=2"])
    optimizers, _ = model.configure_optimizers()
    groups = optimizers[-1].param_groups
    assert len(optimizers) == 2 and len(groups) == 2  # prior; generator + encoder
    assert groups[1]["lr"] == model.config["inference"]["encoder_lr"]
    before = {k: v.clone() for k, v in model.state_dict().items()}
    trainer = quiet_trainer(max_epochs=1, limit_train_batches=1)
    trainer.fit(model, datamodule=datamodule)
    changed = {  # the encoder is the inference method's: state-dict keys posterior.encoder.*
        k.removeprefix("posterior.").split(".")[0]
        for k, v in model.state_dict().items()
        if not torch.equal(v, before[k])
    }
    assert changed == {"prior", "generator", "encoder"}
    assert math.isfinite(trainer.callback_metrics["train/elbo"].item())


# ---------------------------------------------------------------- the real entry point
INFERENCE_OPTIONS = sorted(p.stem for p in (CONF / "inference").glob("*.yaml"))


@pytest.mark.slow
def test_every_inference_option_trains_through_train_py(tmp_path):
    """The documented comparison multirun, on tiny settings, over every inference option."""
    result = run_entry_point(
        "train.py",
        [
            "-m",
            "experiment=compare_inference_digits",
            f"inference={','.join(INFERENCE_OPTIONS)}",
            f"hydra.sweep.dir={tmp_path}",
            "trainer.max_epochs=1",
            "trainer.limit_train_batches=2",
            "trainer.limit_val_batches=1",
            "trainer.check_val_every_n_epoch=1",
            "inference.eval_steps=5",
            "callbacks.image_grids.n_images=8",
        ],
    )
    assert result.returncode == 0, result.stderr[-3000:]
    for job, option in enumerate(INFERENCE_OPTIONS):
        run = tmp_path / f"{job}_{option}"
        assert (run / "checkpoints" / "last.ckpt").is_file(), option
        model = LatentPriorModel.load_from_checkpoint(run / "checkpoints" / "last.ckpt")
        assert (model.encoder is not None) == ("encoder" in model.config["inference"])
        assert model.config["dataset"]["holdout_digit"] == 9
        x = torch.zeros(2, 1, 8, 8)
        assert torch.isfinite(model.reconstruct(x)[0]).all(), option
