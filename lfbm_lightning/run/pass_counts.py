"""Generator passes of a training run, from its composed config alone (no data, no machine).

A *pass* is one generator forward plus one backward to z for one image (a decode counts as one).
Per job, with N training images per epoch, K chain steps, E epochs, validation every c epochs on
n_val images of P fit passes (``model.validation.max_passes``, an upper bound, or
``inference.eval_steps`` under ``fit: protocol``), the sanity check's S batches of B_val images:

    training   = E * N * (K + 1)                  (K Langevin steps + the update's pass)
    validation = floor(E / c) * n_val * (P + 1)  +  S * B_val * (P_s + 1)   (+1: the decode)
    share      = validation / training            (P_s: the sanity check's passes per image)

Validation also counts the periodic held-out AUPRC (``callbacks.auprc``, every a epochs, F fit
steps): floor(E / a) * (its scored images) * (F + 1).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from omegaconf import DictConfig, OmegaConf

from lfbm_lightning.models.latent_prior_model import validation_fit
from lfbm_lightning.run.after_fit import compose_evaluate, task_names

DIGITS_PER_CLASS = (178, 182, 177, 183, 181, 182, 181, 179, 174, 180)
"""Images of each digit 0..9 in scikit-learn's load_digits (1,797 in all)."""
MNIST_PER_CLASS = (6903, 7877, 6990, 7141, 6824, 6313, 6876, 7293, 6825, 6958)
"""Images of each digit 0..9 in MNIST's training and test sets together (70,000)."""
TRAIN_POOL = {"svhn": 73257, "cifar10": 50000, "celeba": 162770, "mnist": 60000}
"""Training images of the standard splits."""
EVAL_IMAGES = {"svhn": 26032, "cifar10": 10000, "celeba": 19867, "mnist": 10000}
"""Images of the split the evaluation tasks score (CelebA: the official ``valid``)."""
HOLDOUT_TRAIN_FRACTION = 0.8
"""Share of the normal images the held-out-digit protocol trains on (data/splits.py)."""


@dataclass(frozen=True)
class Splits:
    """Images per epoch in training, in one validation, and in the evaluation split."""

    train: int
    val: int
    test: int


def _holdout(per_class: tuple[int, ...], digit: int) -> tuple[int, int]:
    """(training pool, test images) of the held-out-digit protocol for ``digit``."""
    normal = sum(per_class) - per_class[digit]
    train = int(normal * HOLDOUT_TRAIN_FRACTION)
    return train, normal - train + per_class[digit]


def _carve(pool: int, val_size: int, val_fraction: float | None) -> tuple[int, int]:
    """(train, val) of a training pool: ``val_fraction`` carved out, or ``val_size`` kept in."""
    if val_fraction is not None:
        n_val = int(round(val_fraction * pool))
        return pool - n_val, n_val
    return pool, min(int(val_size), pool)


def split_sizes(cfg: DictConfig) -> Splits:
    """The image counts of the data set a composed config trains on (see data/)."""
    data = cfg.dataset
    name = str(data._target_).split(".")[-2]  # its module in lfbm_lightning/data/
    digit = data.get("holdout_digit")
    if name == "synthetic":
        return Splits(int(data.n_train), int(data.n_val), int(data.n_test))
    if name == "digits":
        total = sum(DIGITS_PER_CLASS)
        if digit is None:
            train, val = round(0.8 * total), round(0.1 * total)
            return Splits(train, val, total - train - val)
        pool, test = _holdout(DIGITS_PER_CLASS, int(digit))
        val = int(round(float(data.get("val_fraction", 0.1)) * pool))
        return Splits(pool - val, val, test)
    if name == "mnist" and digit is not None:
        pool, test = _holdout(MNIST_PER_CLASS, int(digit))
    else:
        pool, test = TRAIN_POOL[name], EVAL_IMAGES[name]
    train, val = _carve(pool, int(data.get("val_size", 1000)), data.get("val_fraction"))
    return Splits(train, val, test)


def _limited(batches: int, limit: Any) -> int:
    """Lightning's ``limit_*_batches`` applied to a batch count."""
    if isinstance(limit, bool) or limit is None:
        return batches
    if isinstance(limit, int):
        return min(batches, limit)
    return int(batches * float(limit))


def chain_steps(cfg: DictConfig) -> int:
    """Langevin steps of a training chain (an amortised method's ``refine_steps``)."""
    inference = cfg.inference
    return int(inference.refine_steps if "refine_steps" in inference else inference.n_steps)


def eval_steps(cfg: DictConfig) -> int:
    """Steps of a reconstruction (an amortised method's ``eval_refine_steps``)."""
    inference = cfg.inference
    key = "eval_refine_steps" if "eval_refine_steps" in inference else "eval_steps"
    return int(inference[key])


@dataclass
class RunPasses:
    """Generator passes of one training job (module docstring), and the FID samples."""

    epochs: int
    train_images: int  # per epoch
    k: int
    train_per_epoch: int
    val_images: int
    val_passes_per_image: int  # fit passes + the decode
    validations: int
    sanity: int
    evaluation: dict[str, int] = field(default_factory=dict)  # task -> passes
    fid_samples: int = 0
    periodic_auprc: int = 0  # passes of the held-out AUPRC during training

    @property
    def train(self) -> int:
        return self.epochs * self.train_per_epoch

    @property
    def val_per_check(self) -> int:
        return self.val_images * self.val_passes_per_image

    @property
    def validation(self) -> int:
        return self.validations * self.val_per_check + self.sanity + self.periodic_auprc

    @property
    def validation_share(self) -> float:
        """Validation passes over training passes of the run."""
        return self.validation / self.train if self.train else 0.0


def periodic_auprc_passes(cfg: DictConfig, sizes: Splits, epochs: int) -> int:
    """Passes of the periodic held-out AUPRC (``callbacks.auprc``; module docstring): each
    evaluation fits every scored image of the test split and, with
    ``dataset.holdout_val_fraction``, of the validation images plus the held-out digit's
    images moved there from test, each split capped at ``max_images``."""
    node = OmegaConf.select(cfg, "callbacks.auprc", default=None)
    if node is None or not node.get("every_n_epochs"):
        return 0
    steps = eval_steps(cfg) if node.get("n_steps") is None else int(node.n_steps)
    digits = str(cfg.dataset._target_).split(".")[-2] == "digits"
    anomalies = (DIGITS_PER_CLASS if digits else MNIST_PER_CLASS)[int(cfg.dataset.holdout_digit)]
    held = int(round(float(cfg.dataset.get("holdout_val_fraction") or 0) * anomalies))
    cap = node.get("max_images") or math.inf
    images = min(cap, sizes.test - held) + (min(cap, sizes.val + held) if held else 0)
    return (epochs // int(node.every_n_epochs)) * int(images) * (steps + 1)


def run_passes(cfg: DictConfig) -> RunPasses:
    """The passes of the training job a composed ``train`` config describes (module doc)."""
    sizes = split_sizes(cfg)
    batch = int(cfg.dataset.batch_size)
    drop_last = bool(cfg.dataset.get("drop_last", False))
    batches = sizes.train // batch if drop_last else math.ceil(sizes.train / batch)
    batches = _limited(batches, cfg.trainer.get("limit_train_batches"))
    train_images = min(batches * batch, sizes.train)
    k = chain_steps(cfg)
    epochs = int(cfg.trainer.max_epochs)
    validation = OmegaConf.to_container(cfg.model.get("validation") or {}, resolve=True)
    _, steps = validation_fit(validation, eval_steps(cfg))
    _, sanity_steps = validation_fit(validation, eval_steps(cfg), sanity=True)
    val_batches = _limited(math.ceil(sizes.val / batch), cfg.trainer.get("limit_val_batches"))
    val_images = min(val_batches * batch, sizes.val)
    every = cfg.trainer.get("check_val_every_n_epoch") or 1
    sanity_batches = cfg.trainer.get("num_sanity_val_steps")
    sanity_batches = 2 if sanity_batches is None else int(sanity_batches)  # Lightning's default
    sanity_batches = val_batches if sanity_batches < 0 else min(sanity_batches, val_batches)
    sanity_images = min(sanity_batches * batch, val_images)
    fid_every = OmegaConf.select(cfg, "callbacks.fid.every_n_epochs", default=0) or 0
    fid = (epochs // fid_every) * int(cfg.callbacks.fid.n_samples) if fid_every else 0
    evaluation, eval_fid = evaluation_passes(cfg)
    return RunPasses(
        epochs=epochs,
        train_images=train_images,
        k=k,
        train_per_epoch=train_images * (k + 1),
        val_images=val_images,
        val_passes_per_image=steps + 1,
        validations=epochs // int(every),
        sanity=sanity_images * (sanity_steps + 1),
        evaluation=evaluation,
        fid_samples=fid + eval_fid,
        periodic_auprc=periodic_auprc_passes(cfg, sizes, epochs),
    )


def evaluation_passes(cfg: DictConfig) -> tuple[dict[str, int], int]:
    """({task: passes}, FID samples) of the run's ``evaluate_after_fit``, on each checkpoint
    it scores (the last ``callbacks.keep_last_epochs`` epochs, or last.ckpt)."""
    keep = int(OmegaConf.select(cfg, "callbacks.keep_last_epochs", default=0) or 0)
    checkpoints = min(keep, int(cfg.trainer.max_epochs)) if keep > 0 else 1
    extra = list(OmegaConf.select(cfg, "evaluate_overrides", default=None) or [])
    passes, fid = {}, 0
    for name in task_names(cfg):
        task_cfg = compose_evaluate([f"task={name}", *extra])
        n_passes, n_fid = task_passes(name, task_cfg, cfg)
        passes[name] = checkpoints * n_passes
        fid += checkpoints * n_fid
    return passes, fid


def task_passes(task: str, eval_cfg: DictConfig, cfg: DictConfig) -> tuple[int, int]:
    """(generator passes, FID samples) of evaluation task ``task`` (a composed ``evaluate``
    config) on one checkpoint of the run ``cfg``: at most, where a fast fit may stop early."""
    sizes = split_sizes(cfg)
    node = eval_cfg.get(task) or {}
    steps = node.get("n_steps")
    steps = eval_steps(cfg) if steps is None else int(steps)
    if task == "synthesis":
        samples = int(node.n_samples)
        return samples, samples if node.get("fid", True) else 0
    if task == "recovery":
        images = node.get("n_examples") or sizes.train
        if node.get("n_steps") is None and node.get("chain", "sample") == "sample":
            steps = chain_steps(cfg)
        return images * (steps + 1), images if node.get("fid") else 0
    images = node.get("n_examples") or sizes.test
    if task == "inpainting":
        return images * int(node.n_restarts) * (steps + 1), 0
    latent_dim = int(cfg.latent_dim)  # a proposal mode's Hessian: d rows, one pass each
    if task == "likelihood":
        return images * (int(node.n_chains) * (steps + latent_dim) + int(node.n_samples)), 0
    passes = images * (steps + 1)
    if task == "anomaly" and "marginal" in (node.get("scores") or []):
        marginal = node.marginal
        chain = eval_steps(cfg) if marginal.n_steps is None else int(marginal.n_steps)
        chain += latent_dim
        passes += images * (int(marginal.n_chains) * chain + int(marginal.n_samples))
    return passes, 0
