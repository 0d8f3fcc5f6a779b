"""The provider controller's data: its config, its JSON-stored state, a window's statistics.

Pure values; the rules that move them are in runner/policy/control.py.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, Literal, get_args

from pydantic import ConfigDict, Field, TypeAdapter, ValidationError

Policy = Literal["adaptive", "queue-depth", "fixed"]
Phase = Literal["slow-start", "avoidance"]
Signal = Literal["rate_limited", "unavailable", "timeout"]
POLICIES: tuple[str, ...] = get_args(Policy)
SIGNALS: tuple[str, ...] = get_args(Signal)


@dataclass(frozen=True)
class ControllerConfig:
    """One provider's bounds and tuning; the defaults suit a provider answering in ~0.1–5 s."""

    policy: Policy = "adaptive"
    initial: int = 10
    min: int = 1
    max_concurrency: int = 50  # hard fleet-wide cap
    window: float = 5.0  # seconds between decisions; pressure cuts at most once per window
    max_retry_after: float = 300.0  # seconds; a longer Retry-After is clamped to this
    min_cooldown: float = 1.0  # seconds paused after a 429/503 even with Retry-After: 0
    # --- adaptive ---
    growth_factor: float = 2.0  # slow start: × per healthy window
    probe_fraction: float = 0.1  # avoidance: first probe step, as a share of the limit
    decrease_factor: float = 0.7  # × on pressure
    flat_tolerance: float = 1.2  # p50 <= baseline × this: not queueing, may grow
    latency_tolerance: float = 1.5  # p50 > baseline × this: queueing, cut to the knee
    min_samples: int = 5  # completions a window needs before its p50 counts
    min_utilization: float = 0.75  # grow only while in_flight >= limit × this
    budget_horizon: float = 2.0  # windows the x-ratelimit budget must last to allow growth
    knee_hold: int = 2  # healthy windows just under the knee before probing past it
    knee_expiry: int = 4  # windows without pressure after which a knee is stale (it moved)
    # --- queue-depth (the seed's rule) ---
    step: int = 5
    scale_up_interval: float = 60.0
    scale_down_interval: float = 180.0

    def __post_init__(self) -> None:
        """Reject configurations the controller cannot honour (NaN fails every check)."""
        checks = [
            (self.policy in POLICIES, f"policy must be one of {', '.join(POLICIES)}"),
            (
                1 <= self.min <= self.initial <= self.max_concurrency,
                "need 1 <= min <= initial <= max_concurrency, got "
                f"{self.min}, {self.initial}, {self.max_concurrency}",
            ),
            (0 < self.window < math.inf, "window must be a positive number of seconds"),
            (0 <= self.max_retry_after < math.inf, "max_retry_after must be >= 0 seconds"),
            (
                0 <= self.min_cooldown <= self.max_retry_after,
                "need 0 <= min_cooldown <= max_retry_after",
            ),
            (1 < self.growth_factor < math.inf, "growth_factor must be > 1"),
            (0 < self.probe_fraction <= 1, "probe_fraction must be in (0, 1]"),
            (0 < self.decrease_factor < 1, "decrease_factor must be in (0, 1)"),
            (
                1 <= self.flat_tolerance <= self.latency_tolerance < math.inf,
                "need 1 <= flat_tolerance <= latency_tolerance",
            ),
            (self.min_samples >= 1, "min_samples must be >= 1"),
            (0 <= self.min_utilization <= 1, "min_utilization must be in [0, 1]"),
            (1 <= self.budget_horizon < math.inf, "budget_horizon must be >= 1"),
            (self.knee_hold >= 0, "knee_hold must be >= 0"),
            (self.knee_expiry >= 1, "knee_expiry must be >= 1"),
            (self.step >= 1, "step must be >= 1"),
            (
                0 <= self.scale_up_interval < math.inf and 0 <= self.scale_down_interval < math.inf,
                "scale intervals must be >= 0 seconds",
            ),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)

    def clamp(self, limit: int) -> int:
        """`limit` within [min, max_concurrency]."""
        return max(self.min, min(self.max_concurrency, limit))


@dataclass(frozen=True)
class ControllerState:
    """A provider's fleet-wide control state: small, frozen, stored as JSON (jsonb)."""

    # Rows are ours, but read back after any upgrade: unknown keys (a newer runner's) are
    # ignored, wrong types and non-finite numbers refused.
    __pydantic_config__: ClassVar[ConfigDict] = ConfigDict(
        strict=True, allow_inf_nan=False, extra="ignore"
    )

    limit: Annotated[int, Field(ge=1)]
    phase: Phase = "slow-start"
    baseline_latency: float | None = None  # seconds: p50 of the provider when not queueing
    last_latency: float | None = None  # seconds: the previous window's p50
    latency_cut: bool = False  # the previous decision cut because latency rose
    cooldown_until: float | None = None  # no claims for this provider before this time
    last_cut_at: float | None = None
    last_up_at: float | None = None
    last_down_at: float | None = None
    last_decision_at: float | None = None
    strikes: Annotated[int, Field(ge=0)] = 0  # windows in a row that saw pressure
    probe_streak: Annotated[int, Field(ge=0)] = 0  # healthy growth windows in a row
    # The limit at which the provider last pushed back: probing creeps up to it additively,
    # passes it by one, and only then (no pressure: the provider grew) speeds up again.
    knee: Annotated[int, Field(ge=1)] | None = None
    # The highest limit that filled a window without pressure since then: a cut from above
    # it stops there (the provider just proved it holds that much) instead of at ×0.7.
    safe: Annotated[int, Field(ge=1)] | None = None

    def __post_init__(self) -> None:
        """A limit below one would stop the provider for good."""
        if self.limit < 1 or self.strikes < 0 or self.probe_streak < 0:
            raise ValueError("limit must be >= 1 and counters >= 0")

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (for a jsonb column)."""
        data: dict[str, Any] = _state_adapter().dump_python(self, mode="json")
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | str | bytes) -> ControllerState:
        """Read a stored state (a dict from jsonb, or JSON text); ValueError if it is not one."""
        try:
            # Through JSON text either way: strict checks of a dataclass apply to JSON input.
            text = data if isinstance(data, str | bytes) else json.dumps(dict(data))
            return _state_adapter().validate_json(text)
        except TypeError:
            raise ValueError("controller state: not JSON data") from None
        except ValidationError as exc:
            problem = exc.errors()[0]
            where = ".".join(str(p) for p in problem["loc"]) or "state"
            raise ValueError(f"controller state: {where}: {problem['msg']}") from None


@functools.cache
def _state_adapter() -> TypeAdapter[ControllerState]:
    """The state's validator, built on first use: at import it cost every CLI command ~40 ms."""
    return TypeAdapter(ControllerState)


@dataclass(frozen=True)
class WindowStats:
    """What the whole fleet saw of one provider over the last window."""

    elapsed: float  # seconds the window covers
    completions: int = 0  # successful requests
    in_flight: int = 0  # requests running at the window's end
    pending: int = 0  # claimable subtasks waiting for this provider (queue depth)
    latency_p50: float | None = None  # seconds, over the window's completions
    rate_limited: int = 0  # 429s
    unavailable: int = 0  # 503s
    timeouts: int = 0  # connect and request timeouts
    server_errors: int = 0  # other 5xx
    ratelimit_remaining: int | None = None  # smallest x-ratelimit-remaining-requests seen
    ratelimit_limit: int | None = None  # x-ratelimit-limit-requests alongside it
    ratelimit_reset: float | None = None  # its x-ratelimit-reset-requests, seconds

    @property
    def pressure(self) -> int:
        """Signals that say "too much": 429, 503, timeouts."""
        return self.rate_limited + self.unavailable + self.timeouts

    @property
    def requests(self) -> int:
        """Requests that got an answer (or timed out) in the window."""
        return self.completions + self.pressure + self.server_errors

    @property
    def span(self) -> float | None:
        """The window's length if usable for rates, else None."""
        return self.elapsed if 0 < self.elapsed < math.inf else None


@dataclass(frozen=True)
class Decision:
    """The state after an event; `reason` says what changed (None: nothing worth logging)."""

    state: ControllerState
    reason: str | None = None

    @property
    def limit(self) -> int:
        """The provider's fleet-wide concurrency limit."""
        return self.state.limit


def initial_state(config: ControllerConfig, now: float) -> ControllerState:
    """A provider's first state: `initial`, slow start, the seed's intervals anchored at now."""
    return ControllerState(
        limit=config.clamp(config.initial), last_up_at=now, last_down_at=now, last_decision_at=now
    )


def is_paused(state: ControllerState, now: float) -> bool:
    """Whether claims for this provider wait out a cooldown at `now`."""
    return state.cooldown_until is not None and now < state.cooldown_until
