"""The alert outbox: claim due events (SKIP LOCKED), record attempts, and the watchdog's writes.

Events are inserted by triggers (task.finished, error.new: see migration 0003) and by the
watchdog below (runner.lost, provider.degraded), always in the transaction that decides them.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

# Serialises provider.degraded decisions across processes (any constant, same everywhere).
DEGRADED_LOCK = 7_305_100_013


@dataclass(frozen=True)
class OutboxEvent:
    """A claimed event: deliver it to every subscribed hook not in `delivered_to`."""

    id: uuid.UUID
    event: str
    payload: dict[str, Any]
    created_at: datetime
    attempts: int  # including this one
    delivered_to: tuple[str, ...]
    now: datetime  # the database's clock at the claim


CLAIM = text(
    """
    WITH due AS (
        SELECT id FROM outbox
        WHERE state = 'pending' AND next_attempt_at <= now()
        ORDER BY next_attempt_at, id
        LIMIT :n
        FOR UPDATE SKIP LOCKED
    )
    UPDATE outbox o
    SET attempts = o.attempts + 1, next_attempt_at = now() + make_interval(secs => :lease)
    FROM due WHERE o.id = due.id
    RETURNING o.id, o.event, o.payload, o.created_at, o.attempts, o.delivered_to, now() AS now
    """
)


async def claim_events(engine: AsyncEngine, n: int, lease: float) -> list[OutboxEvent]:
    """Lease up to `n` due events; one another process would take only after `lease` seconds."""
    async with engine.begin() as connection:
        rows = await connection.execute(CLAIM, {"n": n, "lease": lease})
        return [
            OutboxEvent(**{**row, "delivered_to": tuple(row["delivered_to"] or ())})
            for row in rows.mappings()
        ]


RECORD = text(
    """
    UPDATE outbox
    SET delivered_to = ARRAY(
            SELECT DISTINCT unnest(delivered_to || CAST(:targets AS text[])) ORDER BY 1),
        state = CAST(:state AS text),
        delivered_at = CASE WHEN CAST(:state AS text) = 'delivered' THEN now() END,
        next_attempt_at = CASE WHEN CAST(:state AS text) = 'pending'
                               THEN now() + make_interval(secs => :retry_in)
                               ELSE next_attempt_at END,
        last_error = :error
    WHERE id = :id AND attempts = :attempt AND state = 'pending'
    """
)


async def record_attempt(
    engine: AsyncEngine,
    event_id: uuid.UUID,
    attempt: int,
    targets: Sequence[str],
    *,
    state: str,
    retry_in: float = 0.0,
    error: str | None = None,
) -> bool:
    """After attempt `attempt`: add the hooks that took it; state pending/delivered/failed.

    Fenced by the attempt number: a claim that outlived its lease records nothing.
    """
    async with engine.begin() as connection:
        result = await connection.execute(
            RECORD,
            {
                "id": event_id,
                "attempt": attempt,
                "targets": list(targets),
                "state": state,
                "retry_in": retry_in,
                "error": error,
            },
        )
        return bool(result.rowcount)


async def enqueue(engine: AsyncEngine, event: str, payload: Mapping[str, Any]) -> uuid.UUID:
    """Add an event to the outbox (the triggers and the watchdog write the real ones)."""
    async with engine.begin() as connection:
        return uuid.UUID(
            str(
                await connection.scalar(
                    text(
                        "INSERT INTO outbox (event, payload, created_at)"
                        " VALUES (:event, CAST(:payload AS jsonb), clock_timestamp()) RETURNING id"
                    ),
                    {"event": event, "payload": json.dumps(dict(payload))},
                )
            )
        )


# --- watchdog ------------------------------------------------------------------------------

MARK_LOST = text(
    """
    WITH lost AS (
        UPDATE executors SET state = 'lost'
        WHERE state = 'running' AND heartbeat_at < now() - make_interval(secs => :after)
        RETURNING id, coalesce(holder, id) AS holder, "group", host, pid, heartbeat_at
    ), held AS (
        -- Rows name the process (its holder), not the executor id (see models.Executor).
        SELECT executor_id, count(*) AS n FROM subtasks
        WHERE status = 'processing' AND executor_id IN (SELECT holder FROM lost)
        GROUP BY executor_id
    )
    INSERT INTO outbox (event, payload, created_at)
    SELECT 'runner.lost', jsonb_build_object(
        'executor_id', l.id, 'group', l."group", 'host', l.host, 'pid', l.pid,
        'last_heartbeat_at', l.heartbeat_at,
        'silent_seconds', round(CAST(extract(epoch FROM now() - l.heartbeat_at) AS numeric), 1),
        'subtasks_held', coalesce(h.n, 0)
    ), clock_timestamp()
    FROM lost l LEFT JOIN held h ON h.executor_id = l.holder
    RETURNING payload
    """
)


async def mark_lost_runners(engine: AsyncEngine, after: float) -> list[dict[str, Any]]:
    """Runners silent for `after` seconds become 'lost', each with one runner.lost event."""
    # The UPDATE re-checks state under the row lock: of two watchdogs, one marks each runner;
    # a heartbeat arriving first keeps it alive. Its subtasks are left to the reaper (which
    # runs this same statement with [runner] stale_after, in the transaction that releases).
    async with engine.begin() as connection:
        rows = await connection.execute(MARK_LOST, {"after": after})
        return [dict(row[0]) for row in rows.all()]


PRESSURE = text(
    "SELECT provider, sum(count) FROM provider_pressure"
    " WHERE at > now() - make_interval(secs => :window) GROUP BY provider"
)

# Completions per task first (an index-only range scan), then their providers.
COMPLETIONS = text(
    """
    SELECT t.provider, sum(w.n)
    FROM (
        SELECT task_id, count(*) AS n FROM subtasks
        WHERE status = 'completed' AND completed_at > now() - make_interval(secs => :window)
        GROUP BY task_id
    ) w JOIN tasks t ON t.id = w.task_id
    WHERE t.provider = ANY(CAST(:providers AS text[]))
    GROUP BY t.provider
    """
)


async def provider_pressure(engine: AsyncEngine, window: float) -> dict[str, tuple[int, int]]:
    """Per provider with any 429/5xx in the last `window` seconds: (those, completions)."""
    async with engine.connect() as connection:
        bad = {p: int(n) for p, n in (await connection.execute(PRESSURE, {"window": window}))}
        if not bad:
            return {}
        ok = await connection.execute(COMPLETIONS, {"window": window, "providers": list(bad)})
        good = {p: int(n) for p, n in ok.all()}
    return {provider: (count, good.get(provider, 0)) for provider, count in bad.items()}


ADD_DEGRADED = text(
    """
    INSERT INTO outbox (event, payload, created_at)
    SELECT 'provider.degraded', CAST(:payload AS jsonb), clock_timestamp()
    WHERE NOT EXISTS (
        SELECT 1 FROM outbox
        WHERE event = 'provider.degraded' AND payload->>'provider' = :provider
          AND created_at > now() - make_interval(secs => :cooldown)
    )
    RETURNING id
    """
)


async def add_degraded(
    engine: AsyncEngine, payloads: Sequence[Mapping[str, Any]], cooldown: float
) -> list[str]:
    """provider.degraded events, each unless one for its provider is younger than `cooldown`."""
    added = []
    async with engine.begin() as connection:
        await connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": DEGRADED_LOCK})
        for payload in payloads:
            provider = str(payload["provider"])
            row = await connection.scalar(
                ADD_DEGRADED,
                {"payload": json.dumps(dict(payload)), "provider": provider, "cooldown": cooldown},
            )
            if row is not None:
                added.append(provider)
    return added


async def purge(engine: AsyncEngine, *, keep: float, pressure_keep: float) -> int:
    """Drop events older than `keep` seconds and pressure samples older than `pressure_keep`."""
    async with engine.begin() as connection:
        events = await connection.execute(
            text(
                "DELETE FROM outbox WHERE id IN (SELECT id FROM outbox"
                " WHERE created_at < now() - make_interval(secs => :keep) LIMIT 10000)"
            ),
            {"keep": keep},
        )
        await connection.execute(
            text(
                "DELETE FROM provider_pressure WHERE id IN (SELECT id FROM provider_pressure"
                " WHERE at < now() - make_interval(secs => :keep) LIMIT 10000)"
            ),
            {"keep": pressure_keep},
        )
        return int(events.rowcount)


async def outbox_rows(engine: AsyncEngine, event: str | None = None) -> list[dict[str, Any]]:
    """Every outbox row, oldest first (for `imgrun alerts` views and tests)."""
    async with engine.connect() as connection:
        rows = await connection.execute(
            text(
                "SELECT id, event, payload, state, attempts, delivered_to, last_error,"
                " created_at, next_attempt_at, delivered_at FROM outbox"
                " WHERE CAST(:event AS text) IS NULL OR event = :event"
                " ORDER BY created_at, id"
            ),
            {"event": event},
        )
        return [dict(row) for row in rows.mappings()]
