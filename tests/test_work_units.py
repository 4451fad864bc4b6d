"""How the suite's two xdist workers share the tests (tests/helpers/work_units.py): each shared
fixture built once (a generated suite of two ``tasks`` files sharing a session fixture and two
files with a module fixture each, run by pytest on two workers), the long units first."""

from __future__ import annotations

from collections import Counter
from types import SimpleNamespace

import pytest

from tests.conftest import REPO
from tests.helpers.work_units import pytest_collection_modifyitems

pytest_plugins = ["pytester"]

BUILT = """
import os
from pathlib import Path

def built(name):
    with open(Path(__file__).parents[1] / "built.txt", "a") as log:
        log.write(f"{name} {os.environ['PYTEST_XDIST_WORKER']}\\n")
"""
TESTS = """
import time
import pytest
from {folder}_log import built

@pytest.fixture(scope="module")
def module_fixture():
    built("{name}")

@pytest.mark.parametrize("i", range(3))
def test_it({fixture}, module_fixture, i):
    time.sleep(0.2)
"""


def test_a_shared_directory_and_each_file_build_their_fixtures_once(pytester: pytest.Pytester):
    scheduler = REPO / "tests" / "helpers" / "work_units.py"
    pytester.makeconftest(
        "import importlib.util\n"
        f"spec = importlib.util.spec_from_file_location('units', {str(scheduler)!r})\n"
        "units = importlib.util.module_from_spec(spec)\n"
        "spec.loader.exec_module(units)\n"
        "pytest_xdist_make_scheduler = units.pytest_xdist_make_scheduler\n"
        "pytest_collection_modifyitems = units.pytest_collection_modifyitems\n"
    )
    for folder in ("tasks", "run"):
        (pytester.path / folder).mkdir()
        (pytester.path / folder / f"{folder}_log.py").write_text(BUILT)
    (pytester.path / "tasks" / "conftest.py").write_text(
        "import pytest\nfrom tasks_log import built\n\n"
        '@pytest.fixture(scope="session")\ndef session_fixture():\n    built("session")\n'
    )
    for folder, fixture in (("tasks", "session_fixture"), ("run", "tmp_path")):
        for name in ("a", "b"):
            code = TESTS.format(folder=folder, name=f"{folder}/{name}", fixture=fixture)
            (pytester.path / folder / f"test_{folder}_{name}.py").write_text(code)

    result = pytester.runpytest_subprocess("-p", "xdist", "-n", "2", "--dist", "loadscope")
    result.assert_outcomes(passed=12)
    builds = [line.split() for line in (pytester.path / "built.txt").read_text().splitlines()]
    assert Counter(name for name, _ in builds) == dict.fromkeys(
        ("session", "tasks/a", "tasks/b", "run/a", "run/b"), 1
    ), builds
    workers = dict(builds)
    assert workers["session"] == workers["tasks/a"] == workers["tasks/b"]


class Item:
    """The two things the ordering reads of a pytest item: its node id and its slow mark."""

    def __init__(self, nodeid: str, slow: bool = False) -> None:
        self.nodeid, self.slow = nodeid, slow

    def get_closest_marker(self, name: str) -> bool | None:
        return self.slow if name == "slow" else None


def test_units_with_the_most_slow_tests_go_out_first_each_in_file_order():
    items = [
        Item("tests/a/test_quick.py::test_1"),
        Item("tests/a/test_one_run.py::test_1"),
        Item("tests/a/test_one_run.py::test_2", slow=True),
        Item("tests/tasks/test_x.py::test_1", slow=True),
        Item("tests/tasks/test_y.py::test_1"),
        Item("tests/tasks/test_y.py::test_2", slow=True),
    ]
    worker = SimpleNamespace(workerinput={})
    pytest_collection_modifyitems(worker, items)
    assert [item.nodeid for item in items] == [
        "tests/tasks/test_x.py::test_1",
        "tests/tasks/test_y.py::test_1",
        "tests/tasks/test_y.py::test_2",
        "tests/a/test_one_run.py::test_1",
        "tests/a/test_one_run.py::test_2",
        "tests/a/test_quick.py::test_1",
    ]
    unchanged = list(items[::-1])
    pytest_collection_modifyitems(SimpleNamespace(), unchanged)  # not a worker: as collected
    assert [item.nodeid for item in unchanged] == [item.nodeid for item in items[::-1]]
