"""Fixtures of the evaluation-task tests: tiny digits checkpoints trained once per session
through the real train.py, the random-weights Inception file, and evaluate() runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from lfbm_lightning.run.evaluation import evaluate
from tests.conftest import compose_config, run_entry_point
from tests.metrics.conftest import inception_weights  # noqa: F401  (session fixture)

HOLDOUT_DIGIT = 3

# Short runs: 8 epochs (~30 s) lift the anomaly AUPRC well above chance (0.60 against 0.36).
TRAIN_FAST = [
    "inference.eval_steps=50",
    "trainer.check_val_every_n_epoch=100",
    "callbacks.image_grids.every_n_epochs=0",
    "callbacks.image_grids.n_images=8",
    "trainer.enable_progress_bar=false",
    "~callbacks.progress_bar",
]


@pytest.fixture(autouse=True)
def one_torch_thread():
    """One intra-op thread: on the 2 shared cores of CI, two threads contending with other
    processes made a Langevin step ~17x slower (880 ms against 50 ms, measured)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def train_checkpoint(out: Path, overrides: list[str]) -> Path:
    """Train through ``python train.py`` (one thread) and return ``last.ckpt``."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("OMP_NUM_THREADS", "1")
        result = run_entry_point("train.py", [f"hydra.run.dir={out}", *TRAIN_FAST, *overrides])
    assert result.returncode == 0, result.stderr[-3000:]
    return out / "checkpoints" / "last.ckpt"


@pytest.fixture(scope="session")
def digits_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Flow prior on digits with digit 3 held out (anomaly split), 8 epochs."""
    out = tmp_path_factory.mktemp("digits_holdout")
    return train_checkpoint(
        out, [f"dataset.holdout_digit={HOLDOUT_DIGIT}", "trainer.max_epochs=8"]
    )


@pytest.fixture(scope="session")
def occluded_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Flow prior on digits with digit 3 held out (anomaly split) whose training images each
    miss one fixed 4 x 4 square, 2 epochs: a checkpoint every task accepts (anomaly needs the
    held-out digit, recovery the occlusion)."""
    out = tmp_path_factory.mktemp("digits_occluded")
    return train_checkpoint(
        out,
        [
            f"dataset.holdout_digit={HOLDOUT_DIGIT}",
            "dataset.occlusion.kind=single_region",
            "dataset.occlusion.size=4",
            "trainer.max_epochs=2",
        ],
    )


@pytest.fixture
def run_task(tmp_path: Path):
    """``run_task(ckpt, task, overrides) -> (metrics.json as dict, output directory)``:
    evaluate() in this process on the composed conf/evaluate.yaml."""

    def _run(ckpt: Path, task: str, overrides: list[str]) -> tuple[dict, Path]:
        out = tmp_path / task
        cfg = compose_config(
            [f"ckpt_path={ckpt}", f"task={task}", "progress=false", *overrides],
            out,
            "evaluate",
        )
        returned = evaluate(cfg)
        written = json.loads((out / "metrics.json").read_text())
        assert written == returned
        return written, out

    return _run


@pytest.fixture(scope="session")
def tiny_ckpt(occluded_ckpt: Path) -> Path:
    """A checkpoint every task accepts, for the tests of files, contracts and refusals (not of
    quality): the occluded one, so that the session trains one run for both."""
    return occluded_ckpt


@pytest.fixture
def compose_eval(tmp_path: Path):
    """``compose_eval(task, *overrides)``: the composed evaluate config of a task."""

    def _compose(task: str, *overrides: str):
        overrides = ["ckpt_path=x.ckpt", f"task={task}", *overrides]
        return compose_config(overrides, tmp_path, "evaluate")

    return _compose
