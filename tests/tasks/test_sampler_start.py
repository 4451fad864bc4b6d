"""Evaluation fits started from the amortised sampler Q(z | x) of ``inference=damc``
(``<task>.start=q``): counted passes, the reported start, per-example seeding, refusals."""

from __future__ import annotations

import pytest
from hydra.utils import get_class

from lfbm_lightning.errors import ConfigError
from lfbm_lightning.models import LatentPriorModel
from lfbm_lightning.run.training import resolved_config
from tests.conftest import compose_config
from tests.tasks.conftest import HOLDOUT_DIGIT, train_checkpoint


@pytest.fixture(scope="session")
def damc_ckpt(tmp_path_factory: pytest.TempPathFactory):
    """Flow prior + DAMC on digits with digit 3 held out, 3 epochs, a small sampler."""
    out = tmp_path_factory.mktemp("digits_damc")
    return train_checkpoint(
        out,
        [
            "inference=damc",
            "inference.sampler.n_intervals=10",
            "inference.sampler.width=64",
            f"dataset.holdout_digit={HOLDOUT_DIGIT}",
            "trainer.max_epochs=3",
        ],
    )


@pytest.mark.slow  # its checkpoint fixture trains through train.py
def test_anomaly_from_q_counts_only_the_refinement_passes(damc_ckpt, run_task):
    common = ["anomaly.n_examples=40", "anomaly.scores=[joint]"]
    protocol, _ = run_task(damc_ckpt, "anomaly", [*common, "anomaly.n_steps=50"])
    from_q, _ = run_task(damc_ckpt, "anomaly", [*common, "anomaly.start=q", "anomaly.n_steps=5"])
    assert (protocol["start"], from_q["start"]) == ("default", "q")
    assert protocol["generator_passes"] == 40 * 50
    assert from_q["generator_passes"] == 40 * 5  # Q's draws use no generator pass
    assert from_q["passes_joint"] == 6  # the refinement and the decode
    assert 0 < from_q["auprc"] <= 1


@pytest.mark.slow
def test_reconstruction_from_q_fits_better_in_as_many_passes(damc_ckpt, run_task):
    """Q(x) + 5 noise-free steps reconstruct better than 5 steps from N(0, I): Q starts the
    fit near the posterior (per-example seeding: the contract tests, inference=damc)."""
    steps = ["reconstruction.n_steps=5", "reconstruction.n_examples=20"]
    from_q, _ = run_task(damc_ckpt, "reconstruction", [*steps, "reconstruction.start=q"])
    normal, _ = run_task(damc_ckpt, "reconstruction", steps)
    assert from_q["start"] == "q" and from_q["generator_passes"] == 20 * 5
    assert from_q["mse"] < normal["mse"]


def test_start_q_needs_a_checkpoint_with_a_sampler(compose_eval, tmp_path):
    model = LatentPriorModel(resolved_config(compose_config([], tmp_path / "train")))
    cfg = compose_eval("reconstruction", "reconstruction.start=q")
    with pytest.raises(ConfigError, match=r"reconstruction.start=q needs .*inference=damc"):
        get_class(cfg.task._target_)(model, None, cfg, tmp_path)
    bad = compose_eval("reconstruction", "reconstruction.start=encoder")
    with pytest.raises(ConfigError, match=r"reconstruction.start must be one of"):
        get_class(bad.task._target_)(model, None, bad, tmp_path)
