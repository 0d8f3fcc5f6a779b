"""The runner rides out a database outage instead of dying."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import anyio
import pytest

from db.embedded import EmbeddedPostgres
from db.engine import open_engine
from runner.loop.executor import Executor
from runner.loop.service import serve
from tests.runner.conftest import (
    assert_counters_consistent,
    make_config,
    runner_settings,
    status_counts,
    submit,
    wait_until,
)

pytestmark = pytest.mark.anyio


async def test_runner_survives_postgres_restart(
    start_sim: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Stop PostgreSQL mid-run, start it again: the same runner finishes every subtask once."""
    caplog.set_level(logging.WARNING)
    server = EmbeddedPostgres(tmp_path / "pg")
    url = server.start()
    try:
        async with start_sim(service_ms=20.0, capacity=16) as sim, open_engine(url) as engine:
            await submit(engine, n=300)
            config, env = make_config(tmp_path, url, runner_settings(sim.url))
            executors: list[Executor] = []
            async with anyio.create_task_group() as group:
                group.start_soon(
                    lambda: serve(engine, config, env, until_idle=True, on_start=executors.append)
                )

                async def some_done() -> bool:
                    return (await status_counts(engine)).get("completed", 0) >= 20

                await wait_until(some_done)
                await anyio.to_thread.run_sync(server.release)  # stops it: we are the only holder

                async def outage_noticed() -> bool:
                    return any("database error" in r.getMessage() for r in caplog.records)

                await wait_until(outage_noticed)
                assert await anyio.to_thread.run_sync(server.start) == url
            counts = await status_counts(engine)
            await assert_counters_consistent(engine)
            stats = await _stats(sim)
    finally:
        server.release()

    assert counts == {"completed": 300}
    # A subtask is sent twice only if its claim committed just as the server went away
    # (its lease then expired); never more.
    assert len(stats["by_key"]) >= 300 and max(stats["by_key"].values()) == 1
    assert not any(r.exc_info for r in caplog.records), "no tracebacks for an outage"


async def _stats(sim: Any) -> dict[str, Any]:
    from tests.runner.conftest import sim_stats

    return await sim_stats(sim)
