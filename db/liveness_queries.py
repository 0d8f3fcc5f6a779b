"""Liveness by runner: registration, heartbeats, and releasing the rows of dead processes.

A runner process holds subtasks under its *holder* (`<executor_id>:<incarnation>`, new at
every start). Its one executors row says whether that holder is alive: the heartbeat
touches that row only (O(runners), however many rows are in flight), and any runner that
finds it silent past `stale_after` releases exactly the rows that holder still has.
"""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from db.outbox import MARK_LOST
from db.ports import DecideLeases
from db.queries import _apply
from db.records import ExpiredLease, Outcome

# Executors silent for longer than this are not looked at again: whatever they still held
# (no runner was up to release it then) falls to the lease backstop.
RECENT_DEAD = 3_600.0  # seconds

_LEASE_COLUMNS = """
    s.id, s.attempts AS attempt, s.executor_id, s.retry_count, s.deferrals,
    t.max_retries, s.pool, t.provider
"""

# Rows whose holder is dead: its runner said it stopped, was marked lost, or is silent.
# Driven by the executors table (one index probe per dead runner), never by the rows in
# flight. SKIP LOCKED: a row being recorded right now is left to the next pass.
HELD_BY_DEAD = text(
    f"""
    WITH dead AS (
        SELECT coalesce(holder, id) AS holder FROM executors
        WHERE heartbeat_at > now() - make_interval(secs => :recent)
          AND (state <> 'running' OR heartbeat_at < now() - make_interval(secs => :stale))
    )
    SELECT {_LEASE_COLUMNS}
    FROM dead JOIN subtasks s ON s.executor_id = dead.holder AND s.status = 'processing'
    JOIN tasks t ON t.id = s.task_id
    ORDER BY s.id
    LIMIT :n
    FOR UPDATE OF s SKIP LOCKED
    """
)

# The backstop: a lease that ran out on a row no live runner claims as its own (a holder
# that never registered, or one older than RECENT_DEAD). A live holder's rows are never
# taken here, however long their request runs.
EXPIRED_UNOWNED = text(
    f"""
    SELECT {_LEASE_COLUMNS}
    FROM subtasks s JOIN tasks t ON t.id = s.task_id
    WHERE s.status = 'processing' AND s.lease_expires_at < now()
      AND NOT EXISTS (
          SELECT 1 FROM executors e
          WHERE (e.holder = s.executor_id OR (e.holder IS NULL AND e.id = s.executor_id))
            AND e.state = 'running'
            AND e.heartbeat_at >= now() - make_interval(secs => :stale))
    ORDER BY s.lease_expires_at
    LIMIT :n
    FOR UPDATE OF s SKIP LOCKED
    """
)

# Rows of one holder, waiting for a lock rather than skipping it: at registration the
# previous incarnation's rows must all be released, never left behind.
HELD_BY = text(
    f"""
    SELECT {_LEASE_COLUMNS}
    FROM subtasks s JOIN tasks t ON t.id = s.task_id
    WHERE s.status = 'processing' AND s.executor_id = :holder
    ORDER BY s.id
    FOR UPDATE OF s
    """
)


async def _settle(
    connection: AsyncConnection, statement: Any, params: dict[str, Any], decide: DecideLeases
) -> list[Outcome]:
    """Lock the rows `statement` selects, decide their outcomes, apply them (one transaction)."""
    rows = (await connection.execute(statement, params)).mappings().all()
    outcomes = list(decide([ExpiredLease(**row) for row in rows]))
    await _apply(connection, outcomes)
    return outcomes


async def reap_expired(
    engine: AsyncEngine,
    decide: DecideLeases,
    *,
    stale_after: float = 4.0,
    dead_runners: bool = True,
    backstop: bool = True,
    limit: int = 1000,
) -> list[Outcome]:
    """Release the rows of dead runners (and, as a backstop, unowned expired leases).

    A runner silent past `stale_after` is marked lost (one runner.lost event) in the same
    transaction that releases its rows. The rows stay locked from the look until their
    outcomes commit, and the outcome statement is fenced by holder and attempt.
    """
    params = {"stale": stale_after, "recent": RECENT_DEAD, "n": limit}
    outcomes: list[Outcome] = []
    async with engine.begin() as connection:
        if dead_runners:
            await connection.execute(MARK_LOST, {"after": stale_after})
            outcomes += await _settle(connection, HELD_BY_DEAD, params, decide)
        if backstop and len(outcomes) < limit:
            params["n"] = limit - len(outcomes)
            outcomes += await _settle(connection, EXPIRED_UNOWNED, params, decide)
    return outcomes


REGISTER = text(
    """
    WITH previous AS (
        SELECT coalesce(holder, id) AS holder FROM executors WHERE id = :id FOR UPDATE
    ), upserted AS (
        INSERT INTO executors (id, holder, "group", host, pid, version, state)
        VALUES (:id, :holder, :group, :host, :pid, :version, 'running')
        ON CONFLICT (id) DO UPDATE SET holder = excluded.holder, "group" = excluded.group,
            host = excluded.host, pid = excluded.pid, version = excluded.version,
            state = 'running', started_at = now(), heartbeat_at = now(), stopped_at = NULL
    )
    SELECT holder FROM previous
    """
)


async def register_executor(
    engine: AsyncEngine,
    executor_id: str,
    holder: str,
    identity: dict[str, Any],
    decide: DecideLeases,
) -> list[Outcome]:
    """Insert or revive this runner's row under a new holder; release the old holder's rows.

    A restart under the same id is a new process: what the previous one held is released
    (an attempt counted, as for any dead runner), never adopted.
    """
    params = {"id": executor_id, "holder": holder, **identity}
    async with engine.begin() as connection:
        previous = await connection.scalar(REGISTER, params)
        if previous is None or previous == holder:
            return []
        return await _settle(connection, HELD_BY, {"holder": previous}, decide)


HEARTBEAT = text(
    """
    UPDATE executors e SET heartbeat_at = now(), pools = CAST(:pools AS jsonb), state = 'running'
    FROM (SELECT id, state FROM executors WHERE holder = :holder FOR UPDATE) before
    WHERE e.id = before.id
    RETURNING before.state
    """
)


async def heartbeat(engine: AsyncEngine, holder: str, pools: dict[str, Any]) -> str | None:
    """Record a heartbeat and the pools' snapshot (one row, whatever is in flight).

    Returns the state the row had ('lost': the fleet released our rows meanwhile), or None
    when another process registered under our id since (we are superseded).
    """
    async with engine.begin() as connection:
        state = await connection.scalar(HEARTBEAT, {"holder": holder, "pools": json.dumps(pools)})
        return None if state is None else str(state)


async def mark_executor_stopped(engine: AsyncEngine, holder: str, pools: dict[str, Any]) -> None:
    """Record a clean stop (of this process: a successor under the same id is left alone)."""
    async with engine.begin() as connection:
        await connection.execute(
            text(
                "UPDATE executors SET state = 'stopped', stopped_at = now(), heartbeat_at = now(),"
                " pools = CAST(:pools AS jsonb) WHERE holder = :holder"
            ),
            {"holder": holder, "pools": json.dumps(pools)},
        )
