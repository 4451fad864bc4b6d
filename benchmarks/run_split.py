"""Where a paper run's generator passes go: training, validation and the evaluation tasks.

For each setting (the real ``dataset=...`` configs), from the composed config alone (exact,
machine-free; lfbm_lightning/run/pass_counts.py): passes per epoch of training (N (K + 1)),
of validation averaged over the run (one check / check_val_every_n_epoch, the default fast fit
at its cap and the protocol's 20 K + 1), validation's share of the run, and the passes of each
evaluation task on one checkpoint (per the paper's protocol for that task). Where
``benchmarks/results/langevin_speed_cpu_b100.csv`` has the setting's step cost c (seconds per
chain step at batch 100), seconds = passes / 100 * c, on the machine that file names.

    python benchmarks/run_split.py --out benchmarks/results/run_split.md
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from hydra import compose, initialize_config_dir  # noqa: E402

from lfbm_lightning import CONF_DIR  # noqa: E402
from lfbm_lightning.cli.plan import HARDWARE, step_machines, step_seconds  # noqa: E402
from lfbm_lightning.run.pass_counts import run_passes  # noqa: E402

SETTINGS = {
    "digits": ([], ["reconstruction"]),
    "digits, digit 3 held out": (["dataset.holdout_digit=3"], ["anomaly"]),
    "mnist, digit 4 held out": (["dataset=mnist", "dataset.holdout_digit=4"], ["anomaly"]),
    "svhn": (["dataset=svhn"], ["reconstruction", "synthesis"]),
    "cifar10": (["dataset=cifar10"], ["reconstruction", "synthesis"]),
    "celeba": (["dataset=celeba"], ["reconstruction", "synthesis", "inpainting"]),
}
"""(overrides, the paper's evaluation tasks for it) per setting."""


def rows() -> list[dict[str, object]]:
    """One row per setting (module docstring)."""
    out = []
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        for name, (overrides, tasks) in SETTINGS.items():
            after = [f"evaluate_after_fit=[{','.join(tasks)}]"]
            cfg = compose("train", [*overrides, *after], return_hydra_config=True)
            fast = run_passes(cfg)
            protocol = run_passes(
                compose(
                    "train",
                    [*overrides, "model.validation.fit=protocol"],
                    return_hydra_config=True,
                )
            )
            every = cfg.trainer.check_val_every_n_epoch
            out.append(
                {
                    "setting": name,
                    "dataset": cfg.hydra.runtime.choices.dataset,
                    "epochs": fast.epochs,
                    "every": every,
                    "train": fast.train_per_epoch,
                    "val": fast.val_per_check / every,
                    "share": fast.validation_share,
                    "val_protocol": protocol.val_per_check / every,
                    "share_protocol": protocol.validation_share,
                    "tasks": fast.evaluation,
                }
            )
    return out


def seconds(passes: float, cost: float | None) -> str:
    if cost is None:
        return "-"
    value = passes / 100 * cost
    return f"{value:.1f} s" if value < 10 else f"{value:,.0f} s"


def table(results: list[dict[str, object]]) -> str:
    """The Markdown tables of :func:`rows`: passes, then seconds where measured."""
    costs = step_seconds("cpu")
    machines = step_machines("cpu")
    lines = [
        "| setting | epochs | val every | training / epoch | validation / epoch (fast) | "
        "share of run (fast) | validation / epoch (protocol) | share of run (protocol) | "
        "evaluation tasks, one checkpoint |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        tasks = ", ".join(f"{t} {n:,}" for t, n in r["tasks"].items())
        lines.append(
            f"| {r['setting']} | {r['epochs']} | {r['every']} | {r['train']:,} | "
            f"{r['val']:,.0f} | {100 * r['share']:.2f}% | {r['val_protocol']:,.0f} | "
            f"{100 * r['share_protocol']:.1f}% | {tasks} |"
        )
    lines += [
        "",
        "| setting | training / epoch | validation / epoch (fast, at most) | evaluation tasks | "
        "step cost measured on |",
        "|---|---|---|---|---|",
    ]
    for r in results:
        cost = costs.get(r["dataset"])
        tasks = ", ".join(f"{t} {seconds(n, cost)}" for t, n in r["tasks"].items())
        machine = machines.get(r["dataset"], HARDWARE["cpu"]) if cost else "not measured"
        lines.append(
            f"| {r['setting']} | {seconds(r['train'], cost)} | {seconds(r['val'], cost)} | "
            f"{tasks} | {machine} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=None, help="also write the tables here")
    args = parser.parse_args()
    text = table(rows())
    print(text, end="")
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
