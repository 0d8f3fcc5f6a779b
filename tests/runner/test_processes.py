"""Runner processes as users run them: several at once, killed, signalled."""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Any

import anyio
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.runner.conftest import (
    assert_counters_consistent,
    finish,
    process_env,
    runner_command,
    runner_settings,
    scalar,
    sim_stats,
    status_counts,
    submit,
    wait_until,
)

pytestmark = pytest.mark.anyio


async def test_two_runners_complete_each_subtask_exactly_once_in_priority_order(
    engine: AsyncEngine, start_sim: Any, tmp_path: Path, database_url: str, cli_env: dict[str, str]
) -> None:
    """2,000 subtasks, two runner processes: one submission per subtask, high priority first."""
    async with start_sim(service_ms=2.0, capacity=64, queue_limit=1000) as sim:
        low = await submit(engine, name="low", n=1000, priority=1)
        high = await submit(engine, name="high", n=1000, priority=9)
        env = process_env(cli_env, tmp_path, database_url, runner_settings(sim.url))
        runners = [
            await anyio.open_process(
                runner_command("--until-idle", "--executor-id", f"r{i}"), env=env
            )
            for i in range(2)
        ]
        assert [await finish(p, 120) for p in runners] == [0, 0]
        stats = await sim_stats(sim)

    assert await status_counts(engine) == {"completed": 2000}
    await assert_counters_consistent(engine)
    by_key = stats["by_key"]
    assert len(by_key) == 2000 and set(by_key.values()) == {1}, "a subtask was submitted twice"
    async with engine.connect() as connection:
        # Priority at claim time: low-priority subtasks started while high ones were still
        # waiting can only be those claimed in batches racing the last high-priority claims.
        late = await connection.scalar(
            text(
                "SELECT count(*) FROM subtasks WHERE task_id = :low AND started_at <"
                " (SELECT max(started_at) FROM subtasks WHERE task_id = :high)"
            ),
            {"low": low, "high": high},
        )
    assert late <= 100, f"{late} low-priority subtasks started before the last high-priority one"


async def test_killed_runner_work_is_finished_by_another_after_lease_expiry(
    engine: AsyncEngine, start_sim: Any, tmp_path: Path, database_url: str, cli_env: dict[str, str]
) -> None:
    """SIGKILL mid-run: once its heartbeat is stale, the other runner finishes everything."""
    async with start_sim(service_ms=300.0, service_sigma=0.0, capacity=32) as sim:
        await submit(engine, n=40)
        settings = runner_settings(sim.url, {"runner": {"lease": 2.0}})
        env = process_env(cli_env, tmp_path, database_url, settings)
        victim = await anyio.open_process(runner_command("--executor-id", "victim"), env=env)

        async def victim_busy() -> bool:
            held = await scalar(
                engine, "SELECT count(*) FROM subtasks WHERE executor_id LIKE 'victim:%'"
            )
            return bool(held)

        try:
            await wait_until(victim_busy)
            victim.send_signal(signal.SIGKILL)
        finally:
            await finish(victim)
        held = await scalar(
            engine,
            "SELECT count(*) FROM subtasks WHERE executor_id LIKE 'victim:%'"
            " AND status = 'processing'",
        )
        assert held > 0
        rescuer = await anyio.open_process(
            runner_command("--until-idle", "--executor-id", "rescuer"), env=env
        )
        assert await finish(rescuer) == 0

    assert await status_counts(engine) == {"completed": 40}
    await assert_counters_consistent(engine)
    rescued = await scalar(
        engine, "SELECT count(*) FROM subtasks WHERE retry_count = 1 AND attempts = 2"
    )
    assert rescued == held, "each orphaned subtask costs exactly one attempt"
    reason = await scalar(
        engine, "SELECT count(*) FROM subtasks WHERE error LIKE '%lease expired%'"
    )
    assert reason == held


async def test_lumina_job_resumes_after_runner_death_without_second_submission(
    engine: AsyncEngine, start_sim: Any, tmp_path: Path, database_url: str, cli_env: dict[str, str]
) -> None:
    """A runner dies after submitting; the next resumes polling the same job id."""
    async with start_sim(service_ms=1500.0, service_sigma=0.0, capacity=8) as sim:
        await submit(engine, n=4, pool="lumina")
        settings = runner_settings(
            sim.url, {"runner": {"lease": 1.5}, "pools": {"lumina": {"initial": 4, "max": 4}}}
        )
        env = process_env(cli_env, tmp_path, database_url, settings)
        victim = await anyio.open_process(runner_command("--executor-id", "victim"), env=env)

        async def all_submitted() -> bool:
            return await scalar(engine, "SELECT count(external_id) FROM subtasks") == 4

        try:
            await wait_until(all_submitted)
            victim.send_signal(signal.SIGKILL)
        finally:
            await finish(victim)
        ids_before = await scalar(engine, "SELECT array_agg(external_id ORDER BY id) FROM subtasks")
        rescuer = await anyio.open_process(runner_command("--until-idle"), env=env)
        assert await finish(rescuer) == 0
        stats = await sim_stats(sim)

    assert await status_counts(engine) == {"completed": 4}
    assert sorted(stats["submissions_by_subtask"].values()) == [1, 1, 1, 1]
    ids_after = await scalar(engine, "SELECT array_agg(external_id ORDER BY id) FROM subtasks")
    assert ids_after == ids_before
    assert await scalar(engine, "SELECT min(attempts) FROM subtasks") == 2


async def test_sigterm_drains_and_returns_unfinished_work(
    engine: AsyncEngine, start_sim: Any, tmp_path: Path, database_url: str, cli_env: dict[str, str]
) -> None:
    """SIGTERM with a short grace: in-flight work goes back to pending, uncounted; exit 0."""
    async with start_sim(service_ms=5000.0, service_sigma=0.0, capacity=32) as sim:
        await submit(engine, n=20)
        settings = runner_settings(sim.url, {"runner": {"shutdown_grace": 0.5}})
        env = process_env(cli_env, tmp_path, database_url, settings)
        runner = await anyio.open_process(runner_command("--executor-id", "drainer"), env=env)

        async def in_flight() -> bool:
            return (
                await scalar(engine, "SELECT count(*) FROM subtasks WHERE status = 'processing'")
                == 10
            )

        try:
            await wait_until(in_flight)
            runner.send_signal(signal.SIGTERM)
        finally:
            status = await finish(runner, 30)
        assert status == 0

    assert await status_counts(engine) == {"pending": 20}
    assert await scalar(engine, "SELECT max(attempts) FROM subtasks") == 0
    assert await scalar(engine, "SELECT state FROM executors WHERE id = 'drainer'") == "stopped"
    assert runner.stderr is not None
    output = b"".join([chunk async for chunk in runner.stderr])
    lines = [json.loads(line) for line in output.decode().splitlines() if line]
    assert any("returning 10 subtasks to pending" in line["message"] for line in lines)


async def test_second_signal_exits_at_once_and_leases_cover_the_rest(
    engine: AsyncEngine, start_sim: Any, tmp_path: Path, database_url: str, cli_env: dict[str, str]
) -> None:
    """Two SIGTERMs: no waiting for the grace period; the in-flight rows keep their leases."""
    async with start_sim(service_ms=20000.0, service_sigma=0.0, capacity=32) as sim:
        await submit(engine, n=5)
        settings = runner_settings(sim.url, {"runner": {"shutdown_grace": 60.0, "lease": 30.0}})
        env = process_env(cli_env, tmp_path, database_url, settings)
        runner = await anyio.open_process(runner_command("--executor-id", "impatient"), env=env)

        async def in_flight() -> bool:
            return (
                await scalar(engine, "SELECT count(*) FROM subtasks WHERE status = 'processing'")
                == 5
            )

        try:
            await wait_until(in_flight)
            runner.send_signal(signal.SIGTERM)

            async def draining() -> bool:
                return runner.stderr is not None and b"finishing in-flight work" in (
                    await runner.stderr.receive()
                )

            await wait_until(draining)
            runner.send_signal(signal.SIGTERM)
            with anyio.fail_after(10):  # far less than the 60 s grace period
                await runner.wait()
        finally:
            await finish(runner)

    held = await scalar(
        engine,
        "SELECT count(*) FROM subtasks WHERE status = 'processing'"
        " AND executor_id LIKE 'impatient:%' AND lease_expires_at > now()",
    )
    assert held == 5, "left for the lease to cover, not lost"
