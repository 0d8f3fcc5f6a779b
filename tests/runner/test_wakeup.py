"""An idle runner starts new work on its wake-up, not on its next poll, across a lost connection."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from runner.loop.executor import Executor
from runner.loop.service import serve
from tests.runner.conftest import make_config, runner_settings, status_counts, submit, wait_until
from workers.sim.app import RunningSim

pytestmark = pytest.mark.anyio

POLL = 60.0  # seconds: far past every deadline below, so only a wake-up can start the work
PROMPT = 10.0  # seconds a wake-up may take here, even on a loaded machine


async def drop_claim_lanes(engine: AsyncEngine) -> int:
    """Terminate the runner's claim lanes (the backends that last claimed or LISTENed)."""
    async with engine.connect() as connection:
        dropped = await connection.scalar(
            text(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
                " AND (query LIKE '%imgrun_claim%' OR query LIKE 'LISTEN%')"
            )
        )
    return int(dropped or 0)


async def test_an_idle_runner_starts_each_submit_on_its_wake_up(
    engine: AsyncEngine, tmp_path: Path, database_url: str, sim: RunningSim
) -> None:
    """Three submits to a runner that polls once a minute, then one after its connections die."""
    settings = runner_settings(sim.url, {"runner": {"poll_interval": POLL}})
    config, env = make_config(tmp_path, database_url, settings)
    executors: list[Executor] = []
    async with anyio.create_task_group() as group:
        group.start_soon(lambda: serve(engine, config, env, on_start=executors.append))
        await wait_until(lambda: started(executors))
        for done in range(1, 4):
            await submit(engine, name=f"round {done}", n=1)
            await wait_until(lambda done=done: completed_at_least(engine, done), timeout=PROMPT)
        assert await drop_claim_lanes(engine) >= 1
        await submit(engine, name="after the loss", n=1)
        await wait_until(lambda: completed_at_least(engine, 4), timeout=PROMPT)
        executors[0].request_stop()
    assert await status_counts(engine) == {"completed": 4}


async def started(executors: list[Executor]) -> bool:
    """Whether serve() has handed us its executor."""
    return bool(executors)


async def completed_at_least(engine: AsyncEngine, count: int) -> bool:
    """Whether `count` subtasks have completed."""
    return (await status_counts(engine)).get("completed", 0) >= count
