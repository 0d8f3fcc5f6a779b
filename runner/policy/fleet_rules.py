"""The controller's rules in the shape the provider rows need: stored JSON in, a change out.

Pure glue between runner/policy/control.py and db/provider_queries.py: the store locks a
provider's row and calls these with its state and the database's clock.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping
from typing import Any

from db.records import ControlChange, ProviderWindow
from runner.policy.control import (
    ControllerConfig,
    ControllerState,
    Decision,
    Signal,
    WindowStats,
    decide,
    initial_state,
    on_pressure,
)


def stored_state(config: ControllerConfig, data: Mapping[str, Any], now: float) -> ControllerState:
    """The row's state; a fresh one if it is not readable (written by an incompatible runner)."""
    try:
        return ControllerState.from_json(data)
    except ValueError:
        return initial_state(config, now)


def _change(decision: Decision) -> ControlChange:
    """A decision as the row stores it."""
    state = decision.state
    return ControlChange(state.to_json(), state.limit, state.cooldown_until, decision.reason)


def pressure_change(
    config: ControllerConfig,
    data: Mapping[str, Any],
    now: float,
    signal: Signal,
    retry_after: float | None,
    sent_at: float | None,
) -> ControlChange | None:
    """One 429/503/timeout applied to the stored state; None when nothing changes."""
    before = stored_state(config, data, now)
    decision = on_pressure(config, before, signal, retry_after, now, sent_at=sent_at)
    if decision.state == before:
        return None
    return _change(decision)


def window_stats(window: ProviderWindow) -> WindowStats:
    """The fleet's window as the controller reads it."""
    latencies = window.latencies
    return WindowStats(
        elapsed=window.elapsed,
        completions=window.completions,
        in_flight=window.in_flight,
        pending=window.pending,
        latency_p50=statistics.median(latencies) if latencies else None,
        rate_limited=window.rate_limited,
        unavailable=window.unavailable,
        timeouts=window.timeouts,
        server_errors=window.server_errors,
        ratelimit_remaining=window.ratelimit_remaining,
        ratelimit_limit=window.ratelimit_limit,
        ratelimit_reset=window.ratelimit_reset,
    )


def window_change(
    config: ControllerConfig, data: Mapping[str, Any], window: ProviderWindow, now: float
) -> ControlChange:
    """The end-of-window decision on the stored state."""
    before = stored_state(config, data, now)
    return _change(decide(config, before, window_stats(window), now))
