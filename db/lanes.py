"""A pooled connection kept checked out for one loop's hot statements (claims, outcomes).

A checkout from SQLAlchemy's pool and its return cost ~250 µs here (greenlet hops, pool
events, the reset on return), eight times the one-row statement they wrap: more than the
claim itself on an idle runner's dispatch path, and ~10 µs per subtask on a busy one. A lane
keeps its connection between statements. It gives it back to the pool after any failure
(which invalidates it if unfit) and when it sat idle for IDLE_PING_AFTER, so the pool pings
it before the next use exactly as it does any idle connection.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Protocol

import anyio
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from db.engine import IDLE_PING_AFTER


class Connects(Protocol):
    """What a hot statement runs on: an engine (its pool) or a lane."""

    def connect(self) -> AbstractAsyncContextManager[AsyncConnection]:
        """A connection for one statement."""
        ...


class Lane:
    """One pooled connection held between uses: `connect()` as an engine has, one user at a time."""

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
        self._last_used = 0.0
        self._lock = anyio.Lock()

    @property
    def holding(self) -> bool:
        """Whether a connection is checked out right now."""
        return self._connection is not None

    @asynccontextmanager
    async def connect(self) -> AsyncIterator[AsyncConnection]:
        """The held connection (checked out anew if none, or after it sat idle)."""
        async with self._lock:
            if self._connection is not None and self._clock() - self._last_used >= self.idle_after:
                await self._give_back()
            if self._connection is None:
                self._connection = await self.engine.connect()
            try:
                yield self._connection
            except BaseException:
                await self._give_back()
                raise
            self._last_used = self._clock()

    async def close(self) -> None:
        """Give the connection back to the pool."""
        async with self._lock:
            await self._give_back()

    async def _give_back(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            with anyio.CancelScope(shield=True):
                await connection.close()
