"""Which database to use (a URL, or the embedded server) and the async engine on it."""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DisconnectionError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import Pool

from db.embedded import EmbeddedPostgres
from db.migrate import migrate


class DatabaseURLError(ValueError):
    """IMGRUN_DATABASE_URL is not a usable PostgreSQL URL (the message never quotes the URL)."""


# Query parameters the asyncpg dialect passes on as strings; anything else would reach
# asyncpg.connect() as an unexpected keyword and end in a traceback.
URL_QUERY_KEYS = frozenset(
    {
        "host",
        "port",
        "user",
        "password",
        "passfile",
        "database",
        "service",
        "ssl",
        "target_session_attrs",
        "krbsrvname",
        "gsslib",
        "prepared_statement_cache_size",
    }
)


def normalise_url(url: str) -> str:
    """Accept postgres:// and postgresql:// URLs; always drive them with asyncpg."""
    # Errors name what is wrong but never quote the URL: it may hold a password.
    try:
        parsed = make_url(url)
        parsed.port  # noqa: B018  # a non-numeric port only raises when read
    except (ArgumentError, ValueError):
        raise DatabaseURLError(
            "IMGRUN_DATABASE_URL: not a database URL"
            " (expected postgresql://user:password@host:port/database)"
        ) from None
    backend = parsed.get_backend_name()
    if backend not in ("postgresql", "postgres"):
        raise DatabaseURLError(f"IMGRUN_DATABASE_URL: imgrun needs a PostgreSQL URL, not {backend}")
    query = dict(parsed.query)
    if "sslmode" in query:  # libpq's spelling; asyncpg takes the same values as `ssl`
        query.setdefault("ssl", query.pop("sslmode"))
    unknown = sorted(set(query) - URL_QUERY_KEYS)
    if unknown:
        raise DatabaseURLError(
            f"IMGRUN_DATABASE_URL: unknown query parameter {unknown[0][:40]!r}"
            f" (known: {', '.join(sorted(URL_QUERY_KEYS))}, sslmode)"
        )
    return parsed.set(drivername="postgresql+asyncpg", query=query).render_as_string(
        hide_password=False
    )


@contextlib.contextmanager
def database_url(home: Path, url: str | None) -> Iterator[str]:
    """Yield `url`, or start (or join) the embedded server under `home` and yield its URL."""
    if url:
        yield normalise_url(url)
        return
    server = EmbeddedPostgres(home)
    try:
        yield server.start()
    finally:
        server.release()


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
