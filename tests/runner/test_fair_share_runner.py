"""Fair share with a real runner: a small task behind a huge one finishes in its own time."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from runner.loop.service import serve
from tests.runner.conftest import make_config, runner_settings, submit, wait_until

pytestmark = pytest.mark.anyio

LIMIT = 4  # subtasks in flight: pinned, so the count of work done is all that varies
HUGE, SMALL = 800, 20


async def task_row(engine: AsyncEngine, task_id: int) -> dict[str, Any]:
    """A task's status and completed count."""
    async with engine.connect() as connection:
        row = await connection.execute(
            text("SELECT status, completed_subtasks FROM tasks WHERE id = :id"), {"id": task_id}
        )
        return dict(row.mappings().one())


async def test_a_small_task_submitted_behind_a_huge_one_finishes_first(
    engine: AsyncEngine, start_sim: Any, tmp_path: Path, database_url: str
) -> None:
    """While 20 subtasks complete, the huge task completes about as many: they alternate."""
    huge = await submit(engine, name="huge", n=HUGE)
    settings = runner_settings(
        "",
        {
            "pools": {"standard": {"initial": LIMIT, "max": LIMIT}},
            "providers": {"sim": {"policy": "fixed", "initial": LIMIT, "max_concurrency": LIMIT}},
        },
    )
    async with start_sim(service_ms=5.0) as sim:
        settings["providers"]["sim"]["base_url"] = sim.url
        config, env = make_config(tmp_path, database_url, settings)
        with anyio.fail_after(120):
            async with anyio.create_task_group() as group:
                group.start_soon(lambda: serve(engine, config, env, until_idle=True))

                async def huge_started() -> bool:
                    return int((await task_row(engine, huge))["completed_subtasks"]) >= 50

                await wait_until(huge_started)
                small = await submit(engine, name="small", n=SMALL)
                before = int((await task_row(engine, huge))["completed_subtasks"])

                async def small_done() -> bool:
                    return (await task_row(engine, small))["status"] == "completed"

                await wait_until(small_done, every=0.01)
                after = await task_row(engine, huge)
    # Alternating turns: SMALL of the huge task's, plus what was in flight or unrecorded at
    # either end (a pool's worth each side, and a recorder batch). Without fair share the
    # huge task would finish its other ~700 first.
    assert after["status"] == "running"
    assert int(after["completed_subtasks"]) - before <= SMALL + 4 * LIMIT
