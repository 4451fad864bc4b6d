"""The package's structure, read from its imports with ast (an import anywhere in a module
counts, also one inside a function): layers that import only downwards, no circle, leaves at
the root, and no two modules with one base name."""

from __future__ import annotations

import ast
from collections import Counter
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

import pytest

from tests.conftest import REPO

PACKAGE = REPO / "lfbm_lightning"
# top to bottom: a module may import its own package and the layers below its own
LAYERS = [
    {"cli"},  # console scripts, help pages, the sweep plan, exit codes
    {"run"},  # training, evaluation (after fit), config checks and tree, summary, loggers
    {"callbacks", "tasks"},
    {"metrics"},
    {"runtime"},  # checkpoints, atomic files, run directory, distributed plumbing
    {"models"},
    {"inference"},
    {"priors", "data", "generators"},
    {"langevin", "densities", "seeds", "checks", "reporting"},  # leaves
    {"errors"},
]
RANK = {name: depth for depth, layer in enumerate(LAYERS) for name in layer}
ROOT_LEAVES = {"__init__", "errors", "checks", "densities", "langevin", "seeds"}


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> set[str]:
    """Every ``lfbm_lightning...`` module that the file imports."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            modules = [node.module]
        elif isinstance(node, ast.Import):
            modules = [alias.name for alias in node.names]
        else:
            continue
        names.update(m for m in modules if m.split(".")[0] == "lfbm_lightning")
    return names


MODULES = {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}
GRAPH = {name: imports(path) for name, path in MODULES.items()}


def layer_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def test_every_package_and_root_module_has_a_layer():
    tops = {layer_of(name) for name in MODULES} - {"__init__"}
    assert tops <= set(RANK), sorted(tops - set(RANK))


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_run_only_downwards(module):
    own = layer_of(module)
    for target in GRAPH[module]:
        other = layer_of(target)
        if other in (own, "__init__"):
            continue
        assert RANK[other] > RANK[own], f"{module} imports {target}: {other} is not below {own}"


def test_no_import_circle():
    try:
        TopologicalSorter(
            {name: {t for t in targets if t in MODULES} for name, targets in GRAPH.items()}
        ).prepare()
    except CycleError as error:
        pytest.fail(f"import circle: {error.args[1]}")


def test_the_package_root_holds_only_leaves():
    root = {path.stem for path in PACKAGE.glob("*.py")}
    assert root == ROOT_LEAVES
    for stem in root - {"__init__", "errors"}:
        assert GRAPH[f"lfbm_lightning.{stem}"] <= {"lfbm_lightning.errors"}, stem


def test_no_two_modules_share_a_base_name():
    stems = Counter(path.stem for path in PACKAGE.rglob("*.py") if path.stem != "__init__")
    assert [stem for stem, n in stems.items() if n > 1] == []
