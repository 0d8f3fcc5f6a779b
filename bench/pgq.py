"""pgqueuer on the same server, for side-by-side figures (needs `pip install -e '.[bench]'`).

Each function takes a plain `postgresql://` URL of a fresh database and leaves pgqueuer's
schema in it; rates and delays come from pgqueuer's own log table (the server's clock), as
imgrun's come from its subtask timestamps.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import asyncpg

ENTRYPOINT = "noop"
ENQUEUE_CHUNK = 5_000  # jobs per enqueue statement while filling the queue


def require() -> None:
    """Exit with a one-line hint when pgqueuer is not installed."""
    try:
        import pgqueuer  # noqa: F401
    except ImportError:
        raise SystemExit("pgqueuer is not installed: .venv/bin/pip install -e '.[bench]'") from None


def plain(url: str) -> str:
    """An asyncpg DSN from a SQLAlchemy URL."""
    return url.replace("postgresql+asyncpg://", "postgresql://", 1)


@contextlib.asynccontextmanager
async def connected(url: str) -> AsyncIterator[Any]:
    """pgqueuer's Queries on one asyncpg connection (schema installed)."""
    from pgqueuer.queries import Queries

    connection = await asyncpg.connect(plain(url))
    try:
        queries = Queries.from_asyncpg_connection(connection)
        with contextlib.suppress(asyncpg.DuplicateObjectError, asyncpg.DuplicateTableError):
            await queries.install()
        yield queries
    finally:
        await connection.close()


async def enqueue(url: str, n: int) -> None:
    """Queue `n` no-op jobs."""
    async with connected(url) as queries:
        for start in range(0, n, ENQUEUE_CHUNK):
            size = min(ENQUEUE_CHUNK, n - start)
            await queries.enqueue([ENTRYPOINT] * size, [None] * size, [0] * size)


async def drain(url: str, batch_size: int, in_flight: int, *, drain: bool = True) -> None:
    """One worker (one connection) runs queued jobs with a no-op handler.

    drain: return once the queue is empty; otherwise run (and wait for jobs) until killed.
    """
    from pgqueuer.qm import QueueManager
    from pgqueuer.queries import Queries
    from pgqueuer.types import QueueExecutionMode

    connection = await asyncpg.connect(plain(url))
    try:
        qm = QueueManager(Queries.from_asyncpg_connection(connection))

        @qm.entrypoint(ENTRYPOINT)
        async def noop(job: Any) -> None:
            return None

        await qm.run(
            batch_size=batch_size,
            max_concurrent_tasks=in_flight,
            mode=QueueExecutionMode.drain if drain else QueueExecutionMode.continuous,
            dequeue_timeout=timedelta(seconds=1),
        )
    finally:
        await connection.close()


async def rate(url: str) -> tuple[float, int]:
    """(jobs/s from the first pick to the last success, successes), from pgqueuer's log."""
    connection = await asyncpg.connect(plain(url))
    try:
        row = await connection.fetchrow(
            "SELECT count(*) FILTER (WHERE status = 'successful') AS done,"
            " extract(epoch FROM max(created) FILTER (WHERE status = 'successful')"
            "   - min(created) FILTER (WHERE status = 'picked')) AS seconds"
            " FROM pgqueuer_log"
        )
    finally:
        await connection.close()
    return int(row["done"]) / float(row["seconds"]), int(row["done"])


if __name__ == "__main__":
    # python -m bench.pgq URL: a continuous worker (batch 50, 100 in flight) until killed.
    import sys

    asyncio.run(drain(sys.argv[1], 50, 100, drain=False))
