"""Every task of conf/task/ keeps the contract of lfbm_lightning.tasks.task: run on a trained
checkpoint, it writes metrics.json, results.md and its declared files, with finite numbers.

A new task yaml is picked up here without edits; its options are shrunk by name (any of
:data:`SMALL` that the task has) so that each run takes seconds.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from hydra.utils import get_class

from lfbm_lightning.run.config_checks import TASK_DIR

SMALL = {  # option name -> a small value, applied where a task has the option
    "n_examples": 12,
    "n_steps": 3,
    "n_samples": 16,
    "sample_batch_size": 8,
    "grid_size": 4,
    "figure_examples": 4,
    "n_restarts": 2,
    "n_chains": 2,
    "chunk": 16,
    "log_z_samples": 1000,
}


def numbers(value) -> list[float]:
    """Every int or float in a JSON value (bools aside), recursively."""
    if isinstance(value, dict):
        return [x for v in value.values() for x in numbers(v)]
    if isinstance(value, list):
        return [x for v in value for x in numbers(v)]
    if isinstance(value, int | float) and not isinstance(value, bool):
        return [float(value)]
    return []


@pytest.mark.slow
@pytest.mark.parametrize("yaml", sorted(TASK_DIR.glob("*.yaml")), ids=lambda p: p.stem)
def test_task_writes_its_files_with_finite_numbers(
    yaml: Path, tiny_ckpt, run_task, inception_weights, tmp_path, compose_eval
):
    name = yaml.stem
    settings = compose_eval(name)[name]
    overrides = [f"{name}.{key}={value}" for key, value in SMALL.items() if key in settings]
    overrides += [
        f"metrics.inception_weights={inception_weights}",
        f"metrics.stats_dir={tmp_path / 'fid_stats'}",
        "metrics.feature_layer=64",
        "metrics.reference_images=16",
    ]
    metrics, out = run_task(tiny_ckpt, name, overrides)
    assert metrics["task"] == name
    values = numbers(metrics)
    assert len(values) > 2 and all(math.isfinite(v) for v in values), metrics
    task_class = get_class(compose_eval(name).task._target_)
    for file in ("metrics.json", "results.md", *task_class.files):
        assert (out / file).is_file() and (out / file).stat().st_size > 0, file
    assert json.loads((out / "metrics.json").read_text()) == metrics
    assert f"# {name} evaluation" in (out / "results.md").read_text()
