"""Uncached FID reference statistics under DDP: every rank features its share of the training
images (rank 0 alone would keep the others waiting in a collective for the whole set), rank 0
gets the statistics of all of them and caches them; the next call reads the cache."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from lfbm_lightning.metrics.fid import compute_feature_stats

HELPERS = Path(__file__).resolve().parents[1] / "helpers"


@pytest.mark.slow
def test_two_ranks_share_the_reference_images_and_rank_0_caches_the_whole(
    tmp_path, monkeypatch, inception_weights
):
    monkeypatch.syspath_prepend(str(HELPERS))  # spawned processes import the worker by name
    import fid_reference_worker as worker

    torch.multiprocessing.spawn(
        worker.reference_worker, args=(2, str(tmp_path), inception_weights), nprocs=2
    )
    (first0, cached0), (first1, cached1) = (
        torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1)
    )
    assert (first0["featured"], first1["featured"]) == (3, 2)  # images 0, 2, 4 and 1, 3
    assert first1["stats"] is None and cached1["stats"] is None
    images = torch.stack([item["image"] for item in worker.train_set()])
    whole = compute_feature_stats(images, inception_weights, 2, "cpu", "2048", progress=False)
    stats = first0["stats"]
    assert stats["n"] == whole.n == worker.N_IMAGES
    np.testing.assert_allclose(stats["mu"].numpy(), whole.mu, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(stats["sigma"].numpy(), whole.sigma, rtol=1e-4, atol=1e-6)
    assert len(list((tmp_path / "stats").glob("*.npz"))) == 1
    assert (cached0["featured"], cached1["featured"]) == (0, 0)  # the cache served
    assert torch.equal(cached0["stats"]["mu"], stats["mu"])
