"""The packages' layering holds: workers and db know nothing of each other or of the runner."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# package -> packages it must never import (runner/ is the composition root: it may use all)
FORBIDDEN = {
    "workers": {"db", "runner", "migrations"},
    "db": {"runner", "workers"},
}


# The shared vocabulary (pool kinds, provider types, ratios): a leaf every layer may read.
SHARED = {"workers.kinds"}


def imported_modules(path: Path) -> set[str]:
    """Modules a file imports (at any depth in the file)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def imported_packages(path: Path) -> set[str]:
    """Top-level packages a module imports, the shared vocabulary aside."""
    return {name.split(".")[0] for name in imported_modules(path) - SHARED}


def test_shared_vocabulary_is_a_leaf() -> None:
    """The vocabulary imports nothing of the project, so importing it crosses no layer."""
    for module in SHARED:
        path = ROOT / (module.replace(".", "/") + ".py")
        project = {"runner", "db", "workers", "migrations"}
        assert {name.split(".")[0] for name in imported_modules(path)} & project == set()


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_does_not_import_forbidden_layers(package: str) -> None:
    """Every module of `package` stays within its layer."""
    offenders = {
        str(path.relative_to(ROOT)): sorted(imported_packages(path) & FORBIDDEN[package])
        for path in (ROOT / package).rglob("*.py")
    }
    assert {k: v for k, v in offenders.items() if v} == {}
