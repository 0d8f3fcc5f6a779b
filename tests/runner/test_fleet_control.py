"""Fleet-wide provider control with real runner processes: one cap, one pause, one decision."""

from __future__ import annotations

import itertools
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import pytest
from anyio.abc import Process
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.runner.conftest import (
    finish,
    process_env,
    runner_command,
    runner_settings,
    sim_stats,
    status_counts,
    submit,
    wait_until,
)
from workers.sim.app import RunningSim

pytestmark = pytest.mark.anyio

RUNNERS = 3


async def start_runners(env: dict[str, str], *args: str) -> list[Process]:
    """RUNNERS runner processes with the same config."""
    return [
        await anyio.open_process(runner_command(*args, "--executor-id", f"r{i}"), env=env)
        for i in range(RUNNERS)
    ]


async def stop(runners: Sequence[Process]) -> list[int]:
    """SIGTERM each runner still running and wait for all of them."""
    for runner in runners:
        if runner.returncode is None:
            runner.terminate()
    return [await finish(runner) for runner in runners]


async def provider_row(engine: AsyncEngine, name: str) -> dict[str, Any]:
    """The provider's fleet-wide row, with times as epoch seconds and the DB's now."""
    async with engine.connect() as connection:
        row = (
            await connection.execute(
                text(
                    'SELECT "limit", decisions, extract(epoch FROM cooldown_until) AS until,'
                    " extract(epoch FROM now()) AS now FROM providers WHERE name = :name"
                ),
                {"name": name},
            )
        ).one_or_none()
    if row is None:
        return {}
    decisions = row.decisions if isinstance(row.decisions, list) else json.loads(row.decisions)
    until = float(row.until) if row.until is not None else None
    return {"limit": row.limit, "decisions": decisions, "until": until, "now": float(row.now)}


async def live_config(sim: RunningSim, **changes: Any) -> None:
    """Change the sim live through POST /_sim/config."""
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{sim.url}/_sim/config", json=changes) as response,
    ):
        assert response.status == 200, await response.text()


async def test_three_runners_never_exceed_the_providers_max_concurrency(
    engine: AsyncEngine, start_sim: Any, tmp_path: Path, database_url: str, cli_env: dict[str, str]
) -> None:
    """Each runner may hold 20, the provider allows 6 fleet-wide: the sim never sees a 7th."""
    async with start_sim(service_ms=40.0, capacity=64, queue_limit=1000) as sim:
        await submit(engine, n=150)
        settings = runner_settings(
            sim.url,
            {
                "providers": {"sim": {"initial": 6, "max_concurrency": 6}},
                "pools": {"standard": {"max": 20}},
            },
        )
        env = process_env(cli_env, tmp_path, database_url, settings)
        runners = await start_runners(env, "--until-idle")
        assert await stop_when_done(runners) == [0] * RUNNERS
        stats = await sim_stats(sim)

    assert await status_counts(engine) == {"completed": 150}
    assert stats["max_in_flight"] <= 6, f"the fleet sent {stats['max_in_flight']} at once"
    # The cap was reached, so the claim (not a lack of work) is what held the rest back.
    assert stats["max_in_flight"] == 6
    async with engine.connect() as connection:
        busy = await connection.scalar(
            text("SELECT count(DISTINCT executor_id) FROM provider_reports WHERE completions > 0")
        )
    # More than one runner shared the cap (which runner gets a freed slot is a race, and
    # the one that freed it is often first; sharing, not evenness, is what is checked).
    assert busy >= 2, "the cap was shared by the fleet"


async def stop_when_done(runners: Sequence[Process], timeout: float = 60) -> list[int]:
    """Runners started with --until-idle: their exit codes (killed at the deadline)."""
    return [await finish(runner, timeout) for runner in runners]


async def test_retry_after_pauses_every_runner_for_that_provider_only(
    engine: AsyncEngine, start_sim: Any, tmp_path: Path, database_url: str, cli_env: dict[str, str]
) -> None:
    """A 429 with Retry-After 3 from provider a stops every runner's claims for a; b goes on."""
    async with (
        start_sim(service_ms=100.0, service_sigma=0.0, capacity=64, retry_after_s=3) as sim_a,
        start_sim(service_ms=100.0, service_sigma=0.0, capacity=64) as sim_b,
    ):
        fixed = {"type": "sim", "request_attempts": 1, "policy": "fixed", "initial": 8}
        settings = runner_settings(
            sim_a.url,
            {
                "providers": {
                    "a": {**fixed, "base_url": sim_a.url, "max_concurrency": 8},
                    "b": {**fixed, "base_url": sim_b.url, "max_concurrency": 8},
                }
            },
        )
        task_a = await submit(engine, name="a", n=120, provider="a")
        task_b = await submit(engine, name="b", n=500, provider="b")
        env = process_env(cli_env, tmp_path, database_url, settings)
        runners = await start_runners(env, "--until-idle")
        try:

            async def both_busy() -> bool:
                done = await completed_by_task(engine)
                return done.get(task_a, 0) >= 16 and done.get(task_b, 0) >= 16

            await wait_until(both_busy)
            await live_config(sim_a, rate_limit_rate=1.0)

            async def paused() -> bool:
                row = await provider_row(engine, "a")
                return row.get("until") is not None and row["until"] > row["now"]

            await wait_until(paused)
            await live_config(sim_a, rate_limit_rate=0.0)
            row = await provider_row(engine, "a")
            assert row["until"] - row["now"] <= 3.5, "paused for the Retry-After, not longer"
            # Requests claimed just before the pause may still be on their way: count from
            # when b has completed a few more (b's requests take 100 ms each).
            b_then = (await completed_by_task(engine))[task_b]
            await wait_until(lambda: more_done(engine, task_b, b_then + 8))
            a_requests = (await sim_stats(sim_a))["requests"]
            b_mid = (await completed_by_task(engine))[task_b]
            await wait_until(lambda: more_done(engine, task_b, b_mid + 24))
            row_late = await provider_row(engine, "a")
            assert row_late["now"] < row["until"], "b's progress was checked inside the pause"
            assert (await sim_stats(sim_a))["requests"] == a_requests, "a runner reached a"
            assert await stop_when_done(runners) == [0] * RUNNERS
        finally:
            await stop(runners)

    assert await status_counts(engine) == {"completed": 620}
    async with engine.connect() as connection:
        first_claims = await connection.scalar(
            text(
                "SELECT count(*) FROM subtasks WHERE provider = 'a'"
                " AND started_at >= to_timestamp(:since) AND started_at < to_timestamp(:until)"
            ),
            {"since": row["now"], "until": row["until"]},
        )
        resumed = await connection.scalar(
            text(
                "SELECT count(DISTINCT executor_id) FROM provider_reports WHERE provider = 'a'"
                " AND completions > 0 AND at >= to_timestamp(:until)"
            ),
            {"until": row["until"]},
        )
    assert first_claims == 0, "a subtask of the paused provider was claimed in the pause"
    assert resumed == RUNNERS, "every runner claims the provider again after the pause"


async def completed_by_task(engine: AsyncEngine) -> dict[int, int]:
    """Completed subtasks per task."""
    async with engine.connect() as connection:
        rows = await connection.execute(
            text(
                "SELECT task_id, count(*) FROM subtasks WHERE status = 'completed' GROUP BY task_id"
            )
        )
        return {int(task): int(n) for task, n in rows.all()}


async def more_done(engine: AsyncEngine, task: int, at_least: int) -> bool:
    """Whether `task` has at least `at_least` completed subtasks."""
    return (await completed_by_task(engine)).get(task, 0) >= at_least


async def test_window_decisions_are_made_once_per_window_for_the_whole_fleet(
    engine: AsyncEngine, start_sim: Any, tmp_path: Path, database_url: str, cli_env: dict[str, str]
) -> None:
    """Three runners, a 2-s window, slow start from 2: one ×2 per window, not one per runner."""
    async with start_sim(service_ms=300.0, service_sigma=0.0, capacity=128, queue_limit=0) as sim:
        await submit(engine, n=4000)
        settings = runner_settings(
            sim.url,
            {
                "providers": {"sim": {"initial": 2, "max_concurrency": 64, "window": 2.0}},
                "pools": {"standard": {"max": 64}},
            },
        )
        env = process_env(cli_env, tmp_path, database_url, settings)
        runners = await start_runners(env)
        try:

            async def grown() -> bool:
                row = await provider_row(engine, "sim")
                return len(growth(row.get("decisions", []))) >= 4

            await wait_until(grown, timeout=40)
        finally:
            assert await stop(runners) == [0] * RUNNERS
        decisions = growth((await provider_row(engine, "sim"))["decisions"])

    steps = [(d["from_limit"], d["to_limit"]) for d in decisions]
    # Slow start doubles once per window; three runners each deciding would double thrice.
    assert steps[:4] == [(2, 4), (4, 8), (8, 16), (16, 32)], steps
    times = [d["at"] for d in decisions]
    gaps = [later - earlier for earlier, later in itertools.pairwise(times)]
    assert min(gaps) >= 1.9, f"two decisions in one 2-s window: {gaps}"


def growth(decisions: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The window decisions that grew the limit, oldest first (the row keeps newest first)."""
    return [d for d in reversed(decisions) if str(d["reason"]).startswith("slow start")]
