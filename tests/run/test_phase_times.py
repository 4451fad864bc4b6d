"""Where a run's time goes: per-epoch time/train_s and time/val_s in metrics.csv, the totals
and the evaluation after fit in metrics.json, and the summary's split, from a real train.py."""

from __future__ import annotations

import csv
import json
import re
import time

import pytest

from tests.conftest import TINY
from tests.helpers.train_runs import run_train


@pytest.fixture(scope="module")
def timed_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("timed")
    started = time.monotonic()
    result = run_train(
        [
            *TINY,
            "trainer.max_epochs=2",
            "trainer.check_val_every_n_epoch=2",
            "evaluate_after_fit=[reconstruction]",
            'evaluate_overrides=["device=cpu","progress=false","reconstruction.n_examples=20"]',
            f"hydra.run.dir={out}",
        ]
    )
    wall = time.monotonic() - started
    assert result.returncode == 0, result.stderr[-2000:]
    return out, wall, result.stdout + result.stderr


def epoch_column(out, key: str) -> dict[int, float]:
    with open(out / "csv" / "metrics.csv") as f:
        return {int(r["epoch"]): float(r[key]) for r in csv.DictReader(f) if r.get(key)}


@pytest.mark.slow
def test_each_epoch_has_positive_train_seconds_and_validated_ones_val_seconds(timed_run):
    out, _, _ = timed_run
    train = epoch_column(out, "time/train_s")
    val = epoch_column(out, "time/val_s")
    assert sorted(train) == [0, 1] and min(train.values()) > 0
    assert sorted(val) == [1] and val[1] > 0  # check_val_every_n_epoch=2: after epoch 2 only


@pytest.mark.slow
def test_the_parts_add_up_to_no_more_than_the_wall_time(timed_run):
    out, wall, _ = timed_run
    metrics = json.loads((out / "metrics.json").read_text())
    train = sum(epoch_column(out, "time/train_s").values())
    val = sum(epoch_column(out, "time/val_s").values())
    assert metrics["time/train_total_s"] == pytest.approx(train, rel=1e-4)
    assert metrics["time/val_total_s"] == pytest.approx(val, rel=1e-4)
    assert metrics["time/figures_s"] > 0 and metrics["time/evaluate_after_fit_s"] > 0
    parts = train + val + metrics["time/figures_s"]
    assert parts <= metrics["time/fit_s"]
    assert metrics["time/fit_s"] + metrics["time/evaluate_after_fit_s"] <= wall


@pytest.mark.slow
def test_the_summary_splits_the_wall_clock(timed_run):
    _, _, output = timed_run
    (line,) = [x for x in output.splitlines() if "time: training" in x]
    shares = [int(p) for p in re.findall(r"\((\d+)%\)", line)]
    names = re.findall(r"(training|validation|figures|evaluation|other) \d", line)
    assert names == ["training", "validation", "figures", "evaluation", "other"]
    assert 98 <= sum(shares) <= 102  # rounded shares of one wall time
