"""Every option of every config group composes, and its nodes instantiate."""

from __future__ import annotations

import pytest
from hydra.utils import instantiate
from omegaconf import OmegaConf

from tests.conftest import CONF


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


INSTANTIATED = ["prior", "generator", "dataset", "trainer"]
GROUPS = ["prior", "generator", "dataset", "inference", "model", "trainer", "logger", "callbacks"]
CASES = [(group, option) for group in GROUPS for option in options(group)]


@pytest.mark.parametrize(("group", "option"), CASES, ids=[f"{g}={o}" for g, o in CASES])
def test_option_composes_and_instantiates(compose_cfg, group, option):
    cfg = compose_cfg([f"{group}={option}"])
    assert cfg.latent_dim >= 1
    for node in INSTANTIATED:
        assert instantiate(cfg[node]) is not None
    for section in ("logger", "callbacks"):
        for name, node in (cfg.get(section) or {}).items():
            if OmegaConf.is_dict(node):  # plain settings (callbacks.keep_last_epochs) aside
                assert instantiate(node) is not None, f"{section}.{name}"


@pytest.mark.parametrize("experiment", options("experiment"))
def test_experiment_composes(compose_cfg, experiment):
    cfg = compose_cfg([f"experiment={experiment}"])
    assert instantiate(cfg.prior).latent_dim == cfg.latent_dim


def test_default_is_the_flow_prior_on_digits(compose_cfg):
    cfg = compose_cfg([])
    assert cfg.prior._target_.endswith("FlowPrior")
    assert (cfg.prior.depth, cfg.prior.width) == (5, 64)  # docs/paper.md
    assert cfg.dataset._target_.endswith("DigitsDataModule")
    assert (cfg.inference.n_steps, cfg.inference.step_size, cfg.model.sigma) == (20, 0.1, 0.3)
    assert list(cfg.model.prior_optimizer.betas) == [0.5, 0.999]
    assert cfg.model.lr_gamma == 0.998
    assert cfg.generator.latent_dim == cfg.prior.latent_dim == cfg.latent_dim


@pytest.mark.parametrize(("prior", "k"), [("ebm", 20), ("flow", 40), ("gaussian", 40)])
def test_lebm_keeps_its_posterior_k1_on_cifar10(compose_cfg, prior, k):
    """LEBM's posterior chain is K1 = 20 on every data set (docs/paper.md#hyperparameters);
    the flow and Gaussian priors take CIFAR-10's K = 40. Evaluation chains stay 20 x 40."""
    cfg = compose_cfg(["dataset=cifar10", f"prior={prior}"])
    assert (cfg.inference.n_steps, cfg.inference.eval_steps) == (k, 800)
