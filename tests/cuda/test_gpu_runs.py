"""Real training runs on the GPU (train.py as a subprocess on digits, TINY settings): each
supported precision, torch.compile with CUDA graphs, and a resume. Skipped without CUDA;
``benchmarks/gpu_check.sh`` runs them (``--cpu``: a dry run, tests/helpers/gpu_device.py)."""

from __future__ import annotations

import json
import math

import pytest

from tests.conftest import TINY
from tests.helpers.gpu_device import ACCELERATOR, ON_CUDA, needs_device, record
from tests.helpers.train_runs import probed_run, run_train

pytestmark = [pytest.mark.cuda, pytest.mark.slow, needs_device]

ON_DEVICE = [*TINY, f"trainer.accelerator={ACCELERATOR}", "extras.print_config=false"]

PRECISIONS = {  # the supported settings (16-mixed is refused)
    "32-true": ["trainer.precision=32-true"],
    "bf16-mixed": ["trainer.precision=bf16-mixed"],
    "bf16-mixed, bf16 chains": ["trainer.precision=bf16-mixed", "inference.autocast=bfloat16"],
    "bf16 chains and fits": ["inference.autocast=bfloat16", "inference.eval_autocast=bfloat16"],
}


@pytest.mark.parametrize("name", list(PRECISIONS))
def test_training_under_each_supported_precision(tmp_path, name):
    """The run completes with a finite val/mse; inside E(z), autocast is off around the
    residual and g(z) ran in bf16 exactly where inference.autocast / eval_autocast ask."""
    overrides = PRECISIONS[name]
    proc, probe = probed_run(tmp_path, "EnergyPrecisionProbe", [*ON_DEVICE, *overrides])
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert result["status"] == "completed" and math.isfinite(result["val/mse"])
    chains = [c for c in probe["calls"] if c["kind"] == "chain"]
    fits = [c for c in probe["calls"] if c["kind"] == "fit"]
    record(f"precision_{name.replace(' ', '_').replace(',', '')}", {"val/mse": result["val/mse"]})
    assert all(not c["autocast"] and c["dtype"] == "float32" for c in probe["calls"])
    bf16_chains = "inference.autocast=bfloat16" in overrides
    bf16_fits = "inference.eval_autocast=bfloat16" in overrides
    assert [c["bf16_exact"] for c in chains] == [bf16_chains] * len(chains)
    assert [c["bf16_exact"] for c in fits] == [bf16_fits] * len(fits)
    if not bf16_fits:  # val/mse is the float32 reconstruction's (TF32 convolutions allowed)
        (float32,) = probe["val_mse_float32"]
        assert probe["val_mse_logged"] == pytest.approx(float32, rel=1e-4)


MAX_GRAPHS = 4
"""Graphs Dynamo may compile in the compiled run: the chain's energy at the training batch,
once more with a dynamic batch size when a second size comes (validation, image grids), and
slack for the fit's closures; more means E recompiles per batch."""


@pytest.mark.parametrize("mode", ["true", "reduce-overhead"], ids=["compile", "cuda-graphs"])
def test_compiled_run_compiles_a_bounded_number_of_graphs(tmp_path, mode):
    """inference.compile in a real run over two epochs: it completes, Dynamo compiles at most
    MAX_GRAPHS graphs (the second epoch compiles nothing new), and on CUDA no compiled graph
    runs without CUDA graphs under reduce-overhead. (On a CPU dry run Dynamo hands its graphs
    to the eager backend: inductor's C++ compile takes minutes on a busy 2-core machine.)"""
    args = [*ON_DEVICE, f"inference.compile={mode}", "trainer.max_epochs=2"]
    backend = {} if ON_CUDA else {"backend": "eager"}
    proc, counters = probed_run(tmp_path, "CompileCounters", args, timeout=400, **backend)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((tmp_path / "run" / "metrics.json").read_text())
    record(f"compile_{mode}", {k: counters[k] for k in ("unique_graphs", "cudagraph_skips")})
    assert result["status"] == "completed" and math.isfinite(result["val/mse"])
    assert 1 <= counters["unique_graphs"] <= MAX_GRAPHS, counters["counters"]
    if ON_CUDA and mode == "reduce-overhead":
        assert counters["cudagraph_skips"] == 0, counters["counters"]


def test_resume_on_the_gpu(tmp_path):
    """One epoch, then the same command with ckpt_path and two epochs: the resumed run loads
    the GPU checkpoint (model, optimizers, RNG states), completes, and its metrics.json counts
    both epochs' steps."""
    run_dir = tmp_path / "run"
    first = run_train([*ON_DEVICE, f"hydra.run.dir={run_dir}"])
    assert first.returncode == 0, first.stderr[-3000:]
    steps = json.loads((run_dir / "metrics.json").read_text())["progress"]["global_step"]
    last = run_dir / "checkpoints" / "last.ckpt"
    resumed = run_train(
        [*ON_DEVICE, f"hydra.run.dir={run_dir}", f"ckpt_path={last}", "trainer.max_epochs=2"]
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    result = json.loads((run_dir / "metrics.json").read_text())
    record("resume", {"status": result["status"], "progress": result.get("progress")})
    assert result["status"] == "completed"
    assert result["progress"]["epoch"] == 2, result["progress"]
    assert result["progress"]["global_step"] == 2 * steps > 0, result["progress"]
