"""Every way a command line or a file can be wrong ends in one ``error:`` line on stderr and the
documented exit status (2: a setting, 1: anything else), before any work; no message repeats
torch's advice to load a file with ``weights_only=False``."""

from __future__ import annotations

import argparse
import json
import re

import pytest
import torch
from omegaconf import OmegaConf

from lfbm_lightning.errors import ConfigError, InceptionWeightsMissing
from lfbm_lightning.metrics.inception import load_inception_weights
from lfbm_lightning.models import LatentPriorModel
from lfbm_lightning.run.config_checks import validate_config
from tests.conftest import compose_config, run_entry_point
from tests.helpers.train_runs import error_lines

EVAL = ["ckpt_path=/nonexistent.ckpt", "task=reconstruction"]

# (command, arguments, exit status, text of the error line); {tmp} is the test's directory
CASES = {
    "train seed=abc": ("train.py", ["seed=abc"], 2, "seed must be an integer in [0, 4294967295]"),
    "evaluate seed=abc": (
        "evaluate.py",
        [*EVAL, "seed=abc"],
        2,
        "seed must be an integer in [0, 4294967295]",
    ),
    "occlusion kind": (
        "train.py",
        ["dataset.occlusion.kind=foo"],
        2,
        "dataset.occlusion.kind must be null (complete images) or one of ['salt_pepper'",
    ),
    "mixture of none": (
        "train.py",
        ["prior=mog", "prior.n_components=0"],
        2,
        "prior.n_components must be an integer >= 1",
    ),
    "constructor error": (
        "train.py",
        ["+dataset.no_such_argument=1"],
        2,
        "no_such_argument",  # Hydra's instantiate error, folded, naming the node
    ),
    "periodic AUPRC without a held-out digit": (
        "train.py",
        ["callbacks.auprc.every_n_epochs=1"],
        2,
        "callbacks.auprc.every_n_epochs > 0 needs a held-out digit",
    ),
    "unknown key": ("train.py", ["nosuch=1"], 2, "Could not override 'nosuch'"),
    "unknown option": ("train.py", ["dataset=nosuch"], 2, "Could not find 'dataset/nosuch'"),
    "evaluate unknown key": ("evaluate.py", [*EVAL, "nosuch=1"], 2, "Could not override"),
    "run dir is a file": (
        "train.py",
        ["hydra.run.dir={tmp}/file/run"],
        2,
        "hydra.run.dir={tmp}/file/run: {tmp}/file is a file",
    ),
    "run dir not writable": (
        "train.py",
        ["hydra.run.dir=/proc/lfbm_run"],
        2,
        "hydra.run.dir=/proc/lfbm_run cannot be written",
    ),
    "config error in a sweep job": (
        "train.py",
        ["-m", "model.sigma=0,-1", "hydra.sweep.dir={tmp}/sweep"],
        2,
        "error: job 0 (model.sigma=0): model.sigma must be a number > 0, got 0",
    ),
    "download without network": (
        "train.py",
        ["dataset=svhn", "dataset.download=true", "paths.data_dir={tmp}/data"],
        1,
        "dataset.download=true could not fetch the data into {tmp}/data",
    ),
}

NO_NETWORK = {"http_proxy": "http://127.0.0.1:9", "https_proxy": "http://127.0.0.1:9"}
"""A closed port as the proxy: a download fails at once, network or not."""


@pytest.mark.slow
@pytest.mark.parametrize("case", list(CASES))
def test_one_error_line_and_the_documented_exit_status(case, tmp_path, monkeypatch):
    script, args, code, text = CASES[case]
    (tmp_path / "file").write_text("in the way\n")
    for key, value in NO_NETWORK.items():
        monkeypatch.setenv(key, value)
    args = [a.format(tmp=tmp_path) for a in args]
    if not any(a.startswith(("hydra.run.dir", "hydra.sweep.dir", "-m")) for a in args):
        args.append(f"hydra.run.dir={tmp_path}/run")
    result = run_entry_point(script, args)
    assert result.returncode == code, result.stderr[-2000:]
    [line] = error_lines(result.stderr)
    assert text.format(tmp=tmp_path) in line, line
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "run" / "metrics.json").exists()


def tiny_checkpoint(tmp_path, state_dict=None, **extra) -> str:
    """A checkpoint file of the default model's config (its weights, or ``state_dict``)."""
    cfg = compose_config([], tmp_path)
    config = OmegaConf.to_container(cfg, resolve=True)
    model = LatentPriorModel(config)
    state = model.state_dict() if state_dict is None else state_dict(model.state_dict())
    path = tmp_path / "crafted.ckpt"
    torch.save({"state_dict": state, "hyper_parameters": {"config": config}, **extra}, path)
    return str(path)


def reshape_and_drop(state: dict) -> dict:
    """Three tensors of another shape, one key missing, one key the model lacks."""
    keys = list(state)
    changed = dict(state)
    for key in keys[:3]:
        changed[key] = torch.zeros(7, 3)
    del changed[keys[-1]]
    changed["prior.extra"] = torch.zeros(2)
    return changed


@pytest.mark.slow
def test_a_mismatched_checkpoint_names_the_keys_and_shapes(tmp_path):
    ckpt = tiny_checkpoint(tmp_path, reshape_and_drop)
    state = torch.load(ckpt, weights_only=True)["state_dict"]
    args = [f"ckpt_path={ckpt}", "task=reconstruction", f"hydra.run.dir={tmp_path}/out"]
    result = run_entry_point("evaluate.py", args)
    assert result.returncode == 1, result.stderr[-2000:]
    [line] = error_lines(result.stderr)
    assert "its weights do not fit the model its stored config describes" in line
    first = next(iter(state))
    assert f"3 key(s) of another shape: {first} [7, 3] in the checkpoint, " in line, line
    assert "1 key(s) missing from the checkpoint: " in line
    assert "1 key(s) not in the model: prior.extra [2]" in line


@pytest.mark.slow
def test_a_checkpoint_holding_objects_is_refused_without_torchs_advice(tmp_path):
    ckpt = tiny_checkpoint(tmp_path, extra_object=argparse.Namespace(a=1))
    args = [f"ckpt_path={ckpt}", "task=reconstruction", f"hydra.run.dir={tmp_path}/out"]
    result = run_entry_point("evaluate.py", args)
    assert result.returncode == 1, result.stderr[-2000:]
    [line] = error_lines(result.stderr)
    assert f"could not read checkpoint {ckpt}" in line and "argparse.Namespace" in line, line
    assert "weights_only" not in result.stderr and "can still be loaded" not in result.stderr


def test_inception_weights_holding_objects_are_refused_without_torchs_advice(tmp_path):
    path = tmp_path / "weights.pth"
    torch.save({"conv.weight": torch.zeros(1), "meta": argparse.Namespace(a=1)}, path)
    with pytest.raises(InceptionWeightsMissing) as caught:
        load_inception_weights(str(path))
    message = str(caught.value)
    assert "argparse.Namespace" in message and "metrics.inception_weights" in message
    assert "weights_only" not in message and "can still be loaded" not in message
    assert json.dumps(message).count("\\n") == 0  # one line


@pytest.mark.parametrize("seed", ["-1", str(2**32), "1.5", "true"])
def test_a_seed_seed_everything_would_refuse_is_a_config_error(compose_cfg, seed):
    with pytest.raises(
        ConfigError, match=re.escape(f"seed must be an integer in [0, {2**32 - 1}]")
    ):
        validate_config(compose_cfg([f"seed={seed}"]))


def test_the_seed_range_ends_pass(compose_cfg):
    for seed in (0, 2**32 - 1):
        validate_config(compose_cfg([f"seed={seed}"]))


@pytest.mark.parametrize(
    ("override", "text"),
    [
        (
            "dataset.holdout_val_fraction=1.0",
            "dataset.holdout_val_fraction must be a number in [0, 1)",
        ),
        (
            "dataset.holdout_val_fraction=-0.1",
            "dataset.holdout_val_fraction must be a number in [0, 1)",
        ),
        (
            "callbacks.auprc.every_n_epochs=-1",
            "callbacks.auprc.every_n_epochs must be an integer >= 0",
        ),
        (
            "callbacks.auprc.max_images=1",
            "callbacks.auprc.max_images must be null (all) or an integer >= 2",
        ),
    ],
)
def test_periodic_auprc_settings_out_of_range_are_config_errors(compose_cfg, override, text):
    with pytest.raises(ConfigError, match=re.escape(text)):
        validate_config(compose_cfg(["dataset.holdout_digit=9", override]))
