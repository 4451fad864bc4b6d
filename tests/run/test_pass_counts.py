"""Generator-pass counts of a run from its config (run/pass_counts.py), checked against the
real data modules and against the formula worked out by hand."""

from __future__ import annotations

import pytest
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from lfbm_lightning import CONF_DIR
from lfbm_lightning.run.pass_counts import run_passes, split_sizes

PAPER_SETTINGS = {
    "mnist (digit 1 held out)": ["dataset=mnist", "dataset.holdout_digit=1"],
    "mnist (digit 4 held out)": ["dataset=mnist", "dataset.holdout_digit=4"],
    "mnist": ["dataset=mnist"],
    "svhn": ["dataset=svhn"],
    "cifar10": ["dataset=cifar10"],
    "celeba": ["dataset=celeba"],
}


def composed(overrides: list[str]):
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        return compose("train", overrides, return_hydra_config=True)


@pytest.mark.parametrize("overrides", [[], ["dataset.holdout_digit=3"]], ids=["plain", "held3"])
def test_digits_split_sizes_match_the_data_module(overrides):
    cfg = composed(overrides)
    datamodule = instantiate(cfg.dataset)
    datamodule.setup()
    real = {name: len(datamodule.splits[name]) for name in ("train", "val", "test")}
    sizes = split_sizes(cfg)
    assert (sizes.train, sizes.val, sizes.test) == (real["train"], real["val"], real["test"])


def test_digits_passes_by_hand():
    # 1,438 training images in 15 batches (no drop_last), K = 20: 1,438 * 21 passes an epoch;
    # 180 validation images, fast fit capped at 50 passes + the decode, every 10 of 100 epochs;
    # the sanity check: one batch of 100 images, 1 step + the decode
    r = run_passes(composed([]))
    assert r.train_per_epoch == 1438 * 21
    assert r.val_per_check == 180 * 51
    assert (r.validations, r.sanity) == (10, 100 * 2)
    assert r.validation_share == pytest.approx((10 * 180 * 51 + 200) / (100 * 1438 * 21))


def test_mnist_held_out_digit_by_hand():
    # 70,000 - 6,824 fours = 63,176 normal images, 80% = 50,540 train; drop_last: 505 batches
    r = run_passes(composed(PAPER_SETTINGS["mnist (digit 4 held out)"]))
    assert r.train_images == 50500
    assert split_sizes(composed(PAPER_SETTINGS["mnist (digit 4 held out)"])).test == (
        63176 - 50540 + 6824
    )
    assert r.validations == 21 // 5


@pytest.mark.parametrize("name", PAPER_SETTINGS)
def test_validation_is_at_most_5_percent_of_every_paper_run(name):
    r = run_passes(composed(PAPER_SETTINGS[name]))
    assert 0 < r.validation_share <= 0.05
    assert r.sanity <= 100 * 2  # one batch, one fit step and the decode


def test_protocol_validation_is_one_setting_away_and_counts_20k_plus_1():
    r = run_passes(composed(["dataset=cifar10", "model.validation.fit=protocol"]))
    assert r.val_passes_per_image == 801
    assert r.validation_share > 0.05  # why it is not the default


def test_evaluation_after_fit_counts_each_kept_checkpoint():
    base = ["dataset.holdout_digit=3", "callbacks.keep_last_epochs=4"]
    cfg = composed([*base, "evaluate_after_fit=[anomaly,inpainting]"])
    test = split_sizes(cfg).test
    assert run_passes(cfg).evaluation == {
        "anomaly": 4 * test * 401,
        "inpainting": 4 * 64 * 10 * 401,
    }
    fewer = ["evaluate_after_fit=[anomaly]", "evaluate_overrides=['anomaly.n_steps=50']"]
    assert run_passes(composed([*base, *fewer])).evaluation == {"anomaly": 4 * test * 51}


@pytest.mark.parametrize("max_images", [None, 100])
def test_periodic_auprc_passes_count_the_real_splits_it_scores(max_images):
    """Every 5 of 10 epochs, 5 fit steps + the decode for each image of the test split and of
    the validation anomalies, as the digits data module builds them (digit 9, 20% held back)."""
    base = ["dataset.holdout_digit=9", "dataset.holdout_val_fraction=0.2"]
    periodic = ["callbacks.auprc.every_n_epochs=5", "callbacks.auprc.n_steps=5"]
    periodic.append(f"callbacks.auprc.max_images={'null' if max_images is None else max_images}")
    cfg = composed([*base, *periodic, "trainer.max_epochs=10"])
    datamodule = instantiate(cfg.dataset)
    datamodule.setup()
    scored = sum(
        min(len(datamodule.splits[name]), max_images or 10**9) for name in ("test", "val_anomaly")
    )
    without = run_passes(composed([*base, "trainer.max_epochs=10"]))
    assert run_passes(cfg).periodic_auprc == 2 * scored * 6
    assert run_passes(cfg).validation == without.validation + 2 * scored * 6
    assert without.periodic_auprc == 0
