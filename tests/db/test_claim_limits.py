"""The claim's fleet-wide bounds (imgrun_claim): the provider's limit, cooldown and rpm budget."""

from __future__ import annotations

import anyio
import anyio.lowlevel
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from db.records import ClaimedSubtask, ProviderBounds
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
            batch = await store.claim("standard", ["sim"], 3, name, 60.0)
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
    first = await store.claim("standard", ["sim"], 10, "r1", 60.0)
    assert len(first.rows) == 3 and first.at_limit == {"sim"}
    assert (await store.claim("standard", ["sim"], 10, "r2", 60.0)).rows == []
    await store.apply_outcomes([outcome(first.rows[0], "completed")])
    again = await store.claim("standard", ["sim"], 1, "r2", 60.0)
    assert len(again.rows) == 1 and not again.at_limit  # asked for 1, the limit allowed 1


async def test_a_queue_run_dry_below_the_limit_is_not_the_limit(
    engine: AsyncEngine, store: PgStore
) -> None:
    """Limit 3, 2 rows due: a claim of 10 gets both and no limit is reported (it would make an
    idle runner ask again every AT_LIMIT_RETRY instead of waiting for a wake-up)."""
    await limited(store, 3)
    await submit(engine, n=2)
    batch = await store.claim("standard", ["sim"], 10, "r1", 60.0)
    assert len(batch.rows) == 2 and not batch.at_limit
    empty = await store.claim("standard", ["sim"], 10, "r1", 60.0)
    assert empty.rows == [] and not empty.at_limit  # one slot left, nothing due


async def test_a_provider_in_cooldown_is_not_claimed(engine: AsyncEngine, store: PgStore) -> None:
    """During its fleet cooldown a provider's rows stay pending; the claim says for how long."""
    await limited(store, 10)
    await submit(engine, n=3)
    async with engine.begin() as connection:
        await connection.execute(
            text("UPDATE providers SET cooldown_until = now() + interval '30 seconds'")
        )
    batch = await store.claim("standard", ["sim"], 3, "r1", 60.0)
    assert batch.rows == [] and 25 < batch.cooldowns["sim"] <= 30
    assert await in_flight(engine) == 0


async def test_the_rpm_budget_bounds_a_claim_and_is_spent(
    engine: AsyncEngine, store: PgStore
) -> None:
    """rpm 120 holds one second's worth, 2 tokens: a claim of 10 gets 2 and spends them."""
    await limited(store, 100, rpm=120)
    await submit(engine, n=10)
    batch = await store.claim("standard", ["sim"], 10, "r1", 60.0)
    assert len(batch.rows) == 2 and batch.at_limit == {"sim"}
    async with engine.connect() as connection:
        tokens = await connection.scalar(text("SELECT tokens FROM providers"))
    assert tokens == pytest.approx(0.0, abs=0.01)


async def test_an_unregistered_provider_claims_nothing(engine: AsyncEngine, store: PgStore) -> None:
    """No providers row yet: nothing is claimed and nothing is written."""
    await submit(engine, n=3)
    batch = await store.claim("standard", ["sim"], 3, "r1", 60.0)
    assert batch.rows == [] and not batch.at_limit and not batch.cooldowns
    assert await in_flight(engine) == 0


# --- one claim across a pool's providers (imgrun_claim since 0009) ---------------------


async def register(store: PgStore, limits: dict[str, int]) -> None:
    """Register providers with fixed fleet-wide limits."""
    await store.register_providers(
        [
            ProviderBounds(n, "fixed", 1, max(lim, 1), None, {"limit": lim})
            for n, lim in limits.items()
        ]
    )


def providers_of(rows: list[ClaimedSubtask]) -> list[str]:
    """Each claimed row's provider, in the order returned."""
    return [row.provider for row in rows]


async def test_one_claim_serves_the_providers_in_the_order_given(
    engine: AsyncEngine, store: PgStore
) -> None:
    """Two due for a, five for b: a claim of 4 takes a's two, then two of b's; b first takes b's."""
    await register(store, {"a": 100, "b": 100})
    await submit(engine, n=2, provider="a")
    await submit(engine, n=5, provider="b")
    first = await store.claim("standard", ["a", "b"], 4, "r1", 60.0)
    assert providers_of(first.rows) == ["a", "a", "b", "b"]
    assert not first.at_limit and not first.cooldowns
    second = await store.claim("standard", ["b", "a"], 4, "r1", 60.0)
    assert providers_of(second.rows) == ["b", "b", "b"]


async def test_each_provider_says_why_it_gave_fewer(engine: AsyncEngine, store: PgStore) -> None:
    """a paused, b at its limit of 1, c not registered: one row (b's), and why for each."""
    await register(store, {"a": 100, "b": 1})
    for provider in ("a", "b", "c"):
        await submit(engine, n=3, provider=provider)
    async with engine.begin() as connection:
        await connection.execute(
            text(
                "UPDATE providers SET cooldown_until = now() + interval '30 seconds'"
                " WHERE name = 'a'"
            )
        )
    batch = await store.claim("standard", ["a", "b", "c"], 5, "r1", 60.0)
    assert providers_of(batch.rows) == ["b"]
    assert set(batch.cooldowns) == {"a"} and 25 < batch.cooldowns["a"] <= 30
    assert batch.at_limit == {"b"}


ROWS = 150  # per provider: enough claims racing that crosswise lock orders would deadlock


async def test_claims_listing_providers_in_opposite_orders_never_deadlock(
    engine: AsyncEngine, store: PgStore
) -> None:
    """Two claimers, [a, b] and [b, a], racing: every row claimed once, no deadlock error.

    Limits of 1 make each claim go on to its second provider while holding the first's row.
    """
    await register(store, {"a": 1, "b": 1})
    await submit(engine, n=ROWS, provider="a")
    await submit(engine, n=ROWS, provider="b")
    claimed: list[int] = []

    async def claimer(name: str, order: list[str]) -> None:
        while True:
            rows = (await store.claim("standard", order, 2, name, 60.0)).rows
            if not rows:
                return
            claimed.extend(row.id for row in rows)
            await store.apply_outcomes([outcome(r, "completed", name) for r in rows])

    with anyio.fail_after(60):
        async with anyio.create_task_group() as group:
            for i in range(2):
                group.start_soon(claimer, f"ab{i}", ["a", "b"])
                group.start_soon(claimer, f"ba{i}", ["b", "a"])
    assert len(claimed) == 2 * ROWS and len(set(claimed)) == 2 * ROWS


async def test_a_runner_of_the_previous_version_still_claims(
    engine: AsyncEngine, store: PgStore
) -> None:
    """Its untyped call (0006's columns) still reaches the one-provider claim, within limits."""
    await limited(store, 2)
    await submit(engine, n=3)
    async with engine.connect() as connection:
        raw = await connection.get_raw_connection()
        driver = raw.driver_connection
        assert driver is not None
        records = await driver.fetch(
            "SELECT * FROM imgrun_claim($1, $2, $3, $4, $5)", "standard", "sim", 5, "old", 60.0
        )
    assert [r["headroom"] for r in records] == [2, 2]
    assert all(r["provider"] == "sim" and r["id"] is not None for r in records)
    assert await in_flight(engine) == 2
