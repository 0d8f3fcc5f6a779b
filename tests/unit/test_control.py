"""The provider controller as a pure object: a fake clock, a toy provider, tables of cases."""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, replace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from runner.config import Config
from runner.policy.control import (
    ControllerConfig,
    ControllerState,
    Decision,
    Signal,
    WindowStats,
    decide,
    initial_state,
    is_paused,
    on_pressure,
    sane_retry_after,
)
from runner.policy.scaling import PoolSignals, QueueDepthPolicy

STANDARD_DEFAULTS = Config().pool("standard").scaling()

WINDOW = 5.0
DEEP = 100_000


def cfg(**kw: Any) -> ControllerConfig:
    """The defaults with a roomy max_concurrency, plus overrides."""
    return ControllerConfig(**{"max_concurrency": 500, **kw})


# --- a toy provider: capacity C slots, latency rises past C, 429 past C + queue --------------


@dataclass
class ToyProvider:
    """C slots of `service` seconds each and a queue of `queue`; beyond both, 429s."""

    capacity: int
    service: float
    queue: int

    def window(self, limit: int, elapsed: float = WINDOW) -> WindowStats:
        """What a fleet holding `limit` requests in flight sees over one window."""
        admitted = min(limit, self.capacity + self.queue)
        busy = min(admitted, self.capacity)
        rejected = limit - admitted  # each rejected slot retries about once a second
        return WindowStats(
            elapsed=elapsed,
            completions=round(busy / self.service * elapsed),
            in_flight=limit,
            pending=DEEP,
            latency_p50=self.service * max(1.0, admitted / self.capacity),
            rate_limited=round(rejected * elapsed),
        )

    def best(self) -> int:
        """Completions per window at full use."""
        return round(self.capacity / self.service * WINDOW)


@dataclass
class Trace:
    """What a run saw, window by window."""

    limits: list[int]
    completions: list[int]
    rejected: list[int]
    reasons: list[str | None]


def drive(
    config: ControllerConfig,
    provider: Any,
    windows: int,
    *,
    start: int | None = None,
    changes: dict[int, Any] | None = None,
) -> Trace:
    """Run windows against a provider: pressure goes to on_pressure mid-window, then decide."""
    now = 1_000.0
    state = initial_state(config, now)
    if start is not None:
        state = replace(state, limit=start)
    trace = Trace([], [], [], [])
    for index in range(windows):
        provider = (changes or {}).get(index, provider)
        stats = provider.window(state.limit)
        trace.limits.append(state.limit)
        trace.completions.append(stats.completions)
        trace.rejected.append(stats.rate_limited)
        if stats.rate_limited:
            state = on_pressure(config, state, "rate_limited", 1.0, now + WINDOW / 2).state
        now += WINDOW
        decision = decide(config, state, stats, now)
        trace.reasons.append(decision.reason)
        state = decision.state
    return trace


# --- configuration ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"policy": "fastest"}, "policy must be one of adaptive, queue-depth, fixed"),
        ({"min": 0}, "need 1 <= min <= initial <= max_concurrency"),
        ({"initial": 60, "max_concurrency": 50}, "need 1 <= min"),
        ({"min": 20, "initial": 10}, "need 1 <= min"),
        ({"window": 0}, "window"),
        ({"window": math.nan}, "window"),
        ({"max_retry_after": -1}, "max_retry_after"),
        ({"max_retry_after": math.inf}, "max_retry_after"),
        ({"min_cooldown": 400}, "min_cooldown"),
        ({"growth_factor": 1.0}, "growth_factor"),
        ({"decrease_factor": 1.0}, "decrease_factor"),
        ({"flat_tolerance": 2.0, "latency_tolerance": 1.5}, "flat_tolerance"),
        ({"min_samples": 0}, "min_samples"),
        ({"min_utilization": 1.5}, "min_utilization"),
        ({"step": 0}, "step"),
    ],
)
def test_config_rejects_what_it_cannot_honour(kw: dict[str, Any], message: str) -> None:
    """Each bad field fails at construction with a message naming it."""
    with pytest.raises(ValueError, match=message):
        cfg(**kw)


# --- state as JSON ---------------------------------------------------------------------------


def test_state_round_trips_through_json_text() -> None:
    """Every field survives dumps/loads, as a jsonb column would store it."""
    state = ControllerState(
        limit=37,
        phase="avoidance",
        baseline_latency=0.412,
        last_latency=0.5,
        latency_cut=True,
        cooldown_until=1_700_000_123.25,
        last_cut_at=1_700_000_100.0,
        last_up_at=1_700_000_050.5,
        last_down_at=None,
        last_decision_at=1_700_000_110.0,
        strikes=3,
        probe_streak=2,
    )
    text = json.dumps(state.to_json())
    assert ControllerState.from_json(json.loads(text)) == state
    assert ControllerState.from_json(text) == state
    assert set(state.to_json()) == {f.name for f in dataclasses.fields(ControllerState)}


@settings(max_examples=200)
@given(
    st.builds(
        ControllerState,
        limit=st.integers(1, 10_000),
        phase=st.sampled_from(["slow-start", "avoidance"]),
        baseline_latency=st.none() | st.floats(0, 1e6),
        cooldown_until=st.none() | st.floats(0, 4e9),
        strikes=st.integers(0, 8),
    )
)
def test_any_state_round_trips(state: ControllerState) -> None:
    """Property: from_json(to_json(s)) == s."""
    assert ControllerState.from_json(json.dumps(state.to_json())) == state


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({}, "limit: Field required"),
        ({"limit": 0}, "limit: Input should be greater than or equal to 1"),
        ({"limit": "10"}, "limit: Input should be a valid integer"),
        ({"limit": 10.0}, "limit: Input should be a valid integer"),
        ({"limit": 10, "phase": "warp"}, "phase: Input should be 'slow-start' or 'avoidance'"),
        ({"limit": 10, "cooldown_until": "soon"}, "cooldown_until"),
        ({"limit": 10, "strikes": -1}, "strikes"),
        ('{"limit": 10, "cooldown_until": NaN}', "cooldown_until: Input should be a finite"),
        ("[1, 2]", "Input should be an object"),
        ("not json", "Invalid JSON"),
    ],
)
def test_state_from_json_refuses_what_is_not_a_state(data: Any, message: str) -> None:
    """A damaged row is a ValueError naming the field, never a half-read state."""
    with pytest.raises(ValueError, match=message):
        ControllerState.from_json(data)


def test_state_from_json_ignores_unknown_keys_and_defaults_missing_ones() -> None:
    """A row written by a newer runner still reads; an older one fills in defaults."""
    state = ControllerState.from_json({"limit": 12, "added_in_v9": [1, 2]})
    assert state == ControllerState(limit=12)


# --- fixed and queue-depth -------------------------------------------------------------------


def test_fixed_never_moves_but_honours_retry_after() -> None:
    """No window or pressure changes a fixed limit; a 429's Retry-After still pauses claims."""
    config = cfg(policy="fixed", initial=16)
    state = initial_state(config, 0.0)
    toy = ToyProvider(capacity=4, service=1.0, queue=0)
    for now in (5.0, 10.0, 15.0):
        decision = decide(config, state, toy.window(16), now)
        assert (decision.limit, decision.reason) == (16, None)
        state = decision.state
    paused = on_pressure(config, state, "rate_limited", 30.0, 20.0)
    assert paused.limit == 16
    assert paused.state.cooldown_until == 50.0
    assert paused.reason == "429 (Retry-After 30s): paused 30s"


@settings(max_examples=100)
@given(st.lists(st.integers(0, 400), min_size=1, max_size=120))
def test_queue_depth_is_the_seed_rule_exactly(pendings: list[int]) -> None:
    """Fed the same queue depths every 10 s, it moves exactly like scaling.QueueDepthPolicy."""
    seed = QueueDepthPolicy(STANDARD_DEFAULTS, now=0.0)
    config = ControllerConfig(policy="queue-depth", initial=10, max_concurrency=50, window=10)
    state = initial_state(config, 0.0)
    for tick, pending in enumerate(pendings, start=1):
        now = tick * 10.0
        expected = seed.tick(PoolSignals(pending=pending), now)
        got = decide(config, state, WindowStats(elapsed=10.0, pending=pending), now)
        assert (got.limit, got.reason) == (expected.limit, expected.reason)
        state = got.state


def test_queue_depth_ignores_pressure() -> None:
    """The seed knows nothing of the provider: a 429 neither cuts nor pauses."""
    config = cfg(policy="queue-depth")
    state = initial_state(config, 0.0)
    assert on_pressure(config, state, "rate_limited", 60.0, 1.0) == Decision(state)


# --- pressure: cuts, cooldowns, Retry-After --------------------------------------------------


@pytest.mark.parametrize(
    ("signal", "retry_after", "paused", "reason"),
    [
        ("rate_limited", 30.0, 30.0, "429 (Retry-After 30s): 40 → 28, paused 30s"),
        ("rate_limited", 3600.0, 300.0, "429 (Retry-After 3600s): 40 → 28, paused 300s"),
        ("rate_limited", 0.0, 1.0, "429 (Retry-After 0s): 40 → 28, paused 1s"),
        ("rate_limited", None, 1.0, "429: 40 → 28, paused 1s"),
        ("rate_limited", -5.0, 1.0, "429 (Retry-After -5s): 40 → 28, paused 1s"),
        ("rate_limited", math.nan, 1.0, "429 (Retry-After nans): 40 → 28, paused 1s"),
        ("rate_limited", math.inf, 1.0, "429 (Retry-After infs): 40 → 28, paused 1s"),
        ("rate_limited", 999_999_999.0, 1.0, "429 (Retry-After 1e+09s): 40 → 28, paused 1s"),
        ("unavailable", None, 1.0, "503: 40 → 28, paused 1s"),
        ("unavailable", 12.0, 12.0, "503 (Retry-After 12s): 40 → 28, paused 12s"),
        ("timeout", None, None, "timeout: 40 → 28"),
    ],
)
def test_pressure_cuts_and_pauses(
    signal: Signal, retry_after: float | None, paused: float | None, reason: str
) -> None:
    """×0.7 cut; pause = Retry-After clamped to 300 s, absurd/negative/NaN → 1 s minimum."""
    config = cfg(initial=40)
    state = initial_state(config, 0.0)
    decision = on_pressure(config, state, signal, retry_after, 100.0)
    assert decision.limit == 28
    assert decision.state.phase == "avoidance"
    expected_until = None if paused is None else 100.0 + paused
    assert decision.state.cooldown_until == expected_until
    assert decision.reason == reason


def test_retry_after_is_clamped_to_the_configured_maximum() -> None:
    """max_retry_after = 60: a Retry-After of an hour pauses a minute."""
    assert sane_retry_after(3600.0, 60.0) == 60.0
    assert sane_retry_after(-1.0, 60.0) is None
    assert sane_retry_after(86_401.0, 60.0) is None  # more than a day: not advice
    config = cfg(max_retry_after=60.0)
    decision = on_pressure(config, initial_state(config, 0.0), "rate_limited", 3600.0, 0.0)
    assert decision.state.cooldown_until == 60.0


@pytest.mark.parametrize("signal", ["rate_limited", "unavailable", "timeout"])
def test_a_burst_cuts_once_per_window(signal: Signal) -> None:
    """Ten signals inside one window cut once; the first after the window cuts again."""
    config = cfg(initial=40)
    state = initial_state(config, 0.0)
    for i in range(10):
        state = on_pressure(config, state, signal, None, 100.0 + i * 0.4).state
    assert state.limit == 28
    state = on_pressure(config, state, signal, None, 100.0 + WINDOW - 0.01).state
    assert state.limit == 28
    state = on_pressure(config, state, signal, None, 100.0 + WINDOW).state
    assert state.limit == 19


def test_answers_to_requests_sent_before_the_cut_do_not_cut_again() -> None:
    """A straggler (sent before the last cut) arriving a window later pauses but keeps the limit."""
    config = cfg(initial=40)
    state = on_pressure(config, initial_state(config, 0.0), "rate_limited", None, 100.0).state
    late = on_pressure(config, state, "rate_limited", 2.0, 110.0, sent_at=99.0)
    assert late.limit == 28
    assert late.state.cooldown_until == 112.0
    fresh = on_pressure(config, state, "rate_limited", 2.0, 110.0, sent_at=101.0)
    assert fresh.limit == 19


def test_a_cooldown_is_extended_never_shortened() -> None:
    """Retry-After 60 then 5: still paused until the first one ends."""
    config = cfg()
    state = on_pressure(config, initial_state(config, 0.0), "rate_limited", 60.0, 0.0).state
    state = on_pressure(config, state, "rate_limited", 5.0, 1.0).state
    assert state.cooldown_until == 60.0
    assert is_paused(state, 59.9) and not is_paused(state, 60.0)


def test_a_retry_after_zero_storm_still_backs_off() -> None:
    """Every request answered 429 with Retry-After: 0: pauses double per window, limit → min."""
    config = cfg(initial=40)
    state = initial_state(config, 0.0)
    pauses = []
    now = 0.0
    for _ in range(8):
        decision = on_pressure(config, state, "rate_limited", 0.0, now + 0.1)
        pauses.append((decision.state.cooldown_until or 0.0) - (now + 0.1))
        now += WINDOW
        stats = WindowStats(elapsed=WINDOW, in_flight=decision.limit, rate_limited=50)
        state = decide(config, decision.state, stats, now).state
    assert pauses == pytest.approx([1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0])
    assert state.limit == config.min
    calm = decide(config, state, WindowStats(elapsed=WINDOW), now + WINDOW).state
    assert calm.strikes == 0  # one quiet window resets the doubling


def test_nothing_grows_while_paused() -> None:
    """Healthy windows during a cooldown leave the limit alone."""
    config = cfg(initial=10)
    state = on_pressure(config, initial_state(config, 0.0), "rate_limited", 60.0, 0.0).state
    toy = ToyProvider(capacity=100, service=0.5, queue=0)
    assert decide(config, state, toy.window(state.limit), 5.0).limit == state.limit
    assert decide(config, state, toy.window(state.limit), 61.0).limit > state.limit


# --- convergence against the toy provider ----------------------------------------------------


@pytest.mark.parametrize(
    ("capacity", "service", "queue", "knee_within", "discovery_429s"),
    [
        # The case: 40 slots at 400 ms from a limit of 10. A deep queue shows the knee
        # as rising latency, so it is found without a single 429.
        (40, 0.4, 64, 2, False),
        (200, 0.1, 400, 5, False),
        # The initial limit already queues (its latency becomes the baseline), or the queue is
        # too shallow for latency to rise 1.5× before it overflows: discovery overshoots once.
        (8, 2.0, 8, 0, True),
        (160, 0.1, 64, 4, True),
    ],
)
def test_cold_start_reaches_the_knee_within_a_few_windows_and_holds_it(
    capacity: int, service: float, queue: int, knee_within: int, discovery_429s: bool
) -> None:
    """From 10: full throughput by `knee_within`; two windows later no 429 and no overflow."""
    toy = ToyProvider(capacity, service, queue)
    trace = drive(cfg(), toy, 30)
    settled = trace.completions[knee_within:]
    assert settled == [toy.best()] * len(settled)
    assert sum(trace.rejected[knee_within + 2 :]) == 0
    assert (sum(trace.rejected) > 0) == discovery_429s
    held = trace.limits[knee_within + 2 :]
    assert all(capacity <= limit <= capacity + queue for limit in held)
    if not discovery_429s:  # a baseline measured unqueued: held within the latency band
        assert all(limit <= capacity * 1.5 for limit in held)


def test_from_above_comes_down_to_what_the_provider_holds() -> None:
    """Starting at 200 against 12 slots + 8 queued: 429s stop and the limit settles in [12, 20]."""
    toy = ToyProvider(capacity=12, service=0.3, queue=8)
    trace = drive(cfg(initial=200, max_concurrency=200), toy, 40)
    assert trace.rejected[0] > 0
    assert all(12 <= limit <= 20 for limit in trace.limits[-10:])
    assert sum(trace.rejected[-10:]) == 0
    assert trace.completions[-10:] == [toy.best()] * 10
    assert trace.limits[3] <= 35  # 200 → ~20 in three windows, not ×0.7 at a time


def test_follows_capacity_down_and_back_up() -> None:
    """40 → 10 slots at window 12 and back at 24: down within 2 windows, up within 6 (30 s)."""
    big, small = ToyProvider(40, 0.4, 64), ToyProvider(10, 0.4, 64)
    trace = drive(cfg(), big, 40, changes={12: small, 24: big})
    assert all(limit <= 10 * 1.5 for limit in trace.limits[14:24])
    assert trace.completions[14:24] == [small.best()] * 10
    assert trace.completions[30:] == [big.best()] * 10
    assert min(trace.completions[30:]) >= 0.9 * big.best()
    assert sum(trace.rejected) == 0


def test_a_slower_provider_does_not_spiral_the_limit_down() -> None:
    """Service time doubles, same slots: after two cuts the baseline moves; the limit recovers."""
    fast, slow = ToyProvider(40, 0.4, 64), ToyProvider(40, 0.8, 64)
    trace = drive(cfg(), fast, 30, changes={10: slow})
    assert any(r and "did not fall" in r for r in trace.reasons)
    assert min(trace.limits[10:]) >= 10  # two cuts, then the baseline moves: no spiral to 1
    assert trace.completions[16:] == [slow.best()] * 14


# --- x-ratelimit headers: slow down before the 429 -------------------------------------------


@dataclass
class RpmProvider:
    """Unlimited slots behind a token bucket of `rpm` with a minute of burst, as the sim's."""

    rpm: int
    service: float
    tokens: float = -1.0

    def window(self, limit: int, elapsed: float = WINDOW, steps: int = 50) -> WindowStats:
        """Requests at limit/service per second, spent from the bucket in small steps."""
        if self.tokens < 0:
            self.tokens = float(self.rpm)
        rate, dt = self.rpm / 60, elapsed / steps
        ok = rejected = 0.0
        lowest = self.tokens
        for _ in range(steps):
            self.tokens = min(self.rpm, self.tokens + rate * dt)
            want = limit / self.service * dt
            got = min(want, self.tokens)
            self.tokens -= got
            ok, rejected = ok + got, rejected + want - got
            lowest = min(lowest, self.tokens)
        return WindowStats(
            elapsed=elapsed,
            completions=round(ok),
            in_flight=limit,
            pending=DEEP,
            latency_p50=self.service,
            rate_limited=round(rejected),
            ratelimit_remaining=int(lowest),
            ratelimit_limit=self.rpm,
            ratelimit_reset=(self.rpm - lowest) / rate,
        )


def test_rpm_limited_provider_is_held_at_its_rate_without_429s() -> None:
    """1,200 rpm, unlimited slots: settles at ≥ 90 % of 20 req/s with no 429 at all."""
    trace = drive(cfg(), RpmProvider(1200, 0.4), 40)
    assert sum(trace.rejected) == 0
    assert any(r and r.startswith("x-ratelimit") for r in trace.reasons)
    per_second = [c / WINDOW for c in trace.completions[-20:]]
    assert all(18.0 <= rate <= 20.0 for rate in per_second)


@pytest.mark.parametrize(
    ("budget", "remaining", "expected_limit", "reason_start"),
    [
        # 60,000 rpm refills 1,000/s: 100/s is nothing to it; slow start doubles.
        (60_000, 59_000, 80, "slow start"),
        # 1,200 rpm refills 20/s; at 100/s, 1,000 left last 12.5 s: growth only to what lasts
        # two windows (10 s): 40 × (0.95 × 20 + 1000 / 10) / 100 = 47.
        (1_200, 1_000, 47, "slow start"),
        # 50 left, gone within a second: cut now to what 0.95 × 20/s (+50 over a window)
        # carries: 40 × (19 + 10) / 100 = 11, before any 429.
        (1_200, 50, 11, "x-ratelimit: 50 requests left, refilling 20/s, sending 100/s"),
    ],
)
def test_remaining_requests_cap_growth_then_cut_before_any_429(
    budget: int, remaining: int, expected_limit: int, reason_start: str
) -> None:
    """40 in flight at 0.4 s = 100 req/s; the budget refills (budget - remaining) / reset."""
    config = cfg()
    state = replace(initial_state(config, 0.0), limit=40)
    stats = WindowStats(
        elapsed=WINDOW,
        completions=500,
        in_flight=40,
        pending=DEEP,
        latency_p50=0.4,
        ratelimit_remaining=remaining,
        ratelimit_limit=budget,
        ratelimit_reset=(budget - remaining) / (budget / 60),
    )
    decision = decide(config, state, stats, WINDOW)
    assert decision.limit == expected_limit
    assert decision.reason is not None and decision.reason.startswith(reason_start)


# --- bounds and gates ------------------------------------------------------------------------


@settings(max_examples=300)
@given(
    events=st.lists(
        st.one_of(
            st.tuples(
                st.just("window"),
                st.integers(0, 2000),  # completions
                st.integers(0, 600),  # in flight
                st.integers(0, 10**6),  # pending
                st.none() | st.floats(0.0, 100.0),  # p50
                st.integers(0, 50),  # 429s
                st.none() | st.integers(0, 10**12),  # remaining
                st.none() | st.integers(0, 10**12),  # budget
                st.none() | st.floats(0.0, 1e6),  # reset, seconds (down to 5e-324)
            ),
            st.tuples(
                st.just("pressure"),
                st.sampled_from(["rate_limited", "unavailable", "timeout"]),
                st.none() | st.floats(allow_nan=True, allow_infinity=True),
            ),
        ),
        max_size=60,
    ),
    policy=st.sampled_from(["adaptive", "queue-depth", "fixed"]),
)
def test_limit_stays_within_bounds_whatever_happens(
    events: list[tuple[Any, ...]], policy: str
) -> None:
    """Property: any sequence keeps min <= limit <= max, cooldowns within max_retry_after."""
    config = ControllerConfig(policy=policy, initial=8, min=2, max_concurrency=64)  # type: ignore[arg-type]
    now = 0.0
    state = initial_state(config, now)
    for event in events:
        now += 1.0
        if event[0] == "window":
            _, done, flying, pending, p50, limited, remaining, budget, reset = event
            stats = WindowStats(
                elapsed=WINDOW,
                completions=done,
                in_flight=flying,
                pending=pending,
                latency_p50=p50,
                rate_limited=limited,
                ratelimit_remaining=remaining,
                ratelimit_limit=budget,
                ratelimit_reset=reset,
            )
            state = decide(config, state, stats, now).state
        else:
            state = on_pressure(config, state, event[1], event[2], now).state
        assert config.min <= state.limit <= config.max_concurrency
        assert state.cooldown_until is None or state.cooldown_until <= now + 300.0
        assert ControllerState.from_json(json.dumps(state.to_json())) == state


def test_a_stored_limit_outside_new_bounds_is_clamped_with_a_reason() -> None:
    """max_concurrency lowered in the config: the next decision brings the limit under it."""
    config = cfg(max_concurrency=50)
    decision = decide(config, ControllerState(limit=80), WindowStats(elapsed=WINDOW), 10.0)
    assert decision.limit == 50
    assert decision.reason == "outside [1, 50]: 80 → 50"


@pytest.mark.parametrize(
    ("stats", "why"),
    [
        (
            WindowStats(WINDOW, completions=125, in_flight=10, pending=0, latency_p50=0.4),
            "no queue",
        ),
        (WindowStats(WINDOW, completions=60, in_flight=5, pending=DEEP, latency_p50=0.4), "unused"),
        (
            WindowStats(WINDOW, completions=3, in_flight=10, pending=DEEP, latency_p50=9.0),
            "samples",
        ),
        (WindowStats(WINDOW, completions=0, in_flight=10, pending=DEEP), "nothing finished"),
        (
            WindowStats(WINDOW, 90, in_flight=10, pending=DEEP, latency_p50=0.4, server_errors=35),
            "5xx",
        ),
    ],
)
def test_growth_needs_a_queue_a_used_limit_evidence_and_no_errors(
    stats: WindowStats, why: str
) -> None:
    """No growth without work to fill the slots, use of the current ones, samples, or with 5xx."""
    config = cfg()
    state = replace(initial_state(config, 0.0), baseline_latency=0.4)
    assert decide(config, state, stats, WINDOW).limit == 10, why


def test_latency_band_holds_the_limit_between_flat_and_tolerance() -> None:
    """p50 1.3× baseline: hold (and leave slow start); 1.6×: cut to what was served."""
    config = cfg()
    state = replace(initial_state(config, 0.0), limit=52, baseline_latency=0.4)
    queued = WindowStats(WINDOW, completions=500, in_flight=52, pending=DEEP, latency_p50=0.52)
    held = decide(config, state, queued, WINDOW)
    assert (held.limit, held.state.phase) == (52, "avoidance")
    assert held.reason == "p50 0.52s above 1.2× baseline 0.4s: holding"
    over = WindowStats(WINDOW, completions=500, in_flight=64, pending=DEEP, latency_p50=0.64)
    cut = decide(config, replace(state, limit=64), over, WINDOW)
    assert cut.limit == 40
    assert cut.reason == "p50 0.64s > 1.5× baseline 0.4s, provider serving ≈40.0: 64 → 40"


def test_controller_modules_do_no_io_and_read_no_clock() -> None:
    """runner/policy/control*.py import nothing doing I/O, sleeping, or reading time or chance."""
    from tests.unit.test_layering import ROOT, imported_packages

    impure = {"time", "datetime", "asyncio", "anyio", "aiohttp", "sqlalchemy", "asyncpg", "os"}
    impure |= {"random", "socket", "subprocess", "db", "logging"}
    for name in ("control.py", "control_state.py"):
        assert imported_packages(ROOT / "runner" / "policy" / name) & impure == set(), name


def test_a_budget_resetting_in_no_time_does_not_bind() -> None:
    """x-ratelimit-reset-requests ≈ 0 with a huge budget: no overflow, the budget just allows."""
    config = cfg()
    state = replace(initial_state(config, 0.0), limit=40)
    stats = WindowStats(
        elapsed=WINDOW,
        completions=500,
        in_flight=40,
        pending=DEEP,
        latency_p50=0.4,
        ratelimit_remaining=10,
        ratelimit_limit=10**12,
        ratelimit_reset=5e-324,
    )
    assert decide(config, state, stats, WINDOW).limit == 80


# --- near a hard edge: the knee and the last safe limit ------------------------------------------


def _healthy(limit: int) -> WindowStats:
    """A window that filled `limit` slots at flat latency with a deep queue, no pressure."""
    return WindowStats(
        elapsed=WINDOW, completions=limit * 10, in_flight=limit, pending=DEEP, latency_p50=0.3
    )


def test_a_cut_stops_at_the_last_limit_that_held() -> None:
    """14 held a window; a 429 at 17 cuts back to 14, not to ⌊17 × 0.7⌋ = 11."""
    config = cfg()
    state = replace(initial_state(config, 0.0), limit=14, phase="avoidance")
    state = decide(config, state, _healthy(14), 5.0).state
    assert state.safe == 14
    state = replace(state, limit=17)
    cut = on_pressure(config, state, "rate_limited", 1.0, 6.0).state
    assert (cut.limit, cut.knee) == (14, 17)
    again = on_pressure(config, cut, "rate_limited", 1.0, 6.0 + WINDOW).state
    assert again.limit == 9  # pressure at the safe limit itself: it no longer holds
    assert again.safe is None


def test_probing_closes_half_the_gap_to_the_knee_holds_then_passes_it() -> None:
    """From 10 under a knee of 30: 20, 25, 27, 28, 29, hold knee_hold windows, 30, then +10 %."""
    config = cfg(knee_hold=2)
    state = replace(initial_state(config, 0.0), limit=10, phase="avoidance", knee=30)
    limits = []
    now = 0.0
    for _ in range(9):
        now += WINDOW
        state = decide(config, state, _healthy(state.limit), now).state
        limits.append(state.limit)
    assert limits == [20, 25, 27, 28, 29, 29, 29, 30, 33]
    assert state.knee is None  # passed without pressure: the provider grew, probing speeds up


def test_a_knee_goes_stale_after_quiet_windows_and_probing_speeds_up() -> None:
    """Capacity came back: knee_expiry windows after the last cut the knee is forgotten."""
    config = cfg(knee_hold=2, knee_expiry=4)
    state = replace(
        initial_state(config, 0.0), limit=10, phase="avoidance", knee=30, last_cut_at=0.0
    )
    knees, now = [], 0.0
    for _ in range(5):
        now += WINDOW
        state = decide(config, state, _healthy(state.limit), now).state
        knees.append(state.knee)
    # Windows 1-3 creep toward the old knee; at 4 × WINDOW of quiet it is dropped.
    assert knees[:3] == [30, 30, 30] and knees[3:] == [None, None]
    assert state.limit > 29  # doubling probes, no more holding under a stale edge


def test_a_hard_edge_is_found_with_few_429s() -> None:
    """12 slots + 3 queued (429 past 15): from 10, a handful of 429 windows in 40, none below 12."""
    toy = ToyProvider(capacity=12, service=0.3, queue=3)
    trace = drive(cfg(), toy, 40)
    pressured = sum(1 for r in trace.rejected if r)
    assert pressured <= 6, trace.limits
    assert min(trace.limits[2:]) >= 12, trace.limits
    assert sum(trace.completions[2:]) >= 0.9 * toy.best() * 38
