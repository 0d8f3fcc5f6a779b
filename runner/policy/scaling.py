"""Concurrency-limit policies: pure state machines fed with observations and a clock.

Nothing here does I/O, sleeps or reads the time: the runner calls ``tick(signals, now)``
every ``tick_interval`` seconds and ``on_pressure(kind, retry_after, now)`` when a provider
pushes back, then applies ``Decision.limit`` to its pool limiter and stops claiming until
``Decision.paused_until``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, Protocol, get_args

PressureKind = Literal["rate_limited", "unavailable", "timeout"]
PolicyName = Literal["adaptive", "queue-depth"]

_PRESSURE_KINDS: frozenset[str] = frozenset(get_args(PressureKind))


@dataclass(frozen=True)
class ScalingConfig:
    """Limits and cadences of one pool; the first five fields are the seed's."""

    initial: int
    max: int
    step: int
    scale_up_interval: float  # seconds between seed-pace scale-ups
    scale_down_interval: float  # seconds between scale-downs
    tick_interval: float = 10.0  # seconds; the seed's adjustConcurrency period
    # --- adaptive policy only ---
    decrease_factor: float = 0.5  # multiplicative cut on pressure (the "MD" of AIMD)
    min_limit: int = 1  # a cut never goes below this
    pressure_window: float = 10.0  # seconds; pressure events this close together cut once
    pressure_cooldown: float = 30.0  # seconds after the last pressure with no growth at all
    fast_scale_up_interval: float = 10.0  # seconds between steps when healthy and deep
    latency_tolerance: float = 1.5  # latency > baseline × this counts as "rising"
    latency_alpha: float = 0.2  # EWMA weight of the newest latency sample in the baseline

    def __post_init__(self) -> None:
        """Reject configurations the policies cannot honour."""
        if self.min_limit < 1:
            raise ValueError(f"min_limit must be >= 1, got {self.min_limit}")
        if not self.min_limit <= self.initial <= self.max:
            raise ValueError(
                f"need min_limit <= initial <= max, got {self.min_limit}, "
                f"{self.initial}, {self.max}"
            )
        if self.step < 1:
            raise ValueError(f"step must be >= 1, got {self.step}")
        intervals = (
            self.scale_up_interval,
            self.scale_down_interval,
            self.pressure_window,
            self.pressure_cooldown,
            self.fast_scale_up_interval,
        )
        if any(v < 0 for v in intervals) or self.tick_interval <= 0:
            raise ValueError("intervals must be >= 0 and tick_interval > 0")
        if not 0.0 < self.decrease_factor < 1.0:
            raise ValueError(f"decrease_factor must be in (0, 1), got {self.decrease_factor}")
        if self.latency_tolerance < 1.0 or not 0.0 < self.latency_alpha <= 1.0:
            raise ValueError("latency_tolerance must be >= 1 and latency_alpha in (0, 1]")


@dataclass(frozen=True)
class PoolSignals:
    """What the runner observed for one pool since the previous tick."""

    pending: int  # subtasks claimable now (status pending, run_after <= now)
    running: int = 0
    completed: int = 0
    failures: int = 0
    rate_limited: int = 0
    timeouts: int = 0
    latency_p50: float | None = None  # seconds, over completions in the window
    latency_mean: float | None = None  # seconds; used when p50 is unknown


@dataclass(frozen=True)
class Decision:
    """The pool limit after an event; ``reason`` is None when the limit did not change."""

    limit: int
    reason: str | None = None
    paused_until: float | None = None  # no new claims before this time (same clock as now)

    @property
    def changed(self) -> bool:
        """Whether this decision moved the limit."""
        return self.reason is not None


class ScalingPolicy(Protocol):
    """A pool's concurrency controller: observations and time in, a limit out."""

    @property
    def name(self) -> str:
        """The policy's CLI name."""
        ...

    @property
    def limit(self) -> int:
        """The current concurrency limit."""
        ...

    @property
    def paused_until(self) -> float | None:
        """Claims should wait until this time, if set."""
        ...

    def is_paused(self, now: float) -> bool:
        """Whether claims are paused at ``now``."""
        ...

    def tick(self, signals: PoolSignals, now: float) -> Decision:
        """Evaluate the periodic rule on the last window's signals."""
        ...

    def on_pressure(self, kind: PressureKind, retry_after: float | None, now: float) -> Decision:
        """React to provider backpressure (429, 503, timeout)."""
        ...


class _PolicyBase:
    """State and the seed's scale-down rule, shared by both policies."""

    name = "base"

    def __init__(self, config: ScalingConfig, *, now: float | None = None) -> None:
        self.config = config
        self._limit = config.initial
        self._paused_until: float | None = None
        # The seed sets lastScaleUpTime = lastScaleDownTime = Date.now() in the constructor,
        # so nothing scales during the first interval after start. We take the clock as an
        # argument; without one, the first tick/on_pressure call anchors both timestamps.
        self._last_up: float | None = now
        self._last_down: float | None = now

    @property
    def limit(self) -> int:
        """The current concurrency limit."""
        return self._limit

    @property
    def paused_until(self) -> float | None:
        """Claims should wait until this time, if set."""
        return self._paused_until

    def is_paused(self, now: float) -> bool:
        """Whether claims are paused at ``now``."""
        return self._paused_until is not None and now < self._paused_until

    def _anchor(self, now: float) -> None:
        if self._last_up is None:
            self._last_up = now
        if self._last_down is None:
            self._last_down = now

    def _since_up(self, now: float) -> float:
        return now - (self._last_up if self._last_up is not None else now)

    def _since_down(self, now: float) -> float:
        return now - (self._last_down if self._last_down is not None else now)

    def _decision(self, reason: str | None, now: float) -> Decision:
        paused = self._paused_until if self.is_paused(now) else None
        return Decision(limit=self._limit, reason=reason, paused_until=paused)

    def _scale_up(self, pending: int, now: float, interval: float, why: str) -> str | None:
        old = self._limit
        new = seed_scale_up(
            old,
            pending,
            max_limit=self.config.max,
            step=self.config.step,
            since_up=self._since_up(now),
            interval=interval,
        )
        if new is None:
            return None
        self._limit, self._last_up = new, now
        return f"pending {pending} > 2×limit {old}{why}: {old} → {new}"

    def _scale_down(self, pending: int, now: float) -> str | None:
        old = self._limit
        new = seed_scale_down(
            old,
            pending,
            floor=self.config.initial,
            step=self.config.step,
            since_down=self._since_down(now),
            interval=self.config.scale_down_interval,
        )
        if new is None:
            return None
        self._limit, self._last_down = new, now
        return f"pending {pending} < limit {old}/2: {old} → {new}"


# The seed's rule as two pure functions, shared by the pool policies here and the provider
# controller (runner/policy/control.py).
# The seed compares `now - last > interval` on a 10 s setInterval whose callbacks fire a few
# ms late, so in practice it stepped every 60 s. With an exact clock a strict `>` would step
# every 70 s instead, so we use `>=` to keep the seed's observed cadence.
def seed_scale_up(
    limit: int, pending: int, *, max_limit: int, step: int, since_up: float, interval: float
) -> int | None:
    """The seed's scale-up: limit + step (capped at max) when pending > 2 × limit, else None."""
    if pending > 2 * limit and limit < max_limit and since_up >= interval:
        return min(limit + step, max_limit)
    return None


def seed_scale_down(
    limit: int, pending: int, *, floor: int, step: int, since_down: float, interval: float
) -> int | None:
    """The seed's scale-down: limit - step (not below floor) when pending < limit / 2."""
    # `2 * pending < limit` is the seed's `pending < limit / 2` without floats.
    if 2 * pending < limit and limit > floor and since_down >= interval:
        return max(limit - step, floor)
    return None


def _join(*reasons: str | None) -> str | None:
    parts = [r for r in reasons if r]
    return "; ".join(parts) if parts else None


class QueueDepthPolicy(_PolicyBase):
    """The seed's rule exactly (002 TaskExecutor.adjustConcurrency); ignores the provider."""

    name = "queue-depth"

    def tick(self, signals: PoolSignals, now: float) -> Decision:
        """Step up on a deep queue, step down on a drained one, each at its own cadence."""
        self._anchor(now)
        # Same order as the seed: up first, then down against the (possibly new) limit.
        up = self._scale_up(signals.pending, now, self.config.scale_up_interval, "")
        down = self._scale_down(signals.pending, now)
        return self._decision(_join(up, down), now)

    def on_pressure(self, kind: PressureKind, retry_after: float | None, now: float) -> Decision:
        """The seed has no notion of provider pressure: never changes the limit."""
        _check_kind(kind)
        self._anchor(now)
        return self._decision(None, now)


class AdaptivePolicy(_PolicyBase):
    """The seed's ramp plus AIMD: cut on pressure, grow fast while latency stays flat."""

    name = "adaptive"

    def __init__(self, config: ScalingConfig, *, now: float | None = None) -> None:
        super().__init__(config, now=now)
        self._last_pressure: float | None = None  # last pressure event, cut or not
        self._last_cut: float | None = None
        self._baseline: float | None = None  # EWMA of observed latency, seconds

    def on_pressure(self, kind: PressureKind, retry_after: float | None, now: float) -> Decision:
        """Halve the limit (once per pressure window) and pause claims for Retry-After."""
        _check_kind(kind)
        self._anchor(now)
        self._last_pressure = now
        if retry_after is not None and math.isfinite(retry_after) and retry_after > 0:
            # Extend, never shorten, an existing pause: a later 429 may carry a smaller value.
            until = now + retry_after
            if self._paused_until is None or until > self._paused_until:
                self._paused_until = until
        # One overload comes back as a burst of 429s from every in-flight request; like TCP
        # reacting once per RTT, only the first event of a window cuts, or ten 429s would
        # take 50 → 1 for a single overload.
        if self._last_cut is not None and now - self._last_cut < self.config.pressure_window:
            return self._decision(None, now)
        old = self._limit
        self._limit = max(self.config.min_limit, math.floor(old * self.config.decrease_factor))
        self._last_cut = now
        if self._limit == old:
            return self._decision(None, now)
        reason = f"{kind}: {old} → {self._limit} (×{self.config.decrease_factor:g})"
        if self.is_paused(now) and self._paused_until is not None:
            reason += f", paused {self._paused_until - now:.3g}s"
        return self._decision(reason, now)

    def tick(self, signals: PoolSignals, now: float) -> Decision:
        """Grow fast on a deep queue with healthy latency, otherwise behave like the seed."""
        self._anchor(now)
        healthy = self._latency_healthy(signals)
        if signals.rate_limited or signals.timeouts:
            # Pressure the runner only reports in the window still blocks growth; the cut
            # itself happens in on_pressure so one event is never counted twice.
            self._last_pressure = now
        up = None
        if not self._cooling_down(now):
            if healthy:
                up = self._scale_up(
                    signals.pending, now, self.config.fast_scale_up_interval, ", latency ok"
                )
            else:
                up = self._scale_up(signals.pending, now, self.config.scale_up_interval, "")
            if up is None:
                up = self._recover(now)
        down = self._scale_down(signals.pending, now)
        return self._decision(_join(up, down), now)

    def _cooling_down(self, now: float) -> bool:
        # Growth waits out both the Retry-After pause and a cooldown after the last pressure:
        # growing straight back to the level that overloaded the provider just earns 429s.
        if self.is_paused(now):
            return True
        last = self._last_pressure
        return last is not None and now - last < self.config.pressure_cooldown

    def _recover(self, now: float) -> str | None:
        # After a cut the limit may sit below initial even with a shallow queue; climb back
        # to the operator's configured baseline additively (the "AI" of AIMD).
        cfg = self.config
        if self._limit < cfg.initial and self._since_up(now) >= cfg.fast_scale_up_interval:
            old = self._limit
            self._limit = min(old + cfg.step, cfg.initial)
            self._last_up = now
            return f"recovering toward initial {cfg.initial}: {old} → {self._limit}"
        return None

    def _latency_healthy(self, signals: PoolSignals) -> bool:
        # A provider with spare capacity serves extra concurrency at the same latency; once
        # it queues internally, latency rises before it starts answering 429. Compare to an
        # EWMA baseline taken *before* this sample, then fold the sample in, so a permanent
        # shift (e.g. a slower model) is absorbed after a few ticks instead of stalling us.
        sample = signals.latency_p50 if signals.latency_p50 is not None else signals.latency_mean
        if sample is None or not math.isfinite(sample) or sample < 0:
            return True  # no completions in the window: nothing says the provider is slow
        baseline = self._baseline
        healthy = baseline is None or sample <= baseline * self.config.latency_tolerance
        alpha = self.config.latency_alpha
        self._baseline = sample if baseline is None else alpha * sample + (1 - alpha) * baseline
        return healthy


def _check_kind(kind: str) -> None:
    if kind not in _PRESSURE_KINDS:
        raise ValueError(
            f"unknown pressure kind {kind!r}; expected one of {sorted(_PRESSURE_KINDS)}"
        )


_POLICIES: dict[str, type[QueueDepthPolicy] | type[AdaptivePolicy]] = {
    "adaptive": AdaptivePolicy,
    "queue-depth": QueueDepthPolicy,
}


def make_policy(name: str, config: ScalingConfig, *, now: float | None = None) -> ScalingPolicy:
    """Build the named policy ("adaptive" or "queue-depth") for one pool."""
    try:
        cls = _POLICIES[name]
    except KeyError:
        raise ValueError(
            f"unknown scaling policy {name!r}; expected one of {', '.join(sorted(_POLICIES))}"
        ) from None
    return cls(config, now=now)
