"""Time to quality on digits: training wall-clock until the validation reconstruction MSE
reaches the level the paper's recipe reaches (issue 9, part 3). Not a test.

Each recipe (a list of Hydra overrides of ``conf/train.yaml`` with ``dataset=digits``) trains
``LatentPriorModel`` with a real Lightning ``Trainer`` for ``--epochs`` epochs. Every
``--eval-every`` epochs the clock is paused and the model is scored on the validation split:

- ``mse``: the paper's evaluation for every recipe alike, z fitted by ``eval_steps`` (400)
  noise-free steps from the same N(0, I) draw, then MSE of g(z) (a measure of the learned
  generator and prior, whatever the training inference was);
- ``mse_own``: the recipe's own reconstruction, ``LatentPriorModel.reconstruct`` (for encoder
  recipes: from the encoder's mean; otherwise the same as ``mse``);
- with ``--holdout-digit k``: ``auprc`` of the held-out-digit test split, score
  -log p(x, z) with z fitted like ``mse``;
- ``mmd``: the unbiased kernel MMD^2 (lfbm_lightning/metrics/mmd.py) between ``--mmd-samples``
  prior samples g(z), z ~ p(z) (drawn from a fixed seed at every evaluation) and the test
  images (the normal ones with ``--holdout-digit``), flattened to vectors of D pixels. The
  Gaussian kernel's bandwidth h is the median pairwise distance of those test images, fixed
  for the run so that every evaluation and recipe is scored by the same kernel:
  MMD^2_u = mean_{i != j} k(s_i, s_j) + mean_{i != j} k(t_i, t_j) - 2 mean_{i, j} k(s_i, t_j),
  k(a, b) = exp(-|a - b|^2 / (2 h^2)); lower is better (0 in expectation when the samples
  follow the test distribution).

The clock counts training batches only (``training_step`` including the chain, the backward
and the optimizer steps), as wall-clock and as process CPU time (less sensitive to a shared
machine). The paper's level is its final value of a metric; a recipe's time to quality is the
clock at its first evaluation at or past that level (at or below for ``mse`` and ``mmd``).
Writes ``time_to_quality[_holdoutK].csv`` (every evaluation) and ``.png`` (metrics against
wall-clock) into ``--out-dir`` and prints a summary.

Run from the repository root, e.g.:
    python benchmarks/time_to_quality.py --threads 1
    python benchmarks/time_to_quality.py --recipes paper fast --epochs 40
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import os
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import pytorch_lightning as pl  # noqa: E402
from hydra import compose, initialize_config_dir  # noqa: E402
from hydra.utils import instantiate  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402

from lfbm_lightning import CONF_DIR  # noqa: E402
from lfbm_lightning.metrics.mmd import median_bandwidth, mmd2_unbiased  # noqa: E402
from lfbm_lightning.metrics.precision_recall import auprc  # noqa: E402
from lfbm_lightning.models import LatentPriorModel  # noqa: E402
from lfbm_lightning.models.energy import reconstruction_energy  # noqa: E402

RECIPES: dict[str, list[str]] = {
    "paper": ["inference=langevin"],
    "fast": ["inference=fast"],
    "persistent_k5": ["inference.persistent=true", "inference.n_steps=5"],
    "persistent_k2": ["inference.persistent=true", "inference.n_steps=2"],
    "encoder_k0": ["inference=amortized"],
    "encoder_k2": ["inference=amortized_langevin", "inference.refine_steps=2"],
    "encoder_k5": ["inference=amortized_langevin", "inference.refine_steps=5"],
}
"""Recipe name -> overrides. ``paper`` is the paper's recipe exactly (K = 20, s = 0.1, chains
from N(0, I)); ``fast`` is ``conf/inference/fast.yaml``."""


def run_config(overrides: list[str], epochs: int, seed: int, holdout: int | None) -> dict:
    """The resolved config of one recipe on digits."""
    extra = [f"trainer.max_epochs={epochs}", f"seed={seed}"]
    if holdout is not None:
        extra.append(f"dataset.holdout_digit={holdout}")
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(
            "train",
            overrides=["dataset=digits", "paths.output_dir=/tmp/lfbm_ttq", *overrides, *extra],
        )
    return OmegaConf.to_container(cfg, resolve=True)


def stacked(dataset: torch.utils.data.Dataset) -> tuple[torch.Tensor, torch.Tensor]:
    """All images (N, C, H, W) and labels (N,) of a split."""
    items = [dataset[i] for i in range(len(dataset))]
    return torch.stack([it["image"] for it in items]), torch.stack(
        [torch.as_tensor(it["label"]) for it in items]
    )


MMD_SEED = 11
"""Seed of the prior samples of the MMD (the same draw at every evaluation)."""


class SampleMMD:
    """MMD^2 of a model's prior samples against fixed reference images (module docstring).

    Args:
        reference: test images (M, C, H, W), M >= 2.
        n_samples: prior samples per evaluation, n >= 2.
    """

    def __init__(self, reference: torch.Tensor, n_samples: int) -> None:
        self.reference = reference.flatten(1)
        half = len(self.reference) // 2
        self.bandwidth = median_bandwidth(self.reference[:half], self.reference[half:])
        self.n_samples = n_samples

    def __call__(self, model: LatentPriorModel) -> float:
        rng = torch.Generator().manual_seed(MMD_SEED)
        with torch.no_grad():
            samples = model.generator(model.prior.sample(self.n_samples, rng=rng))
        return mmd2_unbiased(samples.flatten(1), self.reference, self.bandwidth)


class Scorer(pl.Callback):
    """Times the training batches and scores the model every ``every`` epochs.

    Args:
        val: validation images.
        test: (images, anomaly labels) of the held-out-digit test split, or None.
        mmd: the sample MMD against the test images.
        every: evaluation period in epochs (and always after the last epoch).
    """

    def __init__(
        self,
        val: torch.Tensor,
        test: tuple[torch.Tensor, torch.Tensor] | None,
        mmd: SampleMMD,
        every: int,
    ) -> None:
        self.val, self.test, self.mmd, self.every = val, test, mmd, every
        self.wall = self.cpu = 0.0
        self.iterations = 0
        self.rows: list[dict[str, Any]] = []

    def on_train_batch_start(self, *args: Any) -> None:
        self._wall, self._cpu = time.perf_counter(), time.process_time()

    def on_train_batch_end(self, *args: Any) -> None:
        self.wall += time.perf_counter() - self._wall
        self.cpu += time.process_time() - self._cpu
        self.iterations += 1

    def on_train_epoch_end(self, trainer: pl.Trainer, model: LatentPriorModel) -> None:
        epoch = trainer.current_epoch + 1
        if epoch % self.every == 0 or epoch == trainer.max_epochs:
            was_training = model.training
            model.eval()
            row = {"epoch": epoch, "iterations": self.iterations, "wall_s": self.wall}
            row.update(cpu_s=self.cpu, **self.score(model))
            model.train(was_training)
            self.rows.append(row)
            print(json.dumps(row), flush=True)

    def fit_z(self, model: LatentPriorModel, x: torch.Tensor) -> torch.Tensor:
        """The paper's evaluation chain from a fixed N(0, I) draw (common to all recipes)."""
        z0 = torch.randn(len(x), model.latent_dim, generator=torch.Generator().manual_seed(7))
        steps = int(model.inference_cfg["eval_steps"])
        step_size = float(model.inference_cfg["eval_step_size"])
        return model.infer(x, n_steps=steps, step_size=step_size, noise=False, z0=z0).z

    def score(self, model: LatentPriorModel) -> dict[str, float]:
        x = self.val
        with torch.no_grad():
            mse = (model.generator(self.fit_z(model, x)) - x).pow(2).mean().item()
        out = {"mse": mse, "mse_own": mse, "mmd": self.mmd(model)}
        if model.encoder is not None:
            x_hat, _ = model.reconstruct(x)
            out["mse_own"] = (x_hat - x).pow(2).mean().item()
        if self.test is not None:
            images, labels = self.test
            z = self.fit_z(model, images)
            with torch.no_grad():
                energy = reconstruction_energy(images, model.generator(z), model.sigma)
                scores = energy - model.prior.log_prob(z)
            out["auprc"] = auprc(scores.numpy(), labels.numpy())
        return out


def train_recipe(name: str, args: argparse.Namespace) -> list[dict[str, Any]]:
    """Train one recipe; returns its evaluation rows."""
    config = run_config(RECIPES[name], args.epochs, args.seed, args.holdout_digit)
    pl.seed_everything(args.seed, workers=True, verbose=False)
    datamodule = instantiate(config["dataset"])
    datamodule.setup("fit")
    model = LatentPriorModel(config)
    val, _ = stacked(datamodule.splits["val"])
    test_images, test_labels = stacked(datamodule.splits["test"])
    test = (test_images, test_labels) if args.holdout_digit is not None else None
    normal = test_images if test is None else test_images[test_labels == 0]
    scorer = Scorer(val, test, SampleMMD(normal, args.mmd_samples), args.eval_every)
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=1,
        max_epochs=args.epochs,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        inference_mode=False,
        callbacks=[scorer],
    )
    trainer.fit(model, datamodule=datamodule)
    return [{"recipe": name, **row} for row in scorer.rows]


def summarize(rows: list[dict[str, Any]], metric: str, lower_is_better: bool) -> list[dict]:
    """Per recipe: final value, and clock when it first reached the paper's final value."""
    paper = [r for r in rows if r["recipe"] == "paper"]
    level = paper[-1][metric]
    better = (lambda v: v <= level) if lower_is_better else (lambda v: v >= level)
    out = []
    for name in dict.fromkeys(r["recipe"] for r in rows):
        mine = [r for r in rows if r["recipe"] == name]
        hit = next((r for r in mine if better(r[metric])), None)
        out.append(
            {
                "recipe": name,
                "metric": metric,
                "paper_level": level,
                "final": mine[-1][metric],
                "s_per_iteration": mine[-1]["wall_s"] / mine[-1]["iterations"],
                "epochs_to_level": hit["epoch"] if hit else None,
                "wall_s_to_level": hit["wall_s"] if hit else None,
                "cpu_s_to_level": hit["cpu_s"] if hit else None,
            }
        )
    reference = next(s for s in out if s["recipe"] == "paper")
    for s in out:
        for clock in ("wall", "cpu"):
            t = s[f"{clock}_s_to_level"]
            ref = reference[f"{clock}_s_to_level"]
            s[f"speedup_{clock}"] = ref / t if t else None
    return out


def plot(rows: list[dict[str, Any]], metrics: list[str], path: Path) -> None:
    """Each metric against training wall-clock, one line per recipe, the paper's level
    dashed."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5.5 * len(metrics), 4.2))
    FigureCanvasAgg(fig)
    for i, metric in enumerate(metrics):
        ax = fig.add_subplot(1, len(metrics), i + 1)
        for name in dict.fromkeys(r["recipe"] for r in rows):
            mine = [r for r in rows if r["recipe"] == name]
            ax.plot([r["wall_s"] for r in mine], [r[metric] for r in mine], marker=".", label=name)
        level = [r for r in rows if r["recipe"] == "paper"][-1][metric]
        ax.axhline(level, color="grey", ls="--", lw=1, label="paper's final level")
        ax.set(xlabel="training wall-clock (s)", ylabel=metric, title=f"digits: {metric}")
        if metric.startswith("mse"):  # MMD^2_u can be negative: linear scale
            ax.set_yscale("log")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def read_rows(path: Path) -> list[dict[str, Any]]:
    """Rows of an earlier run's CSV (numbers parsed back)."""
    if not path.exists():
        return []
    with path.open(newline="") as f:
        return [
            {k: v if k == "recipe" else float(v) for k, v in row.items() if v != ""}
            for row in csv.DictReader(f)
        ]


def write_rows(rows: list[dict[str, Any]], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(dict.fromkeys(k for r in rows for k in r)))
        writer.writeheader()
        writer.writerows(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--recipes", nargs="+", default=list(RECIPES), choices=list(RECIPES))
    parser.add_argument("--epochs", type=int, default=100, help="digits' default budget")
    parser.add_argument("--eval-every", type=int, default=5, help="epochs between scores")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads")
    parser.add_argument("--holdout-digit", type=int, default=None)
    parser.add_argument("--mmd-samples", type=int, default=500, help="prior samples per MMD")
    parser.add_argument("--out-dir", type=Path, default=REPO / "benchmarks" / "results")
    parser.add_argument(
        "--reuse", action="store_true", help="keep recipes already in the CSV, train the rest"
    )
    args = parser.parse_args()
    if "paper" not in args.recipes:
        parser.error("the paper recipe sets the level: include it in --recipes")
    logging.getLogger("pytorch_lightning").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    torch.set_num_threads(args.threads)
    info = {"threads": args.threads, "load_start": os.getloadavg(), "torch": torch.__version__}
    suffix = "" if args.holdout_digit is None else f"_holdout{args.holdout_digit}"
    table = args.out_dir / f"time_to_quality{suffix}.csv"
    earlier = read_rows(table) if args.reuse else []
    rows: list[dict[str, Any]] = []
    for name in args.recipes:
        mine = [r for r in earlier if r["recipe"] == name]
        rows += mine or train_recipe(name, args)
        write_rows(rows, table)  # after every recipe: a killed run keeps what it finished
    info["load_end"] = os.getloadavg()
    metrics = ["mse", "mse_own", "mmd"] + (["auprc"] if args.holdout_digit is not None else [])
    metrics = [m for m in metrics if all(m in r for r in rows)]  # --reuse of an older CSV
    plot(rows, metrics, args.out_dir / f"time_to_quality{suffix}.png")
    summary = [s for m in metrics for s in summarize(rows, m, m != "auprc")]
    print(json.dumps(info))
    for s in summary:
        print(json.dumps(s))
    (args.out_dir / f"time_to_quality{suffix}_summary.json").write_text(
        json.dumps(
            {
                "machine": info,
                "args": vars(args) | {"out_dir": str(args.out_dir)},
                "summary": summary,
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
