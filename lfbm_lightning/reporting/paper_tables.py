"""A sweep's numbers in the layout of the paper's tables, ours next to the published ones.

The published tables are data (``lfbm_lightning/reporting/published_results.yaml``). A cell
(row r, column c) gathers the jobs whose settings satisfy both the row's and the column's
``overrides``; its number is ``metrics.json[key]``, key the first of :func:`metric_keys` the
jobs report: one job gives its value +/- its ``_sd``; several jobs (seeds) the mean +/- the
sample standard deviation. An AUPRC cell takes the jobs' periodic ``test/auprc`` under the chosen
checkpoint rule (``test/auprc@<rule>``, default ``best_val``) when they logged one, else the
evaluation after fit. Rows without a model say "not built". Details: docs/runs.md.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from omegaconf import OmegaConf

from lfbm_lightning.reporting.checkpoint_rules import DEFAULT_RULE, RULES, rule_key
from lfbm_lightning.reporting.jobs import Job
from lfbm_lightning.reporting.markdown import mean_std, table_lines

TASK_KEY = {
    "auprc": "anomaly/auprc",
    "reconstruction_mse": "reconstruction/mse",
    "recovery_mse": "recovery/mse_missing_01",
}
"""Published metric -> the metrics.json key of the task that measures it (``fid``:
:func:`metric_keys`)."""

CHANCE_ROW = "chance"


def published_results() -> dict[str, Any]:
    """``published_results.yaml`` as loaded by ``yaml.safe_load``."""
    text = (
        resources.files("lfbm_lightning.reporting").joinpath("published_results.yaml").read_text()
    )
    return yaml.safe_load(text)


def metric_keys(
    table: Mapping[str, Any],
    metric: str,
    row: Mapping[str, Any] | None = None,
    rule: str = DEFAULT_RULE,
) -> tuple[str, ...]:
    """The metrics.json keys that may hold ``metric`` for ``table``, preferred first: ``row``'s
    own ``metric_keys`` if it names one (e.g. the VAE's -ELBO AUPRC ``anomaly/auprc_elbo``);
    ``fid`` is the FID of prior samples (``synthesis/fid``), in the recovery tables too (as the
    authors' recovery code scores it); there a job that scored the recovered images instead
    (``recovery.fid=true``) fills the cell from ``recovery/fid``."""
    if row is not None and metric in (row.get("metric_keys") or {}):
        return (row["metric_keys"][metric],)
    if metric == "fid":
        if table["group"].startswith("recovery"):
            return ("synthesis/fid", "recovery/fid")
        return ("synthesis/fid",)
    if metric == "auprc":
        return (rule_key("test/auprc", rule), TASK_KEY[metric])
    return (TASK_KEY[metric],)


@dataclass
class JobSettings:
    """What a job ran with: its config-group choices and its resolved config."""

    job: Job
    choices: dict[str, Any]
    config: Any

    @classmethod
    def read(cls, job: Job) -> JobSettings:
        return cls(job, dict(job.choices), OmegaConf.create(job.config))

    def satisfies(self, override: str) -> bool:
        """Whether this job ran with ``key=value`` (a group choice or a config value)."""
        key, _, value = override.partition("=")
        stands_for = dict(o.partition("=")[::2] for o in self.config.get("paper_stands_for", []))
        if key in stands_for:
            return stands_for[key] == value
        if key in self.choices:
            return str(self.choices[key]) == value
        ran = OmegaConf.select(self.config, key, default=None)
        return ran == yaml.safe_load(value) or str(ran) == value


@dataclass
class Cell:
    """One cell: our mean, spread and count (None when no job fills it) and the paper's;
    ``not_built``: why no model of the row exists here (None: it exists)."""

    ours: float | None
    spread: float | None
    n: int
    jobs: list[str]
    published: float | None
    published_error: float | None
    key: str
    not_built: str | None = None


def our_number(jobs: Sequence[Job], key: str) -> tuple[float | None, float | None, int]:
    """(mean, spread, n) of ``key`` over ``jobs`` as the module docstring says."""
    found = [job.metrics for job in jobs if job.metrics and key in job.metrics]
    if not found:
        return None, None, 0
    if len(found) == 1:
        task = key.split("/")[0]
        m = found[0]
        n = m.get(f"{key}_n", m.get(f"{task}/n_checkpoints", 1))
        return m[key], m.get(f"{key}_sd", 0.0), int(n)
    mean, sd = mean_std([m[key] for m in found])
    return mean, sd, len(found)


def table_cells(
    table: Mapping[str, Any], settings: Sequence[JobSettings], rule: str = DEFAULT_RULE
) -> dict[tuple[str, str], Cell]:
    """Every cell of ``table``, keyed (row key, column key); AUPRC under checkpoint ``rule``."""
    cells = {}
    for row in table["rows"]:
        errors = row.get("errors") or [None] * len(table["columns"])
        for c, column in enumerate(table["columns"]):
            wanted = [o for o in table.get("overrides") or [] if not o.startswith("dataset=")]
            wanted += column.get("overrides") or []
            keys = metric_keys(table, column["metric"], row, rule)
            if row["key"] == CHANCE_ROW:
                keys = (keys[-1].split("/")[0] + "/chance_level",)  # the task's own
            elif row.get("overrides") is None:
                wanted = None  # a baseline quoted from other work: no model here
            else:
                wanted += row["overrides"]
            matched = (
                []
                if wanted is None
                else [s.job for s in settings if all(s.satisfies(o) for o in wanted)]
            )
            if row["key"] == CHANCE_ROW:
                matched = matched[:1]  # the same split for every method
            reported = [k for k in keys if any(k in (j.metrics or {}) for j in matched)]
            key = (reported or keys)[0]
            ours, spread, n = our_number(matched, key)
            cells[row["key"], column["key"]] = Cell(
                ours,
                spread,
                n,
                [str(j.path) for j in matched],
                row["values"][c],
                errors[c],
                key,
                row.get("not_built"),
            )
    return cells


def format_pair(cell: Cell, decimals: int) -> str:
    """``ours ± spread (n N) / published ± error``; '–' for a side without a number."""
    ours = "not built" if cell.not_built else "–"
    if cell.ours is not None:
        ours = f"{cell.ours:.{decimals}f} ± {cell.spread:.{decimals}f} (n {cell.n})"
    paper = "–" if cell.published is None else f"{cell.published:.{decimals}f}"
    if cell.published is not None and cell.published_error is not None:
        paper += f" ± {cell.published_error:.{decimals}f}"
    return f"{ours} / {paper}"


def markdown(table: Mapping[str, Any], cells: Mapping[tuple[str, str], Cell]) -> str:
    """The table in the paper's layout (methods as rows or as columns), each cell ours / paper."""
    columns, rows = table["columns"], table["rows"]
    text = [[format_pair(cells[r["key"], c["key"]], c["decimals"]) for c in columns] for r in rows]
    if table.get("layout") == "methods_as_columns":
        header = [table["column_label"], *(r["label"] for r in rows)]
        body = [
            [c["label"], *(text[i][j] for i in range(len(rows)))] for j, c in enumerate(columns)
        ]
    else:
        header = [table["row_label"], *(c["label"] for c in columns)]
        body = [[r["label"], *text[i]] for i, r in enumerate(rows)]
    lines = [f"## {table['title']} ({table['id']})", ""]
    lines += table_lines(header, body)
    note = "each cell: ours ± spread (n) / published"
    if table.get("errors_mean"):
        note += f" ± {table['errors_mean']}"
    fids = sorted({c.key for c in cells.values() if c.ours is not None and c.key.endswith("fid")})
    if fids:  # which FID (a job's metrics.json says what it scored: <task>/fid_of)
        note += f"; ours: {', '.join(fids)}"
    rules = sorted({c.key for c in cells.values() if c.ours is not None and "@" in c.key})
    for key in rules:
        note += f"; ours: {key}, {RULES[key.rpartition('@')[2]]}"
    lines += ["", note + "; '–': no number."]
    lines += [f"- {r['label']} not built: {r['not_built']}" for r in rows if r.get("not_built")]
    lines += [
        f"- {r['label']}: {r['source']}; checkpoint rule: {r['checkpoint_rule']}"
        for r in rows
        if r.get("source")
    ]
    return "\n".join(lines) + "\n"


CSV_FIELDS = (
    "table",
    "row",
    "column",
    "metric_key",
    "ours",
    "spread",
    "n",
    "published",
    "published_error",
    "jobs",
)


def csv_rows(table: Mapping[str, Any], cells: Mapping[tuple[str, str], Cell]) -> list[dict]:
    """One CSV record per cell (long format)."""
    out = []
    for row in table["rows"]:
        for column in table["columns"]:
            cell = cells[row["key"], column["key"]]
            out.append(
                {
                    "table": table["id"],
                    "row": row["key"],
                    "column": column["key"],
                    "metric_key": cell.key,
                    "ours": cell.ours,
                    "spread": cell.spread,
                    "n": cell.n,
                    "published": cell.published,
                    "published_error": cell.published_error,
                    "jobs": ";".join(cell.jobs),
                }
            )
    return out


def table_ids(selected: Sequence[str]) -> list[str]:
    """Table ids from table or group ids (a group: its tables, in print order)."""
    data = published_results()
    groups = {g["id"]: g["tables"] for g in data["groups"]}
    known = {t["id"] for t in data["tables"]}
    ids = []
    for name in selected:
        if name in groups:
            ids += groups[name]
        elif name in known:
            ids.append(name)
        else:
            raise ValueError(
                f"no published table or group {name!r}: one of {sorted(known | set(groups))}"
            )
    return ids


def render(
    jobs: Sequence[Job], selected: Sequence[str], rule: str = DEFAULT_RULE
) -> tuple[str, str]:
    """Markdown and CSV of the tables (or groups) ``selected`` filled from ``jobs``, AUPRC
    under checkpoint ``rule``."""
    data = published_results()
    tables = {t["id"]: t for t in data["tables"]}
    settings = [JobSettings.read(job) for job in jobs]
    parts, records = [], []
    for table_id in table_ids(selected):
        table = tables[table_id]
        cells = table_cells(table, settings, rule)
        parts.append(markdown(table, cells))
        records += csv_rows(table, cells)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_FIELDS)
    writer.writeheader()
    writer.writerows(records)
    failed = [
        f"- {job.path}: {task} {state}"
        for job in jobs
        for task, state in job_evaluation(job.path).items()
        if state != "completed"
    ]
    text = "\n".join(parts)
    if failed:
        text += "\nFailed evaluations:\n" + "\n".join(failed) + "\n"
    return text, buffer.getvalue()


def job_evaluation(job_dir: Path) -> dict[str, str]:
    """The ``evaluation`` status record of a job's metrics.json (empty when none)."""
    path = job_dir / "metrics.json"
    if not path.is_file():
        return {}
    return dict(json.loads(path.read_text()).get("evaluation") or {})


def sweep_tables(jobs: Sequence[Job]) -> list[str]:
    """The ``paper_tables`` an experiment config named (first job's config), or []."""
    for job in jobs:
        if job.config:
            return list(job.config.get("paper_tables") or [])
    return []
