"""Hot statements straight on asyncpg, and lanes: connections held between them.

A runner's claims and outcome flushes run as single statements in autocommit on the driver
itself (its prepared-statement cache, no transaction, no greenlet hop). A lane keeps one
pooled connection and its driver between such statements: a checkout and return cost
~250 µs here, and even on a held connection SQLAlchemy's `get_raw_connection()` costs ~30 µs
(a greenlet hop that also slows the statement after it) — more than a one-row claim on an
idle runner's dispatch path. A lane gives its connection back to the pool after any failure
(which invalidates it if unfit) and when it sat idle for IDLE_PING_AFTER, so the pool pings
it before the next use exactly as it does any idle connection.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import anyio
import asyncpg
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from db.engine import IDLE_PING_AFTER


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
        if driver.is_closed() and not isinstance(exc, asyncpg.ConnectionDoesNotExistError):
            # A pooled connection the server dropped ("connection is closed", an interface
            # error): the same transient loss SQLAlchemy reports, so callers retry it.
            raise asyncpg.ConnectionDoesNotExistError(str(exc)) from exc
        raise


async def fetch_raw(connection: AsyncConnection, query: str, *args: Any) -> list[Any]:
    """One statement straight on asyncpg (its prepared-statement cache, no transaction)."""
    raw = await connection.get_raw_connection()
    driver = raw.driver_connection
    assert driver is not None
    return await fetch_on(connection, driver, query, *args)


class Lane:
    """One pooled connection held between statements; one statement at a time."""

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
        self._connection: AsyncConnection | None = None
        self._driver: asyncpg.Connection | None = None
        self._last_used = 0.0
        self._busy = False

    @property
    def holding(self) -> bool:
        """Whether a connection is checked out right now."""
        return self._connection is not None

    async def fetch(self, query: str, *args: Any) -> list[Any]:
        """Run one statement on the held connection (checked out anew if none, or idle)."""
        # Each lane has one user (a pool's claim loop, the recorder under its lock): a second
        # statement at once would be a bug, and asyncpg would refuse it less clearly.
        if self._busy:
            raise RuntimeError("a lane runs one statement at a time")
        self._busy = True
        try:
            if self._connection is not None and self._clock() - self._last_used >= self.idle_after:
                await self._give_back()
            if self._connection is None or self._driver is None:
                self._connection, self._driver = await self._check_out()
            try:
                records = await fetch_on(self._connection, self._driver, query, *args)
            except BaseException:
                await self._give_back()
                raise
            self._last_used = self._clock()
            return records
        finally:
            self._busy = False

    async def close(self) -> None:
        """Give the connection back to the pool."""
        await self._give_back()

    async def _check_out(self) -> tuple[AsyncConnection, asyncpg.Connection]:
        connection = await self.engine.connect()
        try:
            driver = (await connection.get_raw_connection()).driver_connection
        except BaseException:
            with anyio.CancelScope(shield=True):
                await connection.close()
            raise
        assert driver is not None
        return connection, driver

    async def _give_back(self) -> None:
        connection, self._connection, self._driver = self._connection, None, None
        if connection is not None:
            with anyio.CancelScope(shield=True):
                await connection.close()


async def fetch_hot(source: AsyncEngine | Lane, query: str, *args: Any) -> list[Any]:
    """One hot statement on a lane, or on a connection checked out of the engine's pool."""
    if isinstance(source, Lane):
        return await source.fetch(query, *args)
    async with source.connect() as connection:
        return await fetch_raw(connection, query, *args)
