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
            # `from db import queries` imports db.queries
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def _shared(module: str) -> bool:
    return any(module == s or module.startswith(s + ".") for s in SHARED)


def imported_packages(path: Path) -> set[str]:
    """Top-level packages a module imports, the shared vocabulary aside."""
    return {name.split(".")[0] for name in imported_modules(path) if not _shared(name)}


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


# Under runner/, only the composition roots open the database themselves; everything else
# reaches it through db.store.PgStore or a db.ports protocol.
COMPOSITION_ROOTS = {
    "runner/loop/service.py",
    "runner/cli/app.py",
    "runner/cli/demo.py",
    "runner/api/server.py",
}
DATABASE_LIBRARIES = {"sqlalchemy", "asyncpg"}

# Pure decisions and data: no I/O library and no clock; time is an argument.
PURE = [
    "runner/policy",
    "runner/spec",
    "runner/view/projection.py",
    "runner/view/rates.py",
    "runner/view/model.py",
    "runner/loop/rollup.py",
]
IMPURE_LIBRARIES = {"aiohttp", "sqlalchemy", "asyncpg", "anyio", "asyncio", "time", "socket"}


def _runner_files() -> list[Path]:
    return sorted((ROOT / "runner").rglob("*.py"))


def test_only_composition_roots_touch_the_database_directly() -> None:
    """No runner module but the roots imports SQLAlchemy, asyncpg or the SQL (db.queries)."""
    offenders = {}
    for path in _runner_files():
        rel = str(path.relative_to(ROOT))
        if rel in COMPOSITION_ROOTS:
            continue
        modules = imported_modules(path)
        bad = {m for m in modules if m.split(".")[0] in DATABASE_LIBRARIES}
        bad |= {m for m in modules if m == "db.queries" or m.startswith("db.queries.")}
        if bad:
            offenders[rel] = sorted(bad)
    assert offenders == {}


def test_pure_modules_do_no_io() -> None:
    """Policies, the spec and the status projection import no I/O library and no clock."""
    offenders = {}
    for entry in PURE:
        base = ROOT / entry
        for path in [base] if base.suffix == ".py" else sorted(base.rglob("*.py")):
            bad = {m for m in imported_modules(path) if m.split(".")[0] in IMPURE_LIBRARIES}
            if bad:
                offenders[str(path.relative_to(ROOT))] = sorted(bad)
    assert offenders == {}
