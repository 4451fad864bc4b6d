"""Does the prior matter? Gaussian against flow prior on data with a known latent structure.

    python benchmarks/prior_matters.py --out docs/results
    python benchmarks/prior_matters.py --priors gaussian flow mog --seeds 1 2 3 4
    python benchmarks/prior_matters.py --overrides trainer.max_epochs=100 --work outputs/long

Trains the same generator with the same budget (``conf/dataset/synthetic.yaml``: epochs,
Langevin sampler, learning rates) under each prior and seed through ``train.py``, then scores
every final checkpoint on the synthetic test split:

- held-out log p(x) by importance sampling (``evaluate.py task=likelihood``), next to the true
  model's log p*(x) of the same images;
- the unbiased kernel MMD^2 between decoded prior samples g(z), z ~ p(z), and noise-free true
  images g*(z*), z* ~ p*(z), with a Gaussian kernel at the median-heuristic bandwidth and at
  1/2 and 1/4 of it (the median sees only the largest scale of the data), and the MMD^2
  between two independent true sets as the estimator's floor.

Writes to ``--out``: ``prior_matters.md`` (the table, mean +- std over seeds),
``prior_matters.png`` (true samples next to each prior's, and all of them projected on the
true images' two principal axes) and ``prior_matters.json`` (every number). Training runs land
in ``--work`` and are reused when their ``last.ckpt`` exists (``--fresh`` retrains).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from lfbm_lightning import CONF_DIR
from lfbm_lightning.data.synthetic import SyntheticDataModule
from lfbm_lightning.metrics.mmd import median_bandwidth, mmd2_unbiased
from lfbm_lightning.models import LatentPriorModel
from lfbm_lightning.reporting.image_grids import to_grid
from lfbm_lightning.run.evaluation import build_datamodule, evaluate, load_model

REPO = Path(__file__).resolve().parents[1]

TRAIN_QUIET = [
    "trainer.check_val_every_n_epoch=1000",  # no validation: the budget goes to training
    "trainer.enable_progress_bar=false",
    "~callbacks.progress_bar",
    "callbacks.image_grids.every_n_epochs=0",
]
LIKELIHOOD = [
    "likelihood.n_samples=512",
    "likelihood.n_chains=4",
    "likelihood.n_steps=100",
    "progress=false",
]
MMD_SAMPLES = 1000
BANDWIDTH_FACTORS = (0.25, 0.5, 1.0)
MMD_SEED = 12345


def train_run(prior: str, seed: int, run_dir: Path, extra: list[str]) -> Path:
    """Train one model through train.py (one thread); returns its ``last.ckpt``."""
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    command = [
        sys.executable,
        str(REPO / "train.py"),
        "dataset=synthetic",
        f"prior={prior}",
        f"seed={seed}",
        f"hydra.run.dir={run_dir}",
        *TRAIN_QUIET,
        *extra,
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True)
    if result.returncode != 0 or not ckpt.is_file():
        raise RuntimeError(f"training {prior} seed {seed} failed:\n{result.stderr[-3000:]}")
    return ckpt


def true_images(datamodule: SyntheticDataModule, n: int, seed: int) -> torch.Tensor:
    """n noise-free true images g*(z*), z* ~ p*(z), flattened (n, D)."""
    rng = torch.Generator().manual_seed(seed)
    return datamodule.sample(n, rng, noise=False)[0].flatten(1)


@torch.no_grad()
def model_images(model: LatentPriorModel, n: int, seed: int) -> torch.Tensor:
    """n decoded prior samples g(z), z ~ p(z) (no pixel noise), flattened (n, D)."""
    torch.manual_seed(seed)
    return model.sample_images(n).flatten(1)


def score_run(ckpt: Path, out: Path, reference: torch.Tensor, bandwidth: float) -> dict:
    """log p(x) (evaluate.py task=likelihood on the test split) and MMD^2 of one checkpoint."""
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(
            "evaluate",
            [f"ckpt_path={ckpt}", "task=likelihood", f"paths.output_dir={out}", *LIKELIHOOD],
        )
    metrics = evaluate(cfg)
    model = load_model(ckpt, torch.device("cpu"))
    samples = model_images(model, MMD_SAMPLES, MMD_SEED)
    return {
        "log_px": metrics["log_px_mean"],
        "log_px_se": metrics["log_px_se"],
        "bpd": metrics["bpd_mean"],
        "gap": metrics["gap_mean"],
        "gap_se": metrics["gap_se"],
        "true_log_px": metrics["true_log_px_mean"],
        "true_bpd": metrics["true_bpd_mean"],
        "ess_mean": metrics["ess_mean"],
        **mmd2_columns(samples, reference, bandwidth),
        "samples": samples,
    }


def mmd2_columns(x: torch.Tensor, y: torch.Tensor, bandwidth: float) -> dict[str, float]:
    """MMD^2 at each bandwidth factor f x the median heuristic, keyed ``mmd2_<f>``."""
    return {f"mmd2_{f:g}": mmd2_unbiased(x, y, f * bandwidth) for f in BANDWIDTH_FACTORS}


@dataclass(frozen=True)
class Column:
    """A per-run number shown in the table as mean ± std over seeds."""

    key: str
    header: str
    higher_is_better: bool
    scale: float = 1.0
    digits: int = 2


COLUMNS = [
    Column("log_px", "held-out log p(x) [nats / image]", True),
    Column("bpd", "bpd", False, digits=4),
    Column("gap", "gap to true log p(x) [nats]", False),
    *(
        Column(f"mmd2_{f:g}", f"MMD² × 10³ (h = {f:g} × median)", False, scale=1e3)
        for f in BANDWIDTH_FACTORS
    ),
]


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def table(scores: dict[str, list[dict]], truth: dict[str, float], note: str) -> str:
    """The Markdown results: one row per prior (mean ± std over seeds), then the true model
    (its log p(x) on the same images; MMD² of a second true sample set: the noise floor)."""
    lines = [
        "| model | " + " | ".join(c.header for c in COLUMNS) + " | seeds |",
        "|---" * (len(COLUMNS) + 2) + "|",
    ]
    for prior, runs in scores.items():
        cells = []
        for c in COLUMNS:
            mean, std = mean_std([r[c.key] * c.scale for r in runs])
            cells.append(f"{mean:.{c.digits}f} ± {std:.{c.digits}f}")
        lines.append(f"| {prior} prior | " + " | ".join(cells) + f" | {len(runs)} |")
    cells = [f"{truth[c.key] * c.scale:.{c.digits}f}" for c in COLUMNS]
    lines.append("| true model | " + " | ".join(cells) + " | - |")
    return "\n".join([*lines, "", *verdict(scores), "", note]) + "\n"


def verdict(scores: dict[str, list[dict]]) -> list[str]:
    """Flow against Gaussian: each margin in units of the larger seed standard deviation, and
    the share of the Gaussian prior's gap to the true log p(x) that the flow prior closes."""
    if not {"gaussian", "flow"} <= set(scores):
        return []
    out = []
    for c in COLUMNS:
        if c.key in ("bpd", "gap"):  # the same comparison as log p(x)
            continue
        flow, gauss = ([r[c.key] for r in scores[p]] for p in ("flow", "gaussian"))
        margin = (statistics.mean(flow) - statistics.mean(gauss)) * (
            1 if c.higher_is_better else -1
        )
        spread = max(mean_std(flow)[1], mean_std(gauss)[1])
        against = (
            f" = {margin / spread:.1f} × the larger seed standard deviation" if spread > 0 else ""
        )
        out.append(
            f"- {c.header}: flow better than Gaussian by {margin * c.scale:.{c.digits}f}{against}"
        )
    gap = {p: statistics.mean(r["gap"] for r in scores[p]) for p in ("flow", "gaussian")}
    out.append(
        f"- the flow prior closes {100 * (1 - gap['flow'] / gap['gaussian']):.0f}% of the "
        "Gaussian prior's gap to the true model's log p(x)"
    )
    return out


def settings_note(n_test: int, reference_samples: int, bandwidth: float) -> str:
    """What the numbers are, under the table."""
    return (
        f"log p(x): mean over the {n_test} test images (the same images in every row), by "
        "importance sampling with 512 samples per image from a Student-t mixture around 4 "
        "posterior modes (`evaluate.py task=likelihood`); a density of the continuous 8x8 "
        "images on the [-1, 1] scale, no dequantisation: bpd = -log p(x) / (64 ln 2). True "
        f"model: Monte Carlo over {reference_samples:,} latent draws. MMD²: unbiased estimate, "
        f"Gaussian kernel of bandwidth h, median heuristic h = {bandwidth:.3f}; {MMD_SAMPLES} "
        "noise-free samples g(z), z ~ p(z), against as many noise-free true images g*(z*); "
        "the true row's MMD² is between two independent true sets (the estimator's floor)."
    )


def figure(truth: torch.Tensor, scores: dict[str, list[dict]], path: Path) -> Path:
    """Image grids (true samples, then each prior's first seed) over a PCA scatter of all."""
    names = ["true model", *(f"{p} prior (seed {runs[0]['seed']})" for p, runs in scores.items())]
    sets = [truth, *(runs[0]["samples"] for runs in scores.values())]
    mean = truth.mean(0)
    _, _, basis = torch.pca_lowrank(truth - mean, q=2, center=False)
    fig = Figure(figsize=(3.2 * len(sets), 6.4))
    FigureCanvasAgg(fig)
    side = int(math.isqrt(truth.shape[1]))
    for col, (name, images) in enumerate(zip(names, sets, strict=True)):
        grid = to_grid(images[:64].view(-1, 1, side, side), nrow=8)
        ax = fig.add_subplot(2, len(sets), col + 1)
        ax.imshow(grid[0].numpy(), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        ax.set_title(name, fontsize=10)
        ax.axis("off")
        ax = fig.add_subplot(2, len(sets), len(sets) + col + 1)
        projected = ((truth - mean) @ basis).numpy()
        ax.scatter(*projected.T, s=2, c="lightgrey", label="true")
        if col > 0:
            shown = ((images - mean) @ basis).numpy()
            ax.scatter(*shown.T, s=2, c="tab:blue" if col == 1 else "tab:orange", label="model")
        ax.set_title("PCA of images (grey: true)", fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "results")
    parser.add_argument("--work", type=Path, default=REPO / "outputs" / "prior_matters")
    parser.add_argument("--priors", nargs="+", default=["gaussian", "flow"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3])
    parser.add_argument("--jobs", type=int, default=2, help="training runs at once (1 core each)")
    parser.add_argument("--fresh", action="store_true", help="retrain even if checkpoints exist")
    parser.add_argument(
        "--overrides", nargs="*", default=[], help="extra train.py overrides for every run"
    )
    args = parser.parse_args()
    torch.set_num_threads(1)
    start = time.monotonic()

    runs = [(p, s, args.work / f"{p}_seed{s}") for s in args.seeds for p in args.priors]
    todo = [r for r in runs if args.fresh or not (r[2] / "checkpoints" / "last.ckpt").is_file()]
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        list(pool.map(lambda r: train_run(*r, args.overrides), todo))
    trained = time.monotonic()

    ckpt = runs[0][2] / "checkpoints" / "last.ckpt"
    datamodule = build_datamodule(load_model(ckpt, torch.device("cpu")).config, None)
    truth = true_images(datamodule, MMD_SAMPLES, MMD_SEED)
    floor_set = true_images(datamodule, MMD_SAMPLES, MMD_SEED + 1)
    bandwidth = median_bandwidth(truth, floor_set)
    scores: dict[str, list[dict]] = {p: [] for p in args.priors}
    for prior, seed, run_dir in runs:
        score = score_run(
            run_dir / "checkpoints" / "last.ckpt", run_dir / "eval", truth, bandwidth
        )
        scores[prior].append({"seed": seed, **score})
        print(f"{prior} seed {seed}: log p(x) {score['log_px']:.3f}, gap {score['gap']:.3f}")
    first = scores[args.priors[0]][0]
    true_row = {
        "log_px": first["true_log_px"],
        "bpd": first["true_bpd"],
        "gap": 0.0,
        **mmd2_columns(floor_set, truth, bandwidth),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    note = settings_note(len(datamodule.splits["test"]), datamodule.reference_samples, bandwidth)
    text = table(scores, true_row, note)
    (args.out / "prior_matters.md").write_text(text)
    figure(truth, scores, args.out / "prior_matters.png")
    numbers = {
        "settings": {"priors": args.priors, "seeds": args.seeds, "bandwidth": bandwidth},
        "true_model": true_row,
        "runs": {
            p: [{k: v for k, v in r.items() if k != "samples"} for r in rs]
            for p, rs in scores.items()
        },
        "seconds": {"training": trained - start, "total": time.monotonic() - start},
    }
    (args.out / "prior_matters.json").write_text(json.dumps(numbers, indent=2) + "\n")
    print(text)
    print(f"training {trained - start:.0f} s, total {time.monotonic() - start:.0f} s")


if __name__ == "__main__":
    main()
