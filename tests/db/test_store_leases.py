"""Reaping, heartbeats and external ids: what happens to leases over time."""

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


async def test_a_renewed_lease_is_not_reaped(engine: AsyncEngine, store: PgStore) -> None:
    """A heartbeat after expiry (the runner is alive after all) keeps the row."""
    await submit(engine, n=1)
    (row,) = await claim_rows(store, "standard", 1, "r1", 60.0)
    await expire(engine, [row.id])
    assert await store.heartbeat("r1", {}, 60.0, [row.id]) == 1
    assert await reap(store) == []
    assert (await subtask(engine, row.id))["status"] == "processing"


async def test_a_heartbeat_renewing_while_the_reaper_runs_wins(
    engine: AsyncEngine, store: PgStore
) -> None:
    """The renewal is in flight (row locked, not committed) when the reaper looks: kept.

    The reaper locks, re-checks and moves in one statement, so no renewal can land between
    its look and its move; here the renewal holds the row, is skipped, then commits.
    """
    await submit(engine, n=1)
    (row,) = await claim_rows(store, "standard", 1, "r1", 60.0)
    await expire(engine, [row.id])
    async with engine.connect() as renewal, renewal.begin() as transaction:
        await renewal.execute(
            text("UPDATE subtasks SET lease_expires_at = now() + interval '60 s' WHERE id = :id"),
            {"id": row.id},
        )
        with anyio.fail_after(10):  # SKIP LOCKED: the reaper neither waits nor takes it
            assert await reap(store) == []
        await transaction.commit()
    assert await reap(store) == []
    stored = await subtask(engine, row.id)
    assert (stored["status"], stored["executor_id"], stored["retry_count"]) == (
        "processing",
        "r1",
        0,
    )
    assert await store.apply_outcomes([outcome(row, "completed")]) == [row.id]


async def test_heartbeat_renews_only_this_runners_rows(engine: AsyncEngine, store: PgStore) -> None:
    """Rows held by another runner, or finished, are not renewed; the snapshot is stored."""
    await submit(engine, n=3)
    await store.register_executor("r1", "g", "host", 1, "v")
    mine, done = await claim_rows(store, "standard", 2, "r1", 5.0)
    (theirs,) = await claim_rows(store, "standard", 1, "r2", 5.0)
    await store.apply_outcomes([outcome(done, "completed")])
    renewed = await store.heartbeat(
        "r1", {"standard": {"limit": 3}}, 90.0, [mine.id, done.id, theirs.id]
    )
    assert renewed == 1
    assert (await subtask(engine, mine.id))["lease_left"] > 85
    assert (await subtask(engine, theirs.id))["lease_left"] <= 5
    async with engine.connect() as connection:
        pools = await connection.scalar(text("SELECT pools FROM executors WHERE id = 'r1'"))
    assert pools == {"standard": {"limit": 3}}


async def test_executor_register_and_stop(engine: AsyncEngine, store: PgStore) -> None:
    """A runner's row goes running → stopped, and registering again revives it."""
    await store.register_executor("r1", "g", "host", 42, "1.0")
    await store.mark_executor_stopped("r1", {"standard": {"limit": 1}})
    query = text("SELECT state, pid, stopped_at IS NOT NULL FROM executors WHERE id = 'r1'")
    async with engine.connect() as connection:
        assert tuple((await connection.execute(query)).one()) == ("stopped", 42, True)
    await store.register_executor("r1", "g", "host", 43, "1.0")
    async with engine.connect() as connection:
        assert tuple((await connection.execute(query)).one()) == ("running", 43, False)


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
