"""A lane keeps one pooled connection between statements, and gives it back when it must."""

from __future__ import annotations

import functools

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
        checkouts.append(lane._held)
    assert checkouts[0] is checkouts[1]
    assert checkouts[2] is not checkouts[1]
    assert checked_out(engine) == 1
    await lane.close()


async def test_statements_at_once_take_turns(engine: AsyncEngine) -> None:
    """Two statements at once: each waits its turn on the one connection (asyncpg refuses two)."""
    lane = Lane(engine)
    results: list[int] = []

    async def sleep_then_pid() -> None:
        await lane.fetch("SELECT pg_sleep(0.1)")
        results.append(await backend_pid(lane))

    async with anyio.create_task_group() as group:
        group.start_soon(sleep_then_pid)
        group.start_soon(sleep_then_pid)
    assert len(results) == 2 and len(set(results)) == 1
    assert checked_out(engine) == 1
    await lane.close()


# --- a listening lane -------------------------------------------------------------------

CHANNEL = "lane_test"


class Heard:
    """What a listening lane told us, with a way to wait for the next thing."""

    def __init__(self) -> None:
        self.payloads: list[str | None] = []
        self._changed = anyio.Event()

    def __call__(self, payload: str | None) -> None:
        self.payloads.append(payload)
        self._changed.set()
        self._changed = anyio.Event()

    async def wait_for(self, count: int, payload: str | None) -> None:
        """Until `payload` has been heard `count` times (a test deadline bounds it)."""
        with anyio.fail_after(10):
            while self.payloads.count(payload) < count:
                await self._changed.wait()


async def notify(engine: AsyncEngine, payload: str) -> None:
    """NOTIFY the test channel from another connection."""
    async with engine.connect() as connection:
        await connection.execute(text("SELECT pg_notify(:c, :p)"), {"c": CHANNEL, "p": payload})
        await connection.commit()


async def listening_channels(lane: Lane) -> list[str]:
    """The channels the lane's own connection listens on (one statement on it)."""
    return [row[0] for row in await lane.fetch("SELECT pg_listening_channels()")]


async def test_a_listening_lane_hears_on_the_connection_its_statements_use(
    engine: AsyncEngine,
) -> None:
    """Told once it listens (None), then every payload; its statements run on that backend."""
    lane, heard = Lane(engine), Heard()
    async with anyio.create_task_group() as group:
        group.start_soon(lane.listen, CHANNEL, heard)
        await heard.wait_for(1, None)
        await notify(engine, "standard")
        await heard.wait_for(1, "standard")
        assert await listening_channels(lane) == [CHANNEL]
        group.cancel_scope.cancel()
    assert heard.payloads == [None, "standard"]
    assert not lane.holding and checked_out(engine) == 0


async def test_a_listening_lane_listens_again_after_its_connection_is_lost(
    engine: AsyncEngine,
) -> None:
    """Its backend terminated while idle: a new connection listens, told None, hears on."""
    lane, heard = Lane(engine), Heard()
    async with anyio.create_task_group() as group:
        group.start_soon(functools.partial(lane.listen, CHANNEL, heard, reconnect_delay=0.05))
        await heard.wait_for(1, None)
        first = await backend_pid(lane)
        async with engine.connect() as other:
            await other.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": first})
        await heard.wait_for(2, None)
        await notify(engine, "lumina")
        await heard.wait_for(1, "lumina")
        assert await backend_pid(lane) != first
        assert await listening_channels(lane) == [CHANNEL]
        group.cancel_scope.cancel()


async def test_a_listening_lane_listens_again_after_a_failed_statement(engine: AsyncEngine) -> None:
    """A failed statement gives the connection back; the next one listens on the new one."""
    lane, heard = Lane(engine), Heard()
    async with anyio.create_task_group() as group:
        group.start_soon(functools.partial(lane.listen, CHANNEL, heard, reconnect_delay=0.05))
        await heard.wait_for(1, None)
        with pytest.raises(asyncpg.PostgresError):
            await lane.fetch("SELECT 1/0")
        assert await listening_channels(lane) == [CHANNEL]
        await heard.wait_for(2, None)
        await notify(engine, "standard")
        await heard.wait_for(1, "standard")
        group.cancel_scope.cancel()


async def test_a_listening_lane_is_never_idle(engine: AsyncEngine) -> None:
    """Past idle_after it keeps its connection: giving it back would stop the listening."""
    now = [0.0]
    lane, heard = Lane(engine, idle_after=5.0, clock=lambda: now[0]), Heard()
    async with anyio.create_task_group() as group:
        group.start_soon(lane.listen, CHANNEL, heard)
        await heard.wait_for(1, None)
        first = await backend_pid(lane)
        now[0] += 60.0
        assert await backend_pid(lane) == first
        group.cancel_scope.cancel()
    assert heard.payloads == [None]


async def test_no_connection_goes_back_to_the_pool_still_listening(engine: AsyncEngine) -> None:
    """Once the lane stops listening its connection is closed, not pooled with our LISTEN."""
    lane, heard = Lane(engine), Heard()
    async with anyio.create_task_group() as group:
        group.start_soon(lane.listen, CHANNEL, heard)
        await heard.wait_for(1, None)
        await backend_pid(lane)
        group.cancel_scope.cancel()
    assert checked_out(engine) == 0
    # The pool hands out its most recently returned connection first (LIFO): had the
    # listening one gone back, this would be it.
    async with engine.connect() as connection:
        channels = (await connection.execute(text("SELECT pg_listening_channels()"))).all()
    assert channels == []
    assert await listening_channels(lane) == []  # the lane itself, used on: a plain lane again
    await lane.close()
