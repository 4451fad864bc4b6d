"""Gather a Hydra sweep's results into one Markdown table: mean ± std over seeds per setting.

    lfbm-gather SWEEP_DIR [--metrics val/mse train/loss] [--output table.md]

Each job directory (:func:`~lfbm_lightning.reporting.jobs.read_jobs`) is one job: its recorded
overrides name its setting and seed, its ``metrics.json`` its numbers. A row is one setting (the
overrides that differ between jobs, minus ``seed``), n = its jobs with metrics; jobs without
``metrics.json`` are listed under the table. ``--table`` (or an experiment named ``paper_tables``)
gives the paper's table instead, ours next to the published numbers, ``--csv`` its cells
(:mod:`~lfbm_lightning.reporting.paper_tables`; docs/scaling.md, "Gathering a sweep").
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from lfbm_lightning.reporting.checkpoint_rules import DEFAULT_RULE, RULES
from lfbm_lightning.reporting.jobs import Job, read_jobs
from lfbm_lightning.reporting.markdown import mean_std, table_lines
from lfbm_lightning.reporting.paper_tables import render, sweep_tables


def setting_keys(jobs: Sequence[Job], over: Sequence[str]) -> list[str]:
    """Override keys whose value differs between jobs (first-seen order), minus ``over``."""
    keys: list[str] = []
    for job in jobs:
        keys += [k for k in job.overrides if k not in keys]
    return [
        k for k in keys if k not in over and len({job.overrides.get(k, "") for job in jobs}) > 1
    ]


def default_metrics(jobs: Sequence[Job]) -> list[str]:
    """The metrics every finished job has, without Lightning's ``_step``/``_epoch`` twins and
    the checkpoint rules' ``_sd``/``_n`` companions."""
    finished = [job.metrics for job in jobs if job.metrics is not None]
    if not finished:
        return []
    common = set.intersection(*(set(m) for m in finished))
    derived = {k for k in common if "@" in k and k.endswith(("_sd", "_n"))}
    return sorted(k for k in common - derived if not k.endswith(("_step", "_epoch")))


def column_label(metric: str) -> str:
    """A column's header: the metric, a test-selected checkpoint rule marked as such."""
    return f"{metric} (selected on test)" if metric.endswith("@best_test") else metric


def format_cell(values: Sequence[float]) -> str:
    """``mean ± std`` with 4 significant digits (just the value for one job; '–' for none)."""
    if not values:
        return "–"
    mean, std = mean_std(values)
    return f"{mean:.4g} ± {std:.2g}" if len(values) > 1 else f"{mean:.4g}"


def markdown_table(
    jobs: Sequence[Job], metrics: Sequence[str] | None = None, over: Sequence[str] = ("seed",)
) -> str:
    """The comparison table of a sweep's jobs (see the module docstring).

    Args:
        jobs: the sweep's jobs (:func:`read_jobs`).
        metrics: the metric columns (default: :func:`default_metrics`).
        over: the override keys averaged over.

    Returns:
        Markdown: the table, then one line per job without metrics.
    """
    metrics = list(metrics) if metrics is not None else default_metrics(jobs)
    keys = setting_keys(jobs, over)
    rows: dict[tuple[str, ...], list[Job]] = {}
    for job in jobs:
        rows.setdefault(tuple(job.overrides.get(k, "") for k in keys), []).append(job)
    labels = [column_label(name) for name in metrics]
    header = [*keys, "n", *labels] if keys else ["n", *labels]
    body = []
    for setting, members in rows.items():
        done = [job.metrics for job in members if job.metrics is not None]
        cells = [format_cell([m[name] for m in done if name in m]) for name in metrics]
        body.append([*setting, str(len(done)), *cells])
    lines = table_lines(header, body)
    over_text = ", ".join(over) if over else "nothing"
    lines.append("")
    lines.append(f"{len(jobs)} jobs; mean ± std (ddof 1) over {over_text}; n jobs per row.")
    rules = [rule for rule in RULES if any(name.endswith(f"@{rule}") for name in metrics)]
    if rules:
        lines.append("Checkpoint rules (a run's csv/metrics.csv): ")
        lines[-1] += "; ".join(f"@{rule}: {RULES[rule]}" for rule in rules) + "."
    lines += [f"- no metrics: {job.path}" for job in jobs if job.metrics is None]
    return "\n".join(lines) + "\n"


def gather(argv: Sequence[str] | None = None) -> str:
    """The table of a sweep directory from the command line ``argv`` (written to ``--output``
    and the cells to ``--csv`` when given)."""
    parser = argparse.ArgumentParser(prog="lfbm-gather", description=__doc__.splitlines()[0])
    parser.add_argument("sweep_dir", type=Path, help="the multirun directory (hydra.sweep.dir)")
    parser.add_argument("--metrics", nargs="+", help="metric columns (default: all common)")
    parser.add_argument(
        "--over", nargs="*", default=["seed"], help="override keys averaged over (default: seed)"
    )
    parser.add_argument("--file", default="metrics.json", help="metrics file in each job dir")
    parser.add_argument("--output", type=Path, help="also write the table to this file")
    parser.add_argument(
        "--table",
        nargs="+",
        help="paper table or group ids of published_results.yaml (default: the experiment's "
        "paper_tables, else the plain table)",
    )
    parser.add_argument("--csv", type=Path, help="paper tables: also write the cells as CSV")
    parser.add_argument("--plain", action="store_true", help="the plain table, not the paper's")
    parser.add_argument(
        "--rule",
        choices=list(RULES),
        default=DEFAULT_RULE,
        help="paper tables: the checkpoint rule of a periodic test/auprc (default: best_val, "
        "chosen on validation anomalies; best_test is selected on the test set)",
    )
    args = parser.parse_args(argv)
    jobs = read_jobs(args.sweep_dir, args.file)
    if not jobs:
        parser.error(
            f"no job directories (a run's metrics.json or .hydra/) under {args.sweep_dir}"
        )
    selected = [] if args.plain else (args.table or sweep_tables(jobs))
    if selected:
        try:
            table, cells_csv = render(jobs, selected, args.rule)
        except ValueError as err:
            parser.error(str(err))
        if args.csv:
            args.csv.write_text(cells_csv)
    else:
        table = markdown_table(jobs, args.metrics, args.over)
    if args.output:
        args.output.write_text(table)
    return table


def main(argv: Sequence[str] | None = None) -> None:
    """``lfbm-gather SWEEP_DIR [...]``: print the table of a sweep directory (exit status 0;
    the console script passes what this returns to ``sys.exit``, so it returns nothing)."""
    print(gather(argv), end="")


if __name__ == "__main__":
    main()
