"""What a sweep costs, before anything trains: its jobs, epochs, generator passes and hours.

    python -m lfbm_lightning.cli.plan experiment=paper/anomaly_mnist

The arguments are those of ``python train.py -m ...``; the jobs are the product of
``hydra.sweeper.params``. Per job, Langevin steps = E * B * K and, with c the measured seconds
of one chain step at batch 100, hours = (training + validation + evaluation passes) / 100 * c
/ 3600. Every job gets train.py's checks except the accelerator's; a bad job raises
``ConfigError``. Details: docs/runs.md ("Planning a sweep").
"""

from __future__ import annotations

import csv
import itertools
import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path

from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, open_dict

from lfbm_lightning import CONF_DIR
from lfbm_lightning.errors import ConfigError
from lfbm_lightning.run.pass_counts import RunPasses, run_passes

RESULTS = Path(__file__).resolve().parents[2] / "benchmarks" / "results"

HARDWARE = {
    "cpu": "2-core Intel Xeon (x86_64), 2 threads (benchmarks/README.md)",
    "cuda": "the GPU benchmarks/gpu_check.sh ran on (benchmarks/results/gpu_check.json)",
}


def hardware(device: str, results: Path = RESULTS, datasets: Sequence[str] = ()) -> str:
    """The machine(s) the per-step costs of ``device`` for ``datasets`` were measured on."""
    check = results / "gpu_check.json"
    if device == "cuda" and check.is_file():
        gpus = json.loads(check.read_text()).get("gpu") or []
        return f"{', '.join(gpus)} (benchmarks/results/gpu_check.json)"
    machines = step_machines(device, results)
    named = sorted({machines[d] for d in datasets if d in machines})
    default = (
        [HARDWARE[device]] if not datasets or any(d not in machines for d in datasets) else []
    )
    return "; ".join([*default, *named])


def _ours(device: str, results: Path) -> list[dict[str, str]]:
    path = results / f"langevin_speed_{device}_b100.csv"
    if not path.is_file():
        return []
    with path.open() as f:
        return [r for r in csv.DictReader(f) if r["unit"] == "ours"]


def step_seconds(device: str, results: Path = RESULTS) -> dict[str, float]:
    """Seconds per Langevin step at batch 100, per data set, from the benchmark's CSV."""
    return {r["setting"]: float(r["seconds"]) for r in _ours(device, results)}


def step_machines(device: str, results: Path = RESULTS) -> dict[str, str]:
    """The CSV's ``machine`` per data set, where it names one other than :data:`HARDWARE`'s."""
    return {
        r["setting"]: f"{r['setting']}: {r['machine']}"
        for r in _ours(device, results)
        if r.get("machine")
    }


def is_sweep(value: str) -> bool:
    """Whether a command-line value is a sweep (``a,b``, not a list, dict or quoted string)."""
    return "," in value and not value.startswith(("[", "{", "'", '"'))


def split_overrides(cfg: DictConfig, argv: Sequence[str]) -> tuple[list[str], dict[str, str]]:
    """(fixed overrides, swept key -> comma-separated values) of a sweep."""
    swept = {str(k): str(v) for k, v in (cfg.hydra.sweeper.params or {}).items()}
    fixed = []
    for override in argv:
        key, _, value = override.partition("=")
        same = [k for k in swept if k.lstrip("+") == key.lstrip("+")]
        if is_sweep(value):
            swept[same[0] if same else key] = value
        elif same:
            del swept[same[0]]
            fixed.append(override)
        else:
            fixed.append(override)
    return fixed, swept


def job_overrides(argv: Sequence[str]) -> list[list[str]]:
    """The overrides of every job the sweep ``train.py -m argv`` launches."""
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        plain = [o for o in argv if not is_sweep(o.partition("=")[2])]
        cfg = compose("train", overrides=plain, return_hydra_config=True)
    fixed, swept = split_overrides(cfg, argv)
    choices = [[f"{k}={v}" for v in values.split(",")] for k, values in swept.items()]
    return [[*fixed, *combo] for combo in itertools.product(*choices)]


def job_cost(cfg: DictConfig) -> dict[str, float | int | str]:
    """Epochs, batches, chain steps, Langevin steps and generator passes of one composed job."""
    passes = run_passes(cfg)
    batch_size = int(cfg.dataset.batch_size)
    batches = math.ceil(passes.train_images / batch_size)
    return {
        "dataset": cfg.hydra.runtime.choices.dataset,
        "epochs": passes.epochs,
        "batches": batches,
        "k": passes.k,
        "steps": passes.epochs * batches * passes.k,
        "batch_size": batch_size,
        "passes": passes,
    }


def check_job(number: int, overrides: Sequence[str], cfg: DictConfig) -> None:
    """Job ``number``'s config through train.py's checks before training (module docstring);
    a :class:`ConfigError` naming the job."""
    # imported here: pytorch_lightning takes seconds to import, which a valid plan pays once
    from lfbm_lightning.run.after_fit import check_task_names  # noqa: PLC0415
    from lfbm_lightning.run.config_checks import validate_config  # noqa: PLC0415

    checked = cfg.copy()
    with open_dict(checked):
        checked.trainer.accelerator = None  # the machines that run the jobs are not this one
    try:
        validate_config(checked)
        check_task_names(checked)
    except ConfigError as err:
        raise ConfigError(f"job {number} of the sweep ({' '.join(overrides)}): {err}") from err


def timed_passes(passes: RunPasses) -> int:
    """The generator passes the hours count: training, validation and evaluation after fit."""
    return passes.train + passes.validation + sum(passes.evaluation.values())


def hours(costs: Sequence[dict], per_step: dict[str, float]) -> float | None:
    """Total hours of the jobs at the measured per-step costs (None: a data set unmeasured)."""
    total = 0.0
    for c in costs:
        if c["dataset"] not in per_step:
            return None
        total += timed_passes(c["passes"]) / 100 * per_step[c["dataset"]]
    return total / 3600


def describe(c: dict) -> str:
    """One job's counts: its chains, and the passes of each part of the run."""
    p: RunPasses = c["passes"]
    share = f"{100 * p.validation_share:.1f}% of training"
    parts = [f"training {p.train:,}", f"validation {p.validation:,} ({share})"]
    parts += [f"{task} {n:,}" for task, n in p.evaluation.items()]
    fid = f"; FID samples {p.fid_samples:,}" if p.fid_samples else ""
    return (
        f"{c['epochs']} epochs x {c['batches']} batches x K={c['k']} = {c['steps']:,} Langevin "
        f"steps; generator passes: {', '.join(parts)}{fid}"
    )


def plan(argv: Sequence[str], results: Path = RESULTS) -> str:
    """The plan of ``train.py -m argv`` as text (module docstring).

    Raises:
        ConfigError: a job's config fails train.py's checks.
    """
    jobs = job_overrides(argv)
    costs = []
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        for number, overrides in enumerate(jobs):
            cfg = compose("train", overrides, return_hydra_config=True)
            check_job(number, overrides, cfg)
            costs.append(job_cost(cfg))
    lines = [f"plan of: train.py -m {' '.join(argv)}", f"jobs: {len(jobs)}"]
    for overrides, c in zip(jobs, costs, strict=True):
        lines.append(f"  {' '.join(overrides)}: {describe(c)}")
    passes = [c["passes"] for c in costs]
    train = sum(p.train for p in passes)
    validation = sum(p.validation for p in passes)
    evaluation = sum(sum(p.evaluation.values()) for p in passes)
    lines.append(f"epochs: {sum(c['epochs'] for c in costs):,} in all")
    lines.append(f"Langevin steps (training chains): {sum(c['steps'] for c in costs):,}")
    lines.append(
        f"generator passes: training {train:,}, validation {validation:,} "
        f"({100 * validation / max(train, 1):.1f}% of training), evaluation after fit "
        f"{evaluation:,}; FID samples {sum(p.fid_samples for p in passes):,}"
    )
    datasets = sorted({c["dataset"] for c in costs})
    for device, label in (("cuda", "GPU-hours"), ("cpu", "CPU-hours (wall, 2 cores)")):
        total = hours(costs, step_seconds(device, results))
        if total is None:
            lines.append(f"{label}: ? (no per-step measurement for these data sets on {device})")
        else:
            machine = hardware(device, results, datasets)
            lines.append(f"{label}: {total:.3g}, assuming {machine}")
    lines.append(
        "(hours: training, validation and evaluation passes; FID's Inception not timed; a fast "
        "fit is counted at its cap of passes, an upper bound)"
    )
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> str:
    """Command line: print the plan of ``train.py -m`` with these overrides."""
    text = plan(list(sys.argv[1:] if argv is None else argv))
    print(text, end="")
    return text


if __name__ == "__main__":
    main()
