"""plan=true's step costs: every data set of a paper experiment has a measured CPU cost, and
the machine it was measured on is named."""

from __future__ import annotations

from lfbm_lightning.cli.plan import HARDWARE, hardware, step_seconds
from tests.conftest import CONF


def test_every_paper_experiment_data_set_has_a_cpu_step_cost():
    used = set()
    for path in (CONF / "experiment" / "paper").glob("*.yaml"):
        used |= {d for d in ("digits", "mnist", "svhn", "cifar10", "celeba") if d in path.stem}
    assert used == {"digits", "mnist", "svhn", "cifar10", "celeba"}
    assert used <= set(step_seconds("cpu"))  # so no CPU-hours line prints '?'


def test_the_machine_of_each_cost_is_named():
    assert hardware("cpu", datasets=["svhn"]) == HARDWARE["cpu"]
    digits = hardware("cpu", datasets=["digits"])
    assert "AMD EPYC" in digits and "idle" in digits and HARDWARE["cpu"] not in digits
