"""Training on occluded images: pixels under the mask provably have no effect on learning."""

from __future__ import annotations

import json
import math

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torch.utils.data import DataLoader

from lfbm_lightning.models import LatentPriorModel
from lfbm_lightning.models.energy import posterior_energy_fn
from lfbm_lightning.run.training import resolved_config
from tests.conftest import TINY, run_entry_point
from tests.helpers.quiet_trainer import quiet_trainer

OCCLUDED = ["dataset.occlusion.kind=salt_pepper", "dataset.occlusion.coverage=0.5"]


@pytest.fixture
def occluded_batch(compose_cfg) -> tuple[dict, dict[str, torch.Tensor]]:
    """The digits run config with salt-and-pepper masks, and its first training batch."""
    cfg = compose_cfg(OCCLUDED)
    datamodule = instantiate(cfg.dataset)
    batch = next(iter(datamodule.train_dataloader()))
    assert batch["mask"].shape == (100, 1, 8, 8) and 0.4 < 1 - batch["mask"].mean() < 0.6
    return resolved_config(cfg), batch


def scramble_missing(batch: dict[str, torch.Tensor], seed: int = 0) -> dict[str, torch.Tensor]:
    """The batch with every missing pixel replaced by an arbitrary value (N(0, 10^2))."""
    noise = 10 * torch.randn(batch["image"].shape, generator=torch.Generator().manual_seed(seed))
    image = torch.where(batch["mask"].bool(), batch["image"], noise)
    assert not torch.equal(image, batch["image"])
    return {**batch, "image": image}


def model_from(config: dict) -> LatentPriorModel:
    torch.manual_seed(0)  # identical initial networks for every call
    return LatentPriorModel(config)


def test_missing_pixels_do_not_change_the_langevin_energy_or_chain(occluded_batch):
    config, batch = occluded_batch
    scrambled = scramble_missing(batch)
    model = model_from(config)
    z = torch.randn(100, model.latent_dim, generator=torch.Generator().manual_seed(1))

    def energy_and_grad(b: dict, mask: torch.Tensor | None):
        z_ = z.clone().requires_grad_(True)
        energy = posterior_energy_fn(b["image"], model.generator, model.prior, 0.3, mask)(z_)
        return energy.detach(), torch.autograd.grad(energy.sum(), z_)[0]

    energy, grad = energy_and_grad(batch, batch["mask"])
    energy_s, grad_s = energy_and_grad(scrambled, batch["mask"])
    assert torch.equal(energy, energy_s) and torch.equal(grad, grad_s)
    unmasked, _ = energy_and_grad(scrambled, None)  # control: without the mask they count
    assert (unmasked - energy > 100).all()

    rng = model.langevin_rng()
    state = rng.get_state()
    chain = model.infer(batch["image"], batch["mask"], n_steps=5)
    rng.set_state(state)
    chain_s = model.infer(scrambled["image"], batch["mask"], n_steps=5)
    assert torch.equal(chain.z, chain_s.z) and not torch.equal(chain.z, z)


def fit_one_step(config: dict, batch: dict[str, torch.Tensor]) -> LatentPriorModel:
    """One real training step (Langevin posterior, losses, one backward, both optimizers)."""
    model = model_from(config)
    # max_steps=2: one iteration = a prior and a generator optimizer step
    trainer = quiet_trainer(max_steps=2, accelerator="cpu")
    trainer.fit(model, train_dataloaders=DataLoader([batch], batch_size=None))
    return model


def test_missing_pixels_do_not_change_the_training_gradients(occluded_batch):
    config, batch = occluded_batch
    config["inference"]["n_steps"] = 5
    scrambled = scramble_missing(batch)
    reference = fit_one_step(config, batch)
    same = fit_one_step(config, scrambled)
    for (name, p), q in zip(reference.named_parameters(), same.parameters(), strict=True):
        assert p.grad is not None, name  # .grad keeps the training loss's gradient
        assert torch.equal(p.grad, q.grad), name
        assert torch.equal(p, q), name
    generator_grad = torch.cat([p.grad.flatten() for p in reference.generator.parameters()])
    assert generator_grad.abs().max() > 1.0

    # control: without the mask the scrambled pixels change the generator's gradient
    unmasked = fit_one_step(config, {k: v for k, v in scrambled.items() if k != "mask"})
    pairs = zip(reference.generator.parameters(), unmasked.generator.parameters(), strict=True)
    assert all(not torch.allclose(p.grad, q.grad) for p, q in pairs)


@pytest.mark.slow
def test_train_py_trains_on_occluded_digits(tmp_path):
    run_dir = tmp_path / "run"
    result = run_entry_point("train.py", [f"hydra.run.dir={run_dir}", *TINY, *OCCLUDED])
    assert result.returncode == 0, result.stderr[-3000:]
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    cfg = OmegaConf.load(run_dir / ".hydra" / "config.yaml")
    assert cfg.dataset.occlusion.kind == "salt_pepper" and cfg.dataset.occlusion.hole_size == 2
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert math.isfinite(metrics["train/loss_epoch"]) and math.isfinite(metrics["val/mse"])
