"""task=likelihood: the whole estimator (chains, Laplace proposal, importance sampling, the EBM's
log Z) against closed-form answers, and end to end through evaluate.py on a synthetic checkpoint.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from lfbm_lightning.errors import ConfigError
from lfbm_lightning.models import LatentPriorModel
from lfbm_lightning.priors import TwoStageVAEPrior
from lfbm_lightning.tasks import likelihood
from lfbm_lightning.tasks.ais_likelihood import SimulatedImages
from tests.conftest import compose_config, run_entry_point
from tests.helpers.task_outputs import read_rows
from tests.tasks.conftest import train_checkpoint

D, LATENT, SIGMA = 12, 3, 0.25  # 2 pi sigma^2 far from 1: the normaliser matters
SETTINGS = OmegaConf.create(
    {
        "n_samples": 1000,
        "n_chains": 3,
        "n_steps": 300,
        "inflation": 1.5,
        "df": 5,
        "defensive_weight": 0.1,
        "chunk": 250,
        "log_z_samples": 400_000,
        "max_log_z_se": 0.05,
    }
)


def linear_model(prior: dict) -> LatentPriorModel:
    """A LatentPriorModel whose generator is x = W z + b (a Linear layer, images (B, D))."""
    config = {
        "seed": 0,
        "prior": prior,
        "generator": {"_target_": "torch.nn.Linear", "in_features": LATENT, "out_features": D},
        "model": {"sigma": SIGMA},
        "inference": {"n_steps": 20, "step_size": 0.1, "eval_steps": 300, "eval_step_size": 0.1},
    }
    model = LatentPriorModel(config)
    rng = torch.Generator().manual_seed(0)
    with torch.no_grad():
        model.generator.weight.copy_(torch.randn(D, LATENT, generator=rng))
        model.generator.bias.copy_(0.3 * torch.randn(D, generator=rng))
    return model.eval()


def analytic_log_px(model: LatentPriorModel, x: torch.Tensor, prior_mean: torch.Tensor):
    """z ~ N(m, I), x = W z + b + sigma eps: log p(x) = log N(x; W m + b, W W^T + sigma^2 I)."""
    weight, bias = model.generator.weight.double(), model.generator.bias.double()
    cov = weight @ weight.T + SIGMA**2 * torch.eye(D, dtype=torch.float64)
    mean = weight @ prior_mean.double() + bias
    return torch.distributions.MultivariateNormal(mean, cov).log_prob(x.double())


def draw(model: LatentPriorModel, n: int, prior_mean: torch.Tensor) -> torch.Tensor:
    rng = torch.Generator().manual_seed(1)
    z = prior_mean + torch.randn(n, LATENT, generator=rng)
    with torch.no_grad():
        return model.generator(z) + SIGMA * torch.randn(n, D, generator=rng)


def check_estimate(estimate, truth: torch.Tensor, log_z_se: float = 0.0) -> None:
    error = estimate.log_px.double() - truth
    allowed = 4 * torch.sqrt(estimate.mc_se.double() ** 2 + log_z_se**2)
    assert (estimate.ess < SETTINGS.n_samples).all()  # the proposal is not the posterior
    assert (error.abs() < allowed).all(), (error, allowed)


def test_linear_gaussian_model_matches_the_analytic_log_px():
    model = linear_model({"_target_": "lfbm_lightning.priors.GaussianPrior", "latent_dim": 3})
    x = draw(model, 16, torch.zeros(LATENT))
    rng = torch.Generator().manual_seed(2)
    assert likelihood.prior_log_normalizer(model, SETTINGS, rng) is None
    estimate = likelihood.image_log_likelihood(model, x, SETTINGS, rng).estimate
    check_estimate(estimate, analytic_log_px(model, x, torch.zeros(LATENT)))


REAL_D, REAL_PIXELS, REAL_SIGMA, REAL_IMAGES = 20, 784, 0.3, 200


@pytest.fixture(scope="module")
def real_scale(tmp_path_factory: pytest.TempPathFactory):
    """The real-digit setting's sizes: D = 784, d = 20, sigma = 0.3, 200 images of
    x = W z + b + sigma eps with a non-isotropic prior z ~ N(m, diag(s^2)), so that
    log p(x) = log N(x; W m + b, W S W^T + sigma^2 I); task=anomaly's marginal settings (K =
    128, M = 2 fits of at most 100 passes). Returns (model, x, true log p(x), settings)."""
    d, pixels = REAL_D, REAL_PIXELS
    config = {
        "seed": 0,
        "prior": {"_target_": "lfbm_lightning.priors.LearnableGaussianPrior", "latent_dim": d},
        "generator": {"_target_": "torch.nn.Linear", "in_features": d, "out_features": pixels},
        "model": {"sigma": REAL_SIGMA},
        "inference": {"n_steps": 20, "step_size": 0.1, "eval_steps": 100, "eval_step_size": 0.1},
    }
    model = LatentPriorModel(config).eval()
    rng = torch.Generator().manual_seed(0)
    with torch.no_grad():
        model.generator.weight.copy_(torch.randn(pixels, d, generator=rng) / 4)
        model.generator.bias.copy_(0.3 * torch.randn(pixels, generator=rng))
        model.prior.mean.copy_(torch.randn(d, generator=rng))
        model.prior.log_std.copy_(torch.linspace(-1.0, 0.7, d))  # stds 0.37 .. 2.0
        std = model.prior.log_std.exp()
        z = model.prior.mean + std * torch.randn(REAL_IMAGES, d, generator=rng)
        x = model.generator(z) + REAL_SIGMA * torch.randn(REAL_IMAGES, pixels, generator=rng)
        weight = model.generator.weight.double()
        truth = torch.distributions.LowRankMultivariateNormal(
            weight @ model.prior.mean.double() + model.generator.bias.double(),
            weight * std.double(),
            torch.full((pixels,), REAL_SIGMA**2, dtype=torch.float64),
        ).log_prob(x.double())
    tmp_path = tmp_path_factory.mktemp("real_scale")
    eval_cfg = compose_config(["ckpt_path=x.ckpt", "task=anomaly"], tmp_path, "evaluate")
    return model, x, truth, eval_cfg.anomaly.marginal


def test_at_real_scale_the_default_proposal_finds_the_exact_posterior(real_scale):
    # Gaussian components with the exact Hessian at the exact mode are the posterior itself:
    # q = 0.9 p(z | x) + 0.1 N(0, I), so ESS ~ 0.9 K and the errors are the defensive draws'
    model, x, truth, settings = real_scale
    result = likelihood.image_log_likelihood(model, x, settings, torch.Generator().manual_seed(1))
    estimate = result.estimate
    assert estimate.trusted.all() and (estimate.ess >= 0.8 * 128).all(), estimate.ess.min()
    error = estimate.log_px.double() - truth
    assert error.abs().max() < 0.2 and abs(float(error.mean())) < 0.02, error
    d = REAL_D
    # 2 chains x (100 steps + d Hessian rows + 1 energy) + K at most
    assert (result.passes <= 2 * (100 + d + 1) + 128).all()


def test_at_real_scale_heavy_tailed_estimates_are_within_their_standard_errors(real_scale):
    # Student-t components (df = 5): weights vary continuously, so the standard error is
    # tested: z = error / SE ~ N(0, 1) over the images. Every |z| < 4 (an exact estimator puts
    # 0.5 of 200 images beyond 3 SE, 0.01 beyond 4), 2-SE intervals covering 0.95 +- 0.015, the
    # mean z within 4 / sqrt(200) of 0 (no bias beyond the errors)
    model, x, truth, settings = real_scale
    settings = settings.copy()
    settings.df = 5
    rng = torch.Generator().manual_seed(2)
    estimate = likelihood.image_log_likelihood(model, x, settings, rng).estimate
    assert estimate.trusted.all() and (estimate.ess >= 12.8).all(), (estimate.khat, estimate.ess)
    assert (estimate.mc_se > 1e-2).all()  # the weights vary: the checks below are not vacuous
    z_scores = (estimate.log_px.double() - truth) / estimate.mc_se
    assert (z_scores.abs() < 4).all(), z_scores
    coverage = float((z_scores.abs() < 2).double().mean())
    assert 0.9 <= coverage <= 0.99, coverage
    assert abs(float(z_scores.mean())) < 4 / math.sqrt(REAL_IMAGES), z_scores
    # and the check can fail: a prior mean off by 0.5 s moves log p(x) by several SEs
    mean = model.prior.mean.clone()
    with torch.no_grad():
        model.prior.mean.add_(0.5 * model.prior.log_std.exp())
    try:
        wrong = likelihood.image_log_likelihood(model, x, settings, rng).estimate
    finally:
        with torch.no_grad():
            model.prior.mean.copy_(mean)
    assert ((wrong.log_px.double() - truth).abs() > 3 * wrong.mc_se).float().mean() > 0.5


def test_ebm_prior_is_normalised_with_its_estimated_log_z():
    # E_a(z) = a . z tilts N(0, I) into N(-a, I), with log Z = |a|^2 / 2
    tilt = torch.tensor([0.8, -0.5, 0.3])
    energy_net = {
        "_target_": "torch.nn.Sequential",
        "_args_": [
            {"_target_": "torch.nn.Linear", "in_features": LATENT, "out_features": 1},
            {"_target_": "torch.nn.Flatten", "start_dim": 0},
        ],
    }
    model = linear_model(
        {
            "_target_": "lfbm_lightning.priors.EnergyPrior",
            "latent_dim": 3,
            "energy_net": energy_net,
        }
    )
    with torch.no_grad():
        model.prior.energy_net[0].weight.copy_(tilt.unsqueeze(0))
        model.prior.energy_net[0].bias.zero_()
    rng = torch.Generator().manual_seed(3)
    normalizer = likelihood.prior_log_normalizer(model, SETTINGS, rng)
    assert abs(normalizer.log_z - float(tilt.pow(2).sum()) / 2) < 4 * normalizer.se
    x = draw(model, 12, -tilt)
    estimate = likelihood.image_log_likelihood(model, x, SETTINGS, rng, normalizer.log_z).estimate
    check_estimate(estimate, analytic_log_px(model, x, -tilt), normalizer.se)
    without = likelihood.image_log_likelihood(model, x, SETTINGS, rng).estimate  # no log Z
    assert (without.log_px - estimate.log_px).mean() > 0.3  # |a|^2 / 2 = 0.49 nats


def synthetic_setup(tmp_path: Path, prior: str, overrides: list[str]):
    cfg = compose_config(
        [
            "dataset=synthetic",
            f"prior={prior}",
            "dataset.n_train=20",
            "dataset.n_val=10",
            "dataset.n_test=30",
            "dataset.reference_samples=20000",
        ],
        tmp_path,
    )
    config = OmegaConf.to_container(cfg, resolve=True)
    datamodule = instantiate(config["dataset"])
    datamodule.setup()
    eval_cfg = compose_config(
        ["ckpt_path=x.ckpt", "task=likelihood", "progress=false", *overrides], tmp_path, "evaluate"
    )
    return LatentPriorModel(config).eval(), datamodule, eval_cfg


def test_untrained_ebm_log_z_matches_quadrature_and_too_uncertain_is_unavailable(tmp_path):
    torch.manual_seed(0)
    model, datamodule, cfg = synthetic_setup(
        tmp_path, "ebm", ["likelihood.n_examples=10", "likelihood.n_samples=64"]
    )
    results = likelihood.Likelihood(model, datamodule, cfg, tmp_path).run()
    # d = 2: Z = int exp(-E_a(z)) N(z; 0, I) dz on a grid of cells of side h
    h = 0.02
    axis = torch.arange(-7 + h / 2, 7, h)
    z = torch.cartesian_prod(axis, axis)
    with torch.no_grad():
        log_integrand = model.prior.log_prob(z).double()
    quadrature = float(torch.logsumexp(log_integrand, 0)) + 2 * math.log(h)
    assert abs(results["log_z"] - quadrature) < 4 * results["log_z_se"] + 1e-4
    assert results["log_px_mean"] is not None and "Monte-Carlo" in results["prior_normalizer"]

    cfg.likelihood.max_log_z_se = 1e-6
    unavailable = likelihood.Likelihood(model, datamodule, cfg, tmp_path).run()
    assert unavailable["log_px_mean"] is None and unavailable["bpd_mean"] is None
    assert "max_log_z_se" in unavailable["log_px_unavailable"]


def test_simulate_scores_the_models_own_images_the_same_way_every_run(tmp_path):
    torch.manual_seed(0)
    overrides = ["likelihood.simulate=true", "likelihood.n_examples=5", "likelihood.n_samples=16"]
    model, datamodule, cfg = synthetic_setup(tmp_path, "flow", overrides)
    first = likelihood.Likelihood(model, datamodule, cfg, tmp_path / "a").run()
    again = likelihood.Likelihood(model, datamodule, cfg, tmp_path / "b").run()
    rows = read_rows(tmp_path / "a" / "per_example.csv")
    assert first["simulate"] is True and first["n_images"] == len(rows) == 5
    assert first["log_px_mean"] == again["log_px_mean"]  # seeded images and chains
    assert {row["label"] for row in rows} == {-1} and "true_log_px" not in rows[0]
    assert "true_log_px_mean" not in first  # the data's true model does not describe them
    images = SimulatedImages(model, 5, int(cfg.seed))
    with torch.no_grad():  # x = g(z) + sigma eps with the stored z
        noise = (images.images - model.generator(images.z)) / model.sigma
    assert 0.7 < float(noise.std()) < 1.3 and abs(float(noise.mean())) < 0.2


@pytest.fixture(scope="session")
def synthetic_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Flow prior on the synthetic images, 3 short epochs."""
    out = tmp_path_factory.mktemp("synthetic_flow")
    return train_checkpoint(
        out,
        ["dataset=synthetic", "dataset.n_train=400", "dataset.n_test=40", "trainer.max_epochs=3"],
    )


@pytest.mark.slow
def test_evaluate_likelihood_end_to_end(synthetic_ckpt, tmp_path):
    out = tmp_path / "eval"
    result = run_entry_point(
        "evaluate.py",
        [
            f"ckpt_path={synthetic_ckpt}",
            "task=likelihood",
            f"hydra.run.dir={out}",
            "likelihood.n_samples=128",
            "likelihood.n_steps=50",
            "progress=false",
        ],
    )
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    rows = read_rows(out / "per_example.csv")
    assert metrics["n_images"] == len(rows) == 40 and metrics["dimension"] == 64
    mean = sum(r["log_px"] for r in rows) / len(rows)
    assert metrics["log_px_mean"] == pytest.approx(mean)
    assert metrics["bpd_mean"] == pytest.approx(-mean / (64 * math.log(2)))
    assert metrics["prior_normalizer"].startswith("exact")
    # no model beats the true one in expectation; 3 short epochs leave it far below
    assert metrics["gap_mean"] > 1.0 and metrics["gap_mean"] > 4 * metrics["gap_se"]
    assert metrics["true_log_px_mean"] - metrics["log_px_mean"] == pytest.approx(
        metrics["gap_mean"]
    )
    assert 1 <= metrics["ess_min"] <= metrics["ess_mean"] <= 128
    # the diagnostics per image, and the summary split by k-hat
    khat = torch.tensor([r["khat"] for r in rows], dtype=torch.float64)
    trusted = khat <= 0.7
    assert khat.isfinite().all() and all(
        math.isnan(r["mc_se"]) for r, t in zip(rows, trusted, strict=True) if not t
    )
    above = int((~trusted).sum())
    assert metrics["khat_above_share"] == pytest.approx(above / 40)
    assert metrics["ess_mean"] == pytest.approx(sum(r["ess"] for r in rows) / 40)
    if above:
        untrusted = sum(r["log_px"] for r, t in zip(rows, trusted, strict=True) if not t) / above
        assert metrics["log_px_mean_untrusted"] == pytest.approx(untrusted)
        assert metrics["log_px_mc_se"] is None  # not every error bar can be trusted
    report = (out / "results.md").read_text()
    assert f"Pareto k-hat > 0.7 (or too few samples for it): {above} of 40 images" in report
    assert metrics["passes_per_image"] == pytest.approx(sum(r["passes"] for r in rows) / 40)


@pytest.mark.slow
def test_evaluate_py_reports_bdmc_bounds_and_gap_per_image_and_on_average(
    synthetic_ckpt, tmp_path
):
    out = tmp_path / "eval"
    result = run_entry_point(
        "evaluate.py",
        [
            f"ckpt_path={synthetic_ckpt}",
            "task=likelihood",
            f"hydra.run.dir={out}",
            "likelihood.estimator=ais",
            "likelihood.simulate=true",
            "likelihood.n_examples=4",
            "likelihood.ais.n_distributions=40",
            "likelihood.ais.n_chains=4",
            "progress=false",
        ],
    )
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    rows = read_rows(out / "per_example.csv")
    assert len(rows) == metrics["n_images"] == 4 and metrics["estimator"] == "ais"
    assert metrics["simulate"] is True and "true_log_px_mean" not in metrics
    for row in rows:
        assert row["label"] == -1 and row["passes"] == metrics["passes_per_image"]
        assert row["bdmc_gap"] == pytest.approx(row["log_px_upper"] - row["log_px"])
        assert row["bdmc_gap"] > -4 * (row["mc_se"] + row["upper_mc_se"])
    lower = sum(r["log_px"] for r in rows) / 4
    assert metrics["log_px_mean"] == pytest.approx(lower)
    assert metrics["log_px_upper_mean"] - lower == pytest.approx(metrics["bdmc_gap_mean"])
    assert metrics["bdmc_gap_max"] == pytest.approx(max(r["bdmc_gap"] for r in rows))
    assert metrics["passes_per_image"] == 2 * 4 * (1 + 40 * 5)
    assert metrics["n_samples"] is None  # the importance sampler's settings are not in play
    assert 0.3 < metrics["accept_rate_mean"] < 0.95
    assert "bdmc_gap_mean" in (out / "results.md").read_text()


def test_a_prior_bounded_by_an_elbo_is_refused_by_the_likelihood_task():
    model = SimpleNamespace(prior=TwoStageVAEPrior(2))
    with pytest.raises(ConfigError, match="task=likelihood.*lower bound"):
        likelihood.prior_log_normalizer(model, None, torch.Generator())


def test_summary_splits_the_images_by_khat_and_withholds_an_untrusted_error_bar():
    log_px = torch.tensor([-10.0, -12.0, -30.0, -14.0], dtype=torch.float64)
    mc_se = torch.tensor([0.3, 0.4, math.nan, math.nan], dtype=torch.float64)
    ess = torch.tensor([64.0, 20.0, 1.5, 12.0], dtype=torch.float64)
    khat = torch.tensor([0.2, 0.6, 1.4, math.nan], dtype=torch.float64)  # NaN: K < 25
    results = likelihood.summarize(log_px, mc_se, ess, khat, 128, 64)
    assert results["khat_above_share"] == 0.5 and results["khat_max"] == 1.4
    assert results["log_px_mean_trusted"] == -11.0 and results["log_px_mean_untrusted"] == -22.0
    assert results["log_px_mc_se_trusted"] == pytest.approx(0.5 / 2)  # sqrt(0.3^2 + 0.4^2) / 2
    assert results["log_px_mc_se"] is None and results["ess_10pct_share"] == 0.5
    everything = likelihood.summarize(log_px[:2], mc_se[:2], ess[:2], khat[:2], 128, 64)
    assert everything["log_px_mc_se"] == pytest.approx(0.25)
    assert everything["log_px_mean_untrusted"] is None
