"""The RAE's method (``inference=autoencoder``): the decoder penalty's value on a known decoder,
its training loss's gradients against autograd of the RAE objective written out, its range
checks, and the ex-post mixture fitted to the training codes at the end of an epoch."""

from __future__ import annotations

import pytest
import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from torch import nn

from lfbm_lightning.errors import ConfigError
from lfbm_lightning.inference.autoencoder import decoder_weight_penalty
from lfbm_lightning.models import LatentPriorModel
from lfbm_lightning.run.training import resolved_config
from tests.conftest import compose_config


def test_decoder_penalty_on_a_known_decoder():
    decoder = nn.Linear(2, 3)
    with torch.no_grad():
        decoder.weight.copy_(torch.tensor([[1.0, -2.0], [0.5, 0.0], [3.0, 1.0]]))
        decoder.bias.copy_(torch.tensor([0.1, -0.2, 0.0]))
    # 1 + 4 + 0.25 + 0 + 9 + 1 + 0.01 + 0.04 + 0 = 15.3
    assert decoder_weight_penalty(decoder, 0.01).item() == pytest.approx(0.153)
    assert decoder_weight_penalty(decoder, 0.0).item() == 0.0


@pytest.fixture(scope="module")
def rae(tmp_path_factory):
    cfg = compose_config(
        ["+experiment/paper/method=rae", "dataset.batch_size=16"], tmp_path_factory.mktemp("rae")
    )
    pl.seed_everything(cfg.seed)
    model = LatentPriorModel(resolved_config(cfg))
    datamodule = instantiate(cfg.dataset)
    datamodule.setup("fit")
    return model, datamodule


def test_training_loss_is_the_rae_objective(rae):
    """Encoder and generator gradients of (generator loss + the method's loss) are those of
    mean ||x - g(mu(x))||^2 / (2 sigma^2) + ||mu(x)||^2 / 2 + lambda sum theta^2."""
    model, datamodule = rae
    batch = next(iter(datamodule.train_dataloader()))
    x = batch["image"]
    params = list(model.generator.parameters()) + list(model.posterior.encoder.parameters())
    latents = model.posterior.training_latents(model, batch, torch.Generator())
    generator_loss = (x - model.generator(latents.z)).pow(2).flatten(1).sum(1) / (
        2 * model.sigma**2
    )
    total = generator_loss.mean() + latents.loss
    got = torch.autograd.grad(total, params, allow_unused=True)

    z = model.posterior.encoder(x)[0]
    recon = (x - model.generator(z)).pow(2).flatten(1).sum(1) / (2 * model.sigma**2)
    penalty = model.posterior.decoder_penalty * sum(
        p.pow(2).sum() for p in model.generator.parameters()
    )
    objective = (recon + 0.5 * z.pow(2).sum(1)).mean() + penalty
    want = torch.autograd.grad(objective, params, allow_unused=True)
    for g, w in zip(got, want, strict=True):
        if w is None:
            assert g is None or not g.any()
            continue
        assert torch.allclose(g, w, rtol=1e-4, atol=1e-6)
    assert latents.loss.requires_grad and not latents.z.requires_grad


def test_the_epoch_end_fits_the_mixture_to_the_training_codes(rae):
    model, datamodule = rae
    trainer = pl.Trainer(
        max_epochs=1,
        limit_train_batches=1,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(model, datamodule=datamodule)
    assert len(trainer.optimizers) == 1  # no prior optimizer: the mixture is fitted, not trained
    codes = model.training_codes()
    assert codes.shape == (len(datamodule.splits["train"]), model.latent_dim)
    means = model.prior.means.double()
    mixed = (model.prior.weights.double() @ means).float()
    assert torch.allclose(mixed, codes.mean(0), atol=1e-3)  # EM keeps the sample mean


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("inference.decoder_penalty=-1", "inference.decoder_penalty"),
        ("inference.refine_steps=2", "inference.refine_steps"),
        ("inference.start=sample", "inference.start"),
    ],
)
def test_autoencoder_keys_are_range_checked(tmp_path, override, key):
    cfg = compose_config(["inference=autoencoder", override], tmp_path)
    with pytest.raises(ConfigError, match=key):
        LatentPriorModel(resolved_config(cfg))
