"""Which database to use: a URL, checked and normalised, or the embedded server's."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from db.embedded import EmbeddedPostgres


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
