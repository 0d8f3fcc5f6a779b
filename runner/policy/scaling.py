"""Concurrency-limit policies: pure state machines fed with observations and a clock.

Nothing here does I/O, sleeps or reads the time: the runner calls ``tick(signals, now)``
every ``tick_interval`` seconds and ``on_pressure(kind, retry_after, now)`` when a provider
pushes back, then applies ``Decision.limit`` to its pool limiter and stops claiming until
``Decision.paused_until``.
"""

from __future__ import annotations

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

    def __post_init__(self) -> None:
        """Reject configurations the policies cannot honour."""
        if not 1 <= self.initial <= self.max:
            raise ValueError(f"need 1 <= initial <= max, got {self.initial}, {self.max}")
        if self.step < 1:
            raise ValueError(f"step must be >= 1, got {self.step}")
        intervals = (self.scale_up_interval, self.scale_down_interval)
        if any(v < 0 for v in intervals) or self.tick_interval <= 0:
            raise ValueError("intervals must be >= 0 and tick_interval > 0")


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


class HoldMaxPolicy(_PolicyBase):
    """The default ("adaptive"): this runner holds up to `max`; the adapting is per provider.

    A provider's limit is decided once for the whole fleet (runner/policy/control.py) and
    enforced where subtasks are claimed, so a pool only says what one machine can hold.
    """

    name = "adaptive"

    def __init__(self, config: ScalingConfig, *, now: float | None = None) -> None:
        super().__init__(config, now=now)
        self._limit = config.max

    def tick(self, signals: PoolSignals, now: float) -> Decision:
        """Nothing to do: the provider's fleet-wide controller moves the limit that binds."""
        return self._decision(None, now)

    def on_pressure(self, kind: PressureKind, retry_after: float | None, now: float) -> Decision:
        """Pressure is the provider's business (fleet-wide), not this pool's."""
        _check_kind(kind)
        return self._decision(None, now)


def _check_kind(kind: str) -> None:
    if kind not in _PRESSURE_KINDS:
        raise ValueError(
            f"unknown pressure kind {kind!r}; expected one of {sorted(_PRESSURE_KINDS)}"
        )


_POLICIES: dict[str, type[QueueDepthPolicy] | type[HoldMaxPolicy]] = {
    "adaptive": HoldMaxPolicy,
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
