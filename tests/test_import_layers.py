"""No arrows running back up: which package of lfbm_lightning may import which (read from the
source with ast, so an import added anywhere in a module counts)."""

from __future__ import annotations

import ast

import pytest

from tests.conftest import REPO

PACKAGE = REPO / "lfbm_lightning"
# module or package -> the package modules it must never import
FORBIDDEN = {
    "langevin": {"*"},  # the Langevin kernel is a leaf
    "generators": {"*"},
    "priors": {"inference", "models", "tasks", "callbacks", "generators"},
    "inference": {"models", "tasks", "callbacks", "generators"},
    "models": {"tasks", "callbacks", "generators"},
    "data": {"inference", "models", "tasks", "callbacks", "metrics"},
    "metrics": {"tasks", "callbacks"},
    "callbacks": {"tasks"},
    "tasks": {"callbacks"},
    "errors": {"*"},
    "densities": {"*"},
    "images": {"*"},
    "seeds": {"*"},
}


def imported_modules(path) -> set[str]:
    """First component after ``lfbm_lightning.`` of every import in the file."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            modules = [node.module]
        elif isinstance(node, ast.Import):
            modules = [alias.name for alias in node.names]
        else:
            continue
        for module in modules:
            parts = module.split(".")
            if parts[0] == "lfbm_lightning" and len(parts) > 1:
                names.add(parts[1])
    return names


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_layer_imports_only_downwards(layer):
    files = [PACKAGE / f"{layer}.py"] if (PACKAGE / f"{layer}.py").is_file() else []
    files += sorted((PACKAGE / layer).glob("*.py"))
    assert files, layer
    for path in files:
        imported = imported_modules(path) - {layer}
        if "*" in FORBIDDEN[layer]:
            assert not imported, (path.name, imported)
        else:
            assert not imported & FORBIDDEN[layer], (path.name, imported & FORBIDDEN[layer])
