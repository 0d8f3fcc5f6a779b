"""Retention SQL: delete finished tasks, old error rows and settled alert events in small batches.

Every statement touches at most `batch` rows and locks with SKIP LOCKED, so a prune never
waits on a runner and a runner waits on a prune for one short transaction at most.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from db.records import PruneCounts, PrunedBatch

# A finished task: nothing of it will be claimed again (retry aside, which re-opens it).
_OLD_TASK = (
    "status IN ('completed', 'failed', 'partial', 'canceled')"
    " AND finished_at < now() - make_interval(secs => :older_than)"
)

OLD_TASK_IDS = text(
    f"SELECT id FROM tasks WHERE {_OLD_TASK} AND id > :after ORDER BY id LIMIT :limit"
)

# Locked for the batch so a concurrent `retry` waits for it (and a locked one is skipped).
LOCK_TASKS = text(
    f"SELECT id FROM tasks WHERE id = ANY(CAST(:ids AS bigint[])) AND {_OLD_TASK}"
    " ORDER BY id FOR UPDATE SKIP LOCKED"
)

# 'processing' rows are left alone: a canceled task's in-flight attempt still owns its row
# (and may still write its image); the reaper settles it, and a later prune takes it.
DELETE_SUBTASKS = text(
    "DELETE FROM subtasks WHERE id IN (SELECT id FROM subtasks"
    " WHERE task_id = ANY(CAST(:ids AS bigint[])) AND status <> 'processing'"
    " ORDER BY id LIMIT :batch FOR UPDATE SKIP LOCKED)"
    " RETURNING result -> 'images' AS images"
)

DELETE_EMPTY_TASKS = text(
    "DELETE FROM tasks t WHERE t.id = ANY(CAST(:ids AS bigint[]))"
    " AND NOT EXISTS (SELECT 1 FROM subtasks s WHERE s.task_id = t.id)"
)

DELETE_ERROR_LOGS = text(
    "DELETE FROM error_logs WHERE id IN (SELECT id FROM error_logs"
    " WHERE last_occurred_at < now() - make_interval(secs => :older_than)"
    " ORDER BY id LIMIT :batch FOR UPDATE SKIP LOCKED)"
)

# Pending events are still owed to a receiver: only settled ones go.
_OLD_EVENT = (
    "state IN ('delivered', 'failed') AND created_at < now() - make_interval(secs => :older_than)"
)
DELETE_OUTBOX = text(
    f"DELETE FROM outbox WHERE id IN (SELECT id FROM outbox WHERE {_OLD_EVENT}"
    " ORDER BY id LIMIT :batch FOR UPDATE SKIP LOCKED)"
)

COUNT_OLD = text(
    f"""
    WITH old AS (SELECT id FROM tasks WHERE {_OLD_TASK})
    SELECT
        (SELECT count(*) FROM old) AS tasks,
        (SELECT count(*) FROM subtasks WHERE task_id IN (SELECT id FROM old)
            AND status <> 'processing') AS subtasks,
        (SELECT coalesce(sum(jsonb_array_length(result -> 'images')), 0) FROM subtasks
            WHERE task_id IN (SELECT id FROM old) AND status <> 'processing'
            AND jsonb_typeof(result -> 'images') = 'array') AS images,
        (SELECT count(*) FROM error_logs
            WHERE last_occurred_at < now() - make_interval(secs => :older_than)) AS error_logs,
        (SELECT count(*) FROM outbox WHERE {_OLD_EVENT}) AS outbox
    """
)


async def count_old(engine: AsyncEngine, older_than: float) -> PruneCounts:
    """What a prune with this cutoff would remove now (reads only)."""
    async with engine.connect() as connection:
        row = (await connection.execute(COUNT_OLD, {"older_than": older_than})).one()
    return PruneCounts(*(int(value) for value in row))


async def old_task_ids(engine: AsyncEngine, older_than: float, after: int, limit: int) -> list[int]:
    """Ids of finished tasks past the cutoff, ascending from `after` (exclusive)."""
    params = {"older_than": older_than, "after": after, "limit": limit}
    async with engine.connect() as connection:
        return list((await connection.execute(OLD_TASK_IDS, params)).scalars())


async def prune_subtasks(
    engine: AsyncEngine, task_ids: Sequence[int], older_than: float, batch: int
) -> PrunedBatch:
    """One transaction: up to `batch` subtasks of these tasks, then the tasks left empty."""
    async with engine.begin() as connection:
        params = {"ids": list(task_ids), "older_than": older_than}
        locked = list((await connection.execute(LOCK_TASKS, params)).scalars())
        if not locked:
            return PrunedBatch(0, 0, ())
        deleted = await connection.execute(DELETE_SUBTASKS, {"ids": locked, "batch": batch})
        paths = tuple(_image_paths(row.images for row in deleted))
        tasks = await connection.execute(DELETE_EMPTY_TASKS, {"ids": locked})
        return PrunedBatch(deleted.rowcount, tasks.rowcount, paths)


def _image_paths(images: Any) -> list[str]:
    # result.images as the store wrote it: [{path, sha256, ...}]; anything else is skipped.
    paths = []
    for listed in images:
        for image in listed if isinstance(listed, list) else ():
            path = image.get("path") if isinstance(image, dict) else None
            if isinstance(path, str):
                paths.append(path)
    return paths


async def prune_error_logs(engine: AsyncEngine, older_than: float, batch: int) -> int:
    """One transaction: up to `batch` error aggregates not seen since the cutoff."""
    async with engine.begin() as connection:
        params = {"older_than": older_than, "batch": batch}
        return int((await connection.execute(DELETE_ERROR_LOGS, params)).rowcount)


async def prune_outbox(engine: AsyncEngine, older_than: float, batch: int) -> int:
    """One transaction: up to `batch` delivered or failed alert events older than the cutoff."""
    async with engine.begin() as connection:
        params = {"older_than": older_than, "batch": batch}
        return int((await connection.execute(DELETE_OUTBOX, params)).rowcount)


@asynccontextmanager
async def advisory_lock(engine: AsyncEngine, key: int) -> AsyncIterator[bool]:
    """Hold session advisory lock `key` while inside; yields False (and holds nothing) if taken."""
    async with engine.connect() as connection:
        taken = bool(
            await connection.scalar(text("SELECT pg_try_advisory_lock(:key)"), {"key": key})
        )
        await connection.commit()
        try:
            yield taken
        finally:
            if taken:
                await _unlock(connection, key)


async def _unlock(connection: AsyncConnection, key: int) -> None:
    try:
        await connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": key})
        await connection.commit()
    except Exception:
        # The session may be broken (database restarted): never pool a session that might
        # still hold the lock; closing it releases the lock on the server.
        await connection.invalidate()
        raise
