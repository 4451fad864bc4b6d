"""task=anomaly's scores: the marginal -log p(x) against the exactly known true model of
``dataset=synthetic``, and the choice of scores."""

from __future__ import annotations

import math

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from lfbm_lightning.errors import ConfigError
from lfbm_lightning.models import LatentPriorModel
from lfbm_lightning.tasks.anomaly import check_scores
from lfbm_lightning.tasks.likelihood import image_log_likelihood
from tests.conftest import compose_config


def true_model(tmp_path) -> tuple[LatentPriorModel, object]:
    """A LatentPriorModel that is the synthetic data's true model: generator g*, the mixture
    prior p* (4 components N(mu_k, 0.3^2 I) on the circle of radius 2) and sigma = 0.2."""
    cfg = compose_config(
        ["dataset=synthetic", "prior=mog", "prior.n_components=4", "dataset.n_test=12"],
        tmp_path,
    )
    config = OmegaConf.to_container(cfg, resolve=True)
    datamodule = instantiate(config["dataset"])
    datamodule.setup()
    model = LatentPriorModel(config)
    model.generator = datamodule.generator
    latent = datamodule.latent
    with torch.no_grad():
        model.prior.logits.zero_()
        model.prior.means.copy_(latent.means.float())
        model.prior.log_stds.fill_(math.log(latent.std))
    assert model.sigma == datamodule.noise_std
    return model.eval(), datamodule


def test_marginal_score_matches_the_true_log_px_within_its_standard_error(tmp_path):
    model, datamodule = true_model(tmp_path)
    x = torch.stack([datamodule.splits["test"][i]["image"] for i in range(12)])
    eval_cfg = compose_config(["ckpt_path=x.ckpt", "task=anomaly"], tmp_path, "evaluate")
    settings = eval_cfg.anomaly.marginal  # the defaults task=anomaly uses
    settings.n_samples = 512
    rng = torch.Generator().manual_seed(0)
    # as the task does: the first proposal fit starts at the z fitted for the joint score
    fitted = model.reconstruct(x)[1]
    estimate = image_log_likelihood(model, x, settings, rng, start=fitted).estimate
    truth = datamodule.true_log_prob(x)
    error = estimate.log_px.double() - truth
    # the true log p(x) is itself a Monte-Carlo estimate over 100000 latent draws (~0.01 nats)
    allowed = 4 * estimate.mc_se.double() + 0.05
    assert (error.abs() < allowed).all(), (error, estimate.mc_se)
    assert (estimate.mc_se < 0.2).all(), estimate.mc_se
    # the check can fail: a prior 5/3 too wide is off by up to ~1 nat on these images
    with torch.no_grad():
        model.prior.log_stds.fill_(math.log(0.5))
    wrong = image_log_likelihood(model, x, settings, rng, start=fitted).estimate.log_px - truth
    assert (wrong.abs() > allowed).sum() >= 6, wrong


def test_scores_are_checked_and_ordered():
    assert check_scores(["marginal", "joint"]) == ["joint", "marginal"]
    with pytest.raises(ConfigError, match="including joint"):
        check_scores(["prior"])
    with pytest.raises(ConfigError, match="anomaly.scores"):
        check_scores(["joint", "likelihood"])
