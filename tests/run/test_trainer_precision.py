"""Lightning's trainer.precision and the model's own precision switches (inference.autocast,
inference.eval_autocast): the chain and the fits follow the latter alone; 16-mixed is refused."""

from __future__ import annotations

import pytest

from lfbm_lightning.run.config_checks import ConfigError, validate_config
from tests.conftest import TINY
from tests.helpers.train_runs import error_lines, probed_run, run_train


def bf16_run(tmp_path, overrides: list[str]) -> dict:
    """train.py on digits (TINY) with the energy probe; its record (run_probes.py)."""
    args = [*TINY, "extras.print_config=false", *overrides]
    proc, record = probed_run(tmp_path, "EnergyPrecisionProbe", args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return record


@pytest.fixture(
    scope="module", params=["null", "bfloat16"], ids=["autocast-null", "autocast-bf16"]
)
def bf16_mixed_run(request, tmp_path_factory) -> tuple[str, dict]:
    """A ``trainer.precision=bf16-mixed`` run with ``inference.autocast`` null or bfloat16."""
    tmp_path = tmp_path_factory.mktemp(f"bf16_mixed_{request.param}")
    overrides = ["trainer.precision=bf16-mixed", f"inference.autocast={request.param}"]
    return request.param, bf16_run(tmp_path, overrides)


@pytest.mark.slow
def test_bf16_mixed_leaves_the_chain_to_inference_autocast(bf16_mixed_run):
    """Inside E, autocast is off around the residual and g(z) is float32 in every chain and
    fit; g(z) ran in bf16 (all its values bfloat16 numbers) in the training chains exactly
    when inference.autocast=bfloat16, and never in a fit (eval_autocast: null): val/mse's
    (stage validate) nor the image grids' (stage train)."""
    autocast, record = bf16_mixed_run
    calls = record["calls"]
    chains = [c for c in calls if c["kind"] == "chain"]
    fits = [c for c in calls if c["kind"] == "fit"]
    assert {c["stage"] for c in chains} == {"train"}
    assert {"validate", "sanity_check", "check"} <= {c["stage"] for c in fits}
    assert all(not c["autocast"] and c["dtype"] == "float32" for c in calls)
    assert [c["bf16_exact"] for c in chains] == [autocast == "bfloat16"] * len(chains)
    assert not any(c["bf16_exact"] for c in fits)


@pytest.mark.slow
def test_bf16_mixed_val_mse_is_the_float32_reconstruction_mse(bf16_mixed_run):
    """val/mse under bf16-mixed is the MSE of the same batch reconstructed outside any
    autocast (what evaluate.py computes), to float32 rounding."""
    _, record = bf16_mixed_run
    (float32,) = record["val_mse_float32"]
    assert record["val_mse_logged"] == pytest.approx(float32, rel=1e-6)


@pytest.mark.parametrize("value", ["16-mixed", "16", 16])
def test_float16_mixed_precision_is_refused_naming_bf16(compose_cfg, value):
    cfg = compose_cfg([f"trainer.precision={value}"])
    with pytest.raises(ConfigError, match=r"trainer\.precision must be anything but 16-mixed"):
        validate_config(cfg)


def test_bf16_mixed_passes_the_checks(compose_cfg):
    validate_config(compose_cfg(["trainer.precision=bf16-mixed"]))


@pytest.mark.slow
def test_train_py_refuses_16_mixed_before_any_work(tmp_path):
    proc = run_train([f"hydra.run.dir={tmp_path}", "trainer.precision=16-mixed"])
    assert proc.returncode == 2, proc.stderr[-2000:]
    (line,) = error_lines(proc.stderr)
    assert "trainer.precision" in line and "use trainer.precision=bf16-mixed" in line
    assert not (tmp_path / "checkpoints").exists() and not (tmp_path / "metrics.json").exists()
