"""evaluate.py on several checkpoints of one run (a directory of epoch-*.ckpt files, or a
glob): each scored in its own subdirectory, mean +/- sd over them at the top level."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import pytest
import torch

from tests.conftest import run_entry_point

TASK = ["task=reconstruction", "reconstruction.n_examples=10", "reconstruction.n_steps=3"]


@pytest.fixture(scope="module")
def three_epochs(tiny_ckpt, tmp_path_factory) -> Path:
    """``checkpoints/epoch-0001..0003.ckpt``: one trained checkpoint with its generator's
    weights scaled by 1, 0.9 and 1.1, so the three score differently."""
    directory = tmp_path_factory.mktemp("run") / "checkpoints"
    directory.mkdir()
    checkpoint = torch.load(tiny_ckpt, weights_only=True)
    for epoch, scale in ((1, 1.0), (2, 0.9), (3, 1.1)):
        state = {
            k: v * scale if k.startswith("generator.") and v.is_floating_point() else v
            for k, v in checkpoint["state_dict"].items()
        }
        torch.save(checkpoint | {"state_dict": state}, directory / f"epoch-{epoch:04d}.ckpt")
    return directory


@pytest.mark.slow
def test_a_checkpoint_directory_gives_each_its_numbers_and_their_mean_and_sd(
    three_epochs, tmp_path
):
    out = tmp_path / "eval"
    args = [f"ckpt_path={three_epochs}", *TASK, "progress=false", f"hydra.run.dir={out}"]
    result = run_entry_point("evaluate.py", args)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((out / "metrics.json").read_text())
    names = ["epoch-0001", "epoch-0002", "epoch-0003"]
    assert summary["n_checkpoints"] == 3 and list(summary["checkpoints"]) == names
    mses = []
    for name in names:  # each checkpoint's own files in its own subdirectory
        own = json.loads((out / name / "metrics.json").read_text())
        assert own == summary["checkpoints"][name]
        assert own["ckpt_path"] == str(three_epochs / f"{name}.ckpt")
        assert (out / name / "per_example.csv").is_file()
        mses.append(own["mse"])
    assert len(set(mses)) == 3  # three different models
    assert summary["mean"]["mse"] == pytest.approx(statistics.fmean(mses), rel=1e-12)
    assert summary["sd"]["mse"] == pytest.approx(statistics.stdev(mses), rel=1e-12)
    assert summary["sd"]["n_images"] == 0 and "processes" not in summary["mean"]
    table = (out / "results.md").read_text()
    assert "| quantity | epoch-0001 | epoch-0002 | epoch-0003 | mean +/- sd |" in table
    row = next(line for line in table.splitlines() if line.startswith("| mse |"))
    assert f"{statistics.fmean(mses):.6g} +/- {statistics.stdev(mses):.3g}" in row


@pytest.mark.slow
def test_a_glob_picks_the_checkpoints_it_matches(three_epochs, run_task):
    pattern = f"'{three_epochs}/epoch-000[13].ckpt'"  # quoted for Hydra's override parser
    summary, out = run_task(pattern, "reconstruction", TASK[1:])
    assert list(summary["checkpoints"]) == ["epoch-0001", "epoch-0003"]
    assert (out / "epoch-0003" / "reconstructions.png").is_file()
