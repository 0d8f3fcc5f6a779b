"""Fixtures for running `imgrun` in-process (main() itself), fast enough to fuzz."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest

from tests.conftest import create_database, drop_database
from tests.fuzz_contract import Database, database


@pytest.fixture
def sync_database_url(pg_server: str, template_db: str) -> Iterator[str]:
    """A fresh database for a synchronous test (main() runs its own event loop)."""
    url = anyio.run(create_database, pg_server, template_db)
    try:
        yield url
    finally:
        anyio.run(drop_database, pg_server, url)


@pytest.fixture
def in_process_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, sync_database_url: str) -> Path:
    """The environment main() reads, pointed at the test's database; returns a spec folder."""
    monkeypatch.setenv("IMGRUN_DATABASE_URL", sync_database_url)
    monkeypatch.setenv("IMGRUN_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("IMGRUN_CONFIG", str(tmp_path / "none.toml"))
    specs = tmp_path / "specs"
    specs.mkdir()
    return specs


@pytest.fixture
def db(sync_database_url: str) -> Iterator[Database]:
    """Row counts and rows of the test's database, for checks between runs of main()."""
    with database(sync_database_url) as connection:
        yield connection
