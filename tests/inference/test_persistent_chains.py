"""Persistent Langevin chains (``inference.persistent=true``, the original ABP recipe): one z
per training example, warm-started from its last state, sized from the data module and
carried through checkpoints."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import pytorch_lightning as pl
import torch
from hydra.utils import instantiate

from lfbm_lightning.inference.langevin_posterior import LangevinInference
from lfbm_lightning.models import LatentPriorModel
from lfbm_lightning.run.training import resolved_config
from tests.conftest import compose_config
from tests.helpers.quiet_trainer import quiet_trainer

OVERRIDES = [
    "inference.persistent=true",
    "inference.n_steps=3",
    "prior=gaussian",
    "dataset.batch_size=50",
]


class RecordingModel(LatentPriorModel):
    """Records, per training step, the batch indices, chain starts and chain outputs."""

    def __init__(self, config):
        super().__init__(config)
        self.steps: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
        chain = self.posterior.chain

        def recording_chain(model, x, mask, z0, *args, **kwargs):
            result = chain(model, x, mask, z0, *args, **kwargs)
            if self.training:
                self.steps.append((self._index, z0.clone(), result.z.clone()))
            return result

        self.posterior.chain = recording_chain

    @property
    def _chains(self) -> torch.Tensor:
        return self.posterior.chains

    def on_train_start(self) -> None:
        self.initial_chains = self._chains.clone()

    def on_train_batch_start(self, batch, batch_idx):
        self._index = batch["index"].clone()


def fit(model, datamodule, max_epochs: int, ckpt_path=None) -> pl.Trainer:
    trainer = quiet_trainer(max_epochs=max_epochs, limit_train_batches=2)
    trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path)
    return trainer


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("persistent")
    cfg = compose_config(OVERRIDES, out)
    pl.seed_everything(cfg.seed)
    model, datamodule = RecordingModel(resolved_config(cfg)), instantiate(cfg.dataset)
    trainer = fit(model, datamodule, max_epochs=2)
    path = out / "last.ckpt"
    trainer.save_checkpoint(path)
    return model, datamodule, path


def test_buffer_is_sized_from_the_training_split(trained):
    model, datamodule, _ = trained
    assert model._chains.shape == (len(datamodule.splits["train"]), model.latent_dim)
    assert model.initial_chains.std().item() == pytest.approx(1.0, abs=0.05)  # N(0, I) start
    # drawn from the run's seed alone, so every DDP rank starts from the same chains
    seeded = torch.Generator().manual_seed(model.seed)
    assert torch.equal(model.initial_chains, torch.randn(model._chains.shape, generator=seeded))


def test_chains_start_from_their_last_state_and_are_written_back(trained):
    model, _, _ = trained
    assert len(model.steps) == 4  # 2 epochs x 2 batches
    last = model.initial_chains.clone()
    for index, z0, z in model.steps:
        assert torch.equal(z0, last[index])  # warm start (or the initial draw)
        last[index] = z
    assert torch.equal(model._chains, last)
    visited = torch.cat([index for index, _, _ in model.steps]).unique()
    untouched = torch.ones(len(last), dtype=torch.bool)
    untouched[visited] = False
    assert torch.equal(model._chains[untouched], model.initial_chains[untouched])
    assert not torch.equal(model._chains[visited], model.initial_chains[visited])


def test_chains_survive_a_checkpoint_and_resume(trained, tmp_path):
    model, _, path = trained
    checkpoint = torch.load(path, weights_only=True)
    assert torch.equal(checkpoint["posterior"]["persistent_chains"], model._chains)

    cfg = compose_config(OVERRIDES, tmp_path)
    resumed, datamodule = RecordingModel(resolved_config(cfg)), instantiate(cfg.dataset)
    fit(resumed, datamodule, max_epochs=3, ckpt_path=path)
    index, z0, _ = resumed.steps[0]
    assert torch.equal(resumed.initial_chains, model._chains)
    assert torch.equal(z0, model._chains[index])


def test_persistent_chains_need_langevin_inference(tmp_path):
    cfg = compose_config(["inference=amortized", "inference.persistent=true"], tmp_path)
    with pytest.raises(ValueError, match="persistent"):
        LatentPriorModel(resolved_config(cfg))


def test_a_repeated_example_is_written_back_once_from_its_first_occurrence():
    """DistributedSampler pads the ranks by repeating examples, so the gathered batch holds an
    index twice: the first occurrence (the lowest rank's chain) is kept, whichever device."""
    inference = LangevinInference(
        persistent=True, n_steps=1, step_size=0.1, eval_steps=1, eval_step_size=0.1
    )
    inference.chains = torch.zeros(6, 2)
    one_process = SimpleNamespace(trainer=SimpleNamespace(world_size=1))
    index = torch.tensor([4, 1, 4, 0, 1, 4])
    z = torch.arange(12.0).reshape(6, 2)
    inference.after_step(one_process, {"index": index}, z)
    expected = torch.zeros(6, 2)
    expected[4], expected[1], expected[0] = z[0], z[1], z[3]
    assert torch.equal(inference.chains, expected)
