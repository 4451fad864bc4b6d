"""Bad config values fail before any work, with a message naming the key and the range."""

from __future__ import annotations

import re

import pytest
import torch

from lfbm_lightning.run.config_checks import ConfigError, validate_config
from lfbm_lightning.run.evaluation import evaluate
from lfbm_lightning.run.training import train
from tests.conftest import compose_config, run_entry_point
from tests.helpers.train_runs import error_lines

BAD = [
    ("inference.step_size=0", "inference.step_size must be a number > 0"),
    ("inference.step_size=-0.1", "inference.step_size must be a number > 0"),
    ("inference.step_size=inf", "inference.step_size must be a number > 0, got inf"),
    ("inference.eval_steps=1.5", "inference.eval_steps must be an integer >= 1"),
    ("model.lr_prior=nan", "model.lr_prior must be a number > 0, got nan"),
    ("inference.eval_step_size=0", "inference.eval_step_size must be a number > 0"),
    ("model.sigma=0", "model.sigma must be a number > 0"),
    ("model.sigma=-1", "model.sigma must be a number > 0"),
    ("inference.n_steps=0", "inference.n_steps must be an integer >= 1"),
    ("inference.eval_steps=0", "inference.eval_steps must be an integer >= 1"),
    ("latent_dim=0", "latent_dim must be an integer >= 1"),
    ("dataset.holdout_digit=10", "dataset.holdout_digit must be null or an integer in 0..9"),
    ("dataset.holdout_digit=-1", "dataset.holdout_digit must be null or an integer in 0..9"),
    ("prior.latent_dim=7", "prior.latent_dim is 7 but latent_dim is 16"),
    ("generator.latent_dim=7", "generator.latent_dim is 7 but latent_dim is 16"),
]


@pytest.mark.parametrize(("override", "message"), BAD, ids=[b[0] for b in BAD])
def test_bad_value_is_named_with_its_range(compose_cfg, override, message):
    cfg = compose_cfg([override])
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(".", r"\.")):
        validate_config(cfg)


def test_unknown_mnist_protocol_is_named_with_the_choices(compose_cfg):
    cfg = compose_cfg(["dataset=mnist", "dataset.protocol=zenati"])
    message = "dataset.protocol must be one of ['official', 'pooled_80_20'], got 'zenati'"
    with pytest.raises(ConfigError, match=re.escape(message)):
        validate_config(cfg)


def test_good_default_config_passes(compose_cfg):
    validate_config(compose_cfg([]))


def test_generator_that_does_not_match_the_data_fails_before_training(compose_cfg, tmp_path):
    cfg = compose_cfg(["generator=svhn"])  # 3x32x32 output, digits are 1x8x8
    with pytest.raises(ValueError, match=r"\(1, 8, 8\).*generator="):
        train(cfg)
    assert not (tmp_path / "checkpoints").exists()


@pytest.mark.slow
def test_train_py_reports_a_bad_value_and_writes_nothing(sigma_zero_run):
    result, run_dir = sigma_zero_run  # train.py model.sigma=0, shared with test_entry_errors.py
    assert result.returncode != 0
    assert "model.sigma must be a number > 0, got 0" in result.stderr
    assert not (run_dir / "checkpoints").exists()


@pytest.mark.slow
def test_train_py_refuses_an_infinite_step_size_with_one_line_and_exit_2(tmp_path):
    result = run_entry_point("train.py", [f"hydra.run.dir={tmp_path}", "inference.step_size=inf"])
    assert result.returncode == 2, result.stderr[-2000:]
    assert error_lines(result.stderr) == [
        "error: inference.step_size must be a number > 0, got inf"
    ]
    assert not (tmp_path / "checkpoints").exists()


@pytest.mark.slow
def test_unknown_key_keeps_hydras_message(tmp_path):
    result = run_entry_point("train.py", [f"hydra.run.dir={tmp_path}", "model.sigmaa=0.3"])
    assert result.returncode != 0
    assert "Could not override 'model.sigmaa'" in result.stderr


NEW_RULES = [
    ("trainer.max_epochs=abc", "trainer.max_epochs must be an integer >= 1, or -1"),
    ("trainer.max_epochs=0", "trainer.max_epochs must be an integer >= 1, or -1"),
    ("trainer.limit_train_batches=1.5", "trainer.limit_train_batches must be an integer >= 0"),
    ("model.lr_gamma=0", "model.lr_gamma must be a number in (0, 1]"),
    ("model.lr_gamma=1.5", "model.lr_gamma must be a number in (0, 1]"),
    ("model.max_skipped_fraction=2", "model.max_skipped_fraction must be a number in [0, 1]"),
    ("callbacks.keep_last_epochs=-1", "callbacks.keep_last_epochs must be an integer >= 0"),
]


@pytest.mark.parametrize(("override", "message"), NEW_RULES, ids=[b[0] for b in NEW_RULES])
def test_trainer_and_schedule_values_are_checked(compose_cfg, override, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        validate_config(compose_cfg([override]))


def test_lr_gamma_of_one_and_unlimited_epochs_pass(compose_cfg):
    validate_config(compose_cfg(["model.lr_gamma=1", "trainer.max_epochs=-1"]))


# Through train.py: each fails within seconds, before data or model, exit 2, one line.
ENTRY_POINT_CASES = [
    (["trainer.max_epochs=abc"], "trainer.max_epochs must be an integer >= 1, or -1 for no limit"),
    (["prior=ebm", "prior.step_size=-1"], "prior.step_size must be a number > 0, got -1"),
    (["prior=ebm", "prior.n_steps=0"], "prior.n_steps must be an integer >= 1"),
    (["model.lr_gamma=1.5"], "model.lr_gamma must be a number in (0, 1]"),
]
if not torch.cuda.is_available():
    ENTRY_POINT_CASES.append(
        (["trainer.accelerator=gpu"], "trainer.accelerator=gpu but this machine has no usable")
    )


@pytest.mark.slow
@pytest.mark.parametrize(
    ("overrides", "message"), ENTRY_POINT_CASES, ids=[" ".join(c[0]) for c in ENTRY_POINT_CASES]
)
def test_train_py_names_the_bad_key(tmp_path, overrides, message):
    result = run_entry_point("train.py", [f"hydra.run.dir={tmp_path}", *overrides], timeout=120)
    assert result.returncode == 2, result.stderr[-2000:]
    [line] = error_lines(result.stderr)
    assert message in line, line
    assert not (tmp_path / "checkpoints").exists()


# evaluate.py task=likelihood's estimator settings: refused before the checkpoint is read
LIKELIHOOD_CASES = [
    ("likelihood.estimator=laplace", "likelihood.estimator must be one of ['importance', 'ais']"),
    ("likelihood.simulate=yes", "likelihood.simulate must be true or false, got 'yes'"),
    ("likelihood.ais.n_distributions=0", "likelihood.ais.n_distributions must be an integer >= 1"),
    ("likelihood.ais.n_chains=2.5", "likelihood.ais.n_chains must be an integer >= 1"),
    ("likelihood.ais.schedule=cosine", "likelihood.ais.schedule must be one of ['sigmoid', 'lin"),
    ("likelihood.ais.n_leapfrog=0", "likelihood.ais.n_leapfrog must be an integer >= 1"),
    ("likelihood.ais.step_size=0", "likelihood.ais.step_size must be a number > 0, got 0"),
    ("likelihood.ais.target_accept=1", "likelihood.ais.target_accept must be null or a number in"),
]


@pytest.mark.parametrize(
    ("override", "message"), LIKELIHOOD_CASES, ids=[c[0] for c in LIKELIHOOD_CASES]
)
def test_likelihood_estimator_settings_are_checked_before_the_model_loads(
    tmp_path, override, message
):
    overrides = ["ckpt_path=/nonexistent.ckpt", "task=likelihood", "likelihood.estimator=ais"]
    cfg = compose_config([*overrides, override], tmp_path, "evaluate")
    with pytest.raises(ConfigError, match=re.escape(message)):
        evaluate(cfg)


@pytest.mark.slow
def test_evaluate_py_refuses_an_unknown_likelihood_estimator_with_exit_2(tmp_path):
    args = ["ckpt_path=/nonexistent.ckpt", "task=likelihood", "likelihood.estimator=bdmc"]
    result = run_entry_point("evaluate.py", [f"hydra.run.dir={tmp_path}", *args], timeout=120)
    assert result.returncode == 2, result.stderr[-2000:]
    [line] = error_lines(result.stderr)
    assert "likelihood.estimator must be one of ['importance', 'ais'], got 'bdmc'" in line, line
