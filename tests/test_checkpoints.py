"""Checkpoints load without executing code and fail clearly when wrong."""

from __future__ import annotations

import pickle

import pytest
import torch

from lfbm_lightning.checkpoints import CheckpointError, load_model, read_checkpoint
from lfbm_lightning.training import train
from tests.conftest import TINY, compose_config


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("ckpt_run")
    model, _ = train(compose_config(TINY, out))
    return model, out / "checkpoints" / "last.ckpt"


def test_load_model_rebuilds_the_same_model(trained):
    model, path = trained
    loaded = load_model(path)
    z = torch.randn(8, model.latent_dim)
    model.eval()
    with torch.no_grad():
        assert torch.allclose(loaded.prior.log_prob(z), model.prior.log_prob(z), atol=1e-5)
    assert not loaded.training


def test_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match="checkpoint not found.*ckpt_path="):
        read_checkpoint(tmp_path / "nope.ckpt")


def test_truncated_file(trained, tmp_path):
    data = trained[1].read_bytes()
    bad = tmp_path / "truncated.ckpt"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated, corrupt or not a PyTorch checkpoint"):
        read_checkpoint(bad)


def test_random_bytes(tmp_path):
    bad = tmp_path / "noise.ckpt"
    bad.write_bytes(bytes(range(256)) * 10)
    with pytest.raises(CheckpointError, match="truncated, corrupt"):
        read_checkpoint(bad)


def test_foreign_checkpoint(tmp_path):
    foreign = tmp_path / "resnet.ckpt"
    torch.save({"state_dict": torch.nn.Linear(2, 2).state_dict()}, foreign)
    with pytest.raises(CheckpointError, match="not an lfbm-lightning checkpoint"):
        read_checkpoint(foreign)


def test_checkpoint_of_another_config(trained, tmp_path):
    checkpoint = torch.load(trained[1], weights_only=True)
    checkpoint["hyper_parameters"]["config"]["prior"]["depth"] = 2
    other = tmp_path / "other.ckpt"
    torch.save(checkpoint, other)
    with pytest.raises(CheckpointError, match="weights do not fit the model"):
        load_model(other)


class Exploit:
    """Unpickling this would run code; weights_only loading must refuse it."""

    def __reduce__(self):
        return (print, ("code ran",))


def test_loading_never_executes_code(tmp_path, capsys):
    evil = tmp_path / "evil.ckpt"
    with open(evil, "wb") as f:
        pickle.dump({"state_dict": {}, "payload": Exploit()}, f)
    with pytest.raises(CheckpointError, match="could not read checkpoint"):
        read_checkpoint(evil)
    assert "code ran" not in capsys.readouterr().out
