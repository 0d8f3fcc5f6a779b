"""A seeded database whose status numbers are known exactly (all times relative to `now`)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from db.queries import NewTask, submit_task
from db.snapshots import Completions, LimitChange, PoolSnapshot

RUNNER_AT = 10_000.0  # runner-live's wall clock at its last heartbeat (any value would do)


@dataclass(frozen=True)
class Seeded:
    """What the seed wrote: its clock and task ids by short name."""

    now: datetime
    ids: dict[str, int]


async def add_task(
    engine: AsyncEngine, name: str, *, n: int, pool: str, priority: int, batch_size: int
) -> int:
    """Queue a task of `n` subtasks through the real submit path."""
    task = NewTask(
        name=name,
        user_id="test",
        pool=pool,
        provider="sim",
        priority=priority,
        prompts=["a {x}"],
        variables={"x": [f"v{i}" for i in range(n)]},
        ratio="1:1",
        seed=1,
        batch_size=batch_size,
        polish=False,
        max_retries=3,
        total_subtasks=n,
        total_images=n * batch_size,
    )
    rows = [(i, f"a v{i}", json.dumps({"seed": 1 + i})) for i in range(n)]
    return await submit_task(engine, task, rows)


def _history(now: datetime, *entries: tuple[float, int, int, str]) -> tuple[LimitChange, ...]:
    return tuple(
        LimitChange(now.timestamp() - ago, from_limit, to_limit, reason)
        for ago, from_limit, to_limit, reason in entries
    )


def pool_snapshot(
    limit: int,
    max_: int,
    running: int,
    pending: int,
    policy: str,
    history: tuple[LimitChange, ...],
    paused_for: float = 0,
) -> dict[str, Any]:
    """One pool as `runner.pool.Pool.snapshot()` writes it into executors.pools."""
    return PoolSnapshot(limit, max_, running, pending, policy, paused_for, history).to_json()


async def seed(engine: AsyncEngine) -> Seeded:
    """Five tasks in every state, five executors (one stale), three aggregated errors.

    alpha   standard prio 5, 10 × batch 2: 4 completed (30/90/200/400 s ago), 1 failed,
            2 processing, 3 pending; started 600 s ago
    lumina  lumina   prio 9, 6 × batch 1: 2 completed (10/100 s ago), 4 pending; started 120 s ago
    waiting standard prio 1, 5 × batch 1: all pending
    done    standard prio 1, 3 × batch 1: completed 2 h ago, finished 1 h ago
    stopped standard prio 3, 4 × batch 1: canceled 5 min ago with 1 still processing

    runner-live's heartbeat (2 s ago) carries the completions rollup of alpha and lumina, on
    its own clock: its snapshot was taken at RUNNER_AT, so "now" is RUNNER_AT + 2 there.
    """
    async with engine.connect() as connection:
        now: datetime = (await connection.execute(text("SELECT now()"))).scalar_one()
    ids = {
        "alpha": await add_task(
            engine, "alpha portraits", n=10, pool="standard", priority=5, batch_size=2
        ),
        "lumina": await add_task(
            engine, "lumina posters", n=6, pool="lumina", priority=9, batch_size=1
        ),
        "waiting": await add_task(
            engine, "waiting task", n=5, pool="standard", priority=1, batch_size=1
        ),
        "done": await add_task(
            engine, "finished batch", n=3, pool="standard", priority=1, batch_size=1
        ),
        "stopped": await add_task(
            engine, "canceled job", n=4, pool="standard", priority=3, batch_size=1
        ),
    }

    async def subtasks(task: str, ordinals: list[int], status: str, seconds: float | None) -> None:
        await connection.execute(
            text(
                "UPDATE subtasks SET status = :status, completed_at = :at, executor_id = :executor,"
                " lease_expires_at = :lease"
                " WHERE task_id = :task AND ordinal = ANY(CAST(:ordinals AS int[]))"
            ),
            {
                "status": status,
                "at": None if seconds is None else now - timedelta(seconds=seconds),
                "executor": "runner-live" if status == "processing" else None,
                "lease": now + timedelta(minutes=1) if status == "processing" else None,
                "task": ids[task],
                "ordinals": ordinals,
            },
        )

    async def task_row(task: str, **fields: Any) -> None:
        sets = ", ".join(f"{key} = :{key}" for key in fields)
        await connection.execute(
            text(f"UPDATE tasks SET {sets} WHERE id = :id"), {**fields, "id": ids[task]}
        )

    def at(seconds: float) -> datetime:
        return now - timedelta(seconds=seconds)

    async with engine.begin() as connection:
        for ordinal, seconds in enumerate((30, 90, 200, 400)):
            await subtasks("alpha", [ordinal], "completed", seconds)
        await subtasks("alpha", [4], "failed", 20)
        await subtasks("alpha", [5, 6], "processing", None)
        await task_row(
            "alpha", status="running", completed_subtasks=4, failed_subtasks=1, started_at=at(600)
        )
        await subtasks("lumina", [0], "completed", 10)
        await subtasks("lumina", [1], "completed", 100)
        await task_row("lumina", status="running", completed_subtasks=2, started_at=at(120))
        await subtasks("done", [0, 1, 2], "completed", 7200)
        await task_row(
            "done",
            status="completed",
            completed_subtasks=3,
            started_at=at(7300),
            finished_at=at(3600),
        )
        await subtasks("stopped", [0], "processing", None)
        await subtasks("stopped", [1, 2, 3], "canceled", 300)
        await task_row(
            "stopped",
            status="canceled",
            canceled_subtasks=3,
            started_at=at(900),
            finished_at=at(300),
        )

        live_pools = {
            "standard": pool_snapshot(
                15,
                50,
                2,
                8,
                "adaptive",
                _history(now, (300, 10, 15, "pending 30 > 2×limit 10, latency ok: 10 → 15")),
            ),
            "lumina": pool_snapshot(
                4,
                20,
                0,
                4,
                "adaptive",
                _history(
                    now,
                    (60, 4, 2, "rate_limited: 4 → 2 (×0.5), paused 5s"),
                    (30, 2, 4, "recovering toward initial 4: 2 → 4"),
                ),
                paused_for=3.5,
            ),
        }
        # alpha 30/90/200/400 s and lumina 10/100 s before now, in the 10 s buckets of the
        # runner's clock (now = RUNNER_AT + 2 there): 9_970, 9_910, 9_800, 9_600 and 9_990, 9_900.
        # Dense from the oldest kept bucket, 9_710: 9_800 is slot 9, 9_910 slot 20, 9_970
        # slot 26; alpha's 400 s completion (9_600) is older than any runner keeps.
        alpha = tuple(1 if slot in (9, 20, 26) else 0 for slot in range(27))
        live_pools["standard"]["completions"] = Completions(
            at=RUNNER_AT,
            since=RUNNER_AT - 900,
            first=9_710.0,
            subtasks=alpha,
            images=tuple(2 * n for n in alpha),
            tasks=((ids["alpha"], alpha),),
        ).to_json()
        lumina = (1,) + (0,) * 8 + (1,)  # 9_900 and 9_990
        live_pools["lumina"]["completions"] = Completions(
            at=RUNNER_AT,
            since=RUNNER_AT - 900,
            first=9_900.0,
            subtasks=lumina,
            images=lumina,
            tasks=((ids["lumina"], lumina),),
        ).to_json()
        two_pools = {
            "standard": pool_snapshot(10, 50, 1, 8, "queue-depth", ()),
            "lumina": pool_snapshot(2, 20, 0, 4, "queue-depth", ()),
        }
        stale_pools = {
            "standard": pool_snapshot(99, 99, 99, 99, "adaptive", ()),
            "lumina": pool_snapshot(99, 99, 99, 99, "adaptive", ()),
        }
        for executor_id, state, beat, pools in (
            ("runner-live", "running", 2, live_pools),
            ("runner-two", "running", 3, two_pools),
            ("runner-stale", "running", 60, stale_pools),
            ("runner-old", "stopped", 30, {}),
            ("runner-ancient", "stopped", 7200, {}),
        ):
            await connection.execute(
                text(
                    'INSERT INTO executors (id, "group", host, pid, version, state, started_at,'
                    " heartbeat_at, pools) VALUES (:id, 'default', :host, 4242, '0.1.0', :state,"
                    " :started, :beat, CAST(:pools AS jsonb))"
                ),
                {
                    "id": executor_id,
                    "host": f"host-{executor_id}",
                    "state": state,
                    "started": at(900),
                    "beat": at(beat),
                    "pools": json.dumps(pools),
                },
            )
        for error_type, message, count, last in (
            ("ProviderError", "HTTP 500 from <url>", 7, 10),
            ("TimeoutError", "request timed out after <n>s", 12, 100),
            ("ContentPolicy", "prompt rejected by the provider", 1, 500),
        ):
            await connection.execute(
                text(
                    "INSERT INTO error_logs (error_type, error_message, pool, provider, count,"
                    " first_occurred_at, last_occurred_at)"
                    " VALUES (:type, :message, 'standard', 'sim', :count, :first, :last)"
                ),
                {
                    "type": error_type,
                    "message": message,
                    "count": count,
                    "first": at(3600),
                    "last": at(last),
                },
            )
    return Seeded(now=now, ids=ids)


@pytest.fixture
async def seeded(engine: AsyncEngine) -> Seeded:
    """The seed above, in this test's fresh database."""
    return await seed(engine)
