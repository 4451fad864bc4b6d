"""Our FID arithmetic against torchmetrics' FrechetInceptionDistance on the same features
(why we keep ours: the comment above lfbm_lightning.metrics.fid.FeatureMoments)."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torchmetrics.image.fid import FrechetInceptionDistance

from lfbm_lightning.metrics.fid import FeatureMoments, frechet_distance


class GivenFeatures(nn.Module):
    """A 'feature extractor' that returns its input: both sides see the same feature rows."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.num_features = dim

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return features


@pytest.mark.parametrize(
    ("n", "dim", "rel"),
    [(400, 16, 1e-12), (300, 64, 1e-12), (2000, 512, 1e-12), (40, 64, 1e-7)],
    ids=["n>>d", "n>d", "wide", "singular (n<d)"],
)
def test_fid_of_the_same_features_matches_torchmetrics(n, dim, rel):
    generator = torch.Generator().manual_seed(0)
    scale = torch.linspace(0.5, 2.0, dim, dtype=torch.float64)
    real = torch.randn(n, dim, generator=generator, dtype=torch.float64) * scale + 1.0
    fake = torch.randn(n, dim, generator=generator, dtype=torch.float64) * 1.3
    theirs = FrechetInceptionDistance(feature=GivenFeatures(dim), reset_real_features=False)
    ours_real, ours_fake = FeatureMoments(), FeatureMoments()
    for part in range(0, n, 128):  # streamed in batches on both sides
        theirs.update(real[part : part + 128], real=True)
        theirs.update(fake[part : part + 128], real=False)
        ours_real.update(real[part : part + 128])
        ours_fake.update(fake[part : part + 128])
    ours = frechet_distance(ours_fake.stats(), ours_real.stats())
    assert ours == pytest.approx(float(theirs.compute()), rel=rel)
