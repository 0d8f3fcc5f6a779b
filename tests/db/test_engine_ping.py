"""The engine's idle ping: a pooled connection the server dropped is replaced before use."""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from db.engine import is_transient_db_error, ping_when_idle
from tests.runner.conftest import wait_until

pytestmark = pytest.mark.anyio


@pytest.fixture
async def one_connection(database_url: str) -> AsyncIterator[AsyncEngine]:
    """An engine whose pool holds a single connection, and no ping of its own."""
    engine = create_async_engine(database_url, pool_size=1, max_overflow=0)
    try:
        yield engine
    finally:
        await engine.dispose()


async def backend_pid(engine: AsyncEngine) -> int:
    """The server process behind the pool's connection."""
    async with engine.connect() as connection:
        return int(await connection.scalar(text("SELECT pg_backend_pid()")))


async def kill_backend(database_url: str, pid: int) -> None:
    """Terminate a server process, as a server restart would, and wait until it is gone."""
    admin = await asyncpg.connect(database_url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        assert await admin.fetchval("SELECT pg_terminate_backend($1)", pid)

        async def gone() -> bool:
            return not await admin.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE pid = $1", pid
            )

        await wait_until(gone, timeout=10)
    finally:
        await admin.close()


async def test_an_idle_connection_the_server_dropped_is_replaced_before_use(
    one_connection: AsyncEngine, database_url: str
) -> None:
    """Idle past the threshold: pinged at checkout, found dead, and a new one serves."""
    ping_when_idle(one_connection.sync_engine.pool, 0.0)
    pid = await backend_pid(one_connection)
    await kill_backend(database_url, pid)
    assert await backend_pid(one_connection) != pid


async def test_a_connection_used_recently_is_not_pinged(
    one_connection: AsyncEngine, database_url: str
) -> None:
    """Under the threshold no ping: a dead connection fails its statement (a transient
    error the callers retry), and the pool then opens a fresh one."""
    ping_when_idle(one_connection.sync_engine.pool, 3600.0)
    pid = await backend_pid(one_connection)
    await kill_backend(database_url, pid)
    with pytest.raises(DBAPIError) as failed:
        await backend_pid(one_connection)
    assert is_transient_db_error(failed.value)
    assert await backend_pid(one_connection) != pid
