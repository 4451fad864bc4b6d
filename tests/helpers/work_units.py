"""How the suite's two pytest-xdist workers share the tests (pyproject: ``-n 2 --dist loadscope``).

xdist sends a whole work unit to one worker, so the unit's module and session fixtures are built
once: a unit is a test file, or a whole directory whose conftest trains session checkpoints
(``tasks``). Units are found from node ids, not from ``xdist_group`` marks: xdist 3.8 names a
mark's group by rewriting ``item._nodeid``, which pytest 9.2's ``nodeid`` no longer reads, so
every test became its own unit and both workers built every shared fixture.
"""

from __future__ import annotations

from pathlib import PurePosixPath

import pytest
from xdist.scheduler import LoadScopeScheduling

SHARED_SESSION_DIRS = ("tasks",)


def work_unit(nodeid: str) -> str:
    """The unit of a test: its file (``tests/run/test_train.py``), or its directory
    (``tests/tasks``) when that is one of SHARED_SESSION_DIRS."""
    path = PurePosixPath(nodeid.split("::", 1)[0])
    return str(path.parent) if path.parent.name in SHARED_SESSION_DIRS else str(path)


class WorkUnitScheduling(LoadScopeScheduling):
    """xdist's loadscope scheduling (units with the most tests first) over :func:`work_unit`."""

    def _split_scope(self, nodeid: str) -> str:
        return work_unit(nodeid)


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log) -> LoadScopeScheduling | None:
    """The scheduler of ``--dist loadscope``; other ``--dist`` modes keep xdist's own."""
    return WorkUnitScheduling(config, log) if config.getvalue("dist") == "loadscope" else None
