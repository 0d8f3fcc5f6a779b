"""The completion rollup through a real runner: status counts exactly what completed."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from db.snapshots import Completions, decode_completions
from db.store import PgStore
from runner.loop.executor import Executor
from runner.loop.service import serve
from runner.spec.model import expand, parse_spec
from runner.status_read import load_status
from runner.submit import submit
from runner.view.rates import MIN_RATE_SPAN
from tests.runner.conftest import FAST, make_config, wait_until

pytestmark = pytest.mark.anyio


async def submit_null(engine: AsyncEngine, name: str, n: int, batch_size: int) -> int:
    """A task of `n` subtasks on the in-process `null` provider, through the submit path."""
    spec = parse_spec(
        {
            "name": name,
            "prompts": ["a {x}"],
            "variables": {"x": [f"v{i}" for i in range(n)]},
            "provider": "null",
            "pool": "standard",
            "seed": 1,
            "batch_size": batch_size,
        }
    )
    return await submit(PgStore(engine), expand(spec, max_subtasks=10_000), "test")


async def rollups(engine: AsyncEngine) -> list[tuple[str, Completions]]:
    """Every pool rollup in the executors rows, as the status read gets them."""
    rows = await PgStore(engine).load_status_rows()
    return [p for row in rows.executors for p in decode_completions(row["pools"]).items()]


async def total(engine: AsyncEngine) -> int:
    """Σ completions the rollups hold."""
    return sum(sum(c.subtasks) for _, c in await rollups(engine))


async def test_status_counts_exactly_what_the_runner_completed(
    engine: AsyncEngine, tmp_path: Path, database_url: str
) -> None:
    """120 + 80 completions: the rollup holds 200 (400 images), per task; rates follow."""
    first = await submit_null(engine, "first", 120, batch_size=2)
    second = await submit_null(engine, "second", 80, batch_size=2)
    config, env = make_config(tmp_path, database_url, FAST)
    executors: list[Executor] = []
    with anyio.fail_after(60):
        async with anyio.create_task_group() as group:
            group.start_soon(lambda: serve(engine, config, env, on_start=executors.append))

            async def all_counted() -> bool:
                return await total(engine) == 200

            await wait_until(all_counted)
            executors[0].request_stop()

    async with engine.connect() as connection:
        done = await connection.execute(
            text(
                "SELECT count(*), extract(epoch FROM max(s.completed_at) - min(t.started_at)),"
                " extract(epoch FROM max(e.heartbeat_at) - min(t.started_at))"
                " FROM subtasks s JOIN tasks t ON t.id = s.task_id, executors e"
                " WHERE s.status = 'completed'"
            )
        )
        completed, last_done, last_beat = done.one()
    assert completed == 200
    # The stopped runner's last snapshot still speaks for its window: exactly what completed.
    pools = dict(await rollups(engine))
    assert sum(pools["lumina"].subtasks) == 0
    c = pools["standard"]
    assert sum(c.subtasks) == 200
    assert sum(c.images) == 400
    per_task = {task: sum(counts) for task, counts in c.tasks}
    assert per_task == {first: 120, second: 80}

    # All 200 within the 5-minute window, over the time from the first task's start to the
    # runner's final snapshot (at least MIN_RATE_SPAN): between these two bounds.
    snapshot = await load_status(PgStore(engine))
    rate = snapshot.throughput.subtasks_per_min_5m
    fastest = 200 * 60 / max(MIN_RATE_SPAN, float(last_done) - 0.5)
    slowest = 200 * 60 / max(MIN_RATE_SPAN, float(last_beat) + 0.5)
    assert slowest - 0.1 <= rate <= fastest + 0.1
    assert snapshot.throughput.images_per_min_5m == pytest.approx(2 * rate, abs=0.1)
    rates = {t.id: t.rate_per_min for t in snapshot.recent}
    assert rates[first] > rates[second] > 0
    assert rates[first] + rates[second] == pytest.approx(rate, abs=0.2)
