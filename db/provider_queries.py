"""The fleet-wide provider rows: registration, pressure, reports and the window's decision.

The rules are the runner's (runner/policy/control.py, pure); these statements only lock,
read and write. Time is the database's: every runner reads the same clock.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from db.records import ControlChange, ProviderBounds, ProviderReport, ProviderWindow

DECISIONS_KEPT = 20  # newest first, for the status view
REPORTS_KEPT = 300.0  # seconds of reports kept after their window (the status view reads them)

# A pressure event: (stored state, now in epoch seconds) -> a change, or None.
OnPressure = Callable[[dict[str, Any], float], ControlChange | None]
# The window's decision: (stored state, the fleet's window, now) -> a change.
DecideWindow = Callable[[dict[str, Any], ProviderWindow, float], ControlChange]

_REGISTER = text(
    """
    INSERT INTO providers (name, policy, min_limit, max_concurrency, rpm, "limit", state)
    VALUES (:name, :policy, :min_limit, :max_concurrency, :rpm, :limit, CAST(:state AS jsonb))
    ON CONFLICT (name) DO UPDATE
    SET policy = excluded.policy, min_limit = excluded.min_limit,
        max_concurrency = excluded.max_concurrency, rpm = excluded.rpm,
        -- New bounds apply at once; the controller's state follows at its next decision.
        "limit" = least(greatest(providers."limit", excluded.min_limit),
                        excluded.max_concurrency),
        updated_at = now()
    """
)


async def register_providers(engine: AsyncEngine, providers: Sequence[ProviderBounds]) -> None:
    """Create or update each provider's fleet-wide row with this runner's configuration."""
    async with engine.begin() as connection:
        for bounds in sorted(providers, key=lambda b: b.name):  # one lock order: no deadlock
            await connection.execute(
                _REGISTER,
                {
                    "name": bounds.name,
                    "policy": bounds.policy,
                    "min_limit": bounds.min_limit,
                    "max_concurrency": bounds.max_concurrency,
                    "rpm": bounds.rpm,
                    "limit": bounds.initial_state["limit"],
                    "state": json.dumps(bounds.initial_state),
                },
            )


_LOCK = text(
    """
    SELECT state, extract(epoch FROM now()) AS now,
           extract(epoch FROM now() - window_started_at) AS elapsed
    FROM providers WHERE name = :name
    FOR UPDATE
    """
)
_LOCK_DUE = text(
    """
    SELECT state, extract(epoch FROM now()) AS now,
           extract(epoch FROM now() - window_started_at) AS elapsed, window_started_at
    FROM providers
    WHERE name = :name AND window_started_at <= now() - make_interval(secs => :window)
    FOR UPDATE
    """
)
_WRITE = text(
    """
    UPDATE providers
    SET state = CAST(:state AS jsonb), "limit" = CAST(:limit AS int),
        cooldown_until = to_timestamp(CAST(:cooldown_until AS float8)),
        decisions = CASE WHEN CAST(:reason AS text) IS NULL THEN decisions ELSE (
            SELECT coalesce(jsonb_agg(d), '[]'::jsonb) FROM (
                SELECT d FROM jsonb_array_elements(
                    jsonb_build_array(jsonb_build_object(
                        'at', extract(epoch FROM now()), 'from_limit', "limit",
                        'to_limit', CAST(:limit AS int), 'reason', CAST(:reason AS text)))
                    || decisions
                ) AS d LIMIT CAST(:kept AS int)) AS newest) END,
        window_started_at = CASE WHEN CAST(:new_window AS bool) THEN now()
                                 ELSE window_started_at END,
        updated_at = now()
    WHERE name = :name
    """
)


async def record_pressure(engine: AsyncEngine, name: str, on_pressure: OnPressure) -> str | None:
    """Apply one pressure signal to the fleet's state (under its lock); returns the reason."""
    async with engine.begin() as connection:
        row = (await connection.execute(_LOCK, {"name": name})).one_or_none()
        if row is None:
            return None
        change = on_pressure(row.state, float(row.now))
        if change is not None:
            await _write(connection, name, change, new_window=False)
        return change.reason if change is not None else None


async def insert_reports(
    engine: AsyncEngine, executor_id: str, reports: Sequence[ProviderReport]
) -> None:
    """Store what this runner saw of each provider since its last report."""
    if not reports:
        return
    async with engine.begin() as connection:
        await connection.execute(
            text(
                """
                INSERT INTO provider_reports (provider, executor_id, completions, rate_limited,
                    unavailable, timeouts, server_errors, latencies, ratelimit_remaining,
                    ratelimit_limit, ratelimit_reset)
                VALUES (:provider, :executor, :completions, :rate_limited, :unavailable,
                    :timeouts, :server_errors, :latencies, :ratelimit_remaining,
                    :ratelimit_limit, :ratelimit_reset)
                """
            ),
            [
                vars(report) | {"executor": executor_id, "latencies": list(report.latencies)}
                for report in reports
            ],
        )


_WINDOW = text(
    """
    SELECT coalesce(sum(completions), 0) AS completions,
           coalesce(sum(rate_limited), 0) AS rate_limited,
           coalesce(sum(unavailable), 0) AS unavailable,
           coalesce(sum(timeouts), 0) AS timeouts,
           coalesce(sum(server_errors), 0) AS server_errors,
           (SELECT array_agg(l) FROM (
               SELECT unnest(latencies) AS l FROM provider_reports
               WHERE provider = :name AND at >= :since) AS ls) AS latencies,
           (SELECT array[ratelimit_remaining, ratelimit_limit]
            FROM provider_reports
            WHERE provider = :name AND at >= :since AND ratelimit_remaining IS NOT NULL
            ORDER BY ratelimit_remaining LIMIT 1) AS ratelimit,
           (SELECT ratelimit_reset FROM provider_reports
            WHERE provider = :name AND at >= :since AND ratelimit_remaining IS NOT NULL
            ORDER BY ratelimit_remaining LIMIT 1) AS ratelimit_reset,
           (SELECT count(*) FROM subtasks
            WHERE status = 'processing' AND provider = :name) AS in_flight,
           (SELECT count(*) FROM (
               SELECT 1 FROM subtasks
               WHERE status = 'pending' AND provider = :name AND pool = ANY(:pools)
                 AND run_after <= now()
               LIMIT :pending_cap) AS p) AS pending
    FROM provider_reports WHERE provider = :name AND at >= :since
    """
)


async def decide_window(
    engine: AsyncEngine,
    name: str,
    window: float,
    pools: Sequence[str],
    pending_cap: int,
    decide: DecideWindow,
) -> str | None:
    """If the provider's window is over, decide it (once: see _LOCK_DUE).

    The lock waits rather than skips: every claim for the provider holds the same row for a
    moment, and a busy fleet skipping it would put off decisions by several seconds. A runner
    that waited behind another's decision finds the window restarted (PostgreSQL re-checks the
    WHERE on the row it locked) and decides nothing.
    """
    async with engine.begin() as connection:
        row = (await connection.execute(_LOCK_DUE, {"name": name, "window": window})).one_or_none()
        if row is None:
            return None  # not due, or another runner holds it: one decision per window
        stats = await _window(
            connection, name, row.window_started_at, row.elapsed, pools, pending_cap
        )
        change = decide(row.state, stats, float(row.now))
        await _write(connection, name, change, new_window=True)
        await connection.execute(
            text(
                "DELETE FROM provider_reports WHERE provider = :name"
                " AND at < now() - make_interval(secs => :kept)"
            ),
            {"name": name, "kept": REPORTS_KEPT},
        )
        return change.reason


async def _window(
    connection: AsyncConnection,
    name: str,
    since: Any,
    elapsed: float,
    pools: Sequence[str],
    pending_cap: int,
) -> ProviderWindow:
    params = {"name": name, "since": since, "pools": list(pools), "pending_cap": pending_cap}
    row = (await connection.execute(_WINDOW, params)).one()
    remaining, limit = row.ratelimit if row.ratelimit is not None else (None, None)
    return ProviderWindow(
        elapsed=float(elapsed),
        in_flight=int(row.in_flight),
        pending=int(row.pending),
        completions=int(row.completions),
        rate_limited=int(row.rate_limited),
        unavailable=int(row.unavailable),
        timeouts=int(row.timeouts),
        server_errors=int(row.server_errors),
        latencies=tuple(row.latencies or ()),
        ratelimit_remaining=remaining,
        ratelimit_limit=limit,
        ratelimit_reset=row.ratelimit_reset,
    )


async def _write(
    connection: AsyncConnection, name: str, change: ControlChange, *, new_window: bool
) -> None:
    await connection.execute(
        _WRITE,
        {
            "name": name,
            "state": json.dumps(change.state),
            "limit": change.limit,
            "cooldown_until": change.cooldown_until,
            "reason": change.reason,
            "kept": DECISIONS_KEPT,
            "new_window": new_window,
        },
    )
