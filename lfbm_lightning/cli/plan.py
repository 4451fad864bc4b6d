"""What a sweep costs, before anything trains: its jobs, epochs, Langevin steps and hours.

    python -m lfbm_lightning.cli.plan experiment=paper/anomaly_mnist
    python -m lfbm_lightning.cli.plan experiment=paper/recovery_digits prior=flow

The arguments are those of ``python train.py -m ...``. The jobs are the product of the
experiment's ``hydra.sweeper.params`` (a command-line ``key=a,b`` replaces or adds a swept
key); each job's config is composed as train.py would. Per job, with E epochs
(``trainer.max_epochs``), B batches per epoch (the data set's training images over
``dataset.batch_size``, capped by an integer ``trainer.limit_train_batches``) and K chain
steps per batch (``inference.n_steps``; an amortized run counts its ``refine_steps``):

    Langevin steps = E * B * K,    hours = Langevin steps * c * (batch size / 100) / 3600

with c the measured seconds of one step of ``LatentPriorModel.infer`` at batch 100 for the
data set (``benchmarks/results/langevin_speed_<device>_b100.csv``, row ``ours``, written by
``benchmarks/langevin_speed.py``). The CPU file was measured on a 2-core Intel Xeon with 2
threads; the CUDA file is written by ``benchmarks/gpu_check.sh`` on the GPU it ran on. The
update after each chain and the evaluation after fit are not counted: the hours are a lower
bound. A data set without a measurement shows '?'.

Every job's config gets the checks train.py runs before training (settings, and what the
``evaluate_after_fit`` tasks need of the run), all but the accelerator's (a plan made on a
login node is for other machines): a bad job refuses the plan with a ``ConfigError`` naming
the job and the setting.
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

RESULTS = Path(__file__).resolve().parents[2] / "benchmarks" / "results"

TRAIN_IMAGES = {
    "digits": 1294,  # 1,797 x 0.8 (train pool) x 0.9 (minus val); ~10% fewer with a held-out digit
    "mnist": 54000,  # 60,000 minus the held-out digit's ~6,000
    "svhn": 73257,
    "cifar10": 50000,
    "celeba": 162770,
}
"""Training images per data set (approximate where a held-out digit is removed)."""

HARDWARE = {
    "cpu": "2-core Intel Xeon (x86_64), 2 threads (benchmarks/README.md)",
    "cuda": "the GPU benchmarks/gpu_check.sh ran on (benchmarks/results/gpu_check.json)",
}


def hardware(device: str, results: Path = RESULTS) -> str:
    """The machine the per-step costs of ``device`` were measured on."""
    check = results / "gpu_check.json"
    if device == "cuda" and check.is_file():
        gpus = json.loads(check.read_text()).get("gpu") or []
        return f"{', '.join(gpus)} (benchmarks/results/gpu_check.json)"
    return HARDWARE[device]


def step_seconds(device: str, results: Path = RESULTS) -> dict[str, float]:
    """Seconds per Langevin step at batch 100, per data set, from the benchmark's CSV."""
    path = results / f"langevin_speed_{device}_b100.csv"
    if not path.is_file():
        return {}
    with path.open() as f:
        return {
            r["setting"]: float(r["seconds"]) for r in csv.DictReader(f) if r["unit"] == "ours"
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
    """Epochs, batches, chain steps and Langevin steps of one composed job."""
    dataset = cfg.hydra.runtime.choices.dataset
    batches = math.ceil(TRAIN_IMAGES.get(dataset, 0) / cfg.dataset.batch_size)
    limit = cfg.trainer.get("limit_train_batches")
    if isinstance(limit, int) and not isinstance(limit, bool):
        batches = min(batches, limit)
    elif isinstance(limit, float):
        batches = math.ceil(batches * limit)
    amortized = "refine_steps" in cfg.inference
    k = int(cfg.inference.refine_steps if amortized else cfg.inference.n_steps)
    epochs = int(cfg.trainer.max_epochs)
    return {
        "dataset": dataset,
        "epochs": epochs,
        "batches": batches,
        "k": k,
        "steps": epochs * batches * k,
        "batch_size": int(cfg.dataset.batch_size),
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


def hours(costs: Sequence[dict], per_step: dict[str, float]) -> float | None:
    """Total hours of the jobs at the measured per-step costs (None: a data set unmeasured)."""
    total = 0.0
    for c in costs:
        if c["steps"] and c["dataset"] not in per_step:
            return None
        total += c["steps"] * per_step.get(c["dataset"], 0.0) * c["batch_size"] / 100
    return total / 3600


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
        lines.append(
            f"  {' '.join(overrides)}: {c['epochs']} epochs x {c['batches']} batches x "
            f"K={c['k']} = {c['steps']:,} Langevin steps"
        )
    lines.append(f"epochs: {sum(c['epochs'] for c in costs):,} in all")
    lines.append(f"Langevin steps (training chains): {sum(c['steps'] for c in costs):,}")
    for device, label in (("cuda", "GPU-hours"), ("cpu", "CPU-hours (wall, 2 cores)")):
        total = hours(costs, step_seconds(device, results))
        if total is None:
            lines.append(f"{label}: ? (no per-step measurement for these data sets on {device})")
        else:
            lines.append(f"{label}: {total:.3g}, assuming {hardware(device, results)}")
    lines.append("(chains only; parameter updates and evaluation after fit not counted)")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> str:
    """Command line: print the plan of ``train.py -m`` with these overrides."""
    text = plan(list(sys.argv[1:] if argv is None else argv))
    print(text, end="")
    return text


if __name__ == "__main__":
    main()
