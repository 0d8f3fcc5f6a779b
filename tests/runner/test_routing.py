"""Routing: a runner claims only the pools and providers it serves; the rest stays untouched."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from runner.loop.service import serve
from tests.runner.conftest import make_config, runner_settings, submit
from workers.sim.app import RunningSim

pytestmark = pytest.mark.anyio


def two_providers(sim_url: str, pools: list[str], providers: list[str]) -> dict[str, Any]:
    """Providers a and b (both the sim, both pools) and a runner routed to `pools`/`providers`."""
    section = {"type": "sim", "base_url": sim_url, "request_attempts": 1}
    return runner_settings(
        sim_url,
        {
            "providers": {"a": section, "b": section},
            "runner": {"pools": pools, "providers": providers},
        },
    )


async def by_task(engine: AsyncEngine) -> dict[int, set[tuple[str, int, str | None]]]:
    """Per task: the distinct (status, attempts, executor_id) of its subtasks."""
    async with engine.connect() as connection:
        rows = await connection.execute(
            text("SELECT task_id, status, attempts, executor_id FROM subtasks")
        )
        found: dict[int, set[tuple[str, int, str | None]]] = {}
        for r in rows:
            found.setdefault(r.task_id, set()).add((r.status, r.attempts, r.executor_id))
        return found


async def run_routed(
    engine: AsyncEngine, tmp_path: Path, database_url: str, settings: dict[str, Any]
) -> None:
    """One in-process runner until its own work is done (it must not wait for the rest)."""
    config, env = make_config(tmp_path, database_url, settings)
    with anyio.fail_after(30):
        await serve(engine, config, env, until_idle=True)


UNTOUCHED = {("pending", 0, None)}
DONE = {("completed", 1, None)}  # once, and the lease's executor cleared


async def test_a_routed_runner_claims_only_its_pool_and_provider(
    engine: AsyncEngine, sim: RunningSim, tmp_path: Path, database_url: str
) -> None:
    """`--pool standard --provider a` completes a's standard work; the rest is never claimed."""
    a_std = await submit(engine, name="a-std", n=6, provider="a")
    b_std = await submit(engine, name="b-std", n=4, provider="b")
    a_lum = await submit(engine, name="a-lum", n=3, provider="a", pool="lumina")
    b_lum = await submit(engine, name="b-lum", n=2, provider="b", pool="lumina")
    await run_routed(engine, tmp_path, database_url, two_providers(sim.url, ["standard"], ["a"]))
    tasks = await by_task(engine)
    assert tasks[a_std] == DONE
    assert tasks[b_std] == tasks[a_lum] == tasks[b_lum] == UNTOUCHED
    # Another runner, routed to lumina and b, takes exactly b's lumina work.
    await run_routed(engine, tmp_path, database_url, two_providers(sim.url, ["lumina"], ["b"]))
    tasks = await by_task(engine)
    assert tasks[b_lum] == DONE
    assert tasks[b_std] == tasks[a_lum] == UNTOUCHED


async def test_a_provider_without_config_is_left_pending_not_failed(
    engine: AsyncEngine, sim: RunningSim, tmp_path: Path, database_url: str
) -> None:
    """Subtasks of a provider this runner has no section for stay pending, with no error."""
    mine = await submit(engine, name="mine", n=4, provider="sim")
    ghost = await submit(engine, name="ghost", n=3, provider="elsewhere")
    await run_routed(engine, tmp_path, database_url, runner_settings(sim.url))
    tasks = await by_task(engine)
    assert tasks[mine] == DONE
    assert tasks[ghost] == UNTOUCHED
    async with engine.connect() as connection:
        assert await connection.scalar(text("SELECT count(*) FROM error_logs")) == 0
        status = await connection.scalar(
            text("SELECT status FROM tasks WHERE id = :t"), {"t": ghost}
        )
    assert status == "pending"
