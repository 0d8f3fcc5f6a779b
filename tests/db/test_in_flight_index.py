"""One partial index serves every reader of the in-flight set; the claim's plans are generic."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from db import liveness_queries, outbox
from db.status_queries import QUERIES
from db.store import PgStore
from tests.db.conftest import claim_rows
from tests.db.test_fair_share import explain, explain_generic
from tests.runner.conftest import submit

pytestmark = pytest.mark.anyio

PARAMS: dict[str, Any] = {"recent": 3600.0, "stale": 4.0, "n": 1000, "holder": "r1", "after": 4.0}

# The fleet-wide count imgrun_claim() runs after the provider row's lock (migration 0006).
IN_FLIGHT_COUNT = (
    "SELECT count(*) FROM subtasks s WHERE s.status = 'processing' AND s.provider = $1"
)


async def test_every_in_flight_reader_uses_the_one_partial_index(engine: AsyncEngine) -> None:
    """Over 12,000 rows, 400 in flight: count, holder, lease backstop, lost runners, status.

    None of them may scan the table: with the holder and lease indexes gone (0007), each
    reads ix_subtasks_in_flight, whose rows are only the in-flight ones.
    """
    store = PgStore(engine)
    await submit(engine, name="a", n=6_000)
    await submit(engine, name="b", n=6_000, provider="other")
    await claim_rows(store, "standard", 200, "r1", 60.0)
    await claim_rows(store, "standard", 200, "r2", 60.0)
    async with engine.begin() as connection:
        await connection.execute(text("ANALYZE subtasks"))
    plans = {
        # As imgrun_claim runs it since 0007: a generic plan.
        "count": await explain_generic(engine, IN_FLIGHT_COUNT, "text", "'sim'"),
        "held by dead": await explain(engine, liveness_queries.HELD_BY_DEAD.text, PARAMS),
        "held by": await explain(engine, liveness_queries.HELD_BY.text, PARAMS),
        "expired unowned": await explain(engine, liveness_queries.EXPIRED_UNOWNED.text, PARAMS),
        "status processing": await explain(engine, QUERIES["processing"], {}),
    }
    for name, nodes in plans.items():
        scanned = [n.get("Relation Name") for n in nodes if n["Node Type"] == "Seq Scan"]
        assert "subtasks" not in scanned, (name, nodes)
        assert any(n.get("Index Name") == "ix_subtasks_in_flight" for n in nodes), (name, nodes)
    # MARK_LOST writes; its plan is checked without running it.
    async with engine.begin() as connection:
        plan = "\n".join(
            row[0]
            for row in await connection.execute(text(f"EXPLAIN {outbox.MARK_LOST.text}"), PARAMS)
        )
    assert "ix_subtasks_in_flight" in plan and "Seq Scan on subtasks" not in plan, plan


async def test_the_claim_function_plans_once(engine: AsyncEngine) -> None:
    """imgrun_claim() runs with generic plans: no re-planning of its pick at every call."""
    async with engine.connect() as connection:
        configs = (
            await connection.scalars(
                text("SELECT proconfig FROM pg_proc WHERE proname = 'imgrun_claim'")
            )
        ).all()
    # Both overloads: across providers (0009) and for one (0006, for the previous version).
    assert configs == [["plan_cache_mode=force_generic_plan"]] * 2
