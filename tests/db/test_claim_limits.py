"""The claim's fleet-wide bounds (imgrun_claim): the provider's limit, cooldown and rpm budget."""

from __future__ import annotations

import anyio
import anyio.lowlevel
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from db.records import ProviderBounds
from db.store import PgStore
from tests.db.conftest import outcome
from tests.runner.conftest import submit

pytestmark = pytest.mark.anyio


async def limited(store: PgStore, limit: int, rpm: int | None = None) -> None:
    """Register provider `sim` with a fixed fleet-wide limit (and an rpm budget)."""
    bounds = ProviderBounds("sim", "fixed", 1, max(limit, 1), rpm, {"limit": limit})
    await store.register_providers([bounds])


async def in_flight(engine: AsyncEngine) -> int:
    """Rows of `sim` processing now, by the database's count."""
    async with engine.connect() as connection:
        query = "SELECT count(*) FROM subtasks WHERE status = 'processing' AND provider = 'sim'"
        return int(await connection.scalar(text(query)))


async def test_concurrent_claimers_never_exceed_the_fleet_limit(
    engine: AsyncEngine, store: PgStore
) -> None:
    """Four claimers racing under limit 5: together they never hold more than 5 in flight."""
    await limited(store, 5)
    await submit(engine, n=80)
    held = 0  # rows returned by a claim and not yet handed to a completion: a lower bound
    most = 0
    done = 0

    async def claimer(name: str) -> None:
        nonlocal held, most, done
        while done < 80:
            batch = await store.claim("standard", "sim", 3, name, 60.0)
            held += len(batch.rows)
            most = max(most, held)
            await anyio.lowlevel.checkpoint()  # let the others claim while these are held
            held -= len(batch.rows)
            done += len(batch.rows)
            await store.apply_outcomes([outcome(r, "completed", name) for r in batch.rows])

    with anyio.fail_after(60):
        async with anyio.create_task_group() as group:
            for i in range(4):
                group.start_soon(claimer, f"r{i}")
    assert most <= 5
    assert done == 80 and await in_flight(engine) == 0


async def test_a_claim_stops_at_the_limit_and_says_so(engine: AsyncEngine, store: PgStore) -> None:
    """Limit 3: a claim of 10 gets 3 and reports the limit; the next gets none until one ends."""
    await limited(store, 3)
    await submit(engine, n=10)
    first = await store.claim("standard", "sim", 10, "r1", 60.0)
    assert len(first.rows) == 3 and first.at_limit
    assert (await store.claim("standard", "sim", 10, "r2", 60.0)).rows == []
    await store.apply_outcomes([outcome(first.rows[0], "completed")])
    again = await store.claim("standard", "sim", 1, "r2", 60.0)
    assert len(again.rows) == 1 and not again.at_limit  # asked for 1, the limit allowed 1


async def test_a_queue_run_dry_below_the_limit_is_not_the_limit(
    engine: AsyncEngine, store: PgStore
) -> None:
    """Limit 3, 2 rows due: a claim of 10 gets both and no limit is reported (it would make an
    idle runner ask again every AT_LIMIT_RETRY instead of waiting for a wake-up)."""
    await limited(store, 3)
    await submit(engine, n=2)
    batch = await store.claim("standard", "sim", 10, "r1", 60.0)
    assert len(batch.rows) == 2 and not batch.at_limit
    empty = await store.claim("standard", "sim", 10, "r1", 60.0)
    assert empty.rows == [] and not empty.at_limit  # one slot left, nothing due


async def test_a_provider_in_cooldown_is_not_claimed(engine: AsyncEngine, store: PgStore) -> None:
    """During its fleet cooldown a provider's rows stay pending; the claim says for how long."""
    await limited(store, 10)
    await submit(engine, n=3)
    async with engine.begin() as connection:
        await connection.execute(
            text("UPDATE providers SET cooldown_until = now() + interval '30 seconds'")
        )
    batch = await store.claim("standard", "sim", 3, "r1", 60.0)
    assert batch.rows == [] and 25 < batch.cooldown <= 30
    assert await in_flight(engine) == 0


async def test_the_rpm_budget_bounds_a_claim_and_is_spent(
    engine: AsyncEngine, store: PgStore
) -> None:
    """rpm 120 holds one second's worth, 2 tokens: a claim of 10 gets 2 and spends them."""
    await limited(store, 100, rpm=120)
    await submit(engine, n=10)
    batch = await store.claim("standard", "sim", 10, "r1", 60.0)
    assert len(batch.rows) == 2 and batch.at_limit
    async with engine.connect() as connection:
        tokens = await connection.scalar(text("SELECT tokens FROM providers"))
    assert tokens == pytest.approx(0.0, abs=0.01)


async def test_an_unregistered_provider_claims_nothing(engine: AsyncEngine, store: PgStore) -> None:
    """No providers row yet: nothing is claimed and nothing is written."""
    await submit(engine, n=3)
    batch = await store.claim("standard", "sim", 3, "r1", 60.0)
    assert batch.rows == [] and not batch.at_limit and batch.cooldown == 0
    assert await in_flight(engine) == 0
