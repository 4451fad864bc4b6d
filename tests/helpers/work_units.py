"""How the suite's two pytest-xdist workers share the tests (pyproject: ``-n 2 --dist loadscope``).

xdist sends a whole work unit to one worker, so the unit's module and session fixtures are built
once: a unit is a test file, or a whole directory whose conftest trains session checkpoints
(``tasks``). Units are found from node ids, not from ``xdist_group`` marks: xdist 3.8 names a
mark's group by rewriting ``item._nodeid``, which pytest 9.2's ``nodeid`` does not read. The
units with end-to-end runs (``slow`` tests) go out first, the quick units last, to even out the
two workers' wall times.
"""

from __future__ import annotations

from collections import Counter
from pathlib import PurePosixPath

import pytest
from xdist.scheduler import LoadScopeScheduling

SHARED_SESSION_DIRS = ("tasks",)


def work_unit(nodeid: str) -> str:
    """The unit of a test: its file (``tests/run/test_train.py``), or its directory
    (``tests/tasks``) when that is one of SHARED_SESSION_DIRS."""
    path = PurePosixPath(nodeid.split("::", 1)[0])
    return str(path.parent) if path.parent.name in SHARED_SESSION_DIRS else str(path)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """On an xdist worker, order the units by their number of slow tests, most first (a stable
    sort: each unit stays in file order). The scheduler hands the units out in this order (no
    ``--loadscope-reorder``): the long units start early and the many quick ones fill the gaps
    at the end, so that both workers finish at about the same time."""
    if not hasattr(config, "workerinput"):
        return
    slow = Counter(work_unit(item.nodeid) for item in items if item.get_closest_marker("slow"))
    items.sort(key=lambda item: -slow[work_unit(item.nodeid)])


class WorkUnitScheduling(LoadScopeScheduling):
    """xdist's loadscope scheduling over :func:`work_unit`, the units in collection order."""

    def _split_scope(self, nodeid: str) -> str:
        return work_unit(nodeid)


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log) -> LoadScopeScheduling | None:
    """The scheduler of ``--dist loadscope``; other ``--dist`` modes keep xdist's own."""
    if config.getvalue("dist") != "loadscope":
        return None
    config.option.loadscopereorder = False  # the order of pytest_collection_modifyitems
    return WorkUnitScheduling(config, log)
