"""Bad config values fail before any work, with a message naming the key and the range."""

from __future__ import annotations

import pytest

from lfbm_lightning.training import train
from lfbm_lightning.config_checks import ConfigError, validate_config
from tests.conftest import run_entry_point

BAD = [
    ("inference.step_size=0", "inference.step_size must be a number > 0"),
    ("inference.step_size=-0.1", "inference.step_size must be a number > 0"),
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


def test_good_default_config_passes(compose_cfg):
    validate_config(compose_cfg([]))


def test_generator_that_does_not_match_the_data_fails_before_training(compose_cfg, tmp_path):
    cfg = compose_cfg(["generator=svhn"])  # 3x32x32 output, digits are 1x8x8
    with pytest.raises(ValueError, match=r"\(1, 8, 8\).*generator="):
        train(cfg)
    assert not (tmp_path / "checkpoints").exists()


def test_train_py_reports_a_bad_value_and_writes_nothing(tmp_path):
    result = run_entry_point("train.py", [f"hydra.run.dir={tmp_path}", "model.sigma=0"])
    assert result.returncode != 0
    assert "model.sigma must be a number > 0, got 0" in result.stderr
    assert not (tmp_path / "checkpoints").exists()


def test_unknown_key_keeps_hydras_message(tmp_path):
    result = run_entry_point("train.py", [f"hydra.run.dir={tmp_path}", "model.sigmaa=0.3"])
    assert result.returncode != 0
    assert "Could not override 'model.sigmaa'" in result.stderr
