"""Liveness by runner, with real runner processes: takeover in seconds, restarts, long requests."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import anyio
import pytest
from anyio.abc import Process
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

OLD_LEASE = 60.0  # seconds: how long a SIGKILLed runner's rows used to wait


async def holds(engine: AsyncEngine, executor_id: str, n: int) -> bool:
    """True once `n` rows are processing under a process of `executor_id`."""
    held = await scalar(
        engine,
        "SELECT count(*) FROM subtasks WHERE status = 'processing'"
        f" AND executor_id LIKE '{executor_id}:%'",
    )
    return bool(held == n)


async def test_a_killed_runners_work_is_taken_over_in_seconds_and_done_once(
    engine: AsyncEngine, start_sim: Any, tmp_path: Path, database_url: str, cli_env: dict[str, str]
) -> None:
    """SIGKILL a runner holding 8 subtasks: the live one claims them all well inside 15 s
    (the old lease was 60 s), with the default liveness settings; each completes once.
    """
    # Requests of 10 s: the victim still holds all 8 when it is killed, however slow the
    # survivor is to start on a busy machine.
    async with start_sim(service_ms=10_000.0, service_sigma=0.0, capacity=32) as sim:
        await submit(engine, n=8)
        # The default heartbeat_interval and stale_after, not the tests' fast ones.
        settings = runner_settings(
            sim.url, {"runner": {"heartbeat_interval": 1.0, "stale_after": 4.0, "lease": 600}}
        )
        env = process_env(cli_env, tmp_path, database_url, settings)
        victim = await anyio.open_process(runner_command("--executor-id", "victim"), env=env)
        survivor: Process | None = None
        try:
            await wait_until(lambda: holds(engine, "victim", 8))
            survivor = await anyio.open_process(
                runner_command("--until-idle", "--executor-id", "survivor"), env=env
            )
            await wait_until(
                lambda: scalar(engine, "SELECT count(*) = 1 FROM executors WHERE id = 'survivor'")
            )
            victim.send_signal(signal.SIGKILL)
            await finish(victim)
            killed_at = await scalar(engine, "SELECT extract(epoch FROM now())")
            # The deadline is the assertion: every row the victim held, claimed again.
            await wait_until(lambda: holds(engine, "survivor", 8), timeout=15)
            claimed_at = await scalar(
                engine,
                "SELECT extract(epoch FROM max(updated_at)) FROM subtasks"
                " WHERE executor_id LIKE 'survivor:%'",
            )
            assert claimed_at - killed_at < 15
            assert await finish(survivor, 60) == 0
        finally:
            await finish(victim)
            if survivor is not None:
                await finish(survivor)
        stats = await sim_stats(sim)

    assert await status_counts(engine) == {"completed": 8}
    await assert_counters_consistent(engine)
    assert await scalar(engine, "SELECT count(*) FROM subtasks WHERE attempts = 2") == 8
    assert await scalar(engine, "SELECT state FROM executors WHERE id = 'victim'") == "lost"
    # Each attempt reached the provider once: the survivor's are the recorded ones.
    assert sorted(stats["by_key"].values()) == [1] * 16


async def test_a_restart_under_the_same_id_releases_the_old_rows_and_goes_idle(
    engine: AsyncEngine, start_sim: Any, tmp_path: Path, database_url: str, cli_env: dict[str, str]
) -> None:
    """Killed, then started again as `same`: the new process releases (never adopts) what the
    old one held, does it, and --until-idle returns. A long lease: nothing else frees them.
    """
    async with start_sim(service_ms=5000.0, service_sigma=0.0, capacity=32) as sim:
        await submit(engine, n=6)
        settings = runner_settings(sim.url, {"runner": {"lease": 600}})
        env = process_env(cli_env, tmp_path, database_url, settings)
        first = await anyio.open_process(runner_command("--executor-id", "same"), env=env)
        try:
            await wait_until(lambda: holds(engine, "same", 6))

            async def all_sent() -> bool:
                # Claimed is not yet sent: kill only once every request reached the sim.
                return len((await sim_stats(sim))["by_key"]) == 6

            await wait_until(all_sent)
            first.send_signal(signal.SIGKILL)
        finally:
            await finish(first)
        old_holder = await scalar(engine, "SELECT holder FROM executors WHERE id = 'same'")
        again = await anyio.open_process(
            runner_command("--until-idle", "--executor-id", "same"), env=env
        )
        assert await finish(again, 60) == 0
        stats = await sim_stats(sim)

    assert await status_counts(engine) == {"completed": 6}
    await assert_counters_consistent(engine)
    rows = await scalar(
        engine, "SELECT array_agg(DISTINCT (attempts, retry_count)::text) FROM subtasks"
    )
    assert rows == ["(2,1)"], "each old row released with one attempt counted, then redone"
    new_holder = await scalar(engine, "SELECT holder FROM executors WHERE id = 'same'")
    assert new_holder != old_holder and new_holder.startswith("same:")
    assert sorted(stats["by_key"].values()) == [1] * 12


async def test_a_long_request_is_never_taken_from_a_live_runner(
    engine: AsyncEngine, start_sim: Any, tmp_path: Path, database_url: str, cli_env: dict[str, str]
) -> None:
    """Requests of 4 s, with stale_after 1 s and a 1 s lease, and two runners up: nothing is
    released while its runner beats; every subtask is done at its first attempt.
    """
    async with start_sim(service_ms=4000.0, service_sigma=0.0, capacity=32) as sim:
        await submit(engine, n=6)
        settings = runner_settings(
            sim.url, {"runner": {"heartbeat_interval": 0.2, "stale_after": 1.0, "lease": 1.0}}
        )
        env = process_env(cli_env, tmp_path, database_url, settings)
        runners = [
            await anyio.open_process(
                runner_command("--until-idle", "--executor-id", f"r{i}"), env=env
            )
            for i in range(2)
        ]
        try:
            assert [await finish(p, 60) for p in runners] == [0, 0]
        finally:
            for process in runners:
                await finish(process)
        stats = await sim_stats(sim)

    assert await status_counts(engine) == {"completed": 6}
    await assert_counters_consistent(engine)
    assert await scalar(engine, "SELECT max(attempts) FROM subtasks") == 1
    assert await scalar(engine, "SELECT count(*) FROM error_logs") == 0
    assert sorted(stats["by_key"].values()) == [1] * 6


async def test_a_process_superseded_under_its_id_stops_and_its_late_work_is_dropped(
    engine: AsyncEngine, start_sim: Any, tmp_path: Path, database_url: str, cli_env: dict[str, str]
) -> None:
    """Two live processes started as `dup`: the second takes over (releasing the first's
    rows); the first learns it from its next heartbeat and stops; each subtask is recorded
    once, from the second's attempt.
    """
    # Requests of 10 s: the first process still holds all 4 when the second registers.
    async with start_sim(service_ms=10_000.0, service_sigma=0.0, capacity=32) as sim:
        await submit(engine, n=4)
        settings = runner_settings(sim.url, {"runner": {"lease": 600, "shutdown_grace": 5}})
        env = process_env(cli_env, tmp_path, database_url, settings)
        first = await anyio.open_process(runner_command("--executor-id", "dup"), env=env)
        second: Process | None = None
        try:
            await wait_until(lambda: holds(engine, "dup", 4))
            second = await anyio.open_process(
                runner_command("--until-idle", "--executor-id", "dup"), env=env
            )
            assert await finish(first, 30) == 0, "the superseded process stops by itself"
            assert await finish(second, 60) == 0
        finally:
            await finish(first)
            if second is not None:
                await finish(second)
        assert first.stderr is not None
        log = b"".join([chunk async for chunk in first.stderr]).decode()

    assert "another runner registered under this executor id" in log
    assert await status_counts(engine) == {"completed": 4}
    await assert_counters_consistent(engine)
    assert await scalar(engine, "SELECT count(*) FROM subtasks WHERE attempts = 2") == 4
    assert await scalar(engine, "SELECT state FROM executors WHERE id = 'dup'") == "stopped"
