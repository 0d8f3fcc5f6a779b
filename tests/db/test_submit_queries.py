"""`imgrun submit`'s bare-connection statements: all or nothing; the URL read as SQLAlchemy does."""

from __future__ import annotations

from collections.abc import Iterator

import asyncpg
import pytest
from sqlalchemy import make_url, text
from sqlalchemy.ext.asyncio import AsyncEngine

from db.queries import submit_task
from db.records import NewTask, SubtaskRow
from db.submit_queries import connect_args, schema_is_current, submit_on
from db.url import normalise_url
from tests.conftest import create_database, drop_database

pytestmark = pytest.mark.anyio

TASK = NewTask(
    name="atomic",
    user_id="ana",
    pool="standard",
    provider="sim",
    priority=1,
    prompts=["{x}"],
    variables={"x": ["a"]},
    ratio="1:1",
    seed=0,
    batch_size=1,
    polish=False,
    max_retries=3,
    total_subtasks=20_000,
    total_images=20_000,
)


def rows_failing_at(bad: int) -> Iterator[SubtaskRow]:
    """Valid rows, then one PostgreSQL refuses (a NUL in text) deep into the COPY."""
    for ordinal in range(TASK.total_subtasks):
        prompt = "bad\x00prompt" if ordinal == bad else f"prompt {ordinal}"
        yield ordinal, prompt, f'{{"seed": {ordinal}}}'


async def test_a_row_refused_mid_copy_leaves_nothing_written(database_url: str) -> None:
    """The task row, the rows already copied and the wake-up all roll back together."""
    connection = await asyncpg.connect(**connect_args(normalise_url(database_url)))
    try:
        assert await schema_is_current(connection)
        with pytest.raises(asyncpg.PostgresError):
            await submit_on(connection, TASK, rows_failing_at(15_000))
        assert await connection.fetchval("SELECT count(*) FROM tasks") == 0
        assert await connection.fetchval("SELECT count(*) FROM subtasks") == 0
        task_id = await submit_on(connection, TASK, rows_failing_at(-1))  # still usable
        assert (
            await connection.fetchval("SELECT count(*) FROM subtasks WHERE task_id = $1", task_id)
            == TASK.total_subtasks
        )
    finally:
        await connection.close()


async def test_the_engine_path_runs_the_same_statements_in_its_transaction(
    engine: AsyncEngine,
) -> None:
    """The engine's submit hands the quick path's text to its driver: still all or nothing."""
    with pytest.raises(asyncpg.PostgresError):
        await submit_task(engine, TASK, rows_failing_at(15_000))
    async with engine.connect() as connection:
        counts = "SELECT (SELECT count(*) FROM tasks), (SELECT count(*) FROM subtasks)"
        assert (await connection.execute(text(counts))).one() == (0, 0)


async def test_schema_is_current_is_false_on_an_empty_database(
    pg_server: str,
) -> None:
    """No alembic_version table: not current (the caller then migrates through the engine)."""
    url = await create_database(pg_server, None)
    try:
        connection = await asyncpg.connect(**connect_args(normalise_url(url)))
        try:
            assert not await schema_is_current(connection)
        finally:
            await connection.close()
    finally:
        await drop_database(pg_server, url)


def test_connect_args_are_the_dialects_minus_its_own_settings() -> None:
    """Host in the query (a unix socket), port as a number, SQLAlchemy's cache size dropped."""
    url = normalise_url(
        "postgresql://u:p%40ss@/imgrun?host=/run/pg&port=5433&prepared_statement_cache_size=5"
        "&sslmode=require"
    )
    assert connect_args(url) == {
        "user": "u",
        "password": "p@ss",
        "database": "imgrun",
        "host": "/run/pg",
        "port": 5433,
        "ssl": "require",
    }
    assert make_url(url).drivername == "postgresql+asyncpg"
