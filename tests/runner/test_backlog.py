"""A runner whose database falls behind claims less instead of collapsing (the backlog stall).

The database is slowed for real: a trigger makes every transaction that records a completion
sleep once, so each outcome flush takes a fixed time, as a busy or distant server would.
"""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import anyio
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from db.store import PgStore
from runner.config import RunnerSettings
from runner.loop.duties import reap_once
from runner.loop.service import serve
from tests.runner.conftest import (
    assert_counters_consistent,
    make_config,
    process_env,
    runner_command,
    status_counts,
    submit,
    wait_until,
)
from tests.runner.slowdb import flush_hung, slow_down_flushes, terminate_other_backends

pytestmark = pytest.mark.anyio

LIMIT = 10  # the standard pool, pinned


def null_pool_settings(extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """A pinned standard pool on the in-process `null` provider."""
    settings: dict[str, Any] = {
        "runner": {"heartbeat_interval": 0.3, "lease": 30.0, "poll_interval": 0.2},
        "pools": {"standard": {"initial": LIMIT, "max": LIMIT}},
    }
    for section, values in (extra or {}).items():
        settings[section] = {**settings.get(section, {}), **values}
    return settings


async def count_processing(engine: AsyncEngine) -> int:
    """Rows any runner holds."""
    async with engine.connect() as connection:
        value = await connection.scalar(
            text("SELECT count(*) FROM subtasks WHERE status = 'processing'")
        )
        return int(value or 0)


async def test_slow_database_bounds_rows_held_instead_of_claiming_ahead(
    engine: AsyncEngine, tmp_path: Path, database_url: str
) -> None:
    """Held rows never exceed the pool limit plus one claim batch while flushes lag."""
    await submit(engine, n=3000, provider="null")
    await slow_down_flushes(engine, 0.15)
    config, env = make_config(tmp_path, database_url, null_pool_settings())
    most_held = 0
    executors: list[Any] = []

    async def completed_enough() -> bool:
        nonlocal most_held
        most_held = max(most_held, await count_processing(engine))
        counts = await status_counts(engine)
        return counts.get("completed", 0) >= 200

    async with anyio.create_task_group() as group:
        group.start_soon(
            lambda: serve(engine, config, env, until_idle=True, on_start=executors.append)
        )
        await wait_until(completed_enough, timeout=60, every=0.02)
        executors[0].request_stop()

    # The pool runs LIMIT subtasks; a claim refills at most the free slots, so LIMIT rows
    # (+ one claim batch of at most LIMIT while slots are being handed back) is the ceiling.
    assert most_held <= 2 * LIMIT, f"{most_held} rows held by a runner limited to {LIMIT}"
    counts = await status_counts(engine)
    assert counts.get("processing", 0) == 0, counts
    assert sum(counts.values()) == 3000
    await assert_counters_consistent(engine)


async def test_sigterm_stops_runner_promptly_while_a_flush_hangs(
    engine: AsyncEngine, tmp_path: Path, database_url: str, cli_env: dict[str, str]
) -> None:
    """A hung flush delays shutdown by seconds, not until the database answers."""
    await submit(engine, n=200, provider="null")
    await slow_down_flushes(engine, 600)
    grace = 1.0
    settings = null_pool_settings({"runner": {"shutdown_grace": grace, "lease": 2.0}})
    env = process_env(cli_env, tmp_path, database_url, settings)
    runner = await anyio.open_process(runner_command("--executor-id", "stuck"), env=env)
    try:
        await wait_until(lambda: flush_hung(engine), timeout=30)
        runner.send_signal(signal.SIGTERM)
        with anyio.fail_after(grace + 8):
            code = await runner.wait()
    finally:
        if runner.returncode is None:
            runner.kill()
            await runner.wait()
            assert runner.stderr is not None
            print((await runner.stderr.receive()).decode()[-4000:])
    assert code == 0

    # The database recovers: the dead runner's statements end (a server only notices a
    # vanished client when it next talks to it). Nothing the runner held is lost: its rows
    # stay its own until the lease runs out, then any runner takes them back.
    await terminate_other_backends(engine)
    async with engine.begin() as connection:
        await connection.execute(text("DROP TRIGGER slow_flush ON subtasks"))
    counts = await status_counts(engine)
    assert (
        counts.get("pending", 0) + counts.get("processing", 0) + counts.get("completed", 0) == 200
    )

    async def all_back() -> bool:
        await reap_once(PgStore(engine), RunnerSettings())
        return (await status_counts(engine)).get("processing", 0) == 0

    await wait_until(all_back, timeout=30, every=0.2)
    await assert_counters_consistent(engine)
