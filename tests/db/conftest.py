"""Store fixtures: a PgStore on this test's fresh database, and row readers."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from db.records import ClaimedSubtask, ExpiredLease, Outcome, ProviderBounds
from db.store import PgStore
from runner.config import RunnerSettings
from runner.loop.duties import lease_outcomes
from runner.policy.classify import LeaseExpired


@pytest.fixture
def store(engine: AsyncEngine) -> PgStore:
    """The PostgreSQL store under test."""
    return PgStore(engine)


async def subtask(engine: AsyncEngine, subtask_id: int) -> dict[str, Any]:
    """One subtask row, plus how far its run_after and lease lie ahead of now (seconds)."""
    async with engine.connect() as connection:
        row = (
            (
                await connection.execute(
                    text(
                        "SELECT *, extract(epoch FROM run_after - now()) AS due_in,"
                        " extract(epoch FROM lease_expires_at - now()) AS lease_left"
                        " FROM subtasks WHERE id = :id"
                    ),
                    {"id": subtask_id},
                )
            )
            .mappings()
            .one()
        )
        return dict(row)


async def task(engine: AsyncEngine, task_id: int) -> dict[str, Any]:
    """One task row."""
    async with engine.connect() as connection:
        row = (
            (await connection.execute(text("SELECT * FROM tasks WHERE id = :id"), {"id": task_id}))
            .mappings()
            .one()
        )
        return dict(row)


async def counters(engine: AsyncEngine, task_id: int) -> tuple[str, int, int, int]:
    """A task's (status, completed, failed, canceled)."""
    row = await task(engine, task_id)
    return (
        row["status"],
        row["completed_subtasks"],
        row["failed_subtasks"],
        row["canceled_subtasks"],
    )


async def expire(engine: AsyncEngine, ids: Sequence[int]) -> None:
    """Put these rows' leases in the past, as if their runner had stopped answering."""
    async with engine.begin() as connection:
        await connection.execute(
            text(
                "UPDATE subtasks SET lease_expires_at = now() - interval '1 second'"
                " WHERE id = ANY(CAST(:ids AS bigint[]))"
            ),
            {"ids": list(ids)},
        )


def outcome(row: ClaimedSubtask, kind: str, executor: str = "r1", **fields: Any) -> Outcome:
    """The outcome of `row`'s current attempt, reported by `executor`."""
    return Outcome(row.id, row.attempts, kind, executor, **fields)


# The runner's rule, with no backoff so a retried row can be claimed again at once.
REAP_SETTINGS = RunnerSettings(retry_base=0.0)
LEASE_EXPIRED = f"LeaseExpired: {LeaseExpired()}"


def decide(rows: Sequence[ExpiredLease]) -> list[Outcome]:
    """The runner's rule for a released row."""
    return lease_outcomes(rows, REAP_SETTINGS)


async def reap(store: PgStore, *, limit: int = 1000, **options: Any) -> list[Outcome]:
    """Release what the reaper would (its classification rule); `options`: stale_after..."""
    return await store.reap_expired(decide, limit=limit, **options)


async def register(store: PgStore, executor_id: str, holder: str, pid: int = 1) -> list[Outcome]:
    """Register a runner process as the executor does; returns what it released."""
    details = {"group": "g", "host": "box", "pid": pid, "version": "v"}
    return await store.register_executor(executor_id, holder, details, decide)


async def silence(engine: AsyncEngine, holder: str, seconds: float = 60.0) -> None:
    """As if the runner process `holder` had not heartbeaten for `seconds`."""
    async with engine.begin() as connection:
        await connection.execute(
            text(
                "UPDATE executors SET heartbeat_at = now() - make_interval(secs => :s)"
                " WHERE holder = :holder"
            ),
            {"s": seconds, "holder": holder},
        )


async def claim_rows(
    store: PgStore, pool: str, n: int, executor_id: str, lease: float
) -> list[ClaimedSubtask]:
    """Claim like a runner serving every provider in the database, none of them limited."""
    async with store.engine.connect() as connection:
        names = (
            await connection.scalars(text("SELECT DISTINCT provider FROM subtasks ORDER BY 1"))
        ).all()
    await store.register_providers(
        [ProviderBounds(name, "fixed", 1, UNLIMITED, None, {"limit": UNLIMITED}) for name in names]
    )
    return (await store.claim(pool, list(names), n, executor_id, lease)).rows


UNLIMITED = 100_000
