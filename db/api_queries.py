"""Statements behind the HTTP API and its CLI twins: tokens, keyed submits, pages, manifests."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from db.models import Task
from db.queries import (
    TASK_LIST_COLUMNS,
    NewTask,
    SubtaskRow,
    copy_subtasks,
    insert_task_row,
    notify_wake,
)

# --- tokens --------------------------------------------------------------------------------

# A token's last use is written at most this often: auth stays a read on most requests.
TOUCH_EVERY = 60.0  # seconds


async def create_token(engine: AsyncEngine, name: str, token_hash: str) -> bool:
    """Store a token's hash under `name`; False if the name is taken."""
    async with engine.begin() as connection:
        result = await connection.execute(
            text(
                "INSERT INTO api_tokens (name, token_hash) VALUES (:name, :hash)"
                " ON CONFLICT (name) DO NOTHING"
            ),
            {"name": name, "hash": token_hash},
        )
        return bool(result.rowcount)


async def list_tokens(engine: AsyncEngine) -> list[dict[str, Any]]:
    """Token names with when they were made and last used (never the hashes)."""
    async with engine.connect() as connection:
        rows = await connection.execute(
            text("SELECT name, created_at, last_used_at FROM api_tokens ORDER BY name")
        )
        return [dict(row) for row in rows.mappings()]


async def revoke_token(engine: AsyncEngine, name: str) -> bool:
    """Delete the token `name`; False if there is none."""
    async with engine.begin() as connection:
        result = await connection.execute(
            text("DELETE FROM api_tokens WHERE name = :name"), {"name": name}
        )
        return bool(result.rowcount)


async def has_tokens(engine: AsyncEngine) -> bool:
    """Whether any token exists."""
    async with engine.connect() as connection:
        return bool(await connection.scalar(text("SELECT EXISTS (SELECT 1 FROM api_tokens)")))


async def token_name(engine: AsyncEngine, token_hash: str) -> str | None:
    """The name of the token with this hash (noting its use), or None."""
    async with engine.begin() as connection:
        row = (
            await connection.execute(
                text(
                    "SELECT id, name, last_used_at IS NULL"
                    " OR last_used_at < now() - make_interval(secs => :every) AS stale"
                    " FROM api_tokens WHERE token_hash = :hash"
                ),
                {"hash": token_hash, "every": TOUCH_EVERY},
            )
        ).first()
        if row is None:
            return None
        if row.stale:
            await connection.execute(
                text("UPDATE api_tokens SET last_used_at = now() WHERE id = :id"), {"id": row.id}
            )
        return str(row.name)


# --- submit with an idempotency key -------------------------------------------------------


@dataclass(frozen=True)
class Submitted:
    """The task a keyed submit refers to; `created` is False when the key was seen before."""

    task_id: int
    created: bool


class KeyReused(Exception):
    """The idempotency key already guards a different request."""

    def __init__(self, task_id: int) -> None:
        super().__init__(f"already used for a different request (task {task_id})")
        self.task_id = task_id


class _Taken(Exception):
    """Internal: roll the transaction back, the key belongs to another submit."""


async def submit_task_once(
    engine: AsyncEngine,
    task: NewTask,
    subtasks: Iterable[SubtaskRow],
    *,
    key: str,
    request_hash: str,
) -> Submitted:
    """Like queries.submit_task, but at most once per `key` (same key, other hash: KeyReused)."""
    try:
        async with engine.begin() as connection:
            task_id, first_turn = await insert_task_row(connection, task)
            # A concurrent submit with the same key waits here for ours to commit or roll
            # back, then finds the key taken (or free): one task per key, whatever the timing.
            claimed = await connection.scalar(
                text(
                    "INSERT INTO submissions (key, request_hash, task_id)"
                    " VALUES (:key, :hash, :task_id) ON CONFLICT (key) DO NOTHING RETURNING key"
                ),
                {"key": key, "hash": request_hash, "task_id": task_id},
            )
            if claimed is None:
                raise _Taken
            await copy_subtasks(connection, task, task_id, first_turn, subtasks)
            await notify_wake(connection, task.pool)
            return Submitted(task_id, created=True)
    except _Taken:
        pass
    async with engine.connect() as connection:
        row = (
            await connection.execute(
                text("SELECT request_hash, task_id FROM submissions WHERE key = :key"),
                {"key": key},
            )
        ).one()
    if row.request_hash != request_hash:
        raise KeyReused(int(row.task_id))
    return Submitted(int(row.task_id), created=False)


# --- reads ---------------------------------------------------------------------------------


async def list_tasks_page(
    engine: AsyncEngine, *, status: str | None, limit: int, after: int | None
) -> list[dict[str, Any]]:
    """Tasks newest first (ids below `after`), optionally of one status; `tasks --json` rows."""
    query = select(*TASK_LIST_COLUMNS).order_by(Task.id.desc()).limit(limit)
    if status is not None:
        query = query.where(Task.status == status)
    if after is not None:
        query = query.where(Task.id < after)
    async with engine.connect() as connection:
        return [dict(row) for row in (await connection.execute(query)).mappings()]


async def task_header(engine: AsyncEngine, task_id: int) -> dict[str, Any] | None:
    """A task's list row (no per-status counts), or None."""
    query = select(*TASK_LIST_COLUMNS).where(Task.id == task_id)
    async with engine.connect() as connection:
        row = (await connection.execute(query)).mappings().first()
        return dict(row) if row is not None else None


MANIFEST = text(
    """
    SELECT id, ordinal, prompt, CAST(params->>'seed' AS bigint) AS seed, status,
           coalesce(result->'images', '[]'::jsonb) AS images
    FROM subtasks
    WHERE task_id = :task_id AND ordinal > :after
    ORDER BY ordinal
    LIMIT :limit
    """
)


async def manifest_page(
    engine: AsyncEngine, task_id: int, *, after: int, limit: int
) -> list[dict[str, Any]]:
    """Subtasks of a task in ordinal order after `after`: id, ordinal, prompt, seed, status, images.

    `images` is the stored list (path, sha256, bytes, width, height) of completed subtasks.
    """
    async with engine.connect() as connection:
        rows = await connection.execute(
            MANIFEST, {"task_id": task_id, "after": after, "limit": limit}
        )
        return [dict(row) for row in rows.mappings()]


async def stored_image(
    engine: AsyncEngine, task_id: int, subtask_id: int, index: int
) -> dict[str, Any] | None:
    """The stored record of image `index` of a completed subtask of `task_id`, or None."""
    async with engine.connect() as connection:
        row = await connection.scalar(
            text(
                "SELECT result->'images'->CAST(:index AS int) FROM subtasks"
                " WHERE id = :subtask_id AND task_id = :task_id AND status = 'completed'"
            ),
            {"index": index, "subtask_id": subtask_id, "task_id": task_id},
        )
        return row if isinstance(row, dict) else None


TASK_CHANGES = text(
    """
    SELECT id, name, user_id, pool, provider, status, total_subtasks, completed_subtasks,
           failed_subtasks, canceled_subtasks, total_images, batch_size, created_at,
           started_at, finished_at
    FROM tasks
    WHERE (status IN ('pending', 'running') OR finished_at >= :since)
      AND (CAST(:task_id AS bigint) IS NULL OR id = :task_id)
    ORDER BY id
    LIMIT :limit
    """
)


async def task_changes(
    engine: AsyncEngine, since: datetime, *, task_id: int | None = None, limit: int = 5000
) -> tuple[datetime, list[dict[str, Any]]]:
    """The database's now() and the tasks active, or finished since `since`."""
    async with engine.connect() as connection:
        now = (await connection.execute(text("SELECT now()"))).scalar_one()
        rows = await connection.execute(
            TASK_CHANGES, {"since": since, "task_id": task_id, "limit": limit}
        )
        return now, [dict(row) for row in rows.mappings()]


async def ping(engine: AsyncEngine) -> bool:
    """True when the database answers a trivial query."""
    async with engine.connect() as connection:
        return bool(await connection.scalar(text("SELECT true")))
