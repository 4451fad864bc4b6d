"""evaluate.py: its config, the checks that run before any work, and its small helpers.

The tasks themselves run end to end on trained digits checkpoints in tests/tasks/.
"""

from __future__ import annotations

import re
import time

import pytest
import torch
from hydra.utils import get_class

from lfbm_lightning.data.readers import DatasetFilesMissing
from lfbm_lightning.data.selection import relocate
from lfbm_lightning.errors import ConfigError
from lfbm_lightning.metrics.fid_statistics import dataset_fingerprint
from lfbm_lightning.run.config_checks import TASK_DIR, resolve_device
from lfbm_lightning.run.evaluation import build_datamodule, evaluate, markdown_table
from lfbm_lightning.tasks.task import Task
from tests.conftest import compose_config, run_entry_point

TASK_NAMES = ["anomaly", "inpainting", "likelihood", "reconstruction", "recovery", "synthesis"]


def compose_task(task: str, tmp_path, *overrides: str):
    return compose_config(["ckpt_path=x.ckpt", f"task={task}", *overrides], tmp_path, "evaluate")


def test_defaults_follow_the_protocols(tmp_path):
    assert sorted(p.stem for p in TASK_DIR.glob("*.yaml")) == TASK_NAMES
    cfg = compose_task("synthesis", tmp_path)
    assert cfg.synthesis.n_samples == 50_000 and cfg.metrics.reference_images is None
    assert str(cfg.metrics.feature_layer) == "2048"
    cfg = compose_task("inpainting", tmp_path)
    assert (cfg.inpainting.n_steps, cfg.inpainting.step_size) == (400, 0.002)
    assert cfg.inpainting.box is None and cfg.inpainting.n_restarts > 1
    assert compose_task("anomaly", tmp_path).anomaly.n_steps == 400
    cfg = compose_task("reconstruction", tmp_path)
    assert cfg.reconstruction.n_steps is None  # the checkpoint's inference.eval_steps (20 K)
    assert cfg.paths.data_dir is None  # the checkpoint's data directory
    assert compose_task("recovery", tmp_path).recovery.chain == "sample"  # the authors' way


@pytest.mark.parametrize("task", TASK_NAMES)
def test_each_task_config_names_its_class_and_keeps_its_override_path(task, tmp_path):
    cfg = compose_task(task, tmp_path, f"+{task}.extra=1")
    assert cfg.task.name == task and cfg[task].extra == 1
    assert issubclass(get_class(cfg.task._target_), Task)
    assert not any(name in cfg for name in TASK_NAMES if name != task)  # only its own node


@pytest.mark.slow
def test_help_lists_the_tasks_and_a_missing_or_unknown_task_names_the_choices(tmp_path):
    result = run_entry_point("evaluate.py", ["--help"])
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.split("Tasks (")[1].splitlines()[1:]
    listed = [line.split()[0] for line in lines if line.strip()]
    assert [name for name in listed if name in TASK_NAMES] == TASK_NAMES  # each, in order
    missing = run_entry_point("evaluate.py", ["ckpt_path=x", f"hydra.run.dir={tmp_path}/a"])
    assert missing.returncode != 0
    assert "task=<name> is required" in missing.stderr and "recovery" in missing.stderr
    unknown = run_entry_point(
        "evaluate.py", ["ckpt_path=x", "task=denoising", f"hydra.run.dir={tmp_path}/b"]
    )
    assert unknown.returncode != 0 and "task/denoising" in unknown.stderr
    assert all(name in unknown.stderr for name in TASK_NAMES)


@pytest.mark.slow
def test_missing_inception_weights_fail_at_once_naming_the_setting(tmp_path):
    env = {"TORCH_HOME": str(tmp_path / "torch_home"), "LFBM_INCEPTION_WEIGHTS": ""}
    with pytest.MonkeyPatch.context() as patch:
        for key, value in env.items():
            patch.setenv(key, value)
        start = time.monotonic()
        # the checkpoint does not even exist: the weights are checked before anything else
        result = run_entry_point(
            "evaluate.py",
            ["ckpt_path=/nonexistent.ckpt", "task=synthesis", f"hydra.run.dir={tmp_path}/out"],
        )
        elapsed = time.monotonic() - start
    assert result.returncode != 0
    assert result.stderr.strip().splitlines()[-1].startswith("error: Inception-v3 FID weights")
    assert "metrics.inception_weights" in result.stderr
    assert "metrics.allow_download=true" in result.stderr
    assert elapsed < 60, elapsed  # interpreter start and imports only (~8 s)
    assert not (tmp_path / "out" / "metrics.json").exists()


def test_relocate_moves_paths_under_the_old_directory_only():
    config = {
        "root": "/old/data",
        "nested": {"files": ["/old/data/a.bin", "/old/database/b.bin"]},
        "batch_size": 100,
    }
    assert relocate(config, "/old/data/", "/new") == {
        "root": "/new",
        "nested": {"files": ["/new/a.bin", "/old/database/b.bin"]},
        "batch_size": 100,
    }


def mnist_run_config(data_dir: str, **changes) -> dict:
    dataset = {
        "_target_": "lfbm_lightning.data.mnist.MNISTDataModule",
        "root": data_dir,
        "channels": 1,
        "image_size": 28,
        "holdout_digit": 1,
        "batch_size": 100,
        "num_workers": 0,
    }
    return {"dataset": dataset | changes, "paths": {"data_dir": data_dir}}


def test_data_dir_override_reaches_the_data_module(tmp_path):
    run_config = mnist_run_config("/machine/that/trained")
    with pytest.raises(DatasetFilesMissing, match="/machine/that/trained"):
        build_datamodule(run_config, None)
    with pytest.raises(DatasetFilesMissing) as excinfo:
        build_datamodule(run_config, str(tmp_path))
    assert str(tmp_path) in str(excinfo.value)
    assert "paths.data_dir" in str(excinfo.value)


def test_reference_cache_key_ignores_location_and_loader_settings_only():
    base = mnist_run_config("/a")
    key = dataset_fingerprint(base["dataset"], "/a")
    moved = mnist_run_config("/b", batch_size=500, num_workers=4)
    assert dataset_fingerprint(moved["dataset"], "/b") == key
    other_digit = mnist_run_config("/a", holdout_digit=4)
    assert dataset_fingerprint(other_digit["dataset"], "/a") != key


def test_markdown_table_formats_numbers_and_notes_the_mse_scale():
    table = markdown_table({"task": "reconstruction", "mse": 0.0123456789, "n_images": 5}, "t")
    assert "| mse | 0.0123457 |" in table and "| n_images | 5 |" in table
    assert "[-1, 1] scale" in table
    assert "scale" not in markdown_table({"auprc": 0.5}, "t")


def test_auto_device_is_cuda_only_when_available():
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected
    assert resolve_device("cpu") == torch.device("cpu")


def evaluate_fails(tmp_path, *args: str):
    """Run ``evaluate.py args``; assert it failed and wrote no results; returns its stderr."""
    out = tmp_path / "out"
    result = run_entry_point("evaluate.py", [*args, "progress=false", f"hydra.run.dir={out}"])
    assert result.returncode != 0
    assert not (out / "metrics.json").exists() and not (out / "results.md").exists()
    return result.stderr


def one_line_error(stderr: str) -> str:
    """The message of the one ``error: ...`` line a handled error ends stderr with (no
    traceback above it); '' when stderr does not end so."""
    last = stderr.strip().splitlines()[-1] if stderr.strip() else ""
    if "Traceback" in stderr or not last.startswith("error: "):
        return ""
    return last.removeprefix("error: ")


def foreign_torch_file(path):
    torch.save({"a": 1}, path)


def random_bytes(path):
    path.write_bytes(
        torch.randint(0, 256, (4096,), generator=torch.Generator().manual_seed(0))
        .to(torch.uint8)
        .numpy()
        .tobytes()
    )


@pytest.mark.slow
@pytest.mark.parametrize(
    "write",
    [
        pytest.param(lambda path: path.write_bytes(b""), id="empty"),
        pytest.param(random_bytes, id="random-bytes"),
        pytest.param(foreign_torch_file, id="foreign-torch-file"),
        pytest.param(None, id="missing"),
    ],
)
def test_a_bad_checkpoint_is_one_checkpoint_error_naming_the_file(write, tmp_path):
    path = tmp_path / "model.ckpt"
    if write is not None:
        write(path)
    stderr = evaluate_fails(tmp_path, f"ckpt_path={path}", "task=reconstruction", "device=cpu")
    assert one_line_error(stderr) and str(path) in stderr, stderr[-2000:]


@pytest.mark.slow
def test_an_empty_checkpoint_directory_or_glob_names_the_pattern(tmp_path):
    stderr = evaluate_fails(tmp_path, f"ckpt_path={tmp_path}", "task=anomaly", "device=cpu")
    assert one_line_error(stderr) and "epoch-*.ckpt" in stderr, stderr[-2000:]


@pytest.mark.parametrize(
    ("override", "named"),
    [
        ("devices=0", "devices must be an integer >= 1, got 0"),
        ("progress=maybe", "progress must be true or false, got 'maybe'"),
        ("+dataset._target_=x.Y", "dataset is not an evaluate.py setting"),
        ("+anomaly.n_step=5", "anomaly.n_step is not an evaluate.py setting"),
        ("metrics.reference_images=0", "metrics.reference_images must be null or an integer"),
        ("anomaly.step_size=inf", "anomaly.step_size must be null or a number > 0, got inf"),
        ("anomaly.n_examples=0", "anomaly.n_examples must be null or an integer >= 1"),
        ("anomaly.n_steps=-1", "anomaly.n_steps must be null or an integer >= 0"),
        ("anomaly.n_steps=2.5", "anomaly.n_steps must be null or an integer >= 0"),
        ("anomaly.step_size=0", "anomaly.step_size must be null or a number > 0"),
        ("device=tpu7", "device='tpu7' is not a device"),
    ],
)
def test_wrong_settings_are_a_config_error_before_the_model_loads(override, named, tmp_path):
    # the checkpoint does not exist: the settings are checked first
    cfg = compose_task("anomaly", tmp_path, "ckpt_path=/nonexistent.ckpt", override)
    with pytest.raises(ConfigError, match=re.escape(named)):
        evaluate(cfg)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("progress=maybe", "progress must be true or false, got 'maybe'"),
        ("+dataset._target_=x.Y", "dataset is not an evaluate.py setting"),
    ],
)
def test_evaluate_py_refuses_unchecked_settings_with_exit_2(override, message, tmp_path):
    out = tmp_path / "out"
    args = ["ckpt_path=/nonexistent.ckpt", "task=anomaly", override, f"hydra.run.dir={out}"]
    result = run_entry_point("evaluate.py", args)
    assert result.returncode == 2, result.stderr[-2000:]
    assert one_line_error(result.stderr).startswith(message), result.stderr[-2000:]
    assert not (out / "metrics.json").exists()


@pytest.mark.slow
def test_batch_size_zero_is_refused_by_evaluate_py(tmp_path):
    args = ["ckpt_path=/nonexistent.ckpt", "task=anomaly", "batch_size=0"]
    stderr = evaluate_fails(tmp_path, *args)
    assert one_line_error(stderr) == "batch_size must be null or an integer >= 1, got 0"
    assert "checkpoint" not in stderr  # the settings are checked before the checkpoint


@pytest.mark.slow
@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_on_a_machine_without_it_names_the_device_setting(tmp_path):
    stderr = evaluate_fails(tmp_path, "ckpt_path=/nonexistent.ckpt", "task=anomaly", "device=cuda")
    assert "device=cuda" in one_line_error(stderr) and "device=cpu" in stderr
    assert "map_location" not in stderr
