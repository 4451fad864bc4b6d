"""Checks of a composed config that fail fast, before any data is read or model built.

(Named config checks, not "validation": in Lightning, validation is the val loop.) Hydra
already rejects unknown keys of train.py (the config is in struct mode); these checks cover
values that compose fine but would fail late, fail without naming the key, or silently train
nonsense: train.py's types and ranges (:data:`RULES`, :func:`validate_config`), and
evaluate.py's settings and added keys (:func:`check_evaluate_config`). A class's own options
(an inference method's, the occlusion's) are checked by its constructor, with the same
helpers (:mod:`lfbm_lightning.checks`); each setting once.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from lfbm_lightning import CONF_DIR
from lfbm_lightning.checks import (
    check,
    check_bool,
    check_choice,
    check_int,
    check_positive,
    in_interval,
    is_integer,
    is_positive,
)
from lfbm_lightning.data.occlusion import MASK_KINDS
from lfbm_lightning.data.splits import PROTOCOLS
from lfbm_lightning.errors import ConfigError
from lfbm_lightning.inference.ais import SCHEDULES


@dataclass(frozen=True)
class Rule:
    """An allowed range for one config key (checked only when the key is present)."""

    key: str
    allowed: str
    ok: Callable[[Any], bool]


def _at_least_one(v: Any) -> bool:
    return is_integer(v, 1)


def _digit_or_none(v: Any) -> bool:
    return v is None or (is_integer(v, 0) and v <= 9)


def _count_or_unlimited(v: Any) -> bool:
    return (v == -1 and not isinstance(v, bool)) or is_integer(v, 1)


def _decay_factor(v: Any) -> bool:
    return in_interval(v, 0, 1, open_low=True, open_high=False)


def _fraction(v: Any) -> bool:
    return in_interval(v, 0, 1, open_low=False, open_high=False)


def _batch_limit(v: Any) -> bool:
    """Lightning's ``limit_*_batches``: a batch count (int >= 0) or a fraction in [0, 1]."""
    return is_integer(v, 0) or (isinstance(v, float) and _fraction(v))


def _every_n_or_none(v: Any) -> bool:
    return v is None or is_integer(v, 1)


SEED_MAX = 2**32 - 1
"""The largest seed ``seed_everything`` takes."""


def _seed(v: Any) -> bool:
    return is_integer(v, 0) and v <= SEED_MAX


FP16_MIXED = ("16", "16-mixed")
"""Lightning's names of float16 mixed precision with a GradScaler (refused)."""

RULES = [
    Rule("latent_dim", "an integer >= 1", _at_least_one),
    Rule("model.sigma", "a number > 0", is_positive),
    Rule("inference.step_size", "a number > 0", is_positive),
    Rule("inference.eval_step_size", "a number > 0", is_positive),
    Rule("inference.n_steps", "an integer >= 1", _at_least_one),
    Rule("inference.eval_steps", "an integer >= 1", _at_least_one),
    Rule("model.lr_prior", "a number > 0", is_positive),
    Rule("model.lr_generator", "a number > 0", is_positive),
    Rule("model.lr_gamma", "a number in (0, 1] (per-epoch learning-rate decay)", _decay_factor),
    Rule("model.max_skipped_fraction", "a number in [0, 1]", _fraction),
    Rule("model.validation.fit", "'fast' or 'protocol'", lambda v: v in ("fast", "protocol")),
    Rule("model.validation.max_passes", "null or an integer >= 1", _every_n_or_none),
    Rule("model.validation.sanity_steps", "an integer >= 1", _at_least_one),
    # the latent EBM's prior Langevin (LEBM): 0 steps would switch its MLE off
    Rule("prior.n_steps", "an integer >= 1 (Langevin steps of the EBM prior)", _at_least_one),
    Rule("prior.step_size", "a number > 0", is_positive),
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
    Rule(
        "trainer.precision",
        "anything but 16-mixed (its gradient scaler does not fit the model's manual "
        "optimization of two optimizers; use trainer.precision=bf16-mixed)",
        lambda v: str(v) not in FP16_MIXED,
    ),
    Rule("callbacks.keep_last_epochs", "an integer >= 0 (0: off)", lambda v: is_integer(v, 0)),
    Rule("dataset.num_workers", "an integer >= 0", lambda v: is_integer(v, 0)),
    Rule("dataset.batch_size", "an integer >= 1", _at_least_one),
    Rule("dataset.channels", "an integer >= 1", _at_least_one),
    Rule("dataset.image_size", "an integer >= 1", _at_least_one),
    Rule("dataset.holdout_digit", "null or an integer in 0..9", _digit_or_none),
    Rule("dataset.protocol", f"one of {sorted(PROTOCOLS)}", lambda v: v in PROTOCOLS),
    Rule(
        "dataset.holdout_val_fraction",
        "a number in [0, 1) (the held-out digit's share moved from test to validation)",
        lambda v: in_interval(v, 0, 1, open_low=False, open_high=True),
    ),
    Rule("callbacks.auprc.every_n_epochs", "an integer >= 0 (0: off)", lambda v: is_integer(v, 0)),
    Rule(
        "callbacks.auprc.max_images",
        "null (all) or an integer >= 2",
        lambda v: v is None or is_integer(v, 2),
    ),
    Rule("seed", f"an integer in [0, {SEED_MAX}]", _seed),
    Rule(
        "dataset.occlusion.kind",
        f"null (complete images) or one of {list(MASK_KINDS)}",
        lambda v: v is None or v in MASK_KINDS,
    ),
    Rule("prior.n_components", "an integer >= 1 (mixture components)", _at_least_one),
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
        if value == "<absent>":
            continue
        check(rule.key, value, rule.allowed, rule.ok(value))
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
    periodic = OmegaConf.select(cfg, "callbacks.auprc.every_n_epochs", default=0)
    if periodic and OmegaConf.select(cfg, "dataset.holdout_digit", default=None) is None:
        raise ConfigError(
            "callbacks.auprc.every_n_epochs > 0 needs a held-out digit (dataset=digits or "
            "mnist with dataset.holdout_digit=0..9), or set callbacks.auprc.every_n_epochs=0"
        )


TASK_DIR = CONF_DIR / "task"
"""The task config group: one ``<name>.yaml`` per task."""


def resolve_device(name: str) -> torch.device:
    """``auto`` is CUDA when available, else the CPU; anything else as torch spells it."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def check_device(name: Any) -> torch.device:
    """The device ``device=name`` names, or a :class:`ConfigError` when torch cannot parse it
    or this machine does not have it."""
    allowed = "auto, cpu, cuda, cuda:<index>, mps"
    try:
        device = resolve_device(str(name))
    except (RuntimeError, ValueError) as err:
        raise ConfigError(f"device={name!r} is not a device: use one of {allowed}") from err
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0 or (device.index is not None and device.index >= count):
            raise ConfigError(
                f"device={name} but this machine has {count} CUDA device(s): use device=cpu "
                f"or device=auto (cuda when available)"
            )
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"device={name} but MPS is not available: use device=cpu")
    return device


def check_process_counts(cfg: DictConfig) -> tuple[int, int]:
    """(devices, num_nodes) of ``cfg``, both integers >= 1, or a :class:`ConfigError`."""
    devices = check_int("devices", cfg.get("devices", 1), 1)
    return devices, check_int("num_nodes", cfg.get("num_nodes", 1), 1)


def unknown_key(config: Any, reference: Any, prefix: str = "") -> str | None:
    """The first dotted key of ``config`` (plain dicts) that ``reference`` does not have."""
    if not isinstance(config, dict) or not isinstance(reference, dict):
        return None
    for key, value in config.items():
        if key not in reference:
            return f"{prefix}{key}"
        found = unknown_key(value, reference[key], f"{prefix}{key}.")
        if found:
            return found
    return None


def check_evaluate_config(cfg: DictConfig) -> None:
    """Evaluate's own settings, before any model is loaded: a task, no key that evaluate.py
    does not read (``+dataset...``: the data comes from the checkpoint), the process counts,
    the device, ``progress``, the batch sizes, ``metrics.reference_images``, the task's
    ``n_examples``, ``n_steps``, ``n_samples``, ``step_size``, and ``task=likelihood``'s
    estimator (:func:`check_likelihood_estimator`)."""
    if OmegaConf.is_missing(cfg.task, "name"):
        names = sorted(p.stem for p in TASK_DIR.glob("*.yaml"))
        raise ConfigError(f"task=<name> is required, one of {names} (conf/task/<name>.yaml)")
    name = cfg.task.name
    # every task's options are settings (evaluate_overrides serve several tasks at once)
    files = [CONF_DIR / "evaluate.yaml", *sorted(TASK_DIR.glob("*.yaml"))]
    reference = OmegaConf.to_container(OmegaConf.merge(*map(OmegaConf.load, files)))
    extra = unknown_key(OmegaConf.to_container(cfg, resolve=False), reference)
    if extra is not None:
        raise ConfigError(
            f"{extra} is not an evaluate.py setting: remove it (the model and its data come "
            "from the checkpoint; `python evaluate.py --help` lists the settings)"
        )
    check_process_counts(cfg)
    check_device(cfg.device)
    check_bool("progress", cfg.progress)
    check("seed", cfg.seed, f"an integer in [0, {SEED_MAX}]", _seed(cfg.seed))
    check_int("batch_size", cfg.batch_size, 1, nullable=True)
    settings = cfg[name]
    for key, minimum in (("n_examples", 1), ("n_steps", 0), ("n_samples", 1)):
        if key in settings:
            check_int(f"{name}.{key}", settings[key], minimum, nullable=True)
    if "step_size" in settings:
        check_positive(f"{name}.step_size", settings.step_size, nullable=True)
    if name == "likelihood":
        check_likelihood_estimator(settings)
    check_int("metrics.batch_size", cfg.metrics.batch_size, 1)
    check_int("metrics.reference_images", cfg.metrics.reference_images, 1, nullable=True)


LIKELIHOOD_ESTIMATORS = ("importance", "ais")
"""``likelihood.estimator``: importance sampling or annealed importance sampling."""


def check_likelihood_estimator(settings: DictConfig) -> None:
    """``likelihood.estimator``, ``likelihood.simulate`` and, for AIS, ``likelihood.ais.*``."""
    check_choice("likelihood.estimator", settings.estimator, LIKELIHOOD_ESTIMATORS)
    check_bool("likelihood.simulate", settings.simulate)
    if settings.estimator != "ais":
        return
    ais = settings.ais
    check_int("likelihood.ais.n_distributions", ais.n_distributions, 1)
    check_int("likelihood.ais.n_chains", ais.n_chains, 1)
    check_choice("likelihood.ais.schedule", ais.schedule, SCHEDULES)
    check_int("likelihood.ais.n_leapfrog", ais.n_leapfrog, 1)
    check_positive("likelihood.ais.step_size", ais.step_size)
    fraction = ais.target_accept is None or in_interval(
        ais.target_accept, 0, 1, open_low=True, open_high=True
    )
    allowed = "null or a number in (0, 1)"
    check("likelihood.ais.target_accept", ais.target_accept, allowed, fraction)
