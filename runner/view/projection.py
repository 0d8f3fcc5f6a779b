"""The status projection: the status queries' rows in, a typed StatusSnapshot out (pure).

No I/O and no clock: the rows carry the database's `now`, so the same rows always give the
same view, and every rate, ETA and sparkline here is unit-tested without a database.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import replace
from datetime import UTC, datetime

from db.models import POOLS
from db.snapshots import LimitChange, PoolSnapshot, decode_completions, decode_pools
from db.status_queries import RATE_WINDOWS, Row, StatusRows
from runner.view.model import (
    ErrorSummary,
    ExecutorStatus,
    PoolStatus,
    ProviderDecision,
    ProviderStatus,
    ScalingDecision,
    StatusSnapshot,
    TaskProgress,
    Throughput,
)
from runner.view.rates import Rates, Source

# `runner.stale_after`'s default (a test keeps them equal): silent this long, a runner is dead
# to the fleet, which releases its work. Callers pass the configured value.
STALE_AFTER = 4.0  # seconds
SPARKLINE_POINTS = 30
SPARKLINE_SPAN = 600.0  # seconds of limit history in the sparkline
DECISIONS_KEPT = 10  # newest scaling decisions per pool

ACTIVE = ("pending", "running")


def project(rows: StatusRows, *, stale_after: float = STALE_AFTER) -> StatusSnapshot:
    """The status view of one consistent read."""
    now = rows.now
    executors = tuple(executor(row, stale_after) for row in rows.executors)
    live = [e for e in executors if e.state == "running" and not e.stale]
    starts = {int(r["id"]): r["started_at"] for r in rows.task_starts if r["started_at"]}
    rates = Rates(sources(rows.executors, executors), starts)
    long = RATE_WINDOWS[1]
    return StatusSnapshot(
        at=now,
        stale_after=stale_after,
        pools=tuple(
            pool(
                name,
                live,
                rows.queue,
                rows.processing,
                _r(rates.total(long, images=True, pool=name)),
                now,
            )
            for name in POOLS
        ),
        throughput=throughput(rates, sum(int(r["remaining_images"] or 0) for r in rows.queue)),
        active_tasks=sum(int(r["tasks"]) for r in rows.queue),
        tasks=tuple(task(row, rates) for row in rows.active),
        recent=tuple(task(row, rates) for row in rows.recent),
        errors=tuple(error(row) for row in rows.errors),
        executors=executors,
        providers=tuple(provider(row) for row in rows.providers),
    )


def sources(rows: Sequence[Row], executors: Sequence[ExecutorStatus]) -> Iterator[Source]:
    """Every shown runner's completion rollups, placed on their own clocks."""
    for row, e in zip(rows, executors, strict=True):
        live = e.state == "running" and not e.stale
        for name, completions in decode_completions(row["pools"]).items():
            yield Source.of(name, completions, e.heartbeat_at, float(row["age"]), live)


def throughput(rates: Rates, remaining_images: int) -> Throughput:
    """The whole cluster's rates and the queue's ETA (from the 5-minute rate)."""
    short, long = RATE_WINDOWS
    images_long = rates.total(long, images=True)
    return Throughput(
        images_per_min_1m=_r(rates.total(short, images=True)),
        images_per_min_5m=_r(images_long),
        subtasks_per_min_1m=_r(rates.total(short, images=False)),
        subtasks_per_min_5m=_r(rates.total(long, images=False)),
        remaining_images=remaining_images,
        eta_seconds=eta(remaining_images, images_long),
    )


def _r(rate: float) -> float:
    return round(rate, 1)


def executor(row: Row, stale_after: float) -> ExecutorStatus:
    """One executors row; stale when it says running but its heartbeat is older than allowed."""
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
        pools=decode_pools(row["pools"]),
    )


def error(row: Row) -> ErrorSummary:
    """One aggregated error_logs row."""
    return ErrorSummary(
        error_type=row["error_type"],
        message=row["error_message"],
        count=int(row["count"]),
        pool=row["pool"],
        provider=row["provider"],
        last_seen=row["last_occurred_at"],
        recovered=int(row.get("recovered") or 0),
    )


def eta(remaining: int, per_min: float) -> float | None:
    """Seconds until `remaining` are done at `per_min`; 0 when none remain, None at rate 0."""
    if remaining <= 0:
        return 0.0
    return round(remaining * 60.0 / per_min, 1) if per_min > 0 else None


def task(row: Row, rates: Rates) -> TaskProgress:
    """One tasks row with its rate, and an ETA while it is still active."""
    rate = rates.task(int(row["id"]), RATE_WINDOWS[1])
    progress = TaskProgress(
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
        return progress
    return replace(progress, eta_seconds=eta(progress.remaining, rate))


Snaps = Sequence[tuple[ExecutorStatus, PoolSnapshot]]


def pool(
    name: str,
    live: Sequence[ExecutorStatus],
    queue: Sequence[Row],
    processing: Sequence[Row],
    images_per_min: float,
    now: datetime,
) -> PoolStatus:
    """One pool summed over the live runners' snapshots, its queue from the task counters."""
    snaps = [(e, e.pools[name]) for e in live if name in e.pools]
    remaining = sum(int(r["remaining"] or 0) for r in queue if r["pool"] == name)
    in_flight = {bool(r["active"]): int(r["n"]) for r in processing if r["pool"] == name}
    policies = sorted({s.policy for _, s in snaps if s.policy})
    # Every runner counts the same queue, so the freshest runner's count is the answer.
    freshest = min(snaps, key=lambda item: item[0].heartbeat_age, default=None)
    return PoolStatus(
        name=name,
        limit=sum(s.limit for _, s in snaps),
        max=sum(s.max for _, s in snaps),
        running=sum(s.running for _, s in snaps),
        pending=max(0, remaining - in_flight.get(True, 0)),
        processing=sum(in_flight.values()),
        claimable=freshest[1].pending if freshest else None,
        policy="/".join(policies) or None,
        paused_for=max((s.paused_for for _, s in snaps), default=0.0),
        executors=len(snaps),
        images_per_min=images_per_min,
        decisions=decisions(snaps)[:DECISIONS_KEPT],
        limit_history=limit_history(snaps, now),
    )


def decisions(snaps: Snaps) -> tuple[ScalingDecision, ...]:
    """Every live runner's limit changes for one pool, newest first."""
    merged = [
        ScalingDecision(
            at=datetime.fromtimestamp(change.at, tz=executor.heartbeat_at.tzinfo or UTC),
            executor_id=executor.id,
            from_limit=change.from_limit,
            limit=change.to_limit,
            reason=change.reason,
        )
        for executor, snap in snaps
        for change in snap.history
    ]
    return tuple(sorted(merged, key=lambda d: (d.at, d.executor_id), reverse=True))


def limit_at(history: Sequence[LimitChange], current: int, at: float) -> int:
    """One runner's limit at unix time `at`, from its (oldest-first) limit changes."""
    if not history:
        return current
    value = None
    for change in history:
        if change.at > at:
            break
        value = change.to_limit
    # Before its oldest remembered change: the limit that change started from.
    return history[0].from_limit if value is None else value


def limit_history(snaps: Snaps, now: datetime) -> tuple[int, ...]:
    """Σ of the live runners' limits at SPARKLINE_POINTS instants over SPARKLINE_SPAN."""
    if not snaps:
        return ()
    end = now.timestamp()
    step = SPARKLINE_SPAN / (SPARKLINE_POINTS - 1)
    points = [end - SPARKLINE_SPAN + i * step for i in range(SPARKLINE_POINTS)]
    runners = [(e.started_at.timestamp(), snap.history, snap.limit) for e, snap in snaps]
    return tuple(
        # A runner contributes nothing before it started.
        sum(
            limit_at(history, current, at) for started, history, current in runners if at >= started
        )
        for at in points
    )


# --- providers (fleet-wide) ----------------------------------------------------------------
PROVIDER_DECISIONS_KEPT = 5  # newest decisions per provider in the snapshot


def provider(row: Row) -> ProviderStatus:
    """One providers row with its fleet-wide in-flight count and last minute of reports."""
    requests, limited = int(row["requests"] or 0), int(row["rate_limited"] or 0)
    p50 = row["latency_p50"]
    return ProviderStatus(
        name=row["name"],
        policy=row["policy"],
        limit=int(row["limit"]),
        min_limit=int(row["min_limit"]),
        max_concurrency=int(row["max_concurrency"]),
        rpm=None if row["rpm"] is None else int(row["rpm"]),
        in_flight=int(row["in_flight"]),
        cooldown_for=round(float(row["cooldown"] or 0.0), 1),
        requests_1m=requests,
        rate_limited_1m=limited,
        rate_limited_share=round(limited / requests, 4) if requests else None,
        latency_p50=None if p50 is None else round(float(p50), 3),
        decisions=provider_decisions(row["decisions"])[:PROVIDER_DECISIONS_KEPT],
    )


def provider_decisions(raw: object) -> tuple[ProviderDecision, ...]:
    """The stored decisions (a JSON list, newest first), skipping any entry not of that shape."""
    if not isinstance(raw, list):
        return ()
    decisions = []
    for entry in raw:
        try:
            decisions.append(
                ProviderDecision(
                    at=datetime.fromtimestamp(float(entry["at"]), tz=UTC),
                    from_limit=int(entry["from_limit"]),
                    to_limit=int(entry["to_limit"]),
                    reason=str(entry["reason"]),
                )
            )
        except (KeyError, TypeError, ValueError, OverflowError, OSError):
            continue  # written by an older or newer runner: show the rest
    return tuple(sorted(decisions, key=lambda d: d.at, reverse=True))
