"""train.py and evaluate.py print a project or config error as one line and exit 2 (config)
or 1 (other), without a traceback; HYDRA_FULL_ERROR=1 shows the traceback."""

from __future__ import annotations

import pytest

from tests.conftest import run_entry_point
from tests.helpers.train_runs import error_lines


def assert_one_line(result, code: int, text: str) -> None:
    assert result.returncode == code, result.stderr[-2000:]
    [line] = error_lines(result.stderr)
    assert text in line, line
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_train_config_error_is_one_line_with_exit_2(sigma_zero_run):
    result, _ = (
        sigma_zero_run  # train.py model.sigma=0, shared with tests/run/test_config_checks.py
    )
    assert_one_line(result, 2, "error: model.sigma must be a number > 0, got 0")


@pytest.mark.slow
def test_train_other_project_error_exits_1(tmp_path):
    missing = tmp_path / "missing.ckpt"
    result = run_entry_point("train.py", [f"hydra.run.dir={tmp_path}", f"ckpt_path={missing}"])
    assert_one_line(result, 1, f"error: checkpoint not found: {missing}")


@pytest.mark.slow
def test_hydra_full_error_shows_the_traceback(tmp_path, monkeypatch):
    monkeypatch.setenv("HYDRA_FULL_ERROR", "1")
    result = run_entry_point("train.py", [f"hydra.run.dir={tmp_path}", "model.sigma=0"])
    assert result.returncode != 0
    assert "Traceback" in result.stderr and "ConfigError" in result.stderr
    assert error_lines(result.stderr) == []


@pytest.mark.slow
def test_evaluate_missing_mandatory_value_is_one_line_with_exit_2(tmp_path):
    result = run_entry_point("evaluate.py", [f"hydra.run.dir={tmp_path}", "task=reconstruction"])
    assert_one_line(result, 2, "error: config: Missing mandatory value: ckpt_path")
    assert "ckpt_path=..." in error_lines(result.stderr)[0]


@pytest.mark.slow
def test_evaluate_with_hydra_full_error_shows_the_traceback(tmp_path, monkeypatch):
    monkeypatch.setenv("HYDRA_FULL_ERROR", "1")
    result = run_entry_point("evaluate.py", [f"hydra.run.dir={tmp_path}", "task=reconstruction"])
    assert result.returncode != 0
    assert "Traceback" in result.stderr and "MissingMandatoryValue" in result.stderr
