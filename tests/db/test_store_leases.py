"""Reaping, heartbeats and external ids: what happens to held rows over time."""

from __future__ import annotations

import anyio
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from db.store import PgStore
from tests.db.conftest import (
    LEASE_EXPIRED,
    claim_rows,
    counters,
    expire,
    outcome,
    reap,
    register,
    subtask,
)
from tests.runner.conftest import submit

pytestmark = pytest.mark.anyio


async def test_reap_takes_only_expired_leases(engine: AsyncEngine, store: PgStore) -> None:
    """Of two held rows, only the one whose lease ran out goes back to pending."""
    await submit(engine, n=2)
    dead, live = await claim_rows(store, "standard", 2, "r1", 60.0)
    await expire(engine, [dead.id])
    reaped = await reap(store)
    assert [(o.subtask_id, o.kind, o.attempt, o.executor_id) for o in reaped] == [
        (dead.id, "retry", 1, "r1")
    ]
    assert (await subtask(engine, live.id))["status"] == "processing"
    assert await reap(store) == []


async def test_reap_retries_while_retries_remain(engine: AsyncEngine, store: PgStore) -> None:
    """A reaped row counts its attempt and a retry, and says why."""
    task_id = await submit(engine, n=1, max_retries=2)
    (row,) = await claim_rows(store, "standard", 1, "r1", 60.0)
    await expire(engine, [row.id])
    await reap(store)
    stored = await subtask(engine, row.id)
    assert (stored["status"], stored["attempts"], stored["retry_count"]) == ("pending", 1, 1)
    assert stored["error"] == LEASE_EXPIRED and "lease expired" in stored["error"]
    assert stored["executor_id"] is None and stored["lease_expires_at"] is None
    assert await counters(engine, task_id) == ("running", 0, 0, 0)


async def test_reap_fails_a_subtask_that_used_its_retries(
    engine: AsyncEngine, store: PgStore
) -> None:
    """max_retries = 1: the first reap retries, the second fails it and finishes the task."""
    task_id = await submit(engine, n=1, max_retries=1)
    for expected in ("retry", "failed"):
        (row,) = await claim_rows(store, "standard", 1, "r1", 60.0)
        await expire(engine, [row.id])
        assert [o.kind for o in await reap(store)] == [expected]
    stored = await subtask(engine, row.id)
    assert (stored["status"], stored["retry_count"], stored["error"]) == (
        "failed",
        1,
        LEASE_EXPIRED,
    )
    assert await counters(engine, task_id) == ("failed", 0, 1, 0)


async def test_reap_with_no_retries_fails_at_once(engine: AsyncEngine, store: PgStore) -> None:
    """max_retries = 0: an expired lease fails the subtask."""
    task_id = await submit(engine, n=2, max_retries=0)
    row, other = await claim_rows(store, "standard", 2, "r1", 60.0)
    await expire(engine, [row.id])
    assert [o.kind for o in await reap(store)] == ["failed"]
    await store.apply_outcomes([outcome(other, "completed")])
    assert await counters(engine, task_id) == ("partial", 1, 1, 0)


async def test_reap_of_a_canceled_task_ends_canceled(engine: AsyncEngine, store: PgStore) -> None:
    """Reaping a row of a canceled task does not requeue it."""
    task_id = await submit(engine, n=2)
    (row,) = await claim_rows(store, "standard", 1, "r1", 60.0)
    await store.cancel_task(task_id)
    await expire(engine, [row.id])
    await reap(store)
    assert (await subtask(engine, row.id))["status"] == "canceled"
    assert await counters(engine, task_id) == ("canceled", 0, 0, 2)


async def test_reap_respects_its_limit(engine: AsyncEngine, store: PgStore) -> None:
    """At most `limit` rows per call, the longest-expired first."""
    await submit(engine, n=3)
    rows = await claim_rows(store, "standard", 3, "r1", 60.0)
    await expire(engine, [r.id for r in rows])
    first = await reap(store, limit=2)
    assert len(first) == 2
    assert len(await reap(store, limit=2)) == 1


async def test_a_row_being_recorded_while_the_reaper_looks_is_skipped(
    engine: AsyncEngine, store: PgStore
) -> None:
    """Its holder's flush holds the row (locked, not committed) when the reaper looks: kept.

    The reaper locks, re-checks and moves in one statement (SKIP LOCKED): it neither waits
    for nor takes a row another transaction holds; the holder's outcome then lands.
    """
    await submit(engine, n=1)
    (row,) = await claim_rows(store, "standard", 1, "r1", 60.0)
    await expire(engine, [row.id])
    async with engine.connect() as flush, flush.begin() as transaction:
        await flush.execute(
            text("SELECT id FROM subtasks WHERE id = :id FOR UPDATE"), {"id": row.id}
        )
        with anyio.fail_after(10):
            assert await reap(store) == []
        await transaction.commit()
    assert await store.apply_outcomes([outcome(row, "completed")]) == [row.id]


async def test_heartbeat_touches_only_its_executor_row(engine: AsyncEngine, store: PgStore) -> None:
    """The snapshot is stored; the leases of the rows in flight are not rewritten."""
    await submit(engine, n=1)
    await register(store, "r1", "r1:a")
    (mine,) = await claim_rows(store, "standard", 1, "r1:a", 5.0)
    before = (await subtask(engine, mine.id))["lease_expires_at"]
    assert await store.heartbeat("r1:a", {"standard": {"limit": 3}}) == "running"
    assert (await subtask(engine, mine.id))["lease_expires_at"] == before
    async with engine.connect() as connection:
        pools = await connection.scalar(text("SELECT pools FROM executors WHERE id = 'r1'"))
    assert pools == {"standard": {"limit": 3}}


async def test_executor_register_and_stop(engine: AsyncEngine, store: PgStore) -> None:
    """A runner's row goes running → stopped, and registering again revives it."""
    await register(store, "r1", "r1:a", pid=42)
    await store.mark_executor_stopped("r1:a", {"standard": {"limit": 1}})
    query = text("SELECT state, pid, stopped_at IS NOT NULL, holder FROM executors WHERE id = 'r1'")
    async with engine.connect() as connection:
        assert tuple((await connection.execute(query)).one()) == ("stopped", 42, True, "r1:a")
    await register(store, "r1", "r1:b", pid=43)
    async with engine.connect() as connection:
        assert tuple((await connection.execute(query)).one()) == ("running", 43, False, "r1:b")


async def test_external_id_is_persisted_by_the_holder_only(
    engine: AsyncEngine, store: PgStore
) -> None:
    """set_external_id: True for the holder; False (and no change) for another runner."""
    await submit(engine, n=1, pool="lumina")
    (row,) = await claim_rows(store, "lumina", 1, "r1", 60.0)
    assert not await store.set_external_id(row.id, row.attempts, "r2", "intruder")
    assert (await subtask(engine, row.id))["external_id"] is None
    assert await store.set_external_id(row.id, row.attempts, "r1", "job-1")
    assert (await subtask(engine, row.id))["external_id"] == "job-1"


async def test_external_id_of_an_older_attempt_is_refused(
    engine: AsyncEngine, store: PgStore
) -> None:
    """After a reap and re-claim, the old attempt cannot overwrite the new job id."""
    await submit(engine, n=1, pool="lumina")
    (old,) = await claim_rows(store, "lumina", 1, "r1", 60.0)
    await expire(engine, [old.id])
    await reap(store)
    (new,) = await claim_rows(store, "lumina", 1, "r1", 60.0)
    assert await store.set_external_id(new.id, new.attempts, "r1", "job-new")
    assert not await store.set_external_id(old.id, old.attempts, "r1", "job-old")
    assert (await subtask(engine, new.id))["external_id"] == "job-new"


async def test_external_id_survives_a_reap_for_the_next_attempt(
    engine: AsyncEngine, store: PgStore
) -> None:
    """A runner that dies mid-poll leaves the job id: the next claim resumes polling it."""
    await submit(engine, n=1, pool="lumina")
    (row,) = await claim_rows(store, "lumina", 1, "r1", 60.0)
    assert await store.set_external_id(row.id, row.attempts, "r1", "job-9")
    await expire(engine, [row.id])
    await reap(store)
    (again,) = await claim_rows(store, "lumina", 1, "r2", 60.0)
    assert again.external_id == "job-9"
