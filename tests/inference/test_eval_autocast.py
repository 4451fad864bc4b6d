"""Evaluation fits run in float32 unless ``inference.eval_autocast`` asks otherwise, whatever
``inference.autocast`` does to the training chains (lfbm_lightning/inference/posterior.py)."""

from __future__ import annotations

import pytest
import torch
from hydra.utils import instantiate

from lfbm_lightning.models import LatentPriorModel
from lfbm_lightning.run.training import resolved_config
from tests.conftest import compose_config


@pytest.fixture(scope="module")
def models_and_images(tmp_path_factory):
    """Digits models with the same weights under three precision settings, and 6 val images."""
    tmp_path = tmp_path_factory.mktemp("eval_autocast")
    settings = {
        "float32": [],
        "bf16 chains": ["inference.autocast=bfloat16"],
        "bf16 fits": ["inference.autocast=bfloat16", "inference.eval_autocast=bfloat16"],
    }
    models = {}
    for name, overrides in settings.items():
        cfg = compose_config(["inference.eval_steps=20", *overrides], tmp_path)
        torch.manual_seed(0)
        models[name] = LatentPriorModel(resolved_config(cfg)).eval()
    datamodule = instantiate(cfg.dataset)
    datamodule.setup("fit")
    x = torch.stack([datamodule.splits["val"][i]["image"] for i in range(6)])
    return models, x


@pytest.mark.parametrize("fit", ["protocol", "fast"])
def test_bf16_training_chains_leave_the_fits_in_float32(models_and_images, fit):
    """With inference.autocast=bfloat16 alone, both fits give exactly the float32 model's z;
    with eval_autocast=bfloat16 too, they run in bf16 and end elsewhere."""
    models, x = models_and_images
    reference = models["float32"]
    for name in ("bf16 chains", "bf16 fits"):
        assert torch.equal(models[name].generator.net[0].weight, reference.generator.net[0].weight)
    z = {n: m.posterior.reconstruct(m, x, fit=fit)[1] for n, m in models.items()}
    assert torch.equal(z["bf16 chains"], z["float32"])
    assert (z["bf16 fits"] - z["float32"]).abs().max() > 1e-4
