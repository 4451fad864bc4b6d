"""Checks of a composed run config that fail fast, before any data is read or model built.

Hydra already rejects unknown keys (the config is in struct mode); these checks cover values
that compose fine but would fail late or silently train nonsense.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig, OmegaConf

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


RULES = [
    Rule("latent_dim", "an integer >= 1", _at_least_one),
    Rule("model.sigma", "a number > 0", _positive),
    Rule("inference.step_size", "a number > 0", _positive),
    Rule("inference.eval_step_size", "a number > 0", _positive),
    Rule("inference.n_steps", "an integer >= 1", _at_least_one),
    Rule("inference.eval_steps", "an integer >= 1", _at_least_one),
    Rule("model.lr_prior", "a number > 0", _positive),
    Rule("model.lr_generator", "a number > 0", _positive),
    Rule("dataset.batch_size", "an integer >= 1", _at_least_one),
    Rule("dataset.channels", "an integer >= 1", _at_least_one),
    Rule("dataset.image_size", "an integer >= 1", _at_least_one),
    Rule("dataset.holdout_digit", "null or an integer in 0..9", _digit_or_none),
    Rule(
        "dataset.occlusion.coverage", "a number in the open interval (0, 1)", _open_unit_interval
    ),
]


def validate_config(cfg: DictConfig) -> None:
    """Raise :class:`ConfigError` for the first value outside its allowed range.

    Also checks that the prior and the generator use the run's ``latent_dim``.
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
