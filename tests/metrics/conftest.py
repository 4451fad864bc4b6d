"""Fixtures for the metric tests: a random-weights Inception-v3 file and small image sets."""

from __future__ import annotations

from pathlib import Path
from unittest import mock

import pytest
import torch
from torch import nn
from torch_fidelity import feature_extractor_inceptionv3 as tf_inception


def _random_inception_state_dict(seed: int) -> dict[str, torch.Tensor]:
    """State dict of torch-fidelity's Inception-v3 with Kaiming-normal convolutions.

    The constructor always loads weights (a file, or a download when no path is given), so the
    download and ``load_state_dict`` are stubbed out while it runs; the module then keeps
    PyTorch's default init. With that init the pool3 features are ~1e-8 and every FID ~1e-13,
    so the convolutions are redrawn with Kaiming-normal (fan-in, ReLU gain); batch norms stay
    at identity (running mean 0, variance 1), which keeps activations O(1) through the net.
    """
    cls = tf_inception.FeatureExtractorInceptionV3
    with (
        mock.patch.object(tf_inception, "load_state_dict_from_url", return_value={}),
        mock.patch.object(cls, "load_state_dict"),
    ):
        model = cls("inception-v3-compat", ["2048"])
    generator = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, nonlinearity="relu", generator=generator)
    return model.state_dict()


@pytest.fixture(scope="session")
def inception_weights(tmp_path_factory: pytest.TempPathFactory) -> str:
    """Path of a ~95 MB random-weights file that torch-fidelity loads like the real one."""
    path = Path(tmp_path_factory.mktemp("inception")) / "random-inception.pth"
    torch.save(_random_inception_state_dict(seed=0), path)
    return str(path)


@pytest.fixture(scope="session")
def textured_images() -> torch.Tensor:
    """40 reproducible 3x32x32 images in [-0.7, 0.3]: smooth blobs plus noise.

    The range leaves room for brightness shifts up to +0.7 without clamping.
    """
    generator = torch.Generator().manual_seed(1)
    coarse = torch.rand(40, 3, 4, 4, generator=generator)
    smooth = nn.functional.interpolate(coarse, size=(32, 32), mode="bilinear")
    noise = 0.2 * torch.rand(40, 3, 32, 32, generator=generator)
    return smooth * 0.8 + noise - 0.7
