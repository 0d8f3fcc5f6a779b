"""The operator's status snapshot, read entirely from the database (any machine, any runners).

Every query here is sized by what is *active* (active tasks, live executors, the last few
minutes of completions), never by the whole subtasks table: task counters give progress and
the queue depth, the partial index ``ix_subtasks_completed_at`` gives the throughput window,
and the partial lease index gives what is in flight.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from db.models import POOLS

# A runner heartbeats every 5 s by default; three missed beats make it stale.
STALE_AFTER = 15.0  # seconds
RATE_WINDOWS = (60.0, 300.0)  # seconds: the 1- and 5-minute throughput windows
# A rate measured over less than this is mostly noise (one completion 1 s in = 60/min).
MIN_RATE_SPAN = 10.0  # seconds
SPARKLINE_POINTS = 30
SPARKLINE_SPAN = 600.0  # seconds of limit history in the sparkline
STOPPED_SHOWN_FOR = 600.0  # seconds a cleanly stopped executor stays in the list

ACTIVE = ("pending", "running")


@dataclass(frozen=True)
class ScalingDecision:
    """One limit change made by one runner's policy."""

    at: datetime
    executor_id: str
    limit: int
    reason: str


@dataclass(frozen=True)
class PoolStatus:
    """A pool summed over the live runners, plus its queue from the task counters."""

    name: str
    limit: int  # Σ live runners' limits
    max: int  # Σ live runners' max limits
    running: int  # Σ live runners' in-flight subtasks
    pending: int  # queued and not in flight (includes ones waiting out a retry backoff)
    processing: int  # subtasks in flight according to the database (incl. stale leases)
    claimable: int | None  # claimable now, as last seen by a live runner (None: no runner)
    policy: str | None  # policy name(s) of the live runners
    paused_for: float  # seconds the longest provider pause still has to run
    executors: int  # live runners serving this pool
    images_per_min: float  # over the 5-minute window
    decisions: tuple[ScalingDecision, ...]  # newest first
    limit_history: tuple[int, ...]  # Σ limit sampled over SPARKLINE_SPAN, oldest first


@dataclass(frozen=True)
class Throughput:
    """Images (and subtasks) completed per minute, and when the queue should drain."""

    images_per_min_1m: float
    images_per_min_5m: float
    subtasks_per_min_1m: float
    subtasks_per_min_5m: float
    remaining_images: int
    eta_seconds: float | None  # None: nothing completing, so no estimate


@dataclass(frozen=True)
class TaskProgress:
    """One task's counters with its recent rate."""

    id: int
    name: str
    pool: str
    provider: str
    priority: int
    status: str
    total: int
    completed: int
    failed: int
    canceled: int
    batch_size: int
    total_images: int
    rate_per_min: float  # subtasks per minute over the 5-minute window
    eta_seconds: float | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None

    @property
    def remaining(self) -> int:
        """Subtasks not yet finished one way or another."""
        return max(0, self.total - self.completed - self.failed - self.canceled)


@dataclass(frozen=True)
class ErrorSummary:
    """One aggregated error_logs row."""

    error_type: str
    message: str
    count: int
    pool: str | None
    provider: str | None
    last_seen: datetime


@dataclass(frozen=True)
class ExecutorStatus:
    """One runner process as its heartbeats describe it."""

    id: str
    group: str
    host: str
    pid: int
    version: str
    state: str
    started_at: datetime
    heartbeat_at: datetime
    heartbeat_age: float  # seconds
    stale: bool  # says it is running but stopped heartbeating
    pools: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class StatusSnapshot:
    """Everything the status view shows, as of `at` (the database's clock)."""

    at: datetime
    stale_after: float
    pools: tuple[PoolStatus, ...]
    throughput: Throughput
    active_tasks: int
    tasks: tuple[TaskProgress, ...]  # active, by priority desc then id (first `task_limit`)
    recent: tuple[TaskProgress, ...]  # last finished, newest first
    errors: tuple[ErrorSummary, ...]
    executors: tuple[ExecutorStatus, ...]

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (datetimes as ISO 8601 strings)."""
        data: dict[str, Any] = _jsonable(asdict(self))
        return data


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


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
    # lease index (status = 'processing') is read.
    "processing": """
        SELECT s.pool, t.status IN ('pending', 'running') AS active, count(*) AS n
        FROM subtasks s JOIN tasks t ON t.id = s.task_id
        WHERE s.status = 'processing'
        GROUP BY 1, 2
    """,
    # Completions in the 5-minute window, per task: a range scan of the partial index.
    "window": """
        SELECT w.task_id, t.pool, t.batch_size, t.started_at, w.n_short, w.n_long
        FROM (
            SELECT task_id,
                   count(*) FILTER (WHERE completed_at > :short_since) AS n_short,
                   count(*) AS n_long
            FROM subtasks
            WHERE status = 'completed' AND completed_at > :long_since AND completed_at <= :now
            GROUP BY task_id
        ) w JOIN tasks t ON t.id = w.task_id
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
        SELECT error_type, error_message, count, pool, provider, last_occurred_at
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


async def load_status(
    engine: AsyncEngine,
    *,
    now: datetime | None = None,
    stale_after: float = STALE_AFTER,
    task_limit: int = 20,
    recent_limit: int = 5,
    error_limit: int = 5,
) -> StatusSnapshot:
    """Read the whole status snapshot in one read-only, consistent transaction."""
    async with engine.connect() as connection:
        # One snapshot for all queries, so counters and in-flight counts agree.
        connection = await connection.execution_options(
            isolation_level="REPEATABLE READ", postgresql_readonly=True
        )
        async with connection.begin():
            if now is None:
                now = (await connection.execute(text("SELECT now()"))).scalar_one()
            return await _load(
                connection,
                now,
                stale_after=stale_after,
                task_limit=task_limit,
                recent_limit=recent_limit,
                error_limit=error_limit,
            )


async def _rows(
    connection: AsyncConnection, name: str, **params: Any
) -> Sequence[Mapping[str, Any]]:
    result = await connection.execute(text(QUERIES[name]), params)
    return [dict(row) for row in result.mappings()]


async def _load(
    connection: AsyncConnection,
    now: datetime,
    *,
    stale_after: float,
    task_limit: int,
    recent_limit: int,
    error_limit: int,
) -> StatusSnapshot:
    short, long = RATE_WINDOWS
    queue = await _rows(connection, "queue")
    processing = await _rows(connection, "processing")
    window = await _rows(
        connection,
        "window",
        now=now,
        short_since=now - timedelta(seconds=short),
        long_since=now - timedelta(seconds=long),
    )
    active = await _rows(connection, "active_tasks", tasks=task_limit)
    recent = await _rows(connection, "recent_tasks", recent=recent_limit)
    errors = await _rows(connection, "errors", errors=error_limit)
    executor_rows = await _rows(
        connection,
        "executors",
        now=now,
        stopped_since=now - timedelta(seconds=STOPPED_SHOWN_FOR),
    )

    executors = tuple(_executor(row, stale_after) for row in executor_rows)
    live = [e for e in executors if e.state == "running" and not e.stale]
    rates = _Rates(window, now)
    return StatusSnapshot(
        at=now,
        stale_after=stale_after,
        pools=tuple(
            _pool(name, live, queue, processing, rates.pool_images_per_min(name), now)
            for name in POOLS
        ),
        throughput=rates.throughput(sum(int(r["remaining_images"] or 0) for r in queue)),
        active_tasks=sum(int(r["tasks"]) for r in queue),
        tasks=tuple(_task(row, rates) for row in active),
        recent=tuple(_task(row, rates) for row in recent),
        errors=tuple(
            ErrorSummary(
                error_type=r["error_type"],
                message=r["error_message"],
                count=int(r["count"]),
                pool=r["pool"],
                provider=r["provider"],
                last_seen=r["last_occurred_at"],
            )
            for r in errors
        ),
        executors=executors,
    )


def _executor(row: Mapping[str, Any], stale_after: float) -> ExecutorStatus:
    age = max(0.0, float(row["age"]))
    return ExecutorStatus(
        id=row["id"],
        group=row["group"],
        host=row["host"],
        pid=int(row["pid"]),
        version=row["version"],
        state=row["state"],
        started_at=row["started_at"],
        heartbeat_at=row["heartbeat_at"],
        heartbeat_age=round(age, 1),
        stale=row["state"] == "running" and age > stale_after,
        pools=row["pools"] if isinstance(row["pools"], dict) else {},
    )


class _Rates:
    """Completions in the rate windows, per task, turned into per-minute rates."""

    def __init__(self, window: Iterable[Mapping[str, Any]], now: datetime) -> None:
        self.now = now
        self.rows = {int(r["task_id"]): r for r in window}

    def _span(self, window: float, rows: Sequence[Mapping[str, Any]]) -> float:
        # A task (or the whole run) that began 40 s ago has had 40 s, not 5 min, to
        # complete things: dividing by the full window would understate its rate 7×.
        firsts: list[datetime] = [r["started_at"] for r in rows if r["started_at"] is not None]
        if not firsts:
            return window
        elapsed = (self.now - min(firsts)).total_seconds()
        return max(MIN_RATE_SPAN, min(window, elapsed))

    def per_min(self, rows: Sequence[Mapping[str, Any]], window: float, *, images: bool) -> float:
        """Subtasks (or images: × batch size) per minute over `window` seconds."""
        key = "n_short" if window == RATE_WINDOWS[0] else "n_long"
        count = sum(int(r[key]) * (int(r["batch_size"]) if images else 1) for r in rows)
        return count * 60.0 / self._span(window, rows) if count else 0.0

    def pool_images_per_min(self, pool: str) -> float:
        """Images per minute in `pool` over the long window."""
        rows = [r for r in self.rows.values() if r["pool"] == pool]
        return round(self.per_min(rows, RATE_WINDOWS[1], images=True), 1)

    def task_per_min(self, task_id: int) -> float:
        """Subtasks per minute of one task over the long window."""
        row = self.rows.get(task_id)
        return 0.0 if row is None else self.per_min([row], RATE_WINDOWS[1], images=False)

    def throughput(self, remaining_images: int) -> Throughput:
        """The whole cluster's rates and the queue's ETA (from the 5-minute rate)."""
        rows = list(self.rows.values())
        short, long = RATE_WINDOWS
        images_long = self.per_min(rows, long, images=True)
        return Throughput(
            images_per_min_1m=round(self.per_min(rows, short, images=True), 1),
            images_per_min_5m=round(images_long, 1),
            subtasks_per_min_1m=round(self.per_min(rows, short, images=False), 1),
            subtasks_per_min_5m=round(self.per_min(rows, long, images=False), 1),
            remaining_images=remaining_images,
            eta_seconds=_eta(remaining_images, images_long),
        )


def _eta(remaining: int, per_min: float) -> float | None:
    if remaining <= 0:
        return 0.0
    return round(remaining * 60.0 / per_min, 1) if per_min > 0 else None


def _task(row: Mapping[str, Any], rates: _Rates) -> TaskProgress:
    rate = rates.task_per_min(int(row["id"]))
    task = TaskProgress(
        id=int(row["id"]),
        name=row["name"],
        pool=row["pool"],
        provider=row["provider"],
        priority=int(row["priority"]),
        status=row["status"],
        total=int(row["total_subtasks"]),
        completed=int(row["completed_subtasks"]),
        failed=int(row["failed_subtasks"]),
        canceled=int(row["canceled_subtasks"]),
        batch_size=int(row["batch_size"]),
        total_images=int(row["total_images"]),
        rate_per_min=round(rate, 1),
        eta_seconds=None,
        created_at=row["created_at"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
    )
    if row["status"] not in ACTIVE:
        return task
    return TaskProgress(**{**asdict(task), "eta_seconds": _eta(task.remaining, rate)})


def _pool(
    name: str,
    live: Sequence[ExecutorStatus],
    queue: Sequence[Mapping[str, Any]],
    processing: Sequence[Mapping[str, Any]],
    images_per_min: float,
    now: datetime,
) -> PoolStatus:
    snaps = [(e, e.pools[name]) for e in live if isinstance(e.pools.get(name), dict)]
    remaining = sum(int(r["remaining"] or 0) for r in queue if r["pool"] == name)
    in_flight = {bool(r["active"]): int(r["n"]) for r in processing if r["pool"] == name}
    policies = sorted({str(s.get("policy")) for _, s in snaps if s.get("policy")})
    # Every runner counts the same queue, so the freshest runner's count is the answer.
    freshest = min(snaps, key=lambda item: item[0].heartbeat_age, default=None)
    return PoolStatus(
        name=name,
        limit=sum(int(s.get("limit", 0)) for _, s in snaps),
        max=sum(int(s.get("max", 0)) for _, s in snaps),
        running=sum(int(s.get("running", 0)) for _, s in snaps),
        pending=max(0, remaining - in_flight.get(True, 0)),
        processing=sum(in_flight.values()),
        claimable=int(freshest[1].get("pending", 0)) if freshest else None,
        policy="/".join(policies) or None,
        paused_for=max((float(s.get("paused_for") or 0) for _, s in snaps), default=0.0),
        executors=len(snaps),
        images_per_min=images_per_min,
        decisions=_decisions(snaps)[:10],
        limit_history=_limit_history(snaps, now),
    )


def _decisions(
    snaps: Sequence[tuple[ExecutorStatus, Mapping[str, Any]]],
) -> tuple[ScalingDecision, ...]:
    merged = [
        ScalingDecision(
            at=datetime.fromtimestamp(float(h["at"]), tz=executor.heartbeat_at.tzinfo),
            executor_id=executor.id,
            limit=int(h["limit"]),
            reason=str(h.get("reason", "")),
        )
        for executor, snap in snaps
        for h in snap.get("history") or ()
        if isinstance(h, dict) and "at" in h and "limit" in h
    ]
    return tuple(sorted(merged, key=lambda d: (d.at, d.executor_id), reverse=True))


# Every policy reason reads "... OLD → NEW ..."; the first arrow gives the limit before it.
_PREVIOUS = re.compile(r"(\d+) → \d+")


def _limit_at(history: Sequence[Mapping[str, Any]], current: int, at: float) -> int:
    """One runner's limit at unix time `at`, from its (oldest-first) decision history."""
    if not history:
        return current
    value = None
    for entry in history:
        if float(entry["at"]) > at:
            break
        value = int(entry["limit"])
    if value is not None:
        return value
    # Before its oldest remembered decision: the limit that decision started from.
    match = _PREVIOUS.search(str(history[0].get("reason", "")))
    return int(match.group(1)) if match else int(history[0]["limit"])


def _limit_history(
    snaps: Sequence[tuple[ExecutorStatus, Mapping[str, Any]]], now: datetime
) -> tuple[int, ...]:
    """Σ of the live runners' limits at SPARKLINE_POINTS instants over SPARKLINE_SPAN."""
    if not snaps:
        return ()
    end = now.timestamp()
    step = SPARKLINE_SPAN / (SPARKLINE_POINTS - 1)
    points = [end - SPARKLINE_SPAN + i * step for i in range(SPARKLINE_POINTS)]
    runners = [
        (
            executor.started_at.timestamp(),
            sorted(
                (h for h in snap.get("history") or () if isinstance(h, dict) and "at" in h),
                key=lambda h: float(h["at"]),
            ),
            int(snap.get("limit", 0)),
        )
        for executor, snap in snaps
    ]
    series = [
        # A runner contributes nothing before it started.
        sum(
            _limit_at(history, current, at)
            for started, history, current in runners
            if at >= started
        )
        for at in points
    ]
    return tuple(series)
