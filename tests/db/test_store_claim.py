"""The claim: order, pool, run_after, what a claim writes, and SKIP LOCKED exclusivity."""

from __future__ import annotations

import anyio
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from db.store import PgStore
from tests.db.conftest import claim_rows, outcome, subtask, task
from tests.runner.conftest import submit

pytestmark = pytest.mark.anyio


async def ids_of(engine: AsyncEngine, task_id: int) -> list[int]:
    """A task's subtask ids in ordinal order."""
    async with engine.connect() as connection:
        rows = await connection.execute(
            text("SELECT id FROM subtasks WHERE task_id = :id ORDER BY ordinal"), {"id": task_id}
        )
        return [r[0] for r in rows.all()]


async def test_claim_takes_higher_priority_first_then_lowest_id(
    engine: AsyncEngine, store: PgStore
) -> None:
    """Priority descending, then id ascending, whatever the submission order."""
    low = await submit(engine, n=3, priority=1)
    high = await submit(engine, n=2, priority=5)
    low_ids, high_ids = await ids_of(engine, low), await ids_of(engine, high)
    claimed = await claim_rows(store, "standard", 3, "r1", 60.0)
    assert {row.id for row in claimed} == {*high_ids, low_ids[0]}
    one_by_one = [(await claim_rows(store, "standard", 1, "r1", 60.0))[0].id for _ in range(2)]
    assert one_by_one == low_ids[1:]


async def test_claims_one_at_a_time_follow_priority_then_id(
    engine: AsyncEngine, store: PgStore
) -> None:
    """Single claims drain the queue in (priority desc, id) order across tasks."""
    a = await submit(engine, n=2, priority=1)
    b = await submit(engine, n=2, priority=3)
    c = await submit(engine, n=2, priority=2)
    expected = [*await ids_of(engine, b), *await ids_of(engine, c), *await ids_of(engine, a)]
    order = [(await claim_rows(store, "standard", 1, "r1", 60.0))[0].id for _ in range(6)]
    assert order == expected


async def test_claim_takes_at_most_n_and_nothing_when_empty(
    engine: AsyncEngine, store: PgStore
) -> None:
    """A claim never returns more than asked, and an empty queue gives an empty list."""
    assert await claim_rows(store, "standard", 5, "r1", 60.0) == []
    await submit(engine, n=4)
    assert len(await claim_rows(store, "standard", 3, "r1", 60.0)) == 3
    assert len(await claim_rows(store, "standard", 3, "r1", 60.0)) == 1
    assert await claim_rows(store, "standard", 3, "r1", 60.0) == []


async def test_claim_only_takes_its_pool(engine: AsyncEngine, store: PgStore) -> None:
    """A standard claim never takes lumina subtasks, and the other way round."""
    lumina = await submit(engine, n=2, pool="lumina")
    standard = await submit(engine, n=2, pool="standard")
    assert {r.task_id for r in await claim_rows(store, "standard", 10, "r1", 60.0)} == {standard}
    claimed = await claim_rows(store, "lumina", 10, "r1", 60.0)
    assert {r.task_id for r in claimed} == {lumina} and {r.pool for r in claimed} == {"lumina"}


async def test_claim_writes_lease_attempt_and_starts_the_task(
    engine: AsyncEngine, store: PgStore
) -> None:
    """A claim: processing, executor, attempts + 1, a lease of `lease` seconds, task running."""
    task_id = await submit(engine, n=2, max_retries=4)
    assert (await task(engine, task_id))["status"] == "pending"
    (row,) = await claim_rows(store, "standard", 1, "r1", 30.0)
    assert (row.attempts, row.retry_count, row.deferrals, row.external_id) == (1, 0, 0, None)
    assert (row.provider, row.max_retries, row.task_id) == ("sim", 4, task_id)
    stored = await subtask(engine, row.id)
    assert (stored["status"], stored["executor_id"], stored["attempts"]) == (
        "processing",
        "r1",
        1,
    )
    assert 25 < stored["lease_left"] <= 30 and stored["started_at"] is not None
    started = await task(engine, task_id)
    assert started["status"] == "running" and started["started_at"] is not None


async def test_claim_returns_the_params_and_prompt(engine: AsyncEngine, store: PgStore) -> None:
    """The claimed row carries the rendered prompt and the per-subtask seed (seed + ordinal)."""
    await submit(engine, n=2, prompt="a {x}")
    first, second = await claim_rows(store, "standard", 2, "r1", 60.0)
    assert (first.prompt, second.prompt) == ("a v0", "a v1")
    assert (first.params["seed"], second.params["seed"]) == (1, 2)  # submit() uses seed 1


async def test_claim_respects_run_after(engine: AsyncEngine, store: PgStore) -> None:
    """A subtask waiting for its backoff is not claimable until its run_after has come."""
    await submit(engine, n=2)
    first, second = await claim_rows(store, "standard", 2, "r1", 60.0)
    await store.apply_outcomes(
        [outcome(first, "retry", delay=3600.0), outcome(second, "retry", delay=0.0)]
    )
    again = await claim_rows(store, "standard", 10, "r1", 60.0)
    assert [row.id for row in again] == [second.id]
    assert again[0].attempts == 2  # a retried claim counts another attempt


async def test_a_second_claim_skips_rows_locked_by_an_open_claim(
    engine: AsyncEngine, store: PgStore
) -> None:
    """SKIP LOCKED: while one claim's transaction is open, another takes the next rows at once."""
    await submit(engine, n=5)
    # Start the task first: the claim that starts a task holds the task row until it commits.
    assert len(await claim_rows(store, "standard", 1, "a", 60.0)) == 1
    # Rows locked by another open transaction (as a claim in progress holds them) are
    # skipped, not waited for: the claim takes the next ones at once.
    lock_two = text(
        "SELECT id FROM subtasks WHERE status = 'pending' ORDER BY id LIMIT 2 FOR UPDATE"
    )
    async with engine.connect() as connection, connection.begin() as transaction:
        first = list((await connection.scalars(lock_two)).all())
        with anyio.fail_after(10):  # it must not wait for the open transaction
            second = [r.id for r in await claim_rows(store, "standard", 2, "b", 60.0)]
        await transaction.commit()
    assert len(first) == len(second) == 2 and not set(first) & set(second)
    assert len(await claim_rows(store, "standard", 10, "c", 60.0)) == 2  # the locked two


async def test_concurrent_claimers_never_share_a_row(engine: AsyncEngine, store: PgStore) -> None:
    """Eight claimers racing over 200 rows: each row goes to exactly one of them."""
    await submit(engine, n=200)
    taken: dict[str, list[int]] = {}

    async def claimer(name: str) -> None:
        mine = taken.setdefault(name, [])
        while rows := await claim_rows(store, "standard", 7, name, 60.0):
            mine.extend(row.id for row in rows)

    async with anyio.create_task_group() as group:
        for i in range(8):
            group.start_soon(claimer, f"r{i}")
    every = [i for ids in taken.values() for i in ids]
    assert len(every) == len(set(every)) == 200
    async with engine.connect() as connection:
        owners = dict(
            (await connection.execute(text("SELECT id, executor_id FROM subtasks"))).all()
        )
    assert all(owners[i] == name for name, ids in taken.items() for i in ids)
