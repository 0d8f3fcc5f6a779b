"""Liveness by runner: a silent runner's rows are released at once; a restart is a new holder."""

from __future__ import annotations

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from db import outbox
from db.store import PgStore
from tests.db.conftest import LEASE_EXPIRED, claim_rows, outcome, reap, register, subtask
from tests.runner.conftest import submit

pytestmark = pytest.mark.anyio


async def silence(engine: AsyncEngine, executor_id: str, seconds: float) -> None:
    """As if the runner had not heartbeaten for `seconds`."""
    async with engine.begin() as connection:
        await connection.execute(
            text(
                "UPDATE executors SET heartbeat_at = now() - make_interval(secs => :s)"
                " WHERE id = :id"
            ),
            {"s": seconds, "id": executor_id},
        )


async def executor_state(engine: AsyncEngine, executor_id: str) -> str:
    """The executors row's state."""
    async with engine.connect() as connection:
        state = await connection.scalar(
            text("SELECT state FROM executors WHERE id = :id"), {"id": executor_id}
        )
    return str(state)


async def test_a_silent_runners_rows_are_released_at_once_and_it_is_marked_lost(
    engine: AsyncEngine, store: PgStore
) -> None:
    """Silent past stale_after: its rows (leases still long) go back, one attempt each.

    Only its rows: a live runner's stay. The lumina job keeps its external id (resumed,
    never resubmitted), the runner is marked lost with one runner.lost event, and its late
    outcome is dropped by the fence.
    """
    await submit(engine, n=2)
    await submit(engine, n=1, pool="lumina")
    await register(store, "dead", "dead:a")
    await register(store, "live", "live:b")
    first, second = await claim_rows(store, "standard", 2, "dead:a", 600.0)
    (job,) = await claim_rows(store, "lumina", 1, "dead:a", 600.0)
    assert await store.set_external_id(job.id, job.attempts, "dead:a", "job-7")
    await submit(engine, name="other", n=1)
    (theirs,) = await claim_rows(store, "standard", 1, "live:b", 600.0)
    await silence(engine, "dead", 10)

    released = await reap(store, stale_after=4.0)

    assert sorted((o.subtask_id, o.kind, o.executor_id) for o in released) == sorted(
        (r.id, "retry", "dead:a") for r in (first, second, job)
    )
    for row in (first, second, job):
        stored = await subtask(engine, row.id)
        assert (stored["status"], stored["attempts"], stored["retry_count"]) == ("pending", 1, 1)
        assert stored["executor_id"] is None and stored["error"] == LEASE_EXPIRED
    assert (await subtask(engine, job.id))["external_id"] == "job-7"
    assert (await subtask(engine, theirs.id))["status"] == "processing"
    assert await executor_state(engine, "dead") == "lost"
    assert await executor_state(engine, "live") == "running"
    (event,) = await outbox.outbox_rows(engine, "runner.lost")
    assert (event["payload"]["executor_id"], event["payload"]["subtasks_held"]) == ("dead", 3)
    assert await store.apply_outcomes([outcome(first, "completed", "dead:a")]) == []
    assert await reap(store, stale_after=4.0) == []
    (again,) = await claim_rows(store, "lumina", 1, "live:b", 600.0)
    assert (again.external_id, again.attempts) == ("job-7", 2)


async def test_a_live_runner_keeps_rows_whose_lease_ran_out(
    engine: AsyncEngine, store: PgStore
) -> None:
    """A long request outlives the lease: its runner heartbeats, so nothing is released."""
    await submit(engine, n=1)
    await register(store, "busy", "busy:a")
    (row,) = await claim_rows(store, "standard", 1, "busy:a", 0.001)
    await silence(engine, "busy", 3)  # beating, if not this very second
    async with engine.connect() as connection:
        assert await connection.scalar(
            text("SELECT lease_expires_at < now() FROM subtasks WHERE id = :id"), {"id": row.id}
        )
    assert await reap(store, stale_after=4.0) == []
    assert await store.apply_outcomes([outcome(row, "completed", "busy:a")]) == [row.id]


async def test_a_runner_not_yet_stale_keeps_its_rows(engine: AsyncEngine, store: PgStore) -> None:
    """Silent 3 s with stale_after 4 s: still alive; silent 5 s: released."""
    await submit(engine, n=1)
    await register(store, "slow", "slow:a")
    (row,) = await claim_rows(store, "standard", 1, "slow:a", 600.0)
    await silence(engine, "slow", 3)
    assert await reap(store, stale_after=4.0) == []
    await silence(engine, "slow", 5)
    assert [o.subtask_id for o in await reap(store, stale_after=4.0)] == [row.id]


async def test_judging_runners_can_be_held_back(engine: AsyncEngine, store: PgStore) -> None:
    """dead_runners=False (a reaper just back from an outage) leaves a silent runner be."""
    await submit(engine, n=1)
    await register(store, "quiet", "quiet:a")
    (row,) = await claim_rows(store, "standard", 1, "quiet:a", 600.0)
    await silence(engine, "quiet", 60)
    assert await reap(store, stale_after=4.0, dead_runners=False) == []
    assert await executor_state(engine, "quiet") == "running"
    assert [o.subtask_id for o in await reap(store, stale_after=4.0)] == [row.id]


async def test_a_stopped_runners_leftover_rows_are_released(
    engine: AsyncEngine, store: PgStore
) -> None:
    """A runner that stopped with rows still held (its last flush failed): released at once."""
    await submit(engine, n=1)
    await register(store, "gone", "gone:a")
    (row,) = await claim_rows(store, "standard", 1, "gone:a", 600.0)
    await store.mark_executor_stopped("gone:a", {})
    assert [o.subtask_id for o in await reap(store, stale_after=4.0)] == [row.id]
    assert await executor_state(engine, "gone") == "stopped"


async def test_a_restart_under_the_same_id_releases_the_old_rows(
    engine: AsyncEngine, store: PgStore
) -> None:
    """Registering `same` again (new holder): the old holder's rows are released at once,
    never adopted; the old process's outcomes are fenced and its heartbeat is refused.
    """
    await submit(engine, n=3)
    await register(store, "same", "same:old")
    await register(store, "other", "other:x")
    mine = await claim_rows(store, "standard", 2, "same:old", 600.0)
    (theirs,) = await claim_rows(store, "standard", 1, "other:x", 600.0)

    released = await register(store, "same", "same:new")

    assert sorted(o.subtask_id for o in released) == sorted(r.id for r in mine)
    assert {o.kind for o in released} == {"retry"}
    for row in mine:
        stored = await subtask(engine, row.id)
        assert (stored["status"], stored["retry_count"]) == ("pending", 1)
    assert (await subtask(engine, theirs.id))["status"] == "processing"
    assert await store.apply_outcomes([outcome(mine[0], "completed", "same:old")]) == []
    assert await store.heartbeat("same:old", {}) is None
    assert await store.heartbeat("same:new", {}) == "running"
    assert await register(store, "same", "same:new") == []


async def test_a_runner_declared_lost_that_beats_again_runs_on(
    engine: AsyncEngine, store: PgStore
) -> None:
    """Its heartbeat says it was lost (so it can warn) and makes it running again."""
    await register(store, "paused", "paused:a")
    await silence(engine, "paused", 10)
    await reap(store, stale_after=4.0)
    assert await store.heartbeat("paused:a", {}) == "lost"
    assert await executor_state(engine, "paused") == "running"
    assert await store.heartbeat("paused:a", {}) == "running"


async def test_rows_of_a_runner_from_before_holders_are_released(
    engine: AsyncEngine, store: PgStore
) -> None:
    """An executors row without a holder (written before revision 0005) holds under its id."""
    await submit(engine, n=1)
    async with engine.begin() as connection:
        await connection.execute(
            text(
                "INSERT INTO executors (id, host, pid, version, heartbeat_at)"
                " VALUES ('legacy', 'box', 1, 'v', now() - interval '1 minute')"
            )
        )
    (row,) = await claim_rows(store, "standard", 1, "legacy", 600.0)
    assert [o.subtask_id for o in await reap(store, stale_after=4.0)] == [row.id]
