"""Recovery on a checkpoint trained on occluded digits."""

from __future__ import annotations

import pytest
import torch

from tests.helpers.task_outputs import grid_shape, read_rows


@pytest.mark.slow
def test_recovery_scores_missing_observed_and_all_pixels(occluded_ckpt, run_task):
    metrics, out = run_task(
        occluded_ckpt,
        "recovery",
        ["recovery.n_examples=40", "recovery.n_steps=50", "recovery.figure_examples=5"],
    )
    assert (metrics["n_images"], metrics["n_steps"]) == (40, 50)
    assert metrics["missing_fraction"] == pytest.approx(16 / 64)  # one 4 x 4 hole in 8 x 8
    rows = read_rows(out / "per_example.csv")
    assert len(rows) == 40
    for r in rows:  # all pixels = the area-weighted mix of missing and observed ones
        mix = 0.25 * r["mse_missing_01"] + 0.75 * r["mse_observed_01"]
        assert r["mse_all_01"] == pytest.approx(mix, rel=1e-5)
    for name in ("mse_missing_01", "mse_observed_01", "mse_all_01"):
        assert metrics[name] == pytest.approx(sum(r[name] for r in rows) / 40, rel=1e-9)
    # the model fits what it sees better than what it must guess
    assert 0 < metrics["mse_observed_01"] < metrics["mse_missing_01"], metrics
    # 5 examples in 2 blocks of (original | occluded | recovered) columns
    assert grid_shape(out / "recovery.png", labelled=True) == (3, 6)


@pytest.mark.slow
def test_recovery_refuses_a_model_trained_on_complete_images(digits_ckpt, run_task):
    with pytest.raises(ValueError, match="dataset.occlusion.kind"):
        run_task(digits_ckpt, "recovery", ["recovery.n_examples=4"])


@pytest.mark.slow
def test_recovery_uses_the_training_sampler_by_default_and_fits_on_request(
    occluded_ckpt, run_task
):
    inference = torch.load(occluded_ckpt, weights_only=True)["hyper_parameters"]["config"][
        "inference"
    ]
    small = ["recovery.n_examples=24", "recovery.figure_examples=4"]
    sample, out = run_task(occluded_ckpt, "recovery", small)
    # the authors' way: K noisy steps of the training chain (inference.n_steps, step_size)
    assert (sample["chain"], sample["noise"]) == ("sample", True)
    assert sample["n_steps"] == inference["n_steps"] == 20
    assert sample["step_size"] == inference["step_size"]
    assert "| chain | sample |" in (out / "results.md").read_text()

    fit, out = run_task(occluded_ckpt, "recovery", [*small, "recovery.chain=fit"])
    assert (fit["chain"], fit["noise"]) == ("fit", False)
    assert fit["n_steps"] == inference["eval_steps"] == 50
    assert fit["step_size"] == inference["eval_step_size"]
    assert "| chain | fit |" in (out / "results.md").read_text()
    # the noise-free fit of 50 steps matches the observed pixels better than 20 noisy steps
    assert fit["mse_observed_01"] < sample["mse_observed_01"], (fit, sample)

    with pytest.raises(ValueError, match=r"recovery.chain must be one of \['sample', 'fit'\]"):
        run_task(occluded_ckpt, "recovery", [*small, "recovery.chain=map"])


@pytest.mark.slow
def test_recovery_fid_of_the_recovered_images_says_so(
    occluded_ckpt, run_task, inception_weights, tmp_path
):
    """recovery.fid=true: the option beside the paper's recovery FID (task=synthesis, prior
    samples); metrics.json and results.md name what was scored."""
    overrides = [
        "recovery.n_examples=20",
        "recovery.n_steps=5",
        "recovery.fid=true",
        f"metrics.inception_weights={inception_weights}",
        f"metrics.stats_dir={tmp_path / 'fid_stats'}",
        "metrics.feature_layer=64",
        "metrics.reference_images=24",
    ]
    metrics, out = run_task(occluded_ckpt, "recovery", overrides)
    assert metrics["fid"] > 0 and metrics["fid_n_samples"] == 20
    assert metrics["fid_of"] == "recovered training images"
    assert "| fid_of | recovered training images |" in (out / "results.md").read_text()
