"""Every statement imgrun runs: submit, reads for the CLI, and (below) the runner's transitions."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from db.lanes import Lane, fetch_hot
from db.models import Subtask, Task

# Re-exported: the records were defined here first and callers import them from here.
from db.records import (
    ClaimBatch,
    ClaimedSubtask,
    ErrorRecord,
    NewTask,
    Outcome,
    OutcomeKind,
    SubtaskRow,
    TaskIsCanceled,
)

# Shared with `imgrun submit`'s quick path, which runs them without SQLAlchemy.
from db.submit_queries import (
    FIRST_TURN,
    INSERT_TASK,
    SUBTASK_COPY_COLUMNS,
    WAKE_CHANNEL,
    first_turn_args,
    insert_task_args,
    subtask_records,
)

__all__ = [
    "ClaimedSubtask",
    "ErrorRecord",
    "NewTask",
    "Outcome",
    "OutcomeKind",
    "SubtaskRow",
    "TaskIsCanceled",
]


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
        task_id, first_turn = await insert_task_row(connection, task)
        await copy_subtasks(
            connection, task, task_id, first_turn, subtasks, on_progress, progress_every
        )
        await notify_wake(connection, task.pool)
    return task_id


async def notify_wake(connection: AsyncConnection, pool: str) -> None:
    """Wake the runners of `pool`; delivered at commit, so they never wake to unseen rows."""
    await connection.execute(
        text("SELECT pg_notify(:channel, :pool)"), {"channel": WAKE_CHANNEL, "pool": pool}
    )


async def insert_task_row(connection: AsyncConnection, task: NewTask) -> tuple[int, int]:
    """The task row, in the caller's transaction: its id and its subtasks' first turn."""
    # The quick path's text ($1…, which the asyncpg dialect's driver takes as is), run on
    # this connection, so in its transaction: one statement for both submit paths.
    result = await connection.exec_driver_sql(FIRST_TURN, first_turn_args(task))
    first_turn: int = result.scalar_one()
    result = await connection.exec_driver_sql(INSERT_TASK, insert_task_args(task, first_turn))
    task_id: int = result.scalar_one()
    return task_id, first_turn


async def copy_subtasks(
    connection: AsyncConnection,
    task: NewTask,
    task_id: int,
    first_turn: int,
    subtasks: Iterable[SubtaskRow],
    on_progress: Callable[[int], None] | None = None,
    progress_every: int = 5_000,
) -> None:
    """A task's subtasks, as one streamed COPY in the caller's transaction."""

    records = subtask_records(task, task_id, first_turn, subtasks, on_progress, progress_every)
    raw = await connection.get_raw_connection()
    assert raw.driver_connection is not None
    await raw.driver_connection.copy_records_to_table(
        "subtasks", records=records, columns=list(SUBTASK_COPY_COLUMNS)
    )


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


# ---------------------------------------------------------------------------
# The runner's transitions. Every change of a subtask's state is one of these
# statements, each its own transaction; task counters move in the same statement.
# ---------------------------------------------------------------------------


# The claim is one server-side call, imgrun_claim() (its body is in
# migrations/versions/0009_claim_across_providers.py): for each provider in turn it locks the
# provider's row (claims for one provider take turns), skips it in cooldown, spends its rpm
# tokens, and claims within its fleet-wide limit counted after the lock. One round trip, in
# autocommit, whatever the number of providers.
# $2 cast: 0006's one-provider overload stays for runners of the previous version.
CLAIM_CALL = "SELECT * FROM imgrun_claim($1, $2::text[], $3, $4, $5)"


async def claim(
    engine: AsyncEngine | Lane,
    pool: str,
    providers: list[str],
    n: int,
    executor_id: str,
    lease: float,
) -> ClaimBatch:
    """Lease up to `n` due subtasks of `pool`: for each provider in turn, within its limit."""
    records = await fetch_hot(engine, CLAIM_CALL, pool, providers, n, executor_id, lease)
    # A claimed row, or (a NULL id) a provider's status: its cooldown, or whether its limit
    # bound the claim. Positional: the columns after the first three are ClaimedSubtask's.
    rows = [ClaimedSubtask(*record[3:]) for record in records if record["id"] is not None]
    cooldowns = {r["provider_name"]: r["cooldown"] for r in records if r["cooldown"]}
    at_limit = frozenset(r["provider_name"] for r in records if r["at_limit"])
    return ClaimBatch(rows, cooldowns, at_limit)


APPLY_OUTCOMES = text(
    """
    WITH input AS (
        SELECT * FROM unnest(
            CAST(:ids AS bigint[]), CAST(:attempts AS int[]), CAST(:kinds AS text[]),
            CAST(:executors AS text[]), CAST(:results AS text[]), CAST(:errors AS text[]),
            CAST(:delays AS float8[]), CAST(:resets AS bool[])
        ) AS i(id, attempt, kind, executor_id, result, error, delay, reset_job)
    ),
    locked AS (
        -- Lock the reported rows, in id order: concurrent writers never deadlock. Each row
        -- is found from its outcome by primary key (one probe per outcome) and carries that
        -- outcome on: nothing below joins the outcomes to the rows again. (Joining two CTEs
        -- made a nested loop in the generic plan, which estimates 10 outcomes: n x n
        -- comparisons per statement.) No status predicate here on purpose: with one, the
        -- planner may read the partial in-flight index (statistics taken when nothing was
        -- processing say it is empty) as the outer side of a nested loop that rescans the
        -- input once per held row -- quadratic, and the cause of the backlog stall.
        SELECT s.id, s.task_id, s.status, s.executor_id, s.attempts, s.result,
               i.attempt, i.kind, i.executor_id AS reported_by, i.result AS new_result,
               i.error, i.delay, i.reset_job
        FROM input i
        JOIN subtasks s ON s.id = i.id
        ORDER BY s.id
        FOR UPDATE OF s
    ), fenced AS (
        -- Only the lease holder may move a row on: a reaped and re-claimed subtask has
        -- another executor or attempt number, and the stale outcome is dropped.
        SELECT l.id, l.kind, l.new_result AS result, l.error, l.delay, l.reset_job,
               -- Work still to do on a canceled task stops here.
               CASE WHEN t.status = 'canceled' AND l.kind IN ('retry', 'defer', 'release')
                    THEN 'canceled' ELSE l.kind END AS effective
        FROM locked l
        JOIN tasks t ON t.id = l.task_id
        WHERE l.status = 'processing' AND l.executor_id = l.reported_by
          AND l.attempts = l.attempt
    ), recorded_before AS (
        -- The very same completion, already recorded (a flush retried after its commit, a
        -- journal replayed twice): it stands, so its images must not be discarded.
        SELECT l.id
        FROM locked l
        WHERE l.status = 'completed' AND l.kind = 'completed'
          AND l.result = CAST(l.new_result AS jsonb)
    ), updated AS (
        UPDATE subtasks s
        SET status = CASE WHEN f.effective IN ('completed', 'failed', 'canceled')
                          THEN f.effective ELSE 'pending' END,
            result = coalesce(CAST(f.result AS jsonb), s.result),
            error = coalesce(f.error, s.error),
            external_id = CASE WHEN f.reset_job THEN NULL ELSE s.external_id END,
            retry_count = s.retry_count + (f.effective = 'retry')::int,
            deferrals = s.deferrals + (f.effective = 'defer')::int,
            attempts = s.attempts - (f.effective = 'release')::int,
            run_after = CASE WHEN f.effective IN ('retry', 'defer', 'release')
                             THEN now() + make_interval(secs => f.delay) ELSE s.run_after END,
            executor_id = NULL, lease_expires_at = NULL,
            completed_at = CASE WHEN f.effective IN ('completed', 'failed', 'canceled')
                                THEN now() END,
            updated_at = now()
        FROM fenced f WHERE s.id = f.id
        RETURNING s.id, s.task_id, s.pool, s.status
    ), per_task AS (
        SELECT task_id,
               count(*) FILTER (WHERE status = 'completed') AS completed,
               count(*) FILTER (WHERE status = 'failed') AS failed,
               count(*) FILTER (WHERE status = 'canceled') AS canceled
        FROM updated GROUP BY task_id
    ), locked_tasks AS (
        SELECT id FROM tasks WHERE id IN (SELECT task_id FROM per_task) ORDER BY id FOR UPDATE
    ), tasks_updated AS (
        UPDATE tasks t
        SET completed_subtasks = t.completed_subtasks + p.completed,
            failed_subtasks = t.failed_subtasks + p.failed,
            canceled_subtasks = t.canceled_subtasks + p.canceled,
            status = CASE
                WHEN t.status = 'canceled' THEN 'canceled'
                WHEN t.completed_subtasks + p.completed + t.failed_subtasks + p.failed
                     + t.canceled_subtasks + p.canceled < t.total_subtasks THEN t.status
                WHEN t.failed_subtasks + p.failed + t.canceled_subtasks + p.canceled = 0
                     THEN 'completed'
                WHEN t.completed_subtasks + p.completed = 0 THEN 'failed'
                ELSE 'partial' END,
            finished_at = CASE
                WHEN t.completed_subtasks + p.completed + t.failed_subtasks + p.failed
                     + t.canceled_subtasks + p.canceled >= t.total_subtasks
                THEN coalesce(t.finished_at, now()) ELSE t.finished_at END
        FROM per_task p
        WHERE t.id = p.task_id AND t.id IN (SELECT id FROM locked_tasks)
    )

    SELECT pool, count(*) FILTER (WHERE status = 'pending') AS requeued, array_agg(id) AS ids
    FROM updated GROUP BY pool
    UNION ALL
    SELECT NULL, 0, array_agg(id) FROM recorded_before HAVING count(*) > 0
    """
)


async def apply_outcomes(engine: AsyncEngine | Lane, outcomes: Sequence[Outcome]) -> list[int]:
    """Record many attempts' outcomes in one transaction; returns the ids whose outcome stands.

    That is: applied by this call, or (a completion reported again) already recorded as is.
    The others were dropped by the fence: a stale holder's, or a second report that differs.
    """
    if not outcomes:
        return []
    # One statement is one transaction: run alone (autocommit) it needs no BEGIN and COMMIT
    # round trips. A requeue's wake-up then follows the commit instead of riding on it.
    params = _outcome_params(outcomes)
    rows = await fetch_hot(engine, APPLY_OUTCOMES_RAW, *(params[name] for name in _OUTCOME_PARAMS))
    for pool, requeued, _ in rows:
        if pool is not None and requeued:
            await fetch_hot(engine, "SELECT pg_notify($1, $2)", WAKE_CHANNEL, pool)
    return sorted(int(i) for _, _, ids in rows for i in ids)


async def _apply(connection: AsyncConnection, outcomes: Sequence[Outcome]) -> list[int]:
    """APPLY_OUTCOMES within the caller's transaction; wakes the pools it requeued to."""
    if not outcomes:
        return []
    rows = (await connection.execute(APPLY_OUTCOMES, _outcome_params(outcomes))).all()
    for pool, requeued, _ in rows:
        if pool is not None and requeued:
            await _wake(connection, pool)
    return sorted(int(i) for _, _, ids in rows for i in ids)


def _outcome_params(outcomes: Sequence[Outcome]) -> dict[str, list[Any]]:
    """APPLY_OUTCOMES's arrays, one per column."""
    return {
        "ids": [o.subtask_id for o in outcomes],
        "attempts": [o.attempt for o in outcomes],
        "kinds": [o.kind for o in outcomes],
        "executors": [o.executor_id for o in outcomes],
        "results": [json.dumps(o.result) if o.result is not None else None for o in outcomes],
        "errors": [o.error for o in outcomes],
        "delays": [o.delay for o in outcomes],
        "resets": [o.reset_job for o in outcomes],
    }


# The same statement for asyncpg itself: `:name` becomes `$n` in this order (`::` casts stay).
_OUTCOME_PARAMS = ("ids", "attempts", "kinds", "executors", "results", "errors", "delays", "resets")
APPLY_OUTCOMES_RAW = re.sub(
    r"(?<![:\w]):(\w+)",
    lambda m: f"${_OUTCOME_PARAMS.index(m.group(1)) + 1}",
    APPLY_OUTCOMES.text,
)


async def _wake(connection: Any, pool: str) -> None:
    await connection.execute(
        text("SELECT pg_notify(:channel, :pool)"), {"channel": WAKE_CHANNEL, "pool": pool}
    )


async def set_external_id(
    engine: AsyncEngine, subtask_id: int, attempt: int, executor_id: str, external_id: str
) -> bool:
    """Persist an async job's id before polling it; False if the lease was lost."""
    async with engine.begin() as connection:
        result = await connection.execute(
            text(
                "UPDATE subtasks SET external_id = :external_id, updated_at = now()"
                " WHERE id = :id AND attempts = :attempt AND executor_id = :executor"
                " AND status = 'processing'"
            ),
            {
                "external_id": external_id,
                "id": subtask_id,
                "attempt": attempt,
                "executor": executor_id,
            },
        )
        return bool(result.rowcount)


# Routed: only the (pool, provider) pairs a runner claims. Another provider's queue is not
# its work, and waiting for it would keep a routed `--until-idle` runner up forever.
_ROUTED_WORK_REMAINS = text(
    """
    WITH routed AS (
        SELECT * FROM unnest(CAST(:pools AS text[]), CAST(:providers AS text[]))
            AS r(pool, provider)
    )
    SELECT EXISTS (SELECT 1 FROM routed r JOIN subtasks s
                   ON s.status = 'pending' AND s.pool = r.pool AND s.provider = r.provider)
        OR EXISTS (SELECT 1 FROM routed r JOIN subtasks s
                   ON s.status = 'processing' AND s.pool = r.pool AND s.provider = r.provider)
    """
)


async def work_remains(
    engine: AsyncEngine, pools: Sequence[str], routes: Mapping[str, Sequence[str]] | None = None
) -> bool:
    """True while any subtask of `pools` is pending (now or later) or processing.

    With `routes` (pool -> providers), only subtasks of those pairs count.
    """
    if routes is not None:
        pairs = [(pool, name) for pool in pools for name in routes.get(pool, ())]
        async with engine.connect() as connection:
            return bool(
                await connection.scalar(
                    _ROUTED_WORK_REMAINS,
                    {"pools": [p for p, _ in pairs], "providers": [n for _, n in pairs]},
                )
            )
    async with engine.connect() as connection:
        return bool(
            await connection.scalar(
                text(
                    "SELECT EXISTS (SELECT 1 FROM subtasks WHERE status = 'pending'"
                    " AND pool = ANY(CAST(:pools AS text[])))"
                    " OR EXISTS (SELECT 1 FROM subtasks WHERE status = 'processing'"
                    " AND pool = ANY(CAST(:pools AS text[])))"
                ),
                {"pools": list(pools)},
            )
        )


PENDING_COUNT_CAP = 100_000  # the scaling rules need far less; counting stays cheap


async def pending_counts(
    engine: AsyncEngine, pools: Sequence[str], *, cap: int = PENDING_COUNT_CAP
) -> dict[str, int]:
    """Claimable-now subtasks per pool (the scaling signal), counted up to `cap`."""
    async with engine.connect() as connection:
        rows = await connection.execute(
            text(
                "SELECT p.pool, (SELECT count(*) FROM (SELECT 1 FROM subtasks"
                " WHERE status = 'pending' AND pool = p.pool AND run_after <= now()"
                " LIMIT :cap) AS due) FROM unnest(CAST(:pools AS text[])) AS p(pool)"
            ),
            {"pools": list(pools), "cap": cap},
        )
        return {pool: int(count) for pool, count in rows.all()}


async def canceled_among(engine: AsyncEngine, task_ids: Sequence[int]) -> set[int]:
    """Which of these tasks have been canceled."""
    if not task_ids:
        return set()
    async with engine.connect() as connection:
        rows = await connection.execute(
            text(
                "SELECT id FROM tasks"
                " WHERE id = ANY(CAST(:ids AS bigint[])) AND status = 'canceled'"
            ),
            {"ids": list(task_ids)},
        )
        return {row[0] for row in rows.all()}


# --- errors ----------------------------------------------------------------

RECORD_ERRORS = text(
    """
    INSERT INTO error_logs AS e (error_type, error_message, stack_trace, pool, provider,
                                 count, recovered, last_subtask_id)
    SELECT * FROM unnest(CAST(:types AS text[]), CAST(:messages AS text[]),
                         CAST(:traces AS text[]), CAST(:pools AS text[]),
                         CAST(:providers AS text[]), CAST(:counts AS bigint[]),
                         CAST(:recovered AS bigint[]), CAST(:subtasks AS bigint[]))
    ON CONFLICT (error_type, error_message) DO UPDATE
    SET count = e.count + excluded.count, recovered = e.recovered + excluded.recovered,
        last_occurred_at = now(),
        last_subtask_id = coalesce(excluded.last_subtask_id, e.last_subtask_id),
        pool = excluded.pool, provider = excluded.provider
    RETURNING error_type, error_message, (xmax = 0) AS inserted
    """
)


@dataclass
class _Merged:
    """One error_logs key's records of a batch, summed."""

    last: ErrorRecord
    count: int = 0
    recovered: int = 0
    trace: str | None = None  # the first sample trace of the batch
    subtask_id: int | None = None  # the last subtask named


def _merge_errors(records: Sequence[ErrorRecord]) -> list[_Merged]:
    merged: dict[tuple[str, str], _Merged] = {}
    for record in records:
        entry = merged.setdefault((record.error_type, record.fingerprint), _Merged(record))
        entry.last = record
        entry.count += 1
        entry.recovered += record.recovered
        entry.trace = entry.trace or record.stack_trace
        entry.subtask_id = record.subtask_id if record.subtask_id is not None else entry.subtask_id
    return list(merged.values())


async def record_errors(
    engine: AsyncEngine, records: Sequence[ErrorRecord]
) -> list[tuple[str, str]]:
    """Aggregate failures into error_logs; returns the (type, fingerprint) pairs seen first now.

    Recovered occurrences (absorbed by an in-attempt retry) count in `count` and `recovered`.
    """
    if not records:
        return []
    merged = _merge_errors(records)
    rows = [m.last for m in merged]
    params = {
        "types": [r.error_type for r in rows],
        "messages": [r.fingerprint for r in rows],
        "traces": [m.trace for m in merged],
        "pools": [r.pool for r in rows],
        "providers": [r.provider for r in rows],
        "counts": [m.count for m in merged],
        "recovered": [m.recovered for m in merged],
        "subtasks": [m.subtask_id for m in merged],
    }
    async with engine.begin() as connection:
        result = await connection.execute(RECORD_ERRORS, params)
        return [(t, m) for t, m, inserted in result.all() if inserted]


async def top_errors(engine: AsyncEngine, limit: int = 20) -> list[dict[str, Any]]:
    """Aggregated errors, most frequent first."""
    async with engine.connect() as connection:
        rows = await connection.execute(
            text(
                "SELECT id, error_type, error_message, count, recovered, pool, provider,"
                " first_occurred_at,"
                " last_occurred_at, last_subtask_id FROM error_logs"
                " ORDER BY count DESC, last_occurred_at DESC LIMIT :n"
            ),
            {"n": limit},
        )
        return [dict(r) for r in rows.mappings()]


# --- task control ----------------------------------------------------------


async def cancel_task(engine: AsyncEngine, task_id: int) -> dict[str, Any] | None:
    """Cancel a task: pending subtasks at once, in-flight ones when their attempt ends."""
    async with engine.begin() as connection:
        status = await connection.scalar(
            text("SELECT status FROM tasks WHERE id = :id FOR UPDATE"), {"id": task_id}
        )
        if status is None:
            return None
        canceled = (
            await connection.execute(
                text(
                    "UPDATE subtasks SET status = 'canceled', completed_at = now(),"
                    " updated_at = now() WHERE task_id = :id AND status = 'pending'"
                ),
                {"id": task_id},
            )
        ).rowcount
        await connection.execute(
            text(
                "UPDATE tasks SET canceled_subtasks = canceled_subtasks + :n,"
                " status = CASE WHEN status IN ('completed', 'failed', 'partial') THEN status"
                " ELSE 'canceled' END,"
                " finished_at = CASE WHEN status IN ('completed', 'failed', 'partial')"
                " THEN finished_at ELSE now() END WHERE id = :id"
            ),
            {"id": task_id, "n": canceled},
        )
        in_flight = await connection.scalar(
            text("SELECT count(*) FROM subtasks WHERE task_id = :id AND status = 'processing'"),
            {"id": task_id},
        )
        return {
            "task_id": task_id,
            "previous_status": status,
            "canceled": canceled,
            "in_flight": int(in_flight or 0),
        }


async def retry_task(engine: AsyncEngine, task_id: int) -> dict[str, Any] | None:
    """Put a task's failed subtasks back to pending with a fresh retry budget.

    Raises TaskIsCanceled for a canceled task: a retry never silently un-cancels one.
    """
    async with engine.begin() as connection:
        row = (
            await connection.execute(
                text("SELECT status, pool FROM tasks WHERE id = :id FOR UPDATE"), {"id": task_id}
            )
        ).first()
        if row is None:
            return None
        if row.status == "canceled":
            raise TaskIsCanceled(task_id)
        requeued = (
            await connection.execute(
                text(
                    "UPDATE subtasks SET status = 'pending', retry_count = 0, deferrals = 0,"
                    " run_after = now(), completed_at = NULL, external_id = NULL,"
                    " updated_at = now() WHERE task_id = :id AND status = 'failed'"
                ),
                {"id": task_id},
            )
        ).rowcount
        if requeued:
            await connection.execute(
                text(
                    "UPDATE tasks SET failed_subtasks = failed_subtasks - :n, status = 'running',"
                    " finished_at = NULL WHERE id = :id"
                ),
                {"id": task_id, "n": requeued},
            )
            await _wake(connection, row.pool)
        return {"task_id": task_id, "requeued": requeued}


async def demo_report(engine: AsyncEngine, task_ids: Sequence[int]) -> dict[str, Any]:
    """Tasks, image paths, retry and deferral totals, and errors of the given tasks."""
    ids = {"ids": list(task_ids)}
    async with engine.connect() as connection:
        tasks = await connection.execute(
            select(*TASK_LIST_COLUMNS).where(Task.id.in_(task_ids)).order_by(Task.id)
        )
        paths = await connection.execute(
            text(
                "SELECT image->>'path' FROM subtasks,"
                " jsonb_array_elements(result->'images') AS image"
                " WHERE task_id = ANY(CAST(:ids AS bigint[])) AND status = 'completed'"
                " ORDER BY task_id, ordinal"
            ),
            ids,
        )
        totals = (
            await connection.execute(
                text(
                    "SELECT coalesce(sum(retry_count), 0), coalesce(sum(deferrals), 0)"
                    " FROM subtasks WHERE task_id = ANY(CAST(:ids AS bigint[]))"
                ),
                ids,
            )
        ).one()
        errors = await connection.execute(
            text(
                "SELECT e.error_type, e.error_message, e.count, e.recovered FROM error_logs e"
                " JOIN subtasks s ON s.id = e.last_subtask_id"
                " WHERE s.task_id = ANY(CAST(:ids AS bigint[])) ORDER BY e.count DESC LIMIT 5"
            ),
            ids,
        )
        return {
            "tasks": [dict(r) for r in tasks.mappings()],
            "images": [row[0] for row in paths.all()],
            "retries": int(totals[0]),
            "deferrals": int(totals[1]),
            "errors": [dict(r) for r in errors.mappings()],
        }
