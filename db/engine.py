"""Which database to use (a URL, or the embedded server) and the async engine on it."""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

from sqlalchemy import event
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import Pool

from db.migrate import migrate

# Kept importable from here; they live in db.url so `imgrun submit` can use them without
# importing the async engine.
from db.url import DatabaseURLError, database_url, normalise_url

__all__ = ["DatabaseURLError", "database_url", "normalise_url"]


# A pooled connection idle this long is pinged before use (a restarted server dropped it).
IDLE_PING_AFTER = 5.0  # seconds


def make_engine(url: str, *, pool_size: int = 5) -> AsyncEngine:
    """The process's engine: small LIFO pool; idle connections pinged before use."""
    # Not pool_pre_ping: on asyncpg it costs three round trips (BEGIN, ";", ROLLBACK) at
    # every checkout, as much as the statement it guards on the runner's hot path. LIFO keeps
    # the busy connection busy, so only the ones left idle are pinged; a connection that
    # died since its last use fails its statement, SQLAlchemy invalidates the pool, and the
    # callers' retries of transient errors run it again on a fresh one.
    engine = create_async_engine(url, pool_size=pool_size, max_overflow=5, pool_use_lifo=True)
    ping_when_idle(engine.sync_engine.pool, IDLE_PING_AFTER)
    return engine


def ping_when_idle(pool: Pool, after: float) -> None:
    """Ping a connection at checkout if it sat in `pool` for `after` seconds or more."""

    def checkin(_dbapi_connection: Any, record: Any) -> None:
        record.info["idle_since"] = time.monotonic()

    def checkout(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        since = record.info.pop("idle_since", None)
        if since is None or time.monotonic() - since < after:
            return
        try:
            dbapi_connection.ping()
        except Exception:
            # The pool discards this connection and checks out (or opens) another.
            raise DisconnectionError("idle connection failed its ping") from None

    event.listen(pool, "checkin", checkin)
    event.listen(pool, "checkout", checkout)


@contextlib.asynccontextmanager
async def open_engine(
    url: str, *, upgrade: bool = True, pool_size: int = 5
) -> AsyncIterator[AsyncEngine]:
    """An engine on `url`, migrated to head first unless told otherwise; disposed on exit."""
    engine = make_engine(url, pool_size=pool_size)
    try:
        if upgrade:
            await migrate(engine)
        yield engine
    finally:
        await engine.dispose()


def is_transient_db_error(exc: BaseException, _depth: int = 0) -> bool:
    """A lost connection, a server (re)starting, a deadlock victim: worth retrying, not a bug."""
    import asyncpg
    from sqlalchemy.exc import DBAPIError, OperationalError

    transient = (
        OSError,
        asyncpg.PostgresConnectionError,
        asyncpg.ConnectionDoesNotExistError,
        asyncpg.CannotConnectNowError,
        asyncpg.AdminShutdownError,
        asyncpg.CrashShutdownError,
        # Concurrent writers are ordered to avoid these; any left are retried.
        asyncpg.DeadlockDetectedError,
        asyncpg.SerializationError,
    )
    if isinstance(exc, transient):
        return True
    if isinstance(exc, DBAPIError) and (
        exc.connection_invalidated or isinstance(exc, OperationalError)
    ):
        return True
    # SQLAlchemy's asyncpg adapter wraps the driver's error; look a few links down the chain.
    cause = exc.__cause__ or exc.__context__
    return cause is not None and _depth < 5 and is_transient_db_error(cause, _depth + 1)
