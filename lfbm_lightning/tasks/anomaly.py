"""Anomaly detection on a held-out-digit test split: AUPRC of several scores (docs/paper.md).

z is fitted by ``n_steps`` noise-free Langevin steps from N(0, I); scores (higher = more
anomalous), columns of ``per_example.csv``: ``joint`` (``score``, the headline)
||x - g(z)||^2 / (2 sigma^2) - log p(z); ``reconstruction``; ``prior`` -log p(z); ``elbo``
-ELBO(x) (encoder models only); ``marginal`` -log p(x) (importance sampled, with ``_se``).
Label 1 = anomaly; AUPRC is the trapezoid under scikit-learn's precision-recall curve.
Options: ``conf/task/anomaly.yaml`` (node ``anomaly``). Details: docs/tasks.md ("Anomaly").
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from omegaconf import DictConfig, OmegaConf
from sklearn.metrics import precision_recall_curve

from lfbm_lightning.data.data_module import ImageDataModule
from lfbm_lightning.errors import ConfigError
from lfbm_lightning.inference.importance import KHAT_THRESHOLD
from lfbm_lightning.metrics.precision_recall import anomaly_report
from lfbm_lightning.models.energy import reconstruction_energy
from lfbm_lightning.reporting.markdown import table_lines
from lfbm_lightning.runtime.distributed import rank_and_world_size
from lfbm_lightning.seeds import item_seed
from lfbm_lightning.tasks.likelihood import image_log_likelihood, proposal_passes
from lfbm_lightning.tasks.task import ExampleTask

SCORES = {  # score name -> (per_example.csv column, what it is: Markdown, matplotlib mathtext)
    "joint": ("score", "-log p(x, z) (paper)", r"$-\log p(x, z)$ (paper)"),
    "reconstruction": (
        "score_reconstruction",
        "‖x - g(z)‖² / (2 σ²)",
        r"$\|x - g(z)\|^2 / 2\sigma^2$",
    ),
    "prior": ("score_prior", "-log p(z)", r"$-\log p(z)$"),
    "elbo": ("score_elbo", "-ELBO(x), encoder q(z|x)", r"$-\mathrm{ELBO}(x)$"),
    "marginal": ("score_marginal", "-log p(x), importance sampled", r"$-\log p(x)$, imp. sampled"),
}


def check_holdout(datamodule: ImageDataModule) -> int:
    """The held-out digit of the data module; a clear error when there is none."""
    digit = getattr(datamodule, "holdout_digit", None)
    if digit is None:
        raise ConfigError(
            f"task=anomaly needs a checkpoint trained with a held-out digit (digits or mnist "
            f"with dataset.holdout_digit=0..9, whose test split labels the held-out digit 1 = "
            f"anomaly); this checkpoint's data module {type(datamodule).__name__} has none"
        )
    return int(digit)


def check_scores(names: Any) -> list[str]:
    """The selected score names, in :data:`SCORES` order; a clear error for a wrong list."""
    names = [str(name) for name in names]
    unknown = sorted(set(names) - set(SCORES))
    if unknown or "joint" not in names:
        raise ConfigError(
            f"anomaly.scores must be a list of {list(SCORES)} including joint (the paper's "
            f"score), got {names}"
        )
    return [name for name in SCORES if name in names]


def column(rows: list[dict[str, Any]], key: str) -> torch.Tensor:
    """``row[key]`` of every row, (N,) float64."""
    return torch.tensor([r[key] for r in rows], dtype=torch.float64)


def plot_pr_curves(
    curves: dict[str, torch.Tensor],
    labels: torch.Tensor,
    results: dict[str, Any],
    digit: int,
    path: Path,
) -> Path:
    """One precision-recall curve per score (name -> scores (N,)), with the chance level, as a
    PNG (Agg canvas, no display)."""
    fig = Figure(figsize=(5.5, 5.5))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for name, scores in curves.items():
        precision, recall, _ = precision_recall_curve(labels.numpy(), scores.numpy())
        value = results["auprc" if name == "joint" else f"auprc_{name}"]
        ax.plot(recall, precision, label=f"{name}: {SCORES[name][2]}, AUPRC {value:.3f}")
    chance = results["chance_level"]
    ax.axhline(chance, color="grey", ls="--", label=f"chance level {chance:.3f}")
    ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02))
    ax.set_title(
        f"anomaly = held-out digit {digit} ({results['n_anomalies']} of {results['n']} images)"
    )
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.13), fontsize=8, frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return path


def scores_table(names: list[str], results: dict[str, Any]) -> str:
    """Markdown: one row per score, AUPRC, average precision and passes per image."""
    rows = []
    for name in names:
        auprc = results["auprc" if name == "joint" else f"auprc_{name}"]
        ap = results["average_precision" if name == "joint" else f"ap_{name}"]
        passes = results[f"passes_{name}"]
        rows.append([f"{name}: {SCORES[name][1]}", f"{auprc:.4f}", f"{ap:.4f}", f"{passes:.1f}"])
    header = ["score", "AUPRC", "average precision", "passes / image"]
    lines = [f"# anomaly scores, held-out digit {results['holdout_digit']}", ""]
    lines += table_lines(header, rows)
    lines += [
        "",
        f"chance level (anomaly fraction): {results['chance_level']:.4f}, "
        f"{results['n_anomalies']} anomalies in {results['n']} images.",
        "passes: generator evaluations per image; a Langevin step and a Jacobian-vector "
        "product count one each.",
    ]
    return "\n".join(lines) + "\n"


class Anomaly(ExampleTask):
    """Score every selected test image (each rank its share) by each of ``anomaly.scores``;
    write ``per_example.csv`` and ``pr_curve.png`` (one curve per score); the side-by-side
    table of the scores goes into ``results.md`` (:meth:`markdown`).

    Results: ``holdout_digit``, ``split``, ``n_steps``, ``step_size``, ``scores``; the
    :func:`~lfbm_lightning.metrics.precision_recall.anomaly_report` of the joint score (``auprc``,
    ``average_precision``, ``chance_level``, ``n``, ``n_anomalies``, ``n_normal``); for every
    other selected score s, ``auprc_s`` and ``ap_s``; ``passes_s`` for every selected score;
    with ``marginal``, ``marginal_mc_se_mean`` (over the images k-hat trusts),
    ``marginal_khat_above_share``, ``marginal_ess_min`` and the sampler settings
    ``marginal_n_samples``, ``marginal_n_chains``, ``marginal_n_steps``. The marginal's
    columns: ``score_marginal``, ``score_marginal_se`` (NaN where k-hat > 0.7),
    ``marginal_ess``, ``marginal_khat``, ``marginal_passes``.
    """

    files = ("per_example.csv", "pr_curve.png")

    @classmethod
    def check_training(cls, train_cfg: DictConfig) -> None:
        if OmegaConf.select(train_cfg, "dataset.holdout_digit") is None:
            raise ConfigError(
                "evaluate_after_fit=[anomaly] needs a held-out digit: train with "
                "dataset=digits or dataset=mnist and dataset.holdout_digit=0..9"
            )

    def check(self) -> None:
        self.digit = check_holdout(self.datamodule)
        self.scores = check_scores(self.settings.scores)
        if not self.model.posterior.has_elbo and "elbo" in self.scores:
            self.scores.remove("elbo")  # no encoder q(z|x): the score does not exist
        self.elbo_samples = int(self.settings.get("elbo_samples", 16))
        self.n_steps, self.step_size = self.model.posterior.eval_settings(
            self.settings.n_steps, self.settings.step_size
        )
        self.marginal = self.settings.marginal
        if "marginal" in self.scores:
            seed = item_seed(self.cfg.seed, rank_and_world_size()[0])
            self.rng = torch.Generator(device=self.model.device).manual_seed(seed)

    def passes(self, rows: list[dict[str, Any]]) -> dict[str, float]:
        """Generator evaluations per image of each selected score: the fit's passes (``n_steps``
        under ``fit=protocol``, the measured mean under ``fit=fast``) and its decode; the
        marginal adds the measured mean of its own (``marginal_passes``: M L-BFGS fits, d
        Hessian rows per mode, K importance samples). Collective in DDP (every rank calls it).
        """
        fit = self.fit_results().get("passes_per_fit", self.n_steps) + 1
        out = {name: fit for name in self.scores if name != "marginal"}
        if "elbo" in self.scores:
            out["elbo"] = float(self.elbo_samples)  # draws decoded; no fit
        if "marginal" in self.scores:
            out["marginal"] = fit + float(column(rows, "marginal_passes").mean())
        return out

    def score(self, batch: dict[str, torch.Tensor]) -> list[dict[str, Any]]:
        x = batch["image"]
        steps = {"n_steps": self.n_steps, "step_size": self.step_size}
        z0 = self.start_of(x, None, batch["index"], self.cfg.seed)
        x_hat, z = self.model.reconstruct(
            x, index=batch["index"], z0=z0, **steps, **self.fit_options
        )
        with torch.no_grad():
            energy = reconstruction_energy(x, x_hat, self.model.sigma).double()
            log_prior = self.model.prior.log_prob(z).double()
        columns = {"score": energy - log_prior, "reconstruction_energy": energy}
        columns["log_prior"] = log_prior
        if "reconstruction" in self.scores:
            columns["score_reconstruction"] = energy
        if "prior" in self.scores:
            columns["score_prior"] = -log_prior
        if "elbo" in self.scores:
            elbo = self.model.posterior.elbo(
                self.model, x, None, batch["index"], self.cfg.seed, self.elbo_samples
            )
            columns["score_elbo"] = -elbo.double()
        if "marginal" in self.scores:
            result = image_log_likelihood(self.model, x, self.marginal, self.rng, start=z)
            estimate = result.estimate
            columns["score_marginal"] = -estimate.log_px
            columns["score_marginal_se"] = estimate.mc_se.where(estimate.trusted, torch.nan)
            columns["marginal_ess"] = estimate.ess
            columns["marginal_khat"] = estimate.khat
            columns["marginal_passes"] = result.passes
        columns = {key: value.tolist() for key, value in columns.items()}
        return [
            {
                "index": index,
                "label": int(batch["label"][i]),
                **{key: values[i] for key, values in columns.items()},
            }
            for i, index in enumerate(batch["index"].tolist())
        ]

    def curves(self, rows: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        """Score name -> its scores (N,) float64, for the selected scores."""
        return {name: column(rows, SCORES[name][0]) for name in self.scores}

    def summarize(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        labels = torch.tensor([r["label"] for r in rows])
        curves = self.curves(rows)
        results = {
            "holdout_digit": self.digit,
            "split": self.split,
            "n_steps": self.n_steps,
            "step_size": self.step_size,
            "scores": self.scores,
            **anomaly_report(curves["joint"], labels),
        }
        for name in self.scores[1:]:
            report = anomaly_report(curves[name], labels)
            results[f"auprc_{name}"] = report["auprc"]
            results[f"ap_{name}"] = report["average_precision"]
        results |= {f"passes_{name}": value for name, value in self.passes(rows).items()}
        if "marginal" in self.scores:
            se, ess = column(rows, "score_marginal_se"), column(rows, "marginal_ess")
            above = ~(column(rows, "marginal_khat") <= KHAT_THRESHOLD)
            results |= {
                "marginal_mc_se_mean": float(se[~above].mean()) if not above.all() else None,
                "marginal_khat_above_share": float(above.double().mean()),
                "marginal_ess_min": float(ess.min()),
                "marginal_n_samples": int(self.marginal.n_samples),
                "marginal_n_chains": int(self.marginal.n_chains),
                "marginal_n_steps": proposal_passes(self.model, self.marginal),
            }
        return results

    def write_figures(self, rows: list[dict[str, Any]], results: dict[str, Any]) -> None:
        labels = torch.tensor([r["label"] for r in rows])
        curves = self.curves(rows)
        plot_pr_curves(curves, labels, results, self.digit, self.out_dir / "pr_curve.png")

    def markdown(self, results: dict[str, Any]) -> str:
        return scores_table(self.scores, results)
