"""Every prior trains through the real entry point, in the documented comparison multirun."""

from __future__ import annotations

import json
import math

import pytest
import torch

from lfbm_lightning.models import LatentPriorModel
from tests.conftest import CONF, TINY, run_entry_point

# every prior that trains under the Langevin posterior; ex_post_gmm is fitted to an encoder's
# codes (the RAE row: tests/run/test_method_rows.py trains it with inference=autoencoder)
ENCODER_ONLY = {"ex_post_gmm"}
OPTIONS = sorted(p.stem for p in (CONF / "prior").glob("*.yaml") if p.stem not in ENCODER_ONLY)


@pytest.mark.slow
def test_compare_priors_multirun_trains_every_prior(tmp_path):
    """``python train.py -m experiment=compare_priors_digits prior=...`` on tiny settings."""
    result = run_entry_point(
        "train.py",
        [
            "-m",
            "experiment=compare_priors_digits",
            f"prior={','.join(OPTIONS)}",
            f"hydra.sweep.dir={tmp_path}",
            *TINY,
        ],
    )
    assert result.returncode == 0, result.stderr[-3000:]
    for job, option in enumerate(OPTIONS):
        run = tmp_path / f"{job}_{option}"
        metrics = json.loads((run / "metrics.json").read_text())
        assert math.isfinite(metrics["train/loss_epoch"]) and metrics["val/mse"] > 0, option
        model = LatentPriorModel.load_from_checkpoint(run / "checkpoints" / "last.ckpt")
        assert model.config["prior"]["_target_"].split(".")[-1] == type(model.prior).__name__
        assert model.config["dataset"]["holdout_digit"] == 9
        with torch.no_grad():
            images = model.sample_images(4)
        assert images.shape == (4, 1, 8, 8) and torch.isfinite(images).all(), option
        # one generator rate for all; the EBM's own prior rate wins over the dataset's
        lr_prior = 2e-5 if option == "ebm" else 1e-3
        assert (model.config["model"]["lr_prior"], model.config["model"]["lr_generator"]) == (
            lr_prior,
            1e-3,
        )
