"""A lane keeps one pooled connection between statements, and gives it back when it must."""

from __future__ import annotations

import anyio
import asyncpg
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from db.engine import is_transient_db_error
from db.lanes import Lane

pytestmark = pytest.mark.anyio


async def backend_pid(lane: Lane) -> int:
    """The server process behind the lane's connection (one statement on it)."""
    return int((await lane.fetch("SELECT pg_backend_pid()"))[0][0])


def checked_out(engine: AsyncEngine) -> int:
    """Connections the engine's pool has handed out."""
    return int(engine.sync_engine.pool.checkedout())  # type: ignore[attr-defined]


async def test_the_same_connection_serves_every_statement(engine: AsyncEngine) -> None:
    """Ten statements, one server backend, one connection out of the pool until close()."""
    lane = Lane(engine)
    pids = {await backend_pid(lane) for _ in range(10)}
    assert len(pids) == 1
    assert lane.holding and checked_out(engine) == 1
    await lane.close()
    assert not lane.holding and checked_out(engine) == 0


async def test_a_failed_statement_gives_the_connection_back(engine: AsyncEngine) -> None:
    """A server error: the connection returns to the pool; the next statement works."""
    lane = Lane(engine)
    await backend_pid(lane)
    with pytest.raises(asyncpg.PostgresError):
        await lane.fetch("SELECT 1/0")
    assert not lane.holding and checked_out(engine) == 0
    assert await backend_pid(lane) > 0
    await lane.close()


async def test_a_connection_the_server_dropped_fails_once_then_a_fresh_one_serves(
    engine: AsyncEngine,
) -> None:
    """Terminated server-side: one transient error (callers retry those), then a new backend."""
    lane = Lane(engine)
    first = await backend_pid(lane)
    async with engine.connect() as other:
        await other.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": first})
    with pytest.raises(Exception) as caught:
        await backend_pid(lane)
    assert is_transient_db_error(caught.value)
    assert not lane.holding
    assert await backend_pid(lane) != first
    await lane.close()


async def test_an_idle_lane_goes_back_to_the_pool_before_its_next_use(engine: AsyncEngine) -> None:
    """Idle past idle_after: checked out anew (so the pool pings it), not reused blindly."""
    now = [0.0]
    lane = Lane(engine, idle_after=5.0, clock=lambda: now[0])
    checkouts: list[object] = []
    for at in (0.0, 4.9, 4.9 + 5.0):
        now[0] = at
        await lane.fetch("SELECT 1")
        checkouts.append(lane._connection)
    assert checkouts[0] is checkouts[1]
    assert checkouts[2] is not checkouts[1]
    assert checked_out(engine) == 1
    await lane.close()


async def test_a_second_statement_at_once_is_refused(engine: AsyncEngine) -> None:
    """One user per lane: overlapping statements are a bug, reported as one."""
    lane = Lane(engine)
    async with anyio.create_task_group() as group:
        group.start_soon(lane.fetch, "SELECT pg_sleep(0.2)")
        await anyio.sleep(0.05)
        with pytest.raises(RuntimeError, match="one statement at a time"):
            await lane.fetch("SELECT 1")
    await lane.close()
