"""FID: weights lookup, image conversion, statistics, cache, distance, torch-fidelity parity.

Uses the random-weights Inception file from conftest; the 64-d layer wherever the feature
dimension does not matter, because the full network costs ~0.1-0.4 s per image on CPU.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset
from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

from lfbm_lightning.errors import InceptionWeightsMissing
from lfbm_lightning.metrics import inception
from lfbm_lightning.metrics.fid import (
    FeatureStats,
    compute_feature_stats,
    fidelity_metrics,
    frechet_distance,
    load_stats,
    reference_stats,
    save_stats,
)
from lfbm_lightning.metrics.inception import resolve_inception_weights, to_uint8_rgb

# ------------------------------------------------------------------------------------------
# Weights lookup


@pytest.fixture
def no_weights_anywhere(monkeypatch, tmp_path):
    """Empty TORCH_HOME and no LFBM_INCEPTION_WEIGHTS; returns the (absent) cache file path."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.delenv(inception.WEIGHTS_ENV_VAR, raising=False)
    return tmp_path / "torch_home" / "hub" / "checkpoints" / inception.WEIGHTS_FILENAME


def test_missing_weights_error_names_setting_env_var_and_cache(no_weights_anywhere):
    with pytest.raises(InceptionWeightsMissing) as excinfo:
        resolve_inception_weights(None)
    message = str(excinfo.value)
    assert "metrics.inception_weights" in message
    assert "LFBM_INCEPTION_WEIGHTS" in message
    assert str(no_weights_anywhere) in message
    assert "metrics.allow_download=true" in message
    assert isinstance(excinfo.value, FileNotFoundError)


def test_allow_download_returns_none_for_torch_fidelity_to_fetch(no_weights_anywhere):
    assert resolve_inception_weights(None, allow_download=True) is None


def test_explicit_missing_path_raises_even_with_download(no_weights_anywhere, tmp_path):
    missing = tmp_path / "nope.pth"
    with pytest.raises(FileNotFoundError, match="metrics.inception_weights") as excinfo:
        resolve_inception_weights(str(missing), allow_download=True)
    assert str(missing) in str(excinfo.value)


def test_lookup_order_path_then_env_then_cache(no_weights_anywhere, monkeypatch, tmp_path):
    explicit, from_env = tmp_path / "explicit.pth", tmp_path / "env.pth"
    for path in (explicit, from_env, no_weights_anywhere):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")
    assert resolve_inception_weights(None) == str(no_weights_anywhere)
    monkeypatch.setenv(inception.WEIGHTS_ENV_VAR, str(from_env))
    assert resolve_inception_weights(None) == str(from_env)
    assert resolve_inception_weights(str(explicit)) == str(explicit)
    monkeypatch.setenv(inception.WEIGHTS_ENV_VAR, str(tmp_path / "gone.pth"))
    with pytest.raises(FileNotFoundError, match="LFBM_INCEPTION_WEIGHTS"):
        resolve_inception_weights(None)


# ------------------------------------------------------------------------------------------
# Image conversion


def test_to_uint8_rgb_maps_range_rounds_clamps_and_repeats_grey():
    grey = torch.tensor([-1.0, 1.0, 0.0, 0.5, -2.0, 3.0]).view(1, 1, 2, 3)
    out = to_uint8_rgb(grey)
    assert out.dtype == torch.uint8 and out.shape == (1, 3, 2, 3)
    # (x + 1) / 2 * 255 = 0, 255, 127.5 -> 128 (round half to even), 191.25 -> 191, clamped 0, 255
    expected = torch.tensor([0, 255, 128, 191, 0, 255], dtype=torch.uint8).view(2, 3)
    for channel in range(3):
        assert torch.equal(out[0, channel], expected)


def test_to_uint8_rgb_rejects_two_channels():
    with pytest.raises(ValueError, match="1 or 3"):
        to_uint8_rgb(torch.zeros(2, 2, 4, 4))


# ------------------------------------------------------------------------------------------
# Fréchet distance


def test_frechet_distance_matches_closed_form_for_diagonal_gaussians():
    mu1, mu2 = np.array([0.0, 1.0, -2.0]), np.array([1.0, 1.0, 0.5])
    s1, s2 = np.array([1.0, 4.0, 0.25]), np.array([9.0, 1.0, 0.25])
    closed_form = np.sum((mu1 - mu2) ** 2) + np.sum(s1 + s2 - 2 * np.sqrt(s1 * s2))
    # = (1 + 0 + 6.25) + ((1 + 9 - 6) + (4 + 1 - 4) + (0.25 + 0.25 - 0.5)) = 7.25 + 5 = 12.25
    assert closed_form == pytest.approx(12.25)
    got = frechet_distance(
        FeatureStats(mu1, np.diag(s1), n=10), FeatureStats(mu2, np.diag(s2), n=10)
    )
    assert got == pytest.approx(12.25, abs=1e-9)


def test_frechet_distance_rotation_invariant_full_covariance():
    rng = np.random.default_rng(0)
    q, _ = np.linalg.qr(rng.normal(size=(4, 4)))
    s1, s2 = np.array([1.0, 2.0, 3.0, 4.0]), np.array([4.0, 1.0, 1.0, 9.0])
    stats1 = FeatureStats(q @ np.ones(4), q @ np.diag(s1) @ q.T, n=5)
    stats2 = FeatureStats(q @ np.zeros(4), q @ np.diag(s2) @ q.T, n=5)
    expected = 4.0 + np.sum(s1 + s2 - 2 * np.sqrt(s1 * s2))
    assert frechet_distance(stats1, stats2) == pytest.approx(expected, abs=1e-8)


def test_frechet_distance_of_singular_covariance_with_itself_is_zero():
    rng = np.random.default_rng(1)
    features = rng.normal(size=(5, 50))  # 5 samples in 50-d: covariance of rank 4
    stats = FeatureStats(features.mean(0), np.cov(features, rowvar=False), n=5)
    # the square roots of the 46 zero eigenvalues are round-off (~1e-8 each): zero up to ~1e-6
    scale = np.trace(stats.sigma)
    assert abs(frechet_distance(stats, stats)) < 1e-6 * scale


def test_frechet_distance_rejects_mismatched_dimensions():
    with pytest.raises(ValueError, match="shape"):
        frechet_distance(
            FeatureStats(np.zeros(2), np.eye(2), 3), FeatureStats(np.zeros(3), np.eye(3), 3)
        )


# ------------------------------------------------------------------------------------------
# Feature statistics with the (random-weights) Inception network


def test_feature_stats_match_direct_features_and_ignore_batching(
    inception_weights, textured_images
):
    images = textured_images[:8]
    extractor = FeatureExtractorInceptionV3(
        "inception-v3-compat", ["64"], feature_extractor_weights_path=inception_weights
    )
    with torch.no_grad():
        (features,) = extractor(to_uint8_rgb(images))
    features = features.double().numpy()

    stats = compute_feature_stats(images, inception_weights, batch_size=5, feature_layer="64")
    assert stats.n == 8 and stats.mu.shape == (64,) and stats.sigma.shape == (64, 64)
    np.testing.assert_allclose(stats.mu, features.mean(0), rtol=1e-5, atol=1e-8)
    np.testing.assert_allclose(stats.sigma, np.cov(features, rowvar=False), rtol=1e-4, atol=1e-9)

    loader = DataLoader(TensorDataset(images, torch.zeros(8)), batch_size=3)
    from_loader = compute_feature_stats(loader, inception_weights, feature_layer="64")
    np.testing.assert_allclose(from_loader.mu, stats.mu, rtol=1e-5)
    np.testing.assert_allclose(from_loader.sigma, stats.sigma, rtol=1e-4, atol=1e-9)


def test_grey_images_equal_their_three_channel_copy(inception_weights, textured_images):
    grey = textured_images[:6, :1]
    stats_grey = compute_feature_stats(grey, inception_weights, feature_layer="64")
    stats_rgb = compute_feature_stats(
        grey.repeat(1, 3, 1, 1), inception_weights, feature_layer="64"
    )
    np.testing.assert_array_equal(stats_grey.mu, stats_rgb.mu)


@pytest.mark.slow
def test_fid_of_a_set_with_itself_is_zero_at_pool3(inception_weights, textured_images):
    # slow: Inception at pool3 plus three 2048 x 2048 decompositions (~9 s on 2 cores)
    stats = compute_feature_stats(textured_images[:8], inception_weights, feature_layer="2048")
    assert stats.mu.shape == (2048,) and stats.sigma.shape == (2048, 2048)
    assert np.trace(stats.sigma) > 1e-3  # features do not vanish
    assert abs(frechet_distance(stats, stats)) < 1e-3


def test_fid_grows_with_brightness_shift(inception_weights, textured_images):
    images = textured_images[:16]
    reference = compute_feature_stats(images, inception_weights, feature_layer="64")
    fids = [
        frechet_distance(
            reference,
            compute_feature_stats(images + shift, inception_weights, feature_layer="64"),
        )
        for shift in (0.0, 0.3, 0.6)
    ]
    assert abs(fids[0]) < 1e-6
    assert 0 < fids[1] < fids[2]
    assert fids[1] > 1e3 * max(abs(fids[0]), 1e-9)


# ------------------------------------------------------------------------------------------
# Statistics on disk


class CountingBatches:
    """Iterable of one image batch that counts how often it is iterated."""

    def __init__(self, images: torch.Tensor) -> None:
        self.images = images
        self.iterations = 0

    def __iter__(self):
        self.iterations += 1
        yield self.images


def test_save_load_roundtrip_and_key_check(tmp_path):
    stats = FeatureStats(np.arange(3.0), np.diag([1.0, 2.0, 3.0]), n=7)
    path = tmp_path / "sub" / "stats.npz"
    save_stats(stats, path, key="layer=64")
    loaded = load_stats(path, key="layer=64")
    assert loaded.n == 7
    np.testing.assert_array_equal(loaded.mu, stats.mu)
    np.testing.assert_array_equal(loaded.sigma, stats.sigma)
    with pytest.raises(ValueError, match="does not match"):
        load_stats(path, key="layer=2048")


def test_reference_stats_are_computed_once_then_read_from_cache(
    inception_weights, textured_images, tmp_path
):
    batches = CountingBatches(textured_images[:8])
    cache = tmp_path / "reference.npz"

    first = reference_stats(batches, cache, inception_weights, feature_layer="64")
    assert batches.iterations == 1 and cache.is_file()
    written_at = cache.stat().st_mtime_ns

    second = reference_stats(batches, cache, inception_weights, feature_layer="64")
    assert batches.iterations == 1, "a valid cache must not recompute"
    assert cache.stat().st_mtime_ns == written_at
    assert second.n == 8
    np.testing.assert_array_equal(second.sigma, first.sigma)


def test_reference_stats_recomputes_when_cache_key_differs(
    inception_weights, textured_images, tmp_path
):
    cache = tmp_path / "reference.npz"
    save_stats(FeatureStats(np.zeros(64), np.eye(64), n=2), cache, key="layer=64;weights=other")
    batches = CountingBatches(textured_images[:4])
    stats = reference_stats(batches, cache, inception_weights, feature_layer="64")
    assert batches.iterations == 1
    assert stats.n == 4 and not np.allclose(stats.mu, 0)
    assert load_stats(cache).n == 4


# ------------------------------------------------------------------------------------------
# torch-fidelity's calculate_metrics


def test_fidelity_metrics_fid_agrees_with_ours_and_kid_is_reported(
    inception_weights, textured_images
):
    samples, reference = textured_images[:12] + 0.3, textured_images[12:24]
    ours = frechet_distance(
        compute_feature_stats(samples, inception_weights, feature_layer="64"),
        compute_feature_stats(reference, inception_weights, feature_layer="64"),
    )
    theirs = fidelity_metrics(
        samples, reference, inception_weights, fid=True, kid=True, feature_layer="64"
    )
    assert ours > 0
    assert theirs["frechet_inception_distance"] == pytest.approx(ours, rel=1e-4)
    assert theirs["kernel_inception_distance_mean"] > 0
    assert np.isfinite(theirs["kernel_inception_distance_std"])


@pytest.mark.slow
def test_fidelity_metrics_inception_score_of_two_image_splits(inception_weights, textured_images):
    # torch-fidelity uses 10 splits: 20 images give splits of 2, whose IS lies in [1, 2]
    # (exp of a mean KL to the split's mean prediction, at most log 2 with two images)
    result = fidelity_metrics(textured_images[:20], None, inception_weights, fid=False, isc=True)
    assert 1.0 < result["inception_score_mean"] <= 2.0
    assert result["inception_score_std"] >= 0
