"""The status view's reads: named, cheap queries in one consistent snapshot, rows out.

Every query here is sized by what is *active* (active tasks, live executors), never by the
whole subtasks table nor by the completion rate: task counters give progress and the queue
depth, the partial in-flight index gives what is in flight, and throughput comes from the
completion rollups the runners write into their executors rows each heartbeat (so reading it
costs O(runners); the old ``ix_subtasks_completed_at`` range scan grew with completions/s —
the index is still in the schema but nothing here uses it). Turning the rows into rates, ETAs
and sparklines is pure work and lives on the runner side (runner/view/projection.py).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from db.snapshots import decode_completions

RATE_WINDOWS = (60.0, 300.0)  # seconds: the 1- and 5-minute throughput windows
STOPPED_SHOWN_FOR = 600.0  # seconds a cleanly stopped executor stays in the list

Row = Mapping[str, Any]


@dataclass(frozen=True)
class StatusRows:
    """The raw rows of one status read, all from the same transaction, as of `now`."""

    now: datetime
    queue: tuple[Row, ...]  # per pool: active tasks, remaining subtasks and images
    processing: tuple[Row, ...]  # per pool × task still active: subtasks in flight
    task_starts: tuple[Row, ...]  # id, started_at of each task the runners' rollups name
    active: tuple[Row, ...]  # active tasks, by priority desc then id
    recent: tuple[Row, ...]  # finished tasks, newest first
    errors: tuple[Row, ...]  # aggregated error_logs rows, most frequent first
    executors: tuple[Row, ...]  # running and recently stopped runners (`pools`: raw jsonb)
    providers: tuple[Row, ...] = ()  # fleet-wide provider rows (see PROVIDERS_QUERY)


# --- queries -----------------------------------------------------------------------------
# Named so the benchmark can EXPLAIN each one. All take :now (the snapshot's clock).

QUERIES: dict[str, str] = {
    # Σ over active tasks by pool: the ix_tasks_status_priority range, no subtask rows.
    "queue": """
        SELECT pool, count(*) AS tasks,
               sum(total_subtasks - completed_subtasks - failed_subtasks - canceled_subtasks)
                   AS remaining,
               sum((total_subtasks - completed_subtasks - failed_subtasks - canceled_subtasks)
                   * batch_size) AS remaining_images
        FROM tasks WHERE status IN ('pending', 'running')
        GROUP BY pool
    """,
    # In flight, per pool, split by whether the task is still active: a canceled task's
    # in-flight rows are no longer part of its counters' "remaining". Only the small partial
    # in-flight index (status = 'processing') is read.
    "processing": """
        SELECT s.pool, t.status IN ('pending', 'running') AS active, count(*) AS n
        FROM subtasks s JOIN tasks t ON t.id = s.task_id
        WHERE s.status = 'processing'
        GROUP BY 1, 2
    """,
    # When each task named in the runners' completion rollups started (the rate's span):
    # at most TASKS_KEPT per pool and runner, by primary key.
    "task_starts": """
        SELECT id, started_at FROM tasks WHERE id = ANY(CAST(:ids AS bigint[]))
    """,
    "active_tasks": """
        SELECT id, name, pool, provider, priority, status, total_subtasks, completed_subtasks,
               failed_subtasks, canceled_subtasks, batch_size, total_images, created_at,
               started_at, finished_at
        FROM tasks WHERE status IN ('pending', 'running')
        ORDER BY priority DESC, id
        LIMIT :tasks
    """,
    "recent_tasks": """
        SELECT id, name, pool, provider, priority, status, total_subtasks, completed_subtasks,
               failed_subtasks, canceled_subtasks, batch_size, total_images, created_at,
               started_at, finished_at
        FROM tasks WHERE status NOT IN ('pending', 'running') AND finished_at IS NOT NULL
        ORDER BY finished_at DESC, id DESC
        LIMIT :recent
    """,
    "errors": """
        SELECT error_type, error_message, count, recovered, pool, provider, last_occurred_at
        FROM error_logs
        ORDER BY count DESC, last_occurred_at DESC
        LIMIT :errors
    """,
    # Running ones (live or stale) and the recently stopped: the table never grows with
    # every `imgrun run` ever started.
    "executors": """
        SELECT id, "group", host, pid, version, state, started_at, heartbeat_at, pools,
               extract(epoch FROM CAST(:now AS timestamptz) - heartbeat_at) AS age
        FROM executors
        WHERE state = 'running' OR heartbeat_at > :stopped_since
        ORDER BY state <> 'running', started_at, id
        LIMIT 50
    """,
}


# --- providers ---------------------------------------------------------------------------
PROVIDER_WINDOW = 60.0  # seconds of runner reports behind the 429 share and the p50 latency
PROVIDERS_SHOWN = 50  # rows: a fleet has a handful of providers; this only bounds the read
# The median is of a bounded sample, whatever the size of the fleet: the newest reports'
# first samples (one report per runner per second; a report keeps up to 256).
LATENCY_REPORTS = 120
LATENCY_PER_REPORT = 32

# One row per provider: its fleet-wide row (policy, bounds, limit, cooldown, the newest
# decisions), what is in flight for it fleet-wide (the small partial index on processing rows)
# and the last minute of runner reports (ix_provider_reports_provider_at). The median is taken
# here, over a bounded sample, so the status read never ships the latency samples themselves.
PROVIDERS_QUERY = """
    SELECT p.name, p.policy, p.min_limit, p.max_concurrency, p.rpm, p."limit",
           greatest(0, extract(epoch FROM p.cooldown_until - CAST(:now AS timestamptz)))
               AS cooldown,
           p.decisions,
           (SELECT count(*) FROM subtasks s
            WHERE s.status = 'processing' AND s.provider = p.name) AS in_flight,
           r.requests, r.rate_limited,
           (SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY l)
            FROM (SELECT q.latencies[1:CAST(:per_report AS int)] AS sample
                  FROM provider_reports q
                  WHERE q.provider = p.name AND q.at > :since AND q.at <= :now
                  ORDER BY q.at DESC
                  LIMIT :latency_reports) AS recent,
                 unnest(recent.sample) AS l) AS latency_p50
    FROM providers p
    CROSS JOIN LATERAL (
        SELECT coalesce(sum(completions + rate_limited + unavailable + timeouts
                            + server_errors), 0) AS requests,
               coalesce(sum(rate_limited), 0) AS rate_limited
        FROM provider_reports q
        WHERE q.provider = p.name AND q.at > :since AND q.at <= :now
    ) r
    ORDER BY p.name
    LIMIT :providers
"""
QUERIES["providers"] = PROVIDERS_QUERY


async def provider_rows(connection: AsyncConnection, now: datetime) -> tuple[Row, ...]:
    """Every provider's fleet-wide row as of `now`, with the last PROVIDER_WINDOW of reports."""
    return await _rows(
        connection,
        "providers",
        now=now,
        since=now - timedelta(seconds=PROVIDER_WINDOW),
        providers=PROVIDERS_SHOWN,
        latency_reports=LATENCY_REPORTS,
        per_report=LATENCY_PER_REPORT,
    )


async def load_provider_rows(engine: AsyncEngine) -> tuple[Row, ...]:
    """The providers' rows alone, as of the database's clock."""
    async with engine.connect() as connection:
        now = (await connection.execute(text("SELECT now()"))).scalar_one()
        return await provider_rows(connection, now)


async def load_status_rows(
    engine: AsyncEngine,
    *,
    now: datetime | None = None,
    task_limit: int = 20,
    recent_limit: int = 5,
    error_limit: int = 5,
) -> StatusRows:
    """Read every status query in one read-only, consistent transaction."""
    async with engine.connect() as connection:
        # One snapshot for all queries, so counters and in-flight counts agree.
        connection = await connection.execution_options(
            isolation_level="REPEATABLE READ", postgresql_readonly=True
        )
        async with connection.begin():
            if now is None:
                now = (await connection.execute(text("SELECT now()"))).scalar_one()
            return await _read(
                connection,
                now,
                task_limit=task_limit,
                recent_limit=recent_limit,
                error_limit=error_limit,
            )


async def _rows(connection: AsyncConnection, name: str, **params: Any) -> tuple[Row, ...]:
    result = await connection.execute(text(QUERIES[name]), params)
    return tuple(dict(row) for row in result.mappings())


async def _read(
    connection: AsyncConnection,
    now: datetime,
    *,
    task_limit: int,
    recent_limit: int,
    error_limit: int,
) -> StatusRows:
    executors = await _rows(
        connection, "executors", now=now, stopped_since=now - timedelta(seconds=STOPPED_SHOWN_FOR)
    )
    return StatusRows(
        now=now,
        queue=await _rows(connection, "queue"),
        processing=await _rows(connection, "processing"),
        task_starts=await _rows(connection, "task_starts", ids=rollup_task_ids(executors)),
        active=await _rows(connection, "active_tasks", tasks=task_limit),
        recent=await _rows(connection, "recent_tasks", recent=recent_limit),
        errors=await _rows(connection, "errors", errors=error_limit),
        executors=executors,
        providers=await provider_rows(connection, now),
    )


def rollup_task_ids(executors: Iterable[Row]) -> list[int]:
    """Every task the executors' completion rollups name, ascending."""
    return sorted(
        {
            task
            for row in executors
            for completions in decode_completions(row["pools"]).values()
            for task, _ in completions.tasks
        }
    )
