"""The providers section read from a real database: what the runners wrote is what status shows."""

from __future__ import annotations

import json
from typing import Any

import anyio
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from db.records import ControlChange, ProviderBounds, ProviderReport
from db.status_queries import LATENCY_PER_REPORT
from db.store import PgStore
from runner.status_read import load_status
from tests.conftest import IMGRUN
from tests.runner.conftest import submit

pytestmark = pytest.mark.anyio


async def fleet(engine: AsyncEngine) -> PgStore:
    """Two providers; alpha has 3 in flight, a minute of reports, an old report and a cut."""
    store = PgStore(engine)
    await store.register_providers(
        [
            ProviderBounds("alpha", "adaptive", 2, 40, 1200, {"limit": 10}),
            ProviderBounds("beta", "fixed", 1, 8, None, {"limit": 8}),
        ]
    )
    await submit(engine, n=5, provider="alpha")
    assert len((await store.claim("standard", ["alpha"], 3, "r1", 60.0)).rows) == 3
    # Two minutes old: outside the one-minute window, so none of it may count.
    await store.insert_reports("old", [ProviderReport("alpha", 50, 50, latencies=(9.0,) * 50)])
    async with engine.begin() as connection:
        await connection.execute(
            text("UPDATE provider_reports SET at = now() - interval '120 seconds'")
        )
    await store.insert_reports(
        "r1",
        [ProviderReport("alpha", 90, 6, 2, 1, 1, latencies=(0.1, 0.2, 0.3, 0.4, 0.5))],
    )
    await store.insert_reports("r2", [ProviderReport("alpha", 0, 0, latencies=(0.6, 0.7))])

    def cut(state: dict[str, Any], now: float) -> ControlChange:
        return ControlChange(state | {"limit": 7}, 7, now + 30.0, "429 with Retry-After 30 s")

    assert await store.record_pressure("alpha", cut) == "429 with Retry-After 30 s"
    return store


async def test_status_shows_what_the_fleet_wrote(engine: AsyncEngine) -> None:
    """Bounds, the cut limit and its reason, in flight, cooldown, 429 share and p50 latency."""
    await fleet(engine)
    alpha, beta = (await load_status(PgStore(engine))).providers
    assert (alpha.name, alpha.policy, alpha.min_limit, alpha.max_concurrency, alpha.rpm) == (
        "alpha",
        "adaptive",
        2,
        40,
        1200,
    )
    assert (alpha.limit, alpha.in_flight) == (7, 3)
    assert 28.0 <= alpha.cooldown_for <= 30.0
    # 90 completions + 6 × 429 + 2 × 503 + 1 timeout + 1 × 5xx = 100 requests, 6 of them 429.
    assert (alpha.requests_1m, alpha.rate_limited_1m, alpha.rate_limited_share) == (100, 6, 0.06)
    assert alpha.latency_p50 == 0.4  # median of 0.1 … 0.7 (the 9 s samples are too old)
    (decision,) = alpha.decisions
    assert (decision.from_limit, decision.to_limit) == (10, 7)
    assert decision.reason == "429 with Retry-After 30 s"
    assert (beta.name, beta.policy, beta.limit, beta.in_flight, beta.cooldown_for) == (
        "beta",
        "fixed",
        8,
        0,
        0.0,
    )
    assert (beta.requests_1m, beta.rate_limited_share, beta.latency_p50, beta.decisions) == (
        0,
        None,
        None,
        (),
    )


async def test_store_provider_rows_match_the_status_read(engine: AsyncEngine) -> None:
    """PgStore.provider_rows gives the same row the status read projects, JSON-ready numbers."""
    store = await fleet(engine)
    rows = {row["name"]: row for row in await store.provider_rows()}
    assert set(rows) == {"alpha", "beta"}
    alpha = rows["alpha"]
    assert (alpha["limit"], alpha["in_flight"], alpha["requests"], alpha["rate_limited"]) == (
        7,
        3,
        100,
        6,
    )
    assert alpha["latency_p50"] == pytest.approx(0.4)
    assert [d["reason"] for d in alpha["decisions"]] == ["429 with Retry-After 30 s"]


async def test_status_json_has_the_providers_section(
    engine: AsyncEngine, database_url: str, cli_env: dict[str, str]
) -> None:
    """`imgrun status --json` carries one object per provider with its decisions."""
    await fleet(engine)
    with anyio.fail_after(60):
        result = await anyio.run_process(
            [*IMGRUN, "status", "--json"],
            env={**cli_env, "IMGRUN_DATABASE_URL": database_url},
            check=False,
        )
    assert result.returncode == 0, result.stderr.decode()
    providers = json.loads(result.stdout)["providers"]
    assert [p["name"] for p in providers] == ["alpha", "beta"]
    alpha = providers[0]
    assert (alpha["limit"], alpha["max_concurrency"], alpha["in_flight"]) == (7, 40, 3)
    assert (alpha["rate_limited_share"], alpha["latency_p50"]) == (0.06, 0.4)
    (decision,) = alpha["decisions"]
    assert (decision["from_limit"], decision["to_limit"]) == (10, 7)
    assert decision["reason"] == "429 with Retry-After 30 s"


async def test_the_median_reads_a_bounded_sample_of_each_report(engine: AsyncEngine) -> None:
    """Only each report's first LATENCY_PER_REPORT samples count: the read stays bounded."""
    store = PgStore(engine)
    await store.register_providers([ProviderBounds("alpha", "fixed", 1, 8, None, {"limit": 8})])
    kept = (1.0,) * LATENCY_PER_REPORT
    await store.insert_reports("r1", [ProviderReport("alpha", 256, latencies=kept + (9.0,) * 224)])
    (alpha,) = (await load_status(store)).providers
    assert alpha.latency_p50 == 1.0  # all 256 samples would give 9.0
