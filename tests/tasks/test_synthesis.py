"""Synthesis: the whole FID pipeline offline with a random-weights Inception file."""

from __future__ import annotations

import math

import pytest

from tests.helpers.task_outputs import grid_shape

FAST_FID = ["metrics.feature_layer=64", "metrics.reference_images=24", "synthesis.grid_size=16"]


@pytest.mark.slow
def test_synthesis_fid_with_counts_and_cached_reference(
    digits_ckpt, run_task, inception_weights, tmp_path
):
    stats_dir = tmp_path / "fid_stats"
    overrides = [
        f"metrics.inception_weights={inception_weights}",
        f"metrics.stats_dir={stats_dir}",
        "synthesis.n_samples=30",
        "synthesis.sample_batch_size=16",
        *FAST_FID,
    ]
    metrics, out = run_task(digits_ckpt, "synthesis", overrides)
    assert math.isfinite(metrics["fid"]) and metrics["fid"] > 0
    assert (metrics["fid_n_samples"], metrics["fid_n_reference"]) == (30, 24)
    assert metrics["feature_layer"] == "64"
    assert metrics["fid_of"] == "prior samples"
    assert "| fid_of | prior samples |" in (out / "results.md").read_text()
    assert grid_shape(out / "samples.png") == (4, 4)
    (cache,) = stats_dir.glob("DigitsDataModule-*-train-24-layer64.npz")
    written_at = cache.stat().st_mtime_ns

    again, _ = run_task(digits_ckpt, "synthesis", overrides)
    assert cache.stat().st_mtime_ns == written_at  # reference statistics read back
    assert again["fid"] == pytest.approx(metrics["fid"], rel=1e-9)  # seeded samples


@pytest.mark.slow
def test_synthesis_kid_and_inception_score(digits_ckpt, run_task, inception_weights, tmp_path):
    overrides = [
        f"metrics.inception_weights={inception_weights}",
        "synthesis.fid=false",
        "synthesis.kid=true",
        "synthesis.isc=true",
        "synthesis.fidelity_samples=20",
        *FAST_FID,
    ]
    metrics, _ = run_task(digits_ckpt, "synthesis", overrides)
    assert "fid" not in metrics
    assert (metrics["fidelity_n_samples"], metrics["kid_n_reference"]) == (20, 20)
    assert math.isfinite(metrics["kid_mean"]) and metrics["kid_std"] >= 0
    # torch-fidelity's 10 splits of 2 images: each split's IS lies in [1, 2]
    assert 1.0 < metrics["inception_score_mean"] <= 2.0
