"""Every statement imgrun runs: submit, reads for the CLI, and (below) the runner's transitions."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, insert, select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from db.models import Subtask, Task

# Channel that wakes runners: payload is the pool name.
WAKE_CHANNEL = "imgrun_wake"

SUBTASK_COPY_COLUMNS = ("task_id", "ordinal", "pool", "priority", "prompt", "params")


@dataclass(frozen=True)
class NewTask:
    """A task row to insert, with counts already computed."""

    name: str
    user_id: str
    pool: str
    provider: str
    priority: int
    prompts: list[str]
    variables: dict[str, list[Any]]
    ratio: str
    seed: int
    batch_size: int
    polish: bool
    max_retries: int
    total_subtasks: int
    total_images: int


# (ordinal, rendered prompt, params as a JSON string): tuples, because 100k of them are copied.
SubtaskRow = tuple[int, str, str]


async def submit_task(
    engine: AsyncEngine,
    task: NewTask,
    subtasks: Iterable[SubtaskRow],
    *,
    on_progress: Callable[[int], None] | None = None,
    progress_every: int = 5_000,
) -> int:
    """Insert a task and all its subtasks in one transaction (one streamed COPY); returns its id."""
    async with engine.begin() as connection:
        task_id: int = (
            await connection.execute(
                insert(Task).returning(Task.id), [vars(task) | {"status": "pending"}]
            )
        ).scalar_one()

        async def records() -> AsyncIterator[tuple[Any, ...]]:
            # A generator, not a list: the server inserts while we are still expanding.
            for count, (ordinal, prompt, params) in enumerate(subtasks, 1):
                yield (task_id, ordinal, task.pool, task.priority, prompt, params)
                if on_progress and count % progress_every == 0:
                    on_progress(progress_every)
            if on_progress:
                on_progress(task.total_subtasks % progress_every)

        raw = await connection.get_raw_connection()
        assert raw.driver_connection is not None
        await raw.driver_connection.copy_records_to_table(
            "subtasks", records=records(), columns=list(SUBTASK_COPY_COLUMNS)
        )
        # Delivered at commit, so a runner never wakes to rows it cannot see yet.
        await connection.execute(
            text("SELECT pg_notify(:channel, :pool)"), {"channel": WAKE_CHANNEL, "pool": task.pool}
        )
    return task_id


TASK_LIST_COLUMNS = (
    Task.id,
    Task.name,
    Task.user_id,
    Task.pool,
    Task.provider,
    Task.priority,
    Task.status,
    Task.total_subtasks,
    Task.total_images,
    Task.completed_subtasks,
    Task.failed_subtasks,
    Task.canceled_subtasks,
    Task.created_at,
    Task.started_at,
    Task.finished_at,
)


async def list_tasks(
    engine: AsyncEngine, *, limit: int = 50, active_only: bool = False
) -> list[dict[str, Any]]:
    """Newest tasks first (active first when asked), with their counters."""
    query = select(*TASK_LIST_COLUMNS).order_by(Task.id.desc()).limit(limit)
    if active_only:
        query = query.where(Task.status.in_(("pending", "running")))
    async with engine.connect() as connection:
        return [dict(row) for row in (await connection.execute(query)).mappings()]


async def get_task(engine: AsyncEngine, task_id: int) -> dict[str, Any] | None:
    """One task with its counts by status and its first failed subtasks."""
    async with engine.connect() as connection:
        row = (
            (await connection.execute(select(Task.__table__).where(Task.id == task_id)))
            .mappings()
            .first()
        )
        if row is None:
            return None
        # One index range scan on (task_id, status); fine even for 100k subtasks.
        counts = await connection.execute(
            select(Subtask.status, func.count())
            .where(Subtask.task_id == task_id)
            .group_by(Subtask.status)
        )
        failed = await connection.execute(
            select(Subtask.id, Subtask.ordinal, Subtask.prompt, Subtask.attempts, Subtask.error)
            .where(Subtask.task_id == task_id, Subtask.status == "failed")
            .order_by(Subtask.ordinal)
            .limit(10)
        )
        return {
            **dict(row),
            "counts": {status: count for status, count in counts.all()},
            "failed": [dict(r) for r in failed.mappings()],
        }


def jsonable(value: Any) -> Any:
    """Datetimes as ISO strings, for --json output."""
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    return value
