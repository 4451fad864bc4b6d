"""A run's periodic metric under each checkpoint rule, from its ``csv/metrics.csv``.

Published numbers of this line of work are taken at different checkpoints. For a metric m
logged every few epochs (``test/auprc``), with evaluations e_1..e_n in epoch order:
``last`` m(e_n); ``mean_last_10`` the mean (± sd, ddof 1) of m over e_{n-9}..e_n (LEBM's ±);
``best_fid`` m at the lowest ``val/fid`` (the LFBM and DAMC generation code); ``best_val`` m
at the highest ``val/auprc`` (validation anomalies, the default); ``best_test`` max m, selected
on the test set itself (the DAMC anomaly code) and so optimistic. Ties go to the earliest.
Details: docs/runs.md ("Checkpoint rules").
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

from lfbm_lightning.reporting.markdown import mean_std

METRICS_CSV = Path("csv") / "metrics.csv"
"""Where a run directory keeps its logged metrics."""

RULES = {
    "best_val": "at the highest val/auprc (validation anomalies; the default)",
    "last": "at the last evaluation",
    "mean_last_10": "mean ± sd over the last 10 evaluations",
    "best_fid": "at the lowest val/fid",
    "best_test": "the highest itself: SELECTED ON THE TEST SET (optimistic)",
}
"""Rule -> what it reports, in the order the tables print them."""

DEFAULT_RULE = "best_val"
SELECTORS = {"best_val": ("val/auprc", max), "best_fid": ("val/fid", min)}
"""Rule -> (the metric that picks the evaluation, and whether its max or min wins)."""

LAST_N = 10


def rule_key(metric: str, rule: str) -> str:
    """The key a metric under a rule is filed under, e.g. ``test/auprc@best_val``."""
    return f"{metric}@{rule}"


def epoch_values(path: Path) -> dict[str, dict[int, float]]:
    """Metric -> {epoch: value} of a Lightning ``metrics.csv`` (empty cells skipped; a row
    repeated by a resume replaces the earlier one of its epoch)."""
    out: dict[str, dict[int, float]] = {}
    with path.open(newline="") as handle:
        for row in csv.DictReader(handle):
            epoch = row.get("epoch")
            if not epoch:
                continue
            for name, text in row.items():
                if name not in ("epoch", "step") and text not in ("", None):
                    out.setdefault(name, {})[int(float(epoch))] = float(text)
    return out


def apply_rules(values: dict[str, dict[int, float]], metric: str) -> dict[str, float]:
    """``metric`` under every rule the run supports, keyed by :func:`rule_key` (plus
    ``..._sd`` and ``..._n`` for ``mean_last_10``, and ``..._epoch`` of each selected one);
    empty when the run never logged ``metric``."""
    series = values.get(metric) or {}
    finite = {e: v for e, v in sorted(series.items()) if math.isfinite(v)}
    if not finite:
        return {}
    epochs = list(finite)
    out = {rule_key(metric, "last"): finite[epochs[-1]]}
    out[rule_key(metric, "last") + "_epoch"] = float(epochs[-1])
    mean, sd = mean_std([finite[e] for e in epochs[-LAST_N:]])
    key = rule_key(metric, "mean_last_10")
    out |= {key: mean, f"{key}_sd": sd, f"{key}_n": float(len(epochs[-LAST_N:]))}
    for rule, (selector, best) in SELECTORS.items():
        chosen = {e: v for e, v in (values.get(selector) or {}).items() if e in finite}
        if chosen:
            epoch = best(chosen, key=lambda e: (chosen[e], -e) if best is max else (chosen[e], e))
            out[rule_key(metric, rule)] = finite[epoch]
            out[rule_key(metric, rule) + "_epoch"] = float(epoch)
    epoch = max(epochs, key=lambda e: (finite[e], -e))
    out[rule_key(metric, "best_test")] = finite[epoch]
    out[rule_key(metric, "best_test") + "_epoch"] = float(epoch)
    return out


def run_rules(run_dir: Path, metrics: tuple[str, ...] = ("test/auprc",)) -> dict[str, float]:
    """:func:`apply_rules` of each of ``metrics`` over ``run_dir``'s ``csv/metrics.csv``
    (empty without that file)."""
    path = Path(run_dir) / METRICS_CSV
    if not path.is_file():
        return {}
    values = epoch_values(path)
    out: dict[str, float] = {}
    for metric in metrics:
        out |= apply_rules(values, metric)
    return out
