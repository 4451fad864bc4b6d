"""``inference=damc``: Q's own optimizer and schedule, its EMA copy, the EBM prior's chain starts,
the checkpoint, an exact resume after SIGKILL and two DDP ranks in sync (train.py runs)."""

from __future__ import annotations

import types

import pytest
import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from torch import nn

from lfbm_lightning.errors import ConfigError
from lfbm_lightning.inference import DamcInference, LatentDiffusion
from lfbm_lightning.models import LatentPriorModel
from lfbm_lightning.priors.ebm import EnergyPrior
from lfbm_lightning.run.training import resolved_config
from tests.conftest import compose_config, run_entry_point
from tests.helpers.quiet_trainer import quiet_trainer
from tests.run.test_resume import final_state, kill_at_first_checkpoint
from tests.runtime.test_ddp import RUN as DDP_RUN
from tests.runtime.test_ddp import TWO_PROCESSES, finish, read_probe, start_train

# a small sampler: the method's arithmetic at a fraction of the reference's cost
SMALL = [
    "inference=damc",
    "inference.sampler.n_intervals=5",
    "inference.sampler.width=32",
    "inference.sampler.embedding.dim=16",
]
CHAIN = {"n_steps": 2, "step_size": 0.1, "eval_steps": 4, "eval_step_size": 0.1}


def method(**options) -> DamcInference:
    sampler = LatentDiffusion(2, nn.Identity(), 3, width=8, depth=1, time_dim=4, n_intervals=3)
    return DamcInference(sampler, **CHAIN, **options)


def stub_model(seed: int = 0):
    """What :meth:`DamcInference.after_step` uses of a model: its chain stream, no trainer."""
    rng = torch.Generator().manual_seed(seed)
    return types.SimpleNamespace(langevin_rng=lambda: rng, trainer=None)


def flat(module: nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in module.parameters()])


def test_q_steps_on_its_own_schedule_and_the_ema_copy_follows_every_ema_every_iterations():
    damc = method(lr=1e-2, lr_decay=0.5, lr_decay_every=2, lr_min=3e-3, ema_rate=0.25, ema_every=2)
    optimizer = damc.make_optimizer()
    batch = {"image": torch.randn(8, 3)}
    z = torch.randn(8, 2)
    start = flat(damc.sampler)
    lrs, emas = [], []
    for _ in range(5):
        before_ema, before_q = flat(damc.ema), flat(damc.sampler)
        logs = damc.after_step(stub_model(), batch, z)
        lrs.append(optimizer.param_groups[0]["lr"])
        emas.append((before_ema, before_q, flat(damc.ema), flat(damc.sampler)))
        assert torch.isfinite(logs["train/q_loss"])
    # lr * 0.5 ** (iterations // 2), at least lr_min; iterations counted before the update
    assert lrs == pytest.approx([1e-2, 1e-2, 5e-3, 5e-3, 3e-3])
    assert int(damc.iterations) == 5
    assert optimizer.state[next(damc.sampler.parameters())]["step"] == 5 * damc.updates
    assert not torch.equal(flat(damc.sampler), start)
    for i, (before_ema, _, after_ema, after_q) in enumerate(emas, start=1):
        if i % 2:
            assert torch.equal(after_ema, before_ema)  # no update on odd iterations
        else:
            assert torch.allclose(after_ema, 0.75 * before_ema + 0.25 * after_q, atol=1e-7)


def test_the_sampler_is_left_to_the_method_under_ddp():
    damc = method()
    names = set(damc.ddp_ignored())
    own = {f"sampler.{n}" for n, _ in damc.sampler.named_parameters()}
    own |= {f"ema.{n}" for n, _ in damc.ema.named_parameters()}
    assert own <= names and "iterations" in names
    assert not any(p.requires_grad for p in damc.ema.parameters())


@pytest.mark.parametrize(
    ("option", "key"),
    [
        ({"updates": 0}, "inference.updates"),
        ({"ema_rate": 1.5}, "inference.ema_rate"),
        ({"lr_decay": 0.0}, "inference.lr_decay"),
        ({"eval_start": "encoder"}, "inference.eval_start"),
        ({"eval_refine_steps": -1}, "inference.eval_refine_steps"),
        ({"persistent": True}, "inference.persistent"),
    ],
)
def test_damc_keys_are_range_checked_in_the_constructor(option, key):
    with pytest.raises(ConfigError, match=key):
        method(**option)


def test_an_ebm_prior_chain_runs_from_the_given_start():
    prior = EnergyPrior(2, width=8, n_steps=0)
    start = torch.randn(5, 2)
    assert torch.equal(prior.sample(5, start=start), start)


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """An EBM-prior DAMC model after 3 training steps in process, and its checkpoint."""
    out = tmp_path_factory.mktemp("damc")
    cfg = compose_config([*SMALL, "prior=ebm", "inference.n_steps=2", "prior.n_steps=2"], out)
    pl.seed_everything(cfg.seed)
    model = LatentPriorModel(resolved_config(cfg))
    drawn = []
    start_of = model.posterior.prior_chain_start

    def recording_start(m, n, rng):
        drawn.append(start_of(m, n, rng))
        return drawn[-1]

    model.posterior.prior_chain_start = recording_start
    datamodule = instantiate(cfg.dataset)
    trainer = quiet_trainer(max_epochs=1, limit_train_batches=3)
    trainer.fit(model, datamodule=datamodule)
    trainer.save_checkpoint(out / "three.ckpt")
    return model, trainer, torch.load(out / "three.ckpt", weights_only=True), drawn


def test_the_checkpoint_holds_q_its_ema_copy_and_its_optimizer(fitted):
    model, trainer, checkpoint, _ = fitted
    assert int(model.posterior.iterations) == 3
    states = checkpoint["optimizer_states"]
    assert len(states) == 3  # the EBM's, the generator's and Q's
    assert {s["step"].item() for s in states[2]["state"].values()} == {3 * model.posterior.updates}
    assert {s["step"].item() for s in states[0]["state"].values()} == {3}
    keys = checkpoint["state_dict"].keys()
    assert any(k.startswith("posterior.sampler.") for k in keys)
    assert any(k.startswith("posterior.ema.") for k in keys)
    assert checkpoint["state_dict"]["posterior.iterations"].item() == 3
    assert len(checkpoint["lr_schedulers"]) == 2  # Q follows its own per-iteration schedule


def test_the_ebm_prior_chains_start_at_the_samplers_unconditional_draws(fitted):
    model, _, _, drawn = fitted
    assert len(drawn) == 3  # one batch of starts per training step
    assert all(s.shape == (100, model.latent_dim) and torch.isfinite(s).all() for s in drawn)
    assert not torch.allclose(drawn[0], drawn[1])


RESUME_RUN = [
    *SMALL,
    "prior=ebm",
    "prior.n_steps=5",
    "trainer.max_epochs=3",
    "trainer.limit_train_batches=3",
    "trainer.check_val_every_n_epoch=2",
    "trainer.limit_val_batches=1",
    "inference.n_steps=3",
    "inference.eval_steps=5",
    "inference.ema_every=2",  # EMA updates inside epochs and across the kill (iteration 4)
    "callbacks.progress_bar.refresh_rate=0",
]


@pytest.mark.slow
def test_a_killed_damc_run_resumes_bit_identically(tmp_path):
    straight = tmp_path / "straight"
    result = run_entry_point("train.py", [f"hydra.run.dir={straight}", *RESUME_RUN])
    assert result.returncode == 0, result.stderr[-3000:]

    killed = tmp_path / "killed"
    killed_at = kill_at_first_checkpoint(killed, RESUME_RUN)
    assert 0 <= killed_at < 2, f"the run was not killed mid-training (last epoch {killed_at})"
    last = killed / "checkpoints" / "last.ckpt"
    result = run_entry_point(
        "train.py", [f"hydra.run.dir={killed}", *RESUME_RUN, f"ckpt_path={last}"]
    )
    assert result.returncode == 0, result.stderr[-3000:]

    a, b = final_state(straight), final_state(killed)
    assert (a["epoch"], a["global_step"]) == (b["epoch"], b["global_step"])
    assert a["state_dict"]["posterior.iterations"].item() == 9
    for key, value in a["state_dict"].items():
        assert torch.equal(value, b["state_dict"][key]), key
    assert len(a["optimizer_states"]) == 3
    for opt_a, opt_b in zip(a["optimizer_states"], b["optimizer_states"], strict=True):
        for pid, state in opt_a["state"].items():
            assert torch.equal(state["exp_avg_sq"], opt_b["state"][pid]["exp_avg_sq"])
    for key in ("langevin", "prior"):
        assert torch.equal(a["rng_states"][0][key], b["rng_states"][0][key]), key


@pytest.mark.slow
def test_two_ddp_ranks_train_q_in_sync(tmp_path):
    """Each rank draws its own chains and Q noise; Q's gradients are averaged by the method,
    so Q, its EMA copy and every other parameter stay identical on both ranks."""
    args = [*DDP_RUN, *TWO_PROCESSES, *SMALL, "prior=ebm", "trainer.limit_train_batches=3"]
    args += ["inference.ema_every=1", "prior.n_steps=5"]
    args += [f"hydra.run.dir={tmp_path / 'damc'}", f"+callbacks.probe.out_dir={tmp_path}"]
    finish(start_train(args, tmp_path / "damc.log"), tmp_path / "damc.log")
    ranks = [read_probe(tmp_path, f"damc-rank{r}") for r in (0, 1)]
    assert [r["losses"] != [] for r in ranks] == [True, True]
    assert ranks[0]["losses"] != ranks[1]["losses"]  # different examples and noise per rank
    assert torch.equal(ranks[0]["start"], ranks[1]["start"])
    assert torch.equal(ranks[0]["end"], ranks[1]["end"])
    checkpoint = torch.load(tmp_path / "damc" / "checkpoints" / "last.ckpt", weights_only=True)
    state = checkpoint["state_dict"]
    assert state["posterior.iterations"].item() == 3
    sampler = [k for k in state if k.startswith("posterior.sampler.")]
    assert sampler and any(
        not torch.equal(state[k], state[k.replace(".sampler.", ".ema.")]) for k in sampler
    )
    assert "train/q_loss_epoch" in ranks[0]["metrics"]
