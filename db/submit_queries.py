"""The submit's statements on a bare asyncpg connection: `imgrun submit`'s quick path.

Importing SQLAlchemy's engine, ORM and the models costs a short CLI process ~0.3 s of CPU,
a sixth of a 100,000-subtask submit; this path needs none of them (see PERFORMANCE.md). It
runs only on a schema at HEAD; the caller falls back to the engine (which migrates) otherwise.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import asyncpg

from db.migrate import HEAD
from db.records import NewTask, SubtaskRow

# Channel that wakes runners: payload is the pool name.
WAKE_CHANNEL = "imgrun_wake"

SUBTASK_COPY_COLUMNS = (
    "task_id",
    "ordinal",
    "pool",
    "provider",
    "priority",
    "turn",
    "prompt",
    "params",
)

# The task row's two statements: one text for both submit paths, this one and the engine's
# (db.queries.insert_task_row hands the same text to its connection's driver).
#
# Fair share: a new task's first turn is the earliest turn still waiting at its priority, for
# its pool and provider. Its subtasks then alternate with the older tasks' rest instead of
# queueing behind all of it (one probe of the claim index). Arguments: first_turn_args().
FIRST_TURN = """
    SELECT coalesce((
        SELECT turn FROM subtasks
        WHERE status = 'pending' AND pool = $1 AND provider = $2 AND priority = $3
        ORDER BY turn LIMIT 1), 0)
"""

# Arguments: insert_task_args().
INSERT_TASK = """
    INSERT INTO tasks (
        name, user_id, pool, provider, priority, prompts, variables, ratio, seed, batch_size,
        polish, max_retries, total_subtasks, total_images, status, turn_end)
    VALUES ($1, $2, $3, $4, $5, $6::jsonb, $7::jsonb, $8, $9, $10, $11, $12, $13, $14,
        'pending', $15)
    RETURNING id
"""


def first_turn_args(task: NewTask) -> tuple[Any, ...]:
    """FIRST_TURN's arguments ($1…) for `task`."""
    return (task.pool, task.provider, task.priority)


def insert_task_args(task: NewTask, first_turn: int) -> tuple[Any, ...]:
    """INSERT_TASK's arguments ($1…) for `task`, whose subtasks start at `first_turn`."""
    return (
        *(task.name, task.user_id, task.pool, task.provider, task.priority),
        json.dumps(task.prompts),
        json.dumps(task.variables),
        *(task.ratio, task.seed, task.batch_size, task.polish, task.max_retries),
        *(task.total_subtasks, task.total_images, first_turn + task.total_subtasks),
    )


def connect_args(url: str) -> dict[str, Any]:
    """asyncpg.connect() keywords for a normalised URL, as SQLAlchemy's dialect makes them."""
    from sqlalchemy.dialects.postgresql.asyncpg import PGDialect_asyncpg
    from sqlalchemy.engine import make_url

    dialect = PGDialect_asyncpg()  # type: ignore[no-untyped-call]
    _, options = dialect.create_connect_args(make_url(url))  # type: ignore[no-untyped-call]
    # SQLAlchemy's own adapter settings, not asyncpg's (its dbapi shim pops them too).
    options.pop("prepared_statement_cache_size", None)
    options.pop("prepared_statement_name_func", None)
    return dict(options)


async def schema_is_current(connection: asyncpg.Connection) -> bool:
    """True when the database is migrated to HEAD (so nothing needs alembic)."""
    try:
        return bool(await connection.fetchval("SELECT version_num FROM alembic_version") == HEAD)
    except asyncpg.UndefinedTableError:
        return False


def subtask_records(
    task: NewTask,
    task_id: int,
    first_turn: int,
    subtasks: Iterable[SubtaskRow],
    on_progress: Callable[[int], None] | None = None,
    progress_every: int = 5_000,
) -> Iterator[tuple[Any, ...]]:
    """COPY records in SUBTASK_COPY_COLUMNS order, streamed (reporting progress as they go)."""
    # A generator, not a list: the server inserts while we are still expanding. A plain
    # one, not async: asyncpg still streams it, at ~20 ms less CPU per 100k rows.
    pool, provider, priority = task.pool, task.provider, task.priority
    for count, (ordinal, prompt, params) in enumerate(subtasks, 1):
        yield (task_id, ordinal, pool, provider, priority, first_turn + ordinal, prompt, params)
        if on_progress and count % progress_every == 0:
            on_progress(progress_every)
    if on_progress:
        on_progress(task.total_subtasks % progress_every)


async def submit_on(
    connection: asyncpg.Connection,
    task: NewTask,
    subtasks: Iterable[SubtaskRow],
    *,
    on_progress: Callable[[int], None] | None = None,
) -> int:
    """The task and all its subtasks in one transaction (one streamed COPY); returns its id."""
    async with connection.transaction():
        first_turn: int = await connection.fetchval(FIRST_TURN, *first_turn_args(task))
        task_id: int = await connection.fetchval(INSERT_TASK, *insert_task_args(task, first_turn))
        records = subtask_records(task, task_id, first_turn, subtasks, on_progress)
        await connection.copy_records_to_table(
            "subtasks", records=records, columns=list(SUBTASK_COPY_COLUMNS)
        )
        # Delivered at commit, so runners never wake to rows they cannot see yet.
        await connection.execute("SELECT pg_notify($1, $2)", WAKE_CHANNEL, task.pool)
    return task_id
