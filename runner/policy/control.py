"""Fleet-wide concurrency control of one provider, as a pure object whose state is a JSON row.

Nothing here does I/O, sleeps or reads a clock. A runner calls `on_pressure` for each 429,
503 or timeout it sees, and at the end of each window the runner that wins the
compare-and-set on the provider's row calls `decide` with the window's fleet-wide
`WindowStats`; both return a `Decision`: the new `ControllerState` (stored as JSON) and a
reason when something changed. `now` is wall-clock seconds shared by the fleet (the
database's clock), so every runner reads the same `cooldown_until`.

The adaptive policy:
- slow start: the limit grows ×`growth_factor` per window while p50 latency stays within
  `flat_tolerance` of its baseline, nothing pushes back and the queue can fill the slots;
- avoidance: latency between `flat_tolerance` and `latency_tolerance` × baseline holds the
  limit (the provider is just past its knee, queueing a little); above it, the limit is cut to
  the concurrency the provider actually served (Little's law: throughput × baseline); flat
  latency probes upward: toward the limit at which a 429/503/timeout last came (the knee),
  closing half the gap per window, one past it, then by a share of the limit that doubles
  with each healthy window;
- pressure cuts ×`decrease_factor` at most once per window; a 429 or 503 pauses claims until
  its Retry-After (clamped to `max_retry_after`), and for at least `min_cooldown`, doubled for
  each window in a row that saw pressure, so a `Retry-After: 0` storm still backs off;
- x-ratelimit-remaining/reset caps the limit at the request rate the budget can sustain,
  before the 429.
`queue-depth` is the seed's rule exactly (shared with runner/policy/scaling.py);
`fixed` never moves.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from runner.policy.control_state import (
    POLICIES,
    SIGNALS,
    ControllerConfig,
    ControllerState,
    Decision,
    Phase,
    Policy,
    Signal,
    WindowStats,
    initial_state,
    is_paused,
)
from runner.policy.scaling import seed_scale_down, seed_scale_up
from workers.headers import ABSURD_SECONDS

__all__ = [
    "POLICIES",
    "SIGNALS",
    "ControllerConfig",
    "ControllerState",
    "Decision",
    "Phase",
    "Policy",
    "Signal",
    "WindowStats",
    "decide",
    "initial_state",
    "is_paused",
    "on_pressure",
    "sane_retry_after",
]

_MAX_STREAK = 8  # caps the doubling of cooldowns and probe steps (2^8 is plenty)
_LATENCY_FELL = 0.9  # after a latency cut, p50 must drop below this share to prove queueing
_LATENCY_CUT_FLOOR = 0.5  # one latency cut keeps at least half the limit (p50 is noisy)
_NO_LIMIT = 1e9  # a budget allowing more than this many requests in flight does not bind
_BUDGET_MARGIN = 0.95  # aim just under the refill rate so the bucket never quite empties
_SIGNAL_LABEL = {"rate_limited": "429", "unavailable": "503", "timeout": "timeout"}


def sane_retry_after(retry_after: float | None, max_retry_after: float) -> float | None:
    """A Retry-After to obey: None if absent, negative, NaN or absurd; else clamped."""
    if retry_after is None or not 0 <= retry_after <= ABSURD_SECONDS:
        return None
    return min(retry_after, max_retry_after)


def on_pressure(
    config: ControllerConfig,
    state: ControllerState,
    signal: Signal,
    retry_after: float | None,
    now: float,
    *,
    sent_at: float | None = None,
) -> Decision:
    """React to one 429, 503 or timeout: pause the provider, and cut once per window.

    `sent_at` (when the failed request was sent) lets an answer to a request sent before the
    last cut be recognised: it describes the old limit, so it pauses but does not cut again.
    """
    if signal not in SIGNALS:
        raise ValueError(f"unknown signal {signal!r}; expected one of {', '.join(SIGNALS)}")
    state = replace(state, limit=config.clamp(state.limit))
    if config.policy == "queue-depth":
        return Decision(state)  # the seed's rule knows nothing of the provider
    until, pause = _cooldown(config, state, signal, retry_after, now)
    state = replace(state, cooldown_until=until)
    old = state.limit
    if config.policy == "adaptive" and _may_cut(config, state, now, sent_at):
        state = _cut(state, _pressure_target(config, state), config, now, knee=old)
    label = _SIGNAL_LABEL[signal]
    if retry_after is not None:
        label += f" (Retry-After {retry_after:g}s)"
    parts = [f"{old} → {state.limit}"] if state.limit != old else []
    if pause is not None:
        parts.append(f"paused {pause:g}s")
    return Decision(state, f"{label}: {', '.join(parts)}" if parts else None)


def _cooldown(
    config: ControllerConfig,
    state: ControllerState,
    signal: Signal,
    retry_after: float | None,
    now: float,
) -> tuple[float | None, float | None]:
    """The new cooldown_until and the pause it adds (None when the old one lasts longer)."""
    if signal == "timeout":
        return state.cooldown_until, None  # a timeout says nothing about when to come back
    floor = min(config.max_retry_after, config.min_cooldown * 2**state.strikes)
    pause = max(sane_retry_after(retry_after, config.max_retry_after) or 0.0, floor)
    until = now + pause
    # Extend, never shorten: a later 429 may carry a smaller Retry-After.
    if pause <= 0 or (state.cooldown_until is not None and state.cooldown_until >= until):
        return state.cooldown_until, None
    return until, pause


def _pressure_target(config: ControllerConfig, state: ControllerState) -> int:
    """×decrease_factor, but not below the last limit that held (unless pressure came there)."""
    target = math.floor(state.limit * config.decrease_factor)
    if state.safe is not None and state.safe < state.limit:
        target = max(target, state.safe)
    return target


def _may_cut(
    config: ControllerConfig, state: ControllerState, now: float, sent_at: float | None
) -> bool:
    last = state.last_cut_at
    if last is None:
        return True
    if sent_at is not None and sent_at < last:
        return False
    # One overload comes back as a burst from every request in flight: like TCP reacting
    # once per round trip, only the first signal of a window cuts.
    return now - last >= config.window


def _cut(
    state: ControllerState,
    target: int,
    config: ControllerConfig,
    now: float,
    *,
    knee: int | None = None,
) -> ControllerState:
    """Lower the limit to `target` (at least one below, never under min) after pressure.

    `knee`: the limit the provider pushed back at (None: keep the one known).
    """
    limit = config.clamp(min(state.limit - 1, target))
    # Pressure at or under the safe limit: the provider shrank, what held before no longer does.
    safe = state.safe if state.safe is not None and state.safe < state.limit else None
    return replace(
        state,
        limit=limit,
        phase="avoidance",
        last_cut_at=now,
        probe_streak=0,
        knee=knee if knee is not None else state.knee,
        safe=safe,
    )


def decide(
    config: ControllerConfig, state: ControllerState, window: WindowStats, now: float
) -> Decision:
    """The end-of-window decision for the fleet: the policy's rule on the window's stats."""
    clamped = replace(state, limit=config.clamp(state.limit))
    if config.policy == "fixed":
        decision = _fixed(config, clamped)
    elif config.policy == "queue-depth":
        decision = _queue_depth(config, clamped, window, now)
    else:
        decision = _adaptive(config, clamped, window, now)
    reason = decision.reason
    if reason is None and decision.limit != state.limit:
        reason = (
            f"outside [{config.min}, {config.max_concurrency}]: {state.limit} → {decision.limit}"
        )
    return Decision(replace(decision.state, last_decision_at=now), reason)


def _fixed(config: ControllerConfig, state: ControllerState) -> Decision:
    limit = config.clamp(config.initial)
    if limit == state.limit:
        return Decision(state)
    return Decision(replace(state, limit=limit), f"fixed at {limit}: {state.limit} → {limit}")


def _queue_depth(
    config: ControllerConfig, state: ControllerState, window: WindowStats, now: float
) -> Decision:
    """The seed's rule, exactly: up first, then down against the (possibly new) limit."""
    pending = window.pending
    last_up = state.last_up_at if state.last_up_at is not None else now
    last_down = state.last_down_at if state.last_down_at is not None else now
    reasons = []
    old = state.limit
    up = seed_scale_up(
        old,
        pending,
        max_limit=config.max_concurrency,
        step=config.step,
        since_up=now - last_up,
        interval=config.scale_up_interval,
    )
    if up is not None:
        reasons.append(f"pending {pending} > 2×limit {old}: {old} → {up}")
        old, last_up = up, now
    down = seed_scale_down(
        old,
        pending,
        floor=config.initial,
        step=config.step,
        since_down=now - last_down,
        interval=config.scale_down_interval,
    )
    if down is not None:
        reasons.append(f"pending {pending} < limit {old}/2: {old} → {down}")
        old, last_down = down, now
    new_state = replace(state, limit=old, last_up_at=last_up, last_down_at=last_down)
    return Decision(new_state, "; ".join(reasons) or None)


def _adaptive(
    config: ControllerConfig, state: ControllerState, window: WindowStats, now: float
) -> Decision:
    sample = _latency_sample(config, window)
    state, rebased = _track_latency(config, state, sample)
    if window.pressure:
        return _pressure_window(config, state, window, now)
    state = replace(state, strikes=0)
    if window.in_flight >= state.limit * config.min_utilization and window.completions:
        state = replace(state, safe=max(state.safe or 0, state.limit))  # held, no pressure
    if state.knee is not None and _quiet_for(state, now) >= config.knee_expiry * config.window:
        # No pressure for a while: the edge learned back then may have moved (capacity came
        # back). Probe by doubling again rather than creeping up to a stale knee.
        state = replace(state, knee=None, probe_streak=0)
    if rebased:
        # The knee found so far was measured against the old speed: look for it again.
        state = replace(state, phase="slow-start", knee=None)
        return Decision(
            state, f"p50 {sample:.3g}s did not fall after the cut: baseline is now {sample:.3g}s"
        )
    if is_paused(state, now):
        return Decision(state)
    budget = _budget(config, state.limit, window)
    if budget is not None and budget.cut_to < state.limit:
        new = _cut(state, budget.cut_to, config, now)
        return Decision(new, f"{budget}: {state.limit} → {new.limit}")
    baseline = state.baseline_latency
    if sample is not None and baseline is not None:
        if sample > baseline * config.latency_tolerance:
            return _latency_cut(config, state, window, sample, now)
        if sample > baseline * config.flat_tolerance:
            held = replace(state, phase="avoidance", probe_streak=0)
            why = f"p50 {sample:.3g}s above {config.flat_tolerance:g}× baseline {baseline:.3g}s"
            return Decision(held, None if state.phase == "avoidance" else f"{why}: holding")
    elif window.in_flight:
        # Busy but too few completions to judge latency: no evidence to grow on.
        return Decision(replace(state, probe_streak=0))
    return _grow(config, state, window, budget, now)


def _latency_sample(config: ControllerConfig, window: WindowStats) -> float | None:
    p50 = window.latency_p50
    if p50 is None or not 0 < p50 < math.inf or window.completions < config.min_samples:
        return None
    return p50


def _track_latency(
    config: ControllerConfig, state: ControllerState, sample: float | None
) -> tuple[ControllerState, bool]:
    """Fold a window's p50 into the baseline; True when the baseline had to be reset."""
    if sample is None:
        return replace(state, latency_cut=False), False
    baseline, rebased = state.baseline_latency, False
    if baseline is None:
        baseline = sample
    elif sample < baseline:
        baseline = (baseline + sample) / 2  # halfway: one lucky window does not set it
    elif (
        state.latency_cut
        and state.last_latency is not None
        and sample > baseline * config.latency_tolerance
        and sample >= state.last_latency * _LATENCY_FELL
    ):
        # Latency that does not fall when concurrency does is not queueing: the provider got
        # slower (a bigger model, longer prompts). Without this the limit would spiral down.
        baseline, rebased = sample, True
    return replace(
        state, baseline_latency=baseline, last_latency=sample, latency_cut=False
    ), rebased


def _served(window: WindowStats, baseline: float | None) -> float | None:
    """Concurrency the provider actually served (Little's law: throughput × baseline latency)."""
    span = window.span
    if span is None or baseline is None or window.completions == 0:
        return None
    return window.completions / span * baseline


def _pressure_window(
    config: ControllerConfig, state: ControllerState, window: WindowStats, now: float
) -> Decision:
    """No growth; bound the limit by what the provider served; cut if on_pressure did not."""
    counts = ", ".join(
        f"{n}× {label}"
        for n, label in (
            (window.rate_limited, "429"),
            (window.unavailable, "503"),
            (window.timeouts, "timeout"),
        )
        if n
    )
    target = state.limit
    # Signals normally cut through on_pressure as they happen. Ones that only reached the
    # counts cut here, unless a cut is recent: its stragglers arrive within a latency of it.
    recent = state.last_cut_at is not None and now - state.last_cut_at < 2 * config.window
    if not recent:
        target = _pressure_target(config, state)
    served = _served(window, state.baseline_latency)
    floor = math.floor(state.limit * _LATENCY_CUT_FLOOR)
    # After a recent cut, only a gross overshoot (served under half the limit) cuts again: a
    # window holding a Retry-After pause served less than the provider can, not the knee.
    if served is not None and (not recent or served < floor):
        target = min(target, max(round(served), floor))
    # Each window in a row with pressure doubles the minimum cooldown (see _cooldown).
    state = replace(state, strikes=min(state.strikes + 1, _MAX_STREAK), probe_streak=0)
    if target >= state.limit:
        return Decision(state)
    new = _cut(state, target, config, now, knee=state.limit)
    note = f", served ≈{served:.1f}" if served is not None else ""
    return Decision(new, f"{counts} in window{note}: {state.limit} → {new.limit}")


def _latency_cut(
    config: ControllerConfig,
    state: ControllerState,
    window: WindowStats,
    sample: float,
    now: float,
) -> Decision:
    baseline = state.baseline_latency or sample
    served = _served(window, baseline)
    floor = math.floor(state.limit * _LATENCY_CUT_FLOOR)
    target = max(floor, round(served)) if served is not None else floor
    limit = config.clamp(min(state.limit - 1, target))
    new = replace(
        state,
        limit=limit,
        phase="avoidance",
        last_cut_at=now,
        latency_cut=True,
        probe_streak=0,
    )
    why = f"p50 {sample:.3g}s > {config.latency_tolerance:g}× baseline {baseline:.3g}s"
    if served is not None:
        why += f", provider serving ≈{served:.1f}"
    return Decision(new, f"{why}: {state.limit} → {limit}")


@dataclass(frozen=True)
class _Budget:
    """What x-ratelimit-* allow: the limit that lasts one window, and the one to grow to."""

    cut_to: int
    grow_to: int
    remaining: int
    refill: float  # requests per second the provider's budget refills
    sent: float  # requests per second sent in the window

    def __str__(self) -> str:
        return (
            f"x-ratelimit: {self.remaining} requests left, refilling {self.refill:.3g}/s, "
            f"sending {self.sent:.3g}/s"
        )


def _budget(config: ControllerConfig, limit: int, window: WindowStats) -> _Budget | None:
    remaining, span = window.ratelimit_remaining, window.span
    if remaining is None or remaining < 0 or span is None or window.requests == 0:
        return None
    sent = window.requests / span
    refill = 0.0
    total, reset = window.ratelimit_limit, window.ratelimit_reset
    # OpenAI's reset is the time until the budget is full again, so it refills at
    # (limit - remaining) / reset requests a second.
    if total is not None and total >= remaining and reset is not None and 0 < reset < math.inf:
        refill = (total - remaining) / reset

    def lasting(seconds: float) -> int:
        # The limit whose request rate (assumed proportional to the limit) the refill plus
        # the remaining budget can carry for `seconds`.
        allowed = limit * (refill * _BUDGET_MARGIN + remaining / seconds) / sent
        # A reset of a microsecond makes this astronomically large (even inf): no constraint.
        return math.floor(min(allowed, _NO_LIMIT))

    horizon = config.window * config.budget_horizon
    return _Budget(lasting(config.window), lasting(horizon), remaining, refill, sent)


def _quiet_for(state: ControllerState, now: float) -> float:
    """Seconds since the last cut (the last pressure that moved the limit); 0 if none known."""
    return now - state.last_cut_at if state.last_cut_at is not None else 0.0


def _grow(
    config: ControllerConfig,
    state: ControllerState,
    window: WindowStats,
    budget: _Budget | None,
    now: float,
) -> Decision:
    """Slow start (×growth) or probe (+share, doubling per healthy window), within every cap."""
    demand = window.in_flight + window.pending
    idle = demand <= state.limit or window.in_flight < state.limit * config.min_utilization
    erroring = window.server_errors * 4 > window.requests  # growing into 5xx helps nobody
    if idle or erroring:
        return Decision(replace(state, probe_streak=0))
    knee = state.knee
    if state.phase == "slow-start":
        target, how = math.ceil(state.limit * config.growth_factor), "slow start"
    elif knee is not None and state.limit + 1 < knee:
        # Below where the provider last pushed back (a 429/503/timeout, a hard edge): close
        # half the gap each window, so far below it is quick and near it is +1 (like CUBIC).
        step = max(1, (knee - state.limit) // 2)
        target, how = min(state.limit + step, knee - 1), "probing toward the knee"
    elif knee is not None and state.probe_streak < config.knee_hold:
        # Just under the knee: hold a few windows before testing it again (each test that
        # finds the edge costs a 429 and its Retry-After pause).
        return Decision(replace(state, probe_streak=state.probe_streak + 1))
    elif knee is not None:
        # At the knee: one step past it; if that brings no pressure the provider grew.
        target, how, knee = state.limit + 1, "probing past the knee", None
    else:
        # Slow near the knee, doubling while latency stays flat (the provider grew), but never
        # faster than slow start.
        share = min(config.probe_fraction * 2**state.probe_streak, config.growth_factor - 1)
        target, how = state.limit + max(1, round(state.limit * share)), "probing"
    caps = [target, config.max_concurrency, demand]
    if budget is not None:
        caps.append(budget.grow_to)
    new = max(state.limit, min(caps))
    if new == state.limit:
        return Decision(replace(state, probe_streak=0))
    doubling = state.phase == "avoidance" and state.knee is None
    streak = min(state.probe_streak + 1, _MAX_STREAK) if doubling and knee is None else 0
    grown = replace(state, limit=new, last_up_at=now, probe_streak=streak, knee=knee)
    latency = f"p50 {window.latency_p50:.3g}s, " if window.latency_p50 is not None else ""
    return Decision(grown, f"{how}: {latency}{window.pending} pending: {state.limit} → {new}")
