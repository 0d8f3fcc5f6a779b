"""The alembic migrations build exactly the models' schema, and downgrade cleanly."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection

from db.engine import make_engine
from db.migrate import migrate
from db.models import Base
from tests.conftest import create_database, drop_database

pytestmark = pytest.mark.anyio


def _diff(connection: Connection) -> list[object]:
    return list(compare_metadata(MigrationContext.configure(connection), Base.metadata))


def _tables(connection: Connection) -> set[str]:
    return set(inspect(connection).get_table_names())


async def test_upgrade_matches_models_then_downgrade_and_again(pg_server: str) -> None:
    """head == models (alembic check); base drops everything; head again restores it."""
    url = await create_database(pg_server, None)
    engine = make_engine(url)
    try:
        await migrate(engine)
        async with engine.connect() as connection:
            assert await connection.run_sync(_diff) == []
            tables = await connection.run_sync(_tables)
            assert {"tasks", "subtasks", "error_logs", "executors"} <= tables
            index = await connection.scalar(
                text("SELECT indexdef FROM pg_indexes WHERE indexname = 'ix_subtasks_claim'")
            )
            assert "WHERE ((status)::text = 'pending'::text)" in index
        await migrate(engine, "base")
        async with engine.connect() as connection:
            assert await connection.run_sync(_tables) == {"alembic_version"}
        await migrate(engine)
        async with engine.connect() as connection:
            assert await connection.run_sync(_diff) == []
    finally:
        await engine.dispose()
        await drop_database(pg_server, url)


def test_head_constant_matches_the_scripts() -> None:
    """db.migrate.HEAD (used to skip alembic when current) is the scripts' real head."""
    from alembic.script import ScriptDirectory

    from db.migrate import HEAD, alembic_config

    assert ScriptDirectory.from_config(alembic_config()).get_current_head() == HEAD
