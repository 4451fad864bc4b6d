"""Checks of a composed run config that fail fast, before any data is read or model built.

(Named config checks, not "validation": in Lightning, validation is the val loop.) Hydra
already rejects unknown keys (the config is in struct mode); these checks cover values that
compose fine but would fail late, fail without naming the key, or silently train nonsense:
types and ranges (:data:`RULES`), latent sizes that disagree, and an accelerator this machine
does not have (:func:`check_accelerator`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from lfbm_lightning.data.splits import PROTOCOLS
from lfbm_lightning.errors import ConfigError


@dataclass(frozen=True)
class Rule:
    """An allowed range for one config key (checked only when the key is present)."""

    key: str
    allowed: str
    ok: Callable[[Any], bool]


def _positive(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and v > 0


def _at_least_one(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 1


def _digit_or_none(v: Any) -> bool:
    return v is None or (isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 9)


def _open_unit_interval(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and 0 < v < 1


def _integer(v: Any, low: int) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= low


def _count_or_unlimited(v: Any) -> bool:
    return (v == -1 and not isinstance(v, bool)) or _integer(v, 1)


def _decay_factor(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and 0 < v <= 1


def _fraction(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and 0 <= v <= 1


def _batch_limit(v: Any) -> bool:
    """Lightning's ``limit_*_batches``: a batch count (int >= 0) or a fraction in [0, 1]."""
    if isinstance(v, bool):
        return False
    return (isinstance(v, int) and v >= 0) or (isinstance(v, float) and 0 <= v <= 1)


def _every_n_or_none(v: Any) -> bool:
    return v is None or _integer(v, 1)


RULES = [
    Rule("latent_dim", "an integer >= 1", _at_least_one),
    Rule("model.sigma", "a number > 0", _positive),
    Rule("inference.step_size", "a number > 0", _positive),
    Rule("inference.eval_step_size", "a number > 0", _positive),
    Rule("inference.n_steps", "an integer >= 1", _at_least_one),
    Rule("inference.eval_steps", "an integer >= 1", _at_least_one),
    Rule("model.lr_prior", "a number > 0", _positive),
    Rule("model.lr_generator", "a number > 0", _positive),
    Rule("model.lr_gamma", "a number in (0, 1] (per-epoch learning-rate decay)", _decay_factor),
    Rule("model.max_skipped_fraction", "a number in [0, 1]", _fraction),
    # the latent EBM's prior Langevin (LEBM): 0 steps would switch its MLE off
    Rule("prior.n_steps", "an integer >= 1 (Langevin steps of the EBM prior)", _at_least_one),
    Rule("prior.step_size", "a number > 0", _positive),
    Rule("trainer.max_epochs", "an integer >= 1, or -1 for no limit", _count_or_unlimited),
    Rule("trainer.max_steps", "an integer >= 1, or -1 for no limit", _count_or_unlimited),
    Rule("trainer.limit_train_batches", "an integer >= 0 or a fraction in [0, 1]", _batch_limit),
    Rule("trainer.limit_val_batches", "an integer >= 0 or a fraction in [0, 1]", _batch_limit),
    Rule("trainer.check_val_every_n_epoch", "null or an integer >= 1", _every_n_or_none),
    Rule("trainer.log_every_n_steps", "an integer >= 1", _at_least_one),
    Rule(
        "trainer.accumulate_grad_batches",
        "1 (the model updates once per batch by manual optimization)",
        lambda v: v == 1 and not isinstance(v, bool),
    ),
    Rule(
        "trainer.gradient_clip_val",
        "null (manual optimization: the model's optimizer steps clip nothing)",
        lambda v: v is None,
    ),
    Rule("callbacks.keep_last_epochs", "an integer >= 0 (0: off)", lambda v: _integer(v, 0)),
    Rule("dataset.num_workers", "an integer >= 0", lambda v: _integer(v, 0)),
    Rule("dataset.batch_size", "an integer >= 1", _at_least_one),
    Rule("dataset.channels", "an integer >= 1", _at_least_one),
    Rule("dataset.image_size", "an integer >= 1", _at_least_one),
    Rule("dataset.holdout_digit", "null or an integer in 0..9", _digit_or_none),
    Rule("dataset.protocol", f"one of {sorted(PROTOCOLS)}", lambda v: v in PROTOCOLS),
    Rule(
        "dataset.occlusion.coverage", "a number in the open interval (0, 1)", _open_unit_interval
    ),
]


GPU_ACCELERATORS = ("gpu", "cuda")


def check_accelerator(key: str, value: Any) -> None:
    """Raise :class:`ConfigError` when ``value`` asks for a CUDA device this machine lacks.

    Args:
        key: the setting's name, for the message (``trainer.accelerator``, ``device``).
        value: ``gpu``, ``cuda``, ``cuda:N``, ``auto``, ``cpu``, ...
    """
    name = str(value).lower()
    if name.split(":")[0] not in GPU_ACCELERATORS or torch.cuda.is_available():
        return
    raise ConfigError(
        f"{key}={value} but this machine has no usable CUDA GPU (torch.cuda.is_available() is "
        f"False): set {key}=cpu or {key}=auto"
    )


def validate_config(cfg: DictConfig) -> None:
    """Raise :class:`ConfigError` for the first value outside its allowed range.

    Also checks that the prior and the generator use the run's ``latent_dim`` and that
    ``trainer.accelerator`` exists on this machine.
    """
    for rule in RULES:
        value = OmegaConf.select(cfg, rule.key, default="<absent>")
        if value == "<absent>" or (value is None and rule.key == "dataset.occlusion.coverage"):
            continue
        if not rule.ok(value):
            raise ConfigError(f"{rule.key} must be {rule.allowed}, got {value!r}")
    for node in ("prior", "generator"):
        dim = OmegaConf.select(cfg, f"{node}.latent_dim")
        if dim is not None and dim != cfg.latent_dim:
            raise ConfigError(
                f"{node}.latent_dim is {dim} but latent_dim is {cfg.latent_dim}: set latent_dim "
                f"alone (the {node} config interpolates it)"
            )
    accelerator = OmegaConf.select(cfg, "trainer.accelerator")
    if accelerator is not None:
        check_accelerator("trainer.accelerator", accelerator)
