"""Hot statements straight on asyncpg, and lanes: connections held between them.

A runner's claims and outcome flushes run as single statements in autocommit on the driver
itself (its prepared-statement cache, no transaction, no greenlet hop). A lane keeps one
pooled connection and its driver between such statements: a checkout and return cost
~250 µs here, and even on a held connection SQLAlchemy's `get_raw_connection()` costs ~30 µs
(a greenlet hop that also slows the statement after it) — more than a one-row claim on an
idle runner's dispatch path. A lane gives its connection back to the pool after any failure
(which invalidates it if unfit) and when it sat idle for IDLE_PING_AFTER, so the pool pings
it before the next use exactly as it does any idle connection. A runner's claim lanes also
LISTEN for its wake-ups (no connection of its own for that), and after a lost connection
listen again and say so, since what was notified meanwhile never arrives.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import anyio
import asyncpg
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from db.engine import IDLE_PING_AFTER, is_transient_db_error

log = logging.getLogger(__name__)

RECONNECT_DELAY = 1.0  # seconds; meanwhile the runner's fallback poll keeps it working


async def fetch_on(
    connection: AsyncConnection, driver: asyncpg.Connection, query: str, *args: Any
) -> list[Any]:
    """One statement on `connection`'s asyncpg `driver`, with the pool told of a lost one."""
    try:
        return list(await driver.fetch(query, *args))
    except BaseException as exc:
        # SQLAlchemy never saw this statement: tell its pool when the connection is no longer
        # fit for use (lost, or cut off mid-statement); an error the server reported is not.
        if driver.is_closed() or not isinstance(exc, asyncpg.PostgresError):
            with anyio.CancelScope(shield=True):  # also when cut off by a cancellation
                await connection.invalidate()
        raise_as_lost(driver, exc)
        raise


def raise_as_lost(driver: asyncpg.Connection, exc: BaseException) -> None:
    """Raise a lost connection's error as one callers retry, if `driver` was lost."""
    if driver.is_closed() and not isinstance(exc, asyncpg.ConnectionDoesNotExistError):
        # A pooled connection the server dropped ("connection is closed", an interface
        # error): the same transient loss SQLAlchemy reports, so callers retry it.
        raise asyncpg.ConnectionDoesNotExistError(str(exc)) from exc


async def fetch_raw(connection: AsyncConnection, query: str, *args: Any) -> list[Any]:
    """One statement straight on asyncpg (its prepared-statement cache, no transaction)."""
    raw = await connection.get_raw_connection()
    driver = raw.driver_connection
    assert driver is not None
    return await fetch_on(connection, driver, query, *args)


class Lane:
    """One pooled connection held between statements; one statement at a time.

    A lane may also LISTEN (`listen`): notifications then arrive on the connection its
    statements use, which it keeps (never idle) and replaces at once when it is lost.
    """

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        idle_after: float = IDLE_PING_AFTER,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.engine = engine
        self.idle_after = idle_after
        self._clock = clock
        self._held: Held | None = None
        self._last_used = 0.0
        # asyncio's own lock: anyio's yields to the event loop on every acquire, a hop on the
        # dispatch path of every claim.
        self._turn = asyncio.Lock()
        self._listening: Listening | None = None
        self._lost = anyio.Event()  # set when the held connection is given back or dies

    @property
    def holding(self) -> bool:
        """Whether a connection is checked out right now."""
        return self._held is not None

    async def fetch(self, query: str, *args: Any) -> list[Any]:
        """Run one statement on the held connection (checked out anew if none, or idle)."""
        async with self._turn:
            held = self._held
            if held is not None and (held.driver.is_closed() or self._idle()):
                await self._give_back()
                held = None
            if held is None:
                held = self._held = await self._check_out()
            try:
                records = await fetch_on(held.connection, held.driver, query, *args)
            except BaseException:
                await self._give_back()
                raise
            self._last_used = self._clock()
            return records

    async def listen(
        self,
        channel: str,
        on_notify: Callable[[str | None], None],
        *,
        reconnect_delay: float = RECONNECT_DELAY,
    ) -> None:
        """LISTEN on `channel` until cancelled, on a connection checked out anew when lost.

        `on_notify(payload)` runs for every notification, and `on_notify(None)` each time the
        lane starts listening (again): what was notified while it was not is unknown.
        """
        if self._listening is not None:
            raise RuntimeError("a lane listens on one channel")
        async with self._turn:
            await self._give_back()  # a connection checked out before it listened
            self._listening = Listening(channel, on_notify)
        try:
            while True:
                try:
                    async with self._turn:
                        if self._held is None or self._held.driver.is_closed():
                            await self._give_back()
                            self._held = await self._check_out()
                        lost = self._lost
                    await lost.wait()
                except Exception as exc:
                    if not is_transient_db_error(exc):
                        raise
                    log.warning("wake-up listener lost its connection (%s); reconnecting", exc)
                await anyio.sleep(reconnect_delay)
        finally:
            with anyio.CancelScope(shield=True):
                async with self._turn:
                    await self._give_back()
                    self._listening = None

    async def close(self) -> None:
        """Give the connection back to the pool."""
        async with self._turn:
            await self._give_back()

    def _idle(self) -> bool:
        # A listening lane is never idle: it waits for notifications, and sees a loss at once.
        return self._listening is None and self._clock() - self._last_used >= self.idle_after

    async def _check_out(self) -> Held:
        connection = await self.engine.connect()
        lost = anyio.Event()
        driver: asyncpg.Connection | None = None
        try:
            driver = (await connection.get_raw_connection()).driver_connection
            assert driver is not None
            listening = self._listening
            if listening is not None:
                await driver.add_listener(listening.channel, listening.deliver)
                driver.add_termination_listener(lambda _connection: lost.set())
        except BaseException as exc:
            with anyio.CancelScope(shield=True):
                await connection.invalidate()  # never a connection with our listener to the pool
                await connection.close()
            if driver is not None:
                raise_as_lost(driver, exc)
            raise
        self._lost = lost
        self._last_used = self._clock()
        if listening is not None:
            listening.on_notify(None)
        return Held(connection, driver)

    async def _give_back(self) -> None:
        held, self._held = self._held, None
        self._lost.set()
        if held is not None:
            with anyio.CancelScope(shield=True):
                if self._listening is not None:
                    # Its LISTEN would outlive us in the pool: close it instead.
                    await held.connection.invalidate()
                await held.connection.close()


class Held(NamedTuple):
    """A lane's checked-out connection and its asyncpg driver."""

    connection: AsyncConnection
    driver: asyncpg.Connection


class Listening(NamedTuple):
    """What a listening lane LISTENs on, and whom it tells."""

    channel: str
    on_notify: Callable[[str | None], None]

    def deliver(self, _connection: Any, _pid: int, _channel: str, payload: str) -> None:
        """asyncpg's notification callback."""
        self.on_notify(payload)


async def fetch_hot(source: AsyncEngine | Lane, query: str, *args: Any) -> list[Any]:
    """One hot statement on a lane, or on a connection checked out of the engine's pool."""
    if isinstance(source, Lane):
        return await source.fetch(query, *args)
    async with source.connect() as connection:
        return await fetch_raw(connection, query, *args)
