"""Checkpoints load without executing code and fail clearly when wrong."""

from __future__ import annotations

import pickle

import pytest
import torch

from lfbm_lightning.run.training import train
from lfbm_lightning.runtime.checkpoints import CheckpointError, load_model, read_checkpoint
from tests.conftest import TINY, compose_config, run_entry_point


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


@pytest.mark.slow
def test_keep_last_epochs_keeps_the_newest_epoch_files_and_best_is_opt_in(tmp_path):
    run = tmp_path / "run"
    overrides = [
        f"hydra.run.dir={run}",
        "trainer.max_epochs=3",
        "trainer.limit_train_batches=1",
        "trainer.limit_val_batches=1",
        "trainer.check_val_every_n_epoch=1",
        "inference.n_steps=1",
        "inference.eval_steps=1",
        "callbacks.image_grids.every_n_epochs=0",
        "callbacks.keep_last_epochs=2",
        "callbacks.checkpoint.save_top_k=1",
    ]
    result = run_entry_point("train.py", overrides)
    assert result.returncode == 0, result.stderr[-2000:]
    names = sorted(p.name for p in (run / "checkpoints").iterdir())
    best = [n for n in names if n.startswith("best-epoch")]
    assert len(best) == 1, names
    assert sorted(set(names) - set(best)) == ["epoch-0001.ckpt", "epoch-0002.ckpt", "last.ckpt"]
    for epoch in (1, 2):
        path = run / "checkpoints" / f"epoch-{epoch:04d}.ckpt"
        assert read_checkpoint(path)["epoch"] == epoch
        load_model(path)
    last, newest = (
        read_checkpoint(run / "checkpoints" / n) for n in ("last.ckpt", "epoch-0002.ckpt")
    )
    for key, value in last["state_dict"].items():
        assert torch.equal(value, newest["state_dict"][key]), key
