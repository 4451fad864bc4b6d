"""The flow and EBM priors with and without DAMC's amortised sampler (``inference=damc``) on
digits with a held-out digit (issue 31, item 6). Not a test.

Each recipe trains with a real Lightning ``Trainer`` (the machinery of ``time_to_quality.py``)
and is scored every ``--eval-every`` epochs with the clock paused: ``mse`` and ``auprc`` by the
paper's evaluation (400 noise-free steps from one fixed N(0, I) draw, 400 generator passes per
image) and, for DAMC, ``mse_q`` and ``auprc_q`` from Q(x) followed by ``--q-steps`` noise-free
steps (that many passes per image). Printed per recipe: seconds per training iteration (wall
and CPU) and its excess over the same prior's Langevin recipe, Q's denoiser passes per
iteration, the epoch and training seconds at which ``mse`` and ``auprc`` first reach the
Langevin recipe's final values (the paper recipe's quality), and the held-out AUPRC under each
checkpoint rule over the evaluations (last; mean of the last 10; best validation ``mse``;
best test AUPRC, marked: it selects on the test set). The machine is named in the output.

    python benchmarks/damc_compare.py --epochs 3 --intervals 20      # minutes on a CPU
    python benchmarks/damc_compare.py --epochs 100 --eval-every 5    # the full comparison
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import time_to_quality  # noqa: E402
from time_to_quality import RECIPES, REPO, Scorer, train_recipe  # noqa: E402

from lfbm_lightning.metrics.precision_recall import auprc  # noqa: E402
from lfbm_lightning.models.energy import reconstruction_energy  # noqa: E402

PRIORS = ("flow", "ebm")


def machine() -> str:
    """CPU model, core count, torch version and threads: where the seconds were measured."""
    model = platform.processor() or "unknown CPU"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        names = [
            ln.split(":", 1)[1].strip()
            for ln in cpuinfo.read_text().splitlines()
            if ln.startswith("model name")
        ]
        model = names[0] if names else model
    return f"{model}, {torch.get_num_threads()} thread(s), torch {torch.__version__}"


class SamplerScorer(Scorer):
    """:class:`Scorer` plus, for a DAMC model, the fits from Q(x) + ``q_steps`` steps."""

    q_steps = 10

    def score(self, model) -> dict[str, float]:
        out = super().score(model)
        if not model.posterior.has_sampler:
            return out
        x = self.val
        index = torch.arange(len(x))
        x_hat, _ = model.reconstruct(
            x, n_steps=self.q_steps, z0=model.posterior.sampler_start(model, x, None, index, 7)
        )
        out["mse_q"] = (x_hat - x).pow(2).mean().item()
        if self.test is not None:
            images, labels = self.test
            z0 = model.posterior.sampler_start(model, images, None, torch.arange(len(images)), 7)
            x_hat, z = model.reconstruct(images, n_steps=self.q_steps, z0=z0)
            with torch.no_grad():
                scores = reconstruction_energy(images, x_hat, model.sigma) - model.prior.log_prob(
                    z
                )
            out["auprc_q"] = auprc(scores.numpy(), labels.numpy())
        return out


def checkpoint_rules(rows: list[dict[str, Any]], key: str) -> dict[str, float]:
    """Held-out AUPRC ``key`` of the evaluation each rule picks."""
    by_mse = min(rows, key=lambda r: r["mse"])
    return {
        "last": rows[-1][key],
        "mean_last_10": sum(r[key] for r in rows[-10:]) / len(rows[-10:]),
        "best_val_mse": by_mse[key],
        "best_test_auprc (test-selected)": max(r[key] for r in rows),
    }


def first_reaching(rows, metric: str, level: float, lower: bool) -> dict[str, Any] | None:
    hit = next((r for r in rows if (r[metric] <= level if lower else r[metric] >= level)), None)
    return None if hit is None else {"epoch": hit["epoch"], "wall_s": round(hit["wall_s"], 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--eval-every", type=int, default=1)
    parser.add_argument("--holdout-digit", type=int, default=3)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--intervals", type=int, default=100, help="Q's sampling steps T")
    parser.add_argument("--q-steps", type=int, default=10, help="noise-free steps after Q(x)")
    parser.add_argument("--mmd-samples", type=int, default=200)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks/results/damc_compare.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    SamplerScorer.q_steps = args.q_steps
    time_to_quality.Scorer = SamplerScorer  # train_recipe builds its scorer by this name
    damc = ["inference=damc", f"inference.sampler.n_intervals={args.intervals}"]
    for prior in PRIORS:
        RECIPES[prior] = [f"prior={prior}", "inference=langevin"]
        RECIPES[f"{prior}+damc"] = [f"prior={prior}", *damc]
    rows = {name: train_recipe(name, args) for p in PRIORS for name in (p, f"{p}+damc")}

    summary = {"machine": machine(), "settings": vars(args) | {"out": str(args.out)}}
    for prior in PRIORS:
        paper = rows[prior]
        per_iter = {n: rows[n][-1]["wall_s"] / rows[n][-1]["iterations"] for n in rows}
        cpu_iter = {n: rows[n][-1]["cpu_s"] / rows[n][-1]["iterations"] for n in rows}
        for name in (prior, f"{prior}+damc"):
            mine = rows[name]
            entry = {
                "s_per_iteration_wall": per_iter[name],
                "s_per_iteration_cpu": cpu_iter[name],
                "extra_s_per_iteration_wall": per_iter[name] - per_iter[prior],
                "extra_s_per_iteration_cpu": cpu_iter[name] - cpu_iter[prior],
                "to_paper_mse": first_reaching(mine, "mse", paper[-1]["mse"], lower=True),
                "to_paper_auprc": first_reaching(mine, "auprc", paper[-1]["auprc"], lower=False),
                "auprc_400_from_normal": checkpoint_rules(mine, "auprc"),
                "passes_per_image_400_from_normal": 400,
            }
            if name.endswith("+damc"):
                uses_prior_start = prior == "ebm"
                entry["q_denoiser_passes_per_iteration"] = {
                    "sampling": args.intervals * (2 if uses_prior_start else 1),
                    "training (forward + backward)": 2 * 6,
                }
                entry["auprc_from_q"] = checkpoint_rules(mine, "auprc_q")
                entry["passes_per_image_from_q"] = args.q_steps
                entry["final_mse_q"] = mine[-1]["mse_q"]
            entry["final_mse"] = mine[-1]["mse"]
            summary[name] = entry
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"summary": summary, "rows": rows}, indent=1))
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
