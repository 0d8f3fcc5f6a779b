"""Fair share within a priority: tasks take turns, priority still wins, the claim stays one scan."""

from __future__ import annotations

import json
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from db import submit_queries
from db.store import PgStore
from tests.db.conftest import claim_rows
from tests.runner.conftest import submit

pytestmark = pytest.mark.anyio


async def claim_one_by_one(store: PgStore, n: int) -> list[int]:
    """The task id of each of `n` single claims, in order."""
    order = []
    for _ in range(n):
        (row,) = await claim_rows(store, "standard", 1, "r1", 60.0)
        order.append(row.task_id)
    return order


async def test_a_small_task_behind_a_huge_one_alternates_from_the_first_claim(
    engine: AsyncEngine, store: PgStore
) -> None:
    """Submitted after 10 of a 2,000-subtask task were claimed: the next claims alternate."""
    huge = await submit(engine, name="huge", n=2_000)
    assert {r.task_id for r in await claim_rows(store, "standard", 10, "r1", 60.0)} == {huge}
    small = await submit(engine, name="small", n=5)
    # The huge task's next turn comes first (it was there first), then the small one's.
    assert await claim_one_by_one(store, 10) == [huge, small] * 5
    assert await claim_one_by_one(store, 3) == [huge] * 3  # the small one is done


async def test_the_small_task_is_all_claimed_within_twice_its_size(
    engine: AsyncEngine, store: PgStore
) -> None:
    """A 20-subtask task behind 2,000 is fully claimed after 40 claims, not 2,000."""
    huge = await submit(engine, name="huge", n=2_000)
    await claim_rows(store, "standard", 100, "r1", 60.0)
    small = await submit(engine, name="small", n=20)
    claimed = [r.task_id for r in await claim_rows(store, "standard", 40, "r1", 60.0)]
    assert claimed.count(small) == 20 and claimed.count(huge) == 20


async def test_three_tasks_take_turns(engine: AsyncEngine, store: PgStore) -> None:
    """Round-robin by task: a third task joins the rotation at the head of the queue."""
    a = await submit(engine, name="a", n=100)
    await claim_rows(store, "standard", 4, "r1", 60.0)
    b = await submit(engine, name="b", n=100)
    await claim_one_by_one(store, 2)  # a, b
    c = await submit(engine, name="c", n=100)
    assert await claim_one_by_one(store, 9) == [a, b, c] * 3


async def test_priority_still_wins_across_levels(engine: AsyncEngine, store: PgStore) -> None:
    """A higher-priority task submitted later is claimed entirely before the interleaved ones."""
    huge = await submit(engine, name="huge", n=500, priority=1)
    await claim_rows(store, "standard", 5, "r1", 60.0)
    small = await submit(engine, name="small", n=5, priority=1)
    urgent = await submit(engine, name="urgent", n=4, priority=9)
    assert await claim_one_by_one(store, 6) == [urgent] * 4 + [huge, small]
    # A later task at a priority nobody else uses starts its own rotation at turn 0.
    later = await submit(engine, name="later", n=3, priority=2)
    assert await claim_one_by_one(store, 3) == [later] * 3


async def test_turns_are_per_pool_and_provider(engine: AsyncEngine, store: PgStore) -> None:
    """A task of another provider does not take the turns of this one: each queue has its own."""
    huge = await submit(engine, name="huge", n=300)
    await claim_rows(store, "standard", 50, "r1", 60.0)
    other = await submit(engine, name="other", n=3, provider="elsewhere")
    async with engine.connect() as connection:
        turns = (
            await connection.scalars(
                text("SELECT turn FROM subtasks WHERE task_id = :t ORDER BY ordinal"), {"t": other}
            )
        ).all()
    assert list(turns) == [0, 1, 2]  # nothing pending for "elsewhere": it starts at turn 0
    assert [r.task_id for r in (await store.claim("standard", ["sim"], 2, "r1", 60.0)).rows] == [
        huge,
        huge,
    ]


def plan_nodes(plan: dict[str, Any]) -> list[dict[str, Any]]:
    """Every node of an EXPLAIN (FORMAT JSON) plan, depth first."""
    nodes = [plan]
    for child in plan.get("Plans", []):
        nodes += plan_nodes(child)
    return nodes


async def explain(
    engine: AsyncEngine, sql: str, params: dict[str, Any] | tuple[Any, ...]
) -> list[dict[str, Any]]:
    """The nodes of the plan PostgreSQL picks for `sql` (not executed).

    `params`: a dict for :name binds, a tuple for $1… (a statement handed to the driver).
    """
    statement = f"EXPLAIN (FORMAT JSON) {sql}"
    async with engine.connect() as connection:
        if isinstance(params, tuple):
            result = await connection.exec_driver_sql(statement, params)
        else:
            result = await connection.execute(text(statement), params)
        raw = result.scalar_one()
    data = json.loads(raw) if isinstance(raw, str) else raw
    return plan_nodes(data[0]["Plan"])


async def explain_generic(
    engine: AsyncEngine, sql: str, types: str, args: str, *, analyze: bool = False
) -> list[dict[str, Any]]:
    """The generic plan of `sql` ($1…, of `types`), as a cached plan runs it, for `args`.

    EXPLAIN of a statement with bound parameters plans it for their values (a custom plan),
    whatever plan_cache_mode says; only a prepared statement's EXECUTE shows the generic one.
    Analyzed plans are rolled back.
    """
    options = "ANALYZE, FORMAT JSON" if analyze else "FORMAT JSON"
    async with engine.connect() as connection, connection.begin() as transaction:
        await connection.execute(text("SET LOCAL plan_cache_mode = force_generic_plan"))
        await connection.exec_driver_sql(f"PREPARE generic_plan ({types}) AS {sql}")
        raw = (
            await connection.exec_driver_sql(f"EXPLAIN ({options}) EXECUTE generic_plan ({args})")
        ).scalar_one()
        await transaction.rollback()
    data = json.loads(raw) if isinstance(raw, str) else raw
    return plan_nodes(data[0]["Plan"])


async def test_claim_and_first_turn_are_one_index_scan_without_sort(
    engine: AsyncEngine, store: PgStore
) -> None:
    """Over 20,000 pending rows in 3 priorities and 2 providers: ix_subtasks_claim, no Sort.

    The claim's only Sort is of the (at most n) rows it returns; the pick itself must be a
    Limit straight over an ordered index scan, never a sort of the queue.
    """
    for priority in (1, 2, 3):
        await submit(engine, name=f"p{priority}", n=5_000, priority=priority)
    await submit(engine, name="other", n=5_000, provider="elsewhere")
    await claim_rows(store, "standard", 10, "r1", 60.0)
    async with engine.begin() as connection:
        await connection.execute(text("ANALYZE subtasks"))
    # imgrun_claim()'s pick (migration 0006), as the function runs it: a generic plan (forced
    # since 0007), n a parameter. Written out here because a function body cannot be EXPLAINed.
    claim = await explain_generic(
        engine,
        "SELECT id FROM subtasks WHERE status = 'pending' AND pool = $1"
        " AND provider = $2 AND run_after <= now()"
        " ORDER BY priority DESC, turn, id LIMIT $3 FOR UPDATE SKIP LOCKED",
        "text, text, int",
        "'standard', 'sim', 10",
    )
    first_turn = await explain(engine, submit_queries.FIRST_TURN, ("standard", "sim", 1))
    for plan in (claim, first_turn):
        picks = [n for n in plan if n["Node Type"] == "Limit" and uses_claim_index(n)]
        assert len(picks) == 1, plan
        under = plan_nodes(picks[0])
        # An index-only scan is as good (the first turn needs nothing but the index).
        assert [n["Node Type"] for n in under if n.get("Index Name")] in (
            ["Index Scan"],
            ["Index Only Scan"],
        )
        assert not [n for n in under if n["Node Type"] in ("Sort", "Incremental Sort")]
        scanned = [n.get("Relation Name") for n in plan if n["Node Type"] == "Seq Scan"]
        assert "subtasks" not in scanned, scanned


def uses_claim_index(node: dict[str, Any]) -> bool:
    """Whether ix_subtasks_claim is scanned in this node's subtree."""
    return any(n.get("Index Name") == "ix_subtasks_claim" for n in plan_nodes(node))
