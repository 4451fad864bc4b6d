"""The contract every inference method must meet, run on every ``conf/inference/*.yaml`` (no
edits needed when a method is added): the real train config composed with ``inference=<name>``
builds a model; one training step changes every trained network and logs finite values; a
reconstruction has the right shapes, is finite, depends on an example's (seed, index) alone
and is the same function for ``val/mse`` and the evaluation tasks; the method's checkpoint
state round-trips; its keys are range-checked in its constructor."""

from __future__ import annotations

import math

import pytest
import pytorch_lightning as pl
import torch
from hydra.utils import instantiate

from lfbm_lightning.errors import ConfigError
from lfbm_lightning.inference import PosteriorInference
from lfbm_lightning.inference.posterior import seeded_normal
from lfbm_lightning.models import LatentPriorModel
from lfbm_lightning.models.latent_prior_model import build_posterior
from lfbm_lightning.run.training import resolved_config
from lfbm_lightning.seeds import item_seed
from tests.conftest import CONF, compose_config
from tests.helpers.quiet_trainer import quiet_trainer

OPTIONS = sorted(p.stem for p in (CONF / "inference").glob("*.yaml"))
CASES = [(name, []) for name in OPTIONS] + [
    ("langevin", ["inference.persistent=true"]),
    ("damc", ["inference.eval_start=q"]),  # evaluation fits from Q(x)
]
IDS = [name + "".join(f"+{o.split('.')[-1]}" for o in extra) for name, extra in CASES]
TINY = ["inference.n_steps=2", "inference.eval_steps=4", "dataset.batch_size=16"]


def build(tmp_path, name: str, extra: list[str]):
    cfg = compose_config([f"inference={name}", *TINY, *extra], tmp_path)
    pl.seed_everything(cfg.seed)
    model = LatentPriorModel(resolved_config(cfg))
    datamodule = instantiate(cfg.dataset)
    datamodule.setup("fit")
    return model, datamodule


def images(datamodule, n: int = 6) -> tuple[torch.Tensor, torch.Tensor]:
    items = [datamodule.splits["val"][i] for i in range(n)]
    return torch.stack([it["image"] for it in items]), torch.stack([it["index"] for it in items])


@pytest.fixture(scope="module", params=CASES, ids=IDS)
def trained(request, tmp_path_factory):
    """A model after one training step, its state before, the trainer and a checkpoint."""
    name, extra = request.param
    out = tmp_path_factory.mktemp(name)
    model, datamodule = build(out, name, extra)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    trainer = quiet_trainer(max_epochs=1, limit_train_batches=1)
    trainer.fit(model, datamodule=datamodule)
    path = out / "one_step.ckpt"
    trainer.save_checkpoint(path)
    return model, datamodule, before, trainer, path


def test_the_method_is_an_inference_object(trained):
    model, _, _, _, _ = trained
    assert isinstance(model.posterior, PosteriorInference)
    assert model.chain_steps >= 0 and model.eval_chain_steps >= 0


def test_one_training_step_changes_every_trained_network(trained):
    model, _, before, trainer, _ = trained
    trained_modules = {
        name
        for name, module in model.named_children()
        if any(p.requires_grad for p in module.parameters())
    }
    changed = {
        k.split(".")[0] for k, v in model.state_dict().items() if not torch.equal(v, before[k])
    }
    assert changed == trained_modules  # prior, generator and the method's own (an encoder)
    for key in ("train/loss", "train/loss_generator", "train/loss_prior"):
        assert math.isfinite(trainer.callback_metrics[key].item()), key
    assert model.skipped_batches == 0


def test_reconstruction_shapes_finiteness_and_seeded_starts(trained):
    model, datamodule, _, _, _ = trained
    model.eval()
    x, index = images(datamodule)
    x_hat, z = model.reconstruct(x, index=index)
    assert x_hat.shape == x.shape and z.shape == (x.shape[0], model.latent_dim)
    assert torch.isfinite(x_hat).all() and torch.isfinite(z).all()
    again, _ = model.reconstruct(x, index=index)
    assert torch.equal(again, x_hat)  # deterministic: no shared noise stream
    part, _ = model.reconstruct(x[2:5], index=index[2:5])  # an example's start is its own
    assert torch.allclose(part, x_hat[2:5], atol=1e-5)


def test_validation_and_the_tasks_reconstruct_alike(trained):
    """``val/mse`` (model.reconstruct with the defaults) and a task (the method's evaluation
    settings and start, given explicitly) give the same reconstruction."""
    model, datamodule, _, _, _ = trained
    model.eval()
    x, index = images(datamodule)
    x_val, z_val = model.reconstruct(x, index=index)
    n_steps, step_size = model.posterior.eval_settings(None, None)
    z0 = model.posterior.start(model, x, None, index, model.seed)
    x_task, z_task = model.reconstruct(x, n_steps=n_steps, step_size=step_size, z0=z0)
    assert torch.equal(x_val, x_task) and torch.equal(z_val, z_task)


def test_checkpoint_state_round_trips(trained):
    model, _, _, _, path = trained
    checkpoint = torch.load(path, weights_only=True)
    state = model.posterior.checkpoint_state()
    assert checkpoint["posterior"].keys() == state.keys()
    rebuilt = LatentPriorModel(checkpoint["hyper_parameters"]["config"])  # the config alone
    rebuilt.load_state_dict(checkpoint["state_dict"])
    rebuilt.on_load_checkpoint(checkpoint)
    for key, value in rebuilt.posterior.checkpoint_state().items():
        assert torch.equal(value, state[key]), key
    for key, value in rebuilt.state_dict().items():
        assert torch.equal(value, model.state_dict()[key]), key


def test_persistent_chains_are_the_state_of_the_persistent_option(trained):
    model, datamodule, _, _, _ = trained
    state = model.posterior.checkpoint_state()
    if not getattr(model.posterior, "persistent", False):
        assert "persistent_chains" not in state
        return
    assert state["persistent_chains"].shape == (
        len(datamodule.splits["train"]),
        model.latent_dim,
    )


def test_seeded_starts_are_the_tasks_per_example_seeds():
    assert [item_seed(3, i) for i in (0, 7)] == [3_000_009, 3_000_016]  # seed * 1000003 + i
    rows = seeded_normal(torch.tensor([7, 2]), 3, 5)
    expected = torch.randn(5, generator=torch.Generator().manual_seed(3_000_011))
    assert torch.equal(rows[1], expected)


LANGEVIN = {"n_steps": 20, "step_size": 0.1, "eval_steps": 400, "eval_step_size": 0.1}


@pytest.mark.parametrize("key", ["autocast", "eval_autocast"])
def test_autocast_is_checked_in_the_constructor(key):
    # the four shared chain keys are checked with the run config (tests/run/test_config_checks)
    with pytest.raises(ConfigError, match=f"inference.{key}"):
        build_posterior({**LANGEVIN, key: "int8"})


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("inference.refine_steps=-1", "inference.refine_steps"),
        ("inference.eval_refine_steps=-2", "inference.eval_refine_steps"),
        ("inference.start=median", "inference.start"),
        ("inference.encoder_lr=0", "inference.encoder_lr"),
        ("inference.persistent=true", "inference.persistent"),
    ],
)
def test_amortised_keys_are_range_checked_in_the_constructor(tmp_path, override, key):
    cfg = compose_config(["inference=amortized", override], tmp_path)
    with pytest.raises(ConfigError, match=key):
        LatentPriorModel(resolved_config(cfg))
