"""Recording outcomes costs the same however many rows runners hold (the backlog stall)."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from db import queries
from db.store import PgStore
from tests.db.conftest import claim_rows
from tests.db.test_fair_share import explain_generic
from tests.runner.conftest import status_counts, submit

pytestmark = pytest.mark.anyio


async def test_outcome_statement_never_reads_the_lease_index(engine: AsyncEngine) -> None:
    """The fence finds reported rows by primary key, never via the in-flight index.

    Statistics gathered while nothing is processing make the partial in-flight index look
    empty. A plan that drives the statement from it rescans the outcome list once per held
    row: 27 s for 5,000 outcomes with 20,000 rows held, hours at the sizes of the stall.
    Hash and merge joins are switched off to leave the planner only that kind of choice.
    """
    await submit(engine, n=2000, provider="null")
    async with engine.begin() as connection:
        await connection.execute(text("ANALYZE subtasks"))  # all pending: lease index "empty"
    held = await claim_rows(PgStore(engine), "standard", 1500, "r1", 60.0)
    batch = held[:50]
    params = {
        "ids": [row.id for row in batch],
        "attempts": [row.attempts for row in batch],
        "kinds": ["completed"] * len(batch),
        "executors": ["r1"] * len(batch),
        "results": [json.dumps({"images": []})] * len(batch),
        "errors": [None] * len(batch),
        "delays": [0.0] * len(batch),
        "resets": [False] * len(batch),
    }
    async with engine.begin() as connection:
        await connection.execute(text("SET LOCAL enable_hashjoin = off"))
        await connection.execute(text("SET LOCAL enable_mergejoin = off"))
        plan = await connection.execute(
            text("EXPLAIN (ANALYZE, FORMAT JSON) " + str(queries.APPLY_OUTCOMES)), params
        )
        plan_text = json.dumps(plan.scalar_one())
    assert "ix_subtasks_in_flight" not in plan_text
    # And it did its job: the 50 reported rows completed, the other held rows untouched.
    assert await status_counts(engine) == {"completed": 50, "processing": 1450, "pending": 500}


async def test_outcome_statement_is_linear_in_its_generic_plan(engine: AsyncEngine) -> None:
    """400 outcomes as the runner's prepared statement runs them: no n x n join.

    The cached generic plan estimates 10 outcomes whatever their number; a join of the
    outcomes to the locked rows then became a nested loop comparing every outcome with
    every row (159,600 comparisons here, 3 ms of the 3.8 ms for 100). Each row is now found
    from its outcome by primary key, and carries it on.
    """
    await submit(engine, n=600, provider="null")
    held = await claim_rows(PgStore(engine), "standard", 400, "r1", 60.0)
    n = len(held)
    ids = ", ".join(str(row.id) for row in held)
    attempts = ", ".join(str(row.attempts) for row in held)
    result = json.dumps({"images": []})
    args = (
        f"ARRAY[{ids}]::bigint[], ARRAY[{attempts}]::int[],"
        f" array_fill('completed'::text, ARRAY[{n}]), array_fill('r1'::text, ARRAY[{n}]),"
        f" array_fill('{result}'::text, ARRAY[{n}]), array_fill(NULL::text, ARRAY[{n}]),"
        f" array_fill(0.0::float8, ARRAY[{n}]), array_fill(false, ARRAY[{n}])"
    )
    types = "bigint[], int[], text[], text[], text[], text[], float8[], bool[]"
    nodes = await explain_generic(engine, queries.APPLY_OUTCOMES_RAW, types, args, analyze=True)
    compared = sum(node.get("Rows Removed by Join Filter", 0) for node in nodes)
    assert compared < n, compared
    updates = [node for node in nodes if node["Node Type"] == "ModifyTable"]
    assert [node["Actual Rows"] for node in updates if node["Relation Name"] == "subtasks"] == [n]
