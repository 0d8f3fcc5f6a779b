"""Session-wide fixtures: one real PostgreSQL (the embedded one), a fresh database per test."""

from __future__ import annotations

import itertools
import os
import sys
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from db.embedded import EmbeddedPostgres
from db.engine import make_engine, open_engine

TEMPLATE = "imgrun_template"
_counter = itertools.count()


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    """Run every anyio test on asyncio (asyncpg is asyncio-only)."""
    return "asyncio"


def _plain(url: str, database: str) -> str:
    return make_url(url).set(drivername="postgresql", database=database).render_as_string(False)


@pytest.fixture(scope="session")
def pg_server() -> Iterator[str]:
    """The server for the whole session: IMGRUN_TEST_DATABASE_URL, else an embedded one."""
    external = os.environ.get("IMGRUN_TEST_DATABASE_URL")
    if external:
        yield make_url(external).set(drivername="postgresql+asyncpg").render_as_string(False)
        return
    # Not under pytest's tmp_path: pytest prunes old base temps, and a second pytest
    # run on the machine would delete a live data directory.
    with tempfile.TemporaryDirectory(prefix="imgrun-test-pg-") as tmp:
        server = EmbeddedPostgres(Path(tmp) / "home")
        url = server.start()
        try:
            yield url
        finally:
            server.release()


@pytest.fixture(scope="session")
def template_db(pg_server: str) -> str:
    """A database migrated to head once, cloned for each test."""
    import anyio

    async def build() -> None:
        admin = await asyncpg.connect(_plain(pg_server, "postgres"))
        try:
            await admin.execute(f"DROP DATABASE IF EXISTS {TEMPLATE}")
            await admin.execute(f"CREATE DATABASE {TEMPLATE}")
        finally:
            await admin.close()
        url = make_url(pg_server).set(database=TEMPLATE).render_as_string(False)
        async with open_engine(url, upgrade=True):
            pass

    anyio.run(build)
    return TEMPLATE


async def create_database(server_url: str, template: str | None) -> str:
    """A new, uniquely named database (cloned from `template` if given); returns its URL."""
    name = f"t_{os.getpid()}_{next(_counter)}"
    admin = await asyncpg.connect(_plain(server_url, "postgres"))
    try:
        clause = f" TEMPLATE {template}" if template else ""
        await admin.execute(f"CREATE DATABASE {name}{clause}")
    finally:
        await admin.close()
    return make_url(server_url).set(database=name).render_as_string(False)


async def drop_database(server_url: str, url: str) -> None:
    """Drop a test database, closing whatever still holds it."""
    admin = await asyncpg.connect(_plain(server_url, "postgres"))
    try:
        await admin.execute(f"DROP DATABASE IF EXISTS {make_url(url).database} WITH (FORCE)")
    finally:
        await admin.close()


@pytest.fixture
async def database_url(pg_server: str, template_db: str) -> AsyncIterator[str]:
    """A fresh database at the newest schema, for this test only."""
    url = await create_database(pg_server, template_db)
    try:
        yield url
    finally:
        await drop_database(pg_server, url)


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    """An engine on this test's database."""
    engine = make_engine(database_url)
    try:
        yield engine
    finally:
        await engine.dispose()


@pytest.fixture
def imgrun_base() -> Iterator[Path]:
    """A private folder for IMGRUN_HOMEs, outside pytest's base temp (removed afterwards).

    Every pytest session resets /tmp/pytest-of-USER to 0700 when it starts; as root, the
    embedded server's own user then could no longer reach a data dir below it whenever
    another session starts on the same machine.
    """
    with tempfile.TemporaryDirectory(prefix="imgrun-home-") as tmp:
        yield Path(tmp)


@pytest.fixture
def cli_env(tmp_path: Path, imgrun_base: Path) -> dict[str, str]:
    """Environment for `imgrun` subprocesses: private home, no config file, no inherited URL."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMGRUN_")}
    env["IMGRUN_HOME"] = str(imgrun_base / "home")
    env["IMGRUN_CONFIG"] = str(tmp_path / "imgrun.toml")
    env["COLUMNS"] = "200"
    return env


IMGRUN = [sys.executable, "-m", "runner"]
