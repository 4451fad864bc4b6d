"""val/mse uses the fast fit capped at model.validation.max_passes (the protocol one setting
away), and the sanity check a fit of sanity_steps."""

from __future__ import annotations

import pytest
import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from lfbm_lightning.models import LatentPriorModel
from lfbm_lightning.models.latent_prior_model import validation_fit


def test_validation_fit_settings():
    default = {"fit": "fast", "max_passes": 50, "sanity_steps": 1}
    assert validation_fit(default, 400) == ("fast", 50)
    assert validation_fit(default, 20) == ("fast", 20)  # never more than the protocol's steps
    assert validation_fit(default, 400, sanity=True) == ("fast", 1)
    assert validation_fit({**default, "fit": "protocol"}, 400) == ("protocol", 400)
    assert validation_fit(None, 400) == ("protocol", 400)  # configs of older runs


@pytest.mark.parametrize("fit", ["fast", "protocol"])
def test_val_mse_is_the_configured_fit(compose_cfg, fit):
    cfg = compose_cfg(
        [
            "inference.eval_steps=30",
            "model.validation.max_passes=12",
            f"model.validation.fit={fit}",
        ]
    )
    config = OmegaConf.to_container(cfg, resolve=True)
    config.pop("hydra", None)
    pl.seed_everything(0)
    model = LatentPriorModel(config)
    datamodule = instantiate(cfg.dataset)
    trainer = pl.Trainer(
        logger=False, enable_progress_bar=False, enable_checkpointing=False, inference_mode=False
    )
    (logged,) = trainer.validate(model, datamodule=datamodule, verbose=False)
    model.eval()
    errors = []
    for batch in datamodule.val_dataloader():
        x = batch["image"]
        x_hat, _ = model.posterior.reconstruct(
            model,
            x,
            index=batch["index"],
            seed=model.seed,
            n_steps=12 if fit == "fast" else 30,
            fit=fit,
        )
        errors.append((x - x_hat).pow(2).flatten(1).mean(1))
    assert logged["val/mse"] == pytest.approx(torch.cat(errors).mean().item(), rel=1e-5)
