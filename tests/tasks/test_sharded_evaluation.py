"""Evaluation shared out over ranks: pooled Inception moments, rank-independent chain starts,
and ``evaluate.py devices=2`` (2 CPU processes, gloo) against one process."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from lfbm_lightning.metrics.fid import FeatureMoments
from lfbm_lightning.models import LatentPriorModel
from lfbm_lightning.tasks.examples import rank_share
from tests.conftest import run_entry_point
from tests.helpers.task_outputs import read_rows


def test_moments_of_disjoint_parts_pool_to_the_statistics_of_the_whole():
    features = torch.randn(50, 6, dtype=torch.float64) * torch.arange(1.0, 7.0) + 3.0
    whole = FeatureMoments()
    whole.update(features)
    pooled = FeatureMoments()
    for part in (features[:1], features[1:20], features[20:20], features[20:]):
        moments = FeatureMoments()
        if len(part):
            moments.update(part)
        pooled.merge(moments)  # one image, many, none: each rank's share may be anything
    stats = pooled.stats()
    assert stats.n == 50
    np.testing.assert_allclose(stats.mu, features.mean(0).numpy(), rtol=1e-12)
    np.testing.assert_allclose(stats.sigma, np.cov(features.numpy(), rowvar=False), rtol=1e-10)
    np.testing.assert_allclose(stats.sigma, whole.stats().sigma, rtol=1e-12)


def test_one_process_takes_every_example():
    dataset = list(range(7))
    assert rank_share(dataset) is dataset


@pytest.mark.slow
def test_chain_starts_depend_on_the_example_not_on_its_batch(digits_ckpt):
    model = LatentPriorModel.load_from_checkpoint(digits_ckpt).eval()
    start = model.posterior.seeded_start
    together = start(model, torch.tensor([4, 9, 11]), seed=1)
    apart = torch.cat([start(model, torch.tensor([i]), seed=1) for i in (4, 9, 11)])
    assert together.shape == (3, model.latent_dim)
    assert torch.equal(together, apart)
    assert not torch.equal(together, start(model, torch.tensor([4, 9, 11]), seed=2))
    # N(0, I) rows: 2000 starts have mean ~0 and variance ~1
    many = start(model, torch.arange(2000), seed=1)
    assert many.mean().abs() < 0.05 and (many.var() - 1).abs() < 0.05


def evaluate_in_processes(ckpt: Path, task: str, devices: int, out: Path, extra: list[str]):
    """``python evaluate.py ... device=cpu devices=N``; returns metrics.json."""
    args = [
        f"ckpt_path={ckpt}",
        f"task={task}",
        "device=cpu",
        f"devices={devices}",
        "progress=false",
        f"hydra.run.dir={out}",
        *extra,
    ]
    result = run_entry_point("evaluate.py", args)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads((out / "metrics.json").read_text())


@pytest.mark.slow
def test_two_processes_share_the_work_and_match_one_process(
    digits_ckpt, inception_weights, run_task, tmp_path
):
    """``evaluate.py devices=2`` against the one-process result of the same settings, computed
    by evaluate() in this process (what evaluate.py runs; it saves an interpreter start)."""
    tasks = {
        "reconstruction": ["reconstruction.n_examples=41", "reconstruction.grid_size=8"],
        "anomaly": ["anomaly.n_examples=41", "anomaly.n_steps=50"],
        "synthesis": [
            f"metrics.inception_weights={inception_weights}",
            f"metrics.stats_dir={tmp_path / 'fid_stats'}",
            "metrics.feature_layer=64",
            "metrics.reference_images=24",
            "synthesis.n_samples=45",  # 3 batches of 16, 16, 13: rank 0 draws two
            "synthesis.sample_batch_size=16",
            "synthesis.grid_size=4",
        ],
    }
    for task, extra in tasks.items():
        one, one_dir = run_task(digits_ckpt, task, ["device=cpu", "devices=1", *extra])
        two = evaluate_in_processes(digits_ckpt, task, 2, tmp_path / f"{task}-2", extra)
        assert (one["processes"], two["processes"]) == (1, 2)
        # the rank started for the job wrote nothing but its log into the job's directory
        out = tmp_path / f"{task}-2"
        assert (out / "evaluate_rank1.log").exists()
        assert sorted(p.name for p in out.iterdir() if p.name.startswith((".", "metrics"))) == [
            ".hydra",
            "metrics.json",
        ]
        if task == "synthesis":
            # the same seeded samples, drawn by two ranks and their moments pooled
            assert two["fid_n_samples"] == 45
            assert two["fid"] == pytest.approx(one["fid"], rel=1e-6)
            continue
        rows_one = read_rows(one_dir / "per_example.csv")
        rows_two = read_rows(out / "per_example.csv")
        assert [r["index"] for r in rows_two] == [r["index"] for r in rows_one]
        assert len(rows_two) == 41
        for a, b in zip(rows_one, rows_two, strict=True):
            for key, value in a.items():
                assert b[key] == pytest.approx(value, rel=1e-4, abs=1e-6), (task, key)
        score = "mse" if task == "reconstruction" else "auprc"
        assert two[score] == pytest.approx(one[score], rel=1e-4)


@pytest.mark.slow
def test_sweep_of_two_process_evaluations_gives_one_directory_per_job(digits_ckpt, tmp_path):
    sweep = tmp_path / "sweep"
    args = [
        "-m",
        f"ckpt_path={digits_ckpt}",
        "task=reconstruction",
        "device=cpu",
        "devices=2",
        "progress=false",
        "reconstruction.n_examples=20,30",
        f"hydra.sweep.dir={sweep}",
    ]
    result = run_entry_point("evaluate.py", args)
    assert result.returncode == 0, result.stderr[-3000:]
    jobs = sorted(p.name for p in sweep.iterdir() if p.is_dir())
    assert jobs == ["0", "1"]  # the ranks replayed no sweep and made no directory of their own
    for job, n_images in zip(jobs, (20, 30), strict=True):
        metrics = json.loads((sweep / job / "metrics.json").read_text())
        assert (metrics["processes"], metrics["n_images"]) == (2, n_images)
        assert (sweep / job / "evaluate_rank1.log").exists()
        assert len(read_rows(sweep / job / "per_example.csv")) == n_images
