"""bench/replay.py against the real database: its ticks use the runners' own statements.

No clock is waited on: each tick is called with an explicit `elapsed`.
"""

from __future__ import annotations

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from bench.common import queue_synthetic
from bench.replay import ReplayRunner
from db.snapshots import decode_completions
from db.store import PgStore

pytestmark = pytest.mark.anyio


async def _counts(engine: AsyncEngine, task_id: int) -> tuple[int, dict[str, int]]:
    """The task's completed counter and its subtasks by status."""
    async with engine.connect() as connection:
        completed = await connection.scalar(
            text("SELECT completed_subtasks FROM tasks WHERE id = :id"), {"id": task_id}
        )
        rows = await connection.execute(
            text("SELECT status, count(*) FROM subtasks WHERE task_id = :id GROUP BY status"),
            {"id": task_id},
        )
        return int(completed), {str(status): int(n) for status, n in rows.all()}


async def test_ticks_claim_complete_and_roll_up_like_a_runner(
    engine: AsyncEngine, database_url: str
) -> None:
    """Hold 8, complete what 100/s owes at 50 ms (5), refill; the heartbeat's rollup says 5."""
    task_id = await queue_synthetic(database_url, "replay", 20, provider="null")
    runner = ReplayRunner(PgStore(engine), "replay-test", 100.0, 8)
    await runner.register()

    await runner.tick(0.0)  # nothing owed yet: only the first claim
    assert len(runner.held) == 8
    await runner.tick(0.05)
    assert (runner.completed, runner.fenced, len(runner.held)) == (5, 0, 8)
    assert await _counts(engine, task_id) == (5, {"completed": 5, "processing": 8, "pending": 7})

    await PgStore(engine).heartbeat(runner.holder, runner.snapshot())
    async with engine.connect() as connection:
        pools = await connection.scalar(
            text("SELECT pools FROM executors WHERE holder = :holder"), {"holder": runner.holder}
        )
    rollup = decode_completions(pools)["standard"]
    assert sum(rollup.subtasks) == 5
    assert [(task, sum(counts)) for task, counts in rollup.tasks] == [(task_id, 5)]


async def test_a_row_taken_from_the_replay_is_fenced_out(
    engine: AsyncEngine, database_url: str
) -> None:
    """A held row re-leased to another holder is not completed by the replay's outcome."""
    task_id = await queue_synthetic(database_url, "replay", 10, provider="null")
    runner = ReplayRunner(PgStore(engine), "replay-test", 100.0, 4)
    await runner.register()
    await runner.tick(0.0)
    taken = runner.held[0][0].id
    async with engine.begin() as connection:
        await connection.execute(
            text("UPDATE subtasks SET executor_id = 'someone-else:1' WHERE id = :id"),
            {"id": taken},
        )
    await runner.tick(0.02)  # owes 2: the taken row and one more
    assert (runner.completed, runner.fenced) == (1, 1)
    completed, by_status = await _counts(engine, task_id)
    assert completed == 1
    assert by_status["completed"] == 1


async def test_stop_releases_the_held_rows_and_marks_the_runner_stopped(
    engine: AsyncEngine, database_url: str
) -> None:
    """After stop() nothing is processing, attempts are given back, the row says stopped."""
    task_id = await queue_synthetic(database_url, "replay", 6, provider="null")
    runner = ReplayRunner(PgStore(engine), "replay-test", 100.0, 4)
    await runner.register()
    await runner.tick(0.0)
    await runner.stop()
    assert await _counts(engine, task_id) == (0, {"pending": 6})
    async with engine.connect() as connection:
        state = await connection.scalar(
            text("SELECT state FROM executors WHERE holder = :holder"), {"holder": runner.holder}
        )
        attempts = await connection.scalar(
            text("SELECT max(attempts) FROM subtasks WHERE task_id = :id"), {"id": task_id}
        )
    assert (state, attempts) == ("stopped", 0)


async def test_a_late_tick_refills_within_the_tick_until_the_queue_is_empty(
    engine: AsyncEngine, database_url: str
) -> None:
    """Holding 4 at 100/s, a tick 200 ms in owes 20; the queue has 10: all 10 are made."""
    await queue_synthetic(database_url, "replay", 10, provider="null")
    runner = ReplayRunner(PgStore(engine), "replay-test", 100.0, 4)
    await runner.register()
    await runner.tick(0.0)
    await runner.tick(0.2)
    assert (runner.completed, runner.unheld, runner.pacer.dropped) == (10, 10, 0)
    assert not runner.held
