"""``train.py --help`` lists every config group once, with every option (the experiment group
with its subfolders: the method rows of the paper's tables)."""

from __future__ import annotations

from lfbm_lightning.cli.help import train_help
from tests.conftest import CONF


def test_train_help_lists_each_group_once_with_every_experiment():
    page = train_help(CONF)
    lines = [line for line in page.splitlines() if line.startswith("  experiment ")]
    assert len(lines) == 1, lines
    experiments = lines[0].split(maxsplit=1)[1].split(", ")
    for path in (CONF / "experiment").rglob("*.yaml"):
        name = path.relative_to(CONF / "experiment").with_suffix("").as_posix()
        assert name in experiments, name
    for method in ("abp", "sri", "vae", "two_stage_vae", "rae", "lebm", "lfbm", "lfbm_vae"):
        assert f"paper/method/{method}" in experiments
    listing = page.split("Config groups (group=option):\n")[1].split("\n\n")[0]
    groups = [line.split()[0] for line in listing.splitlines()]
    assert len(groups) == len(set(groups)) >= 10, groups
