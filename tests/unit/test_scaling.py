"""Scaling policies, driven by a fake clock: the seed's arithmetic, then AIMD on top."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from runner.config import Config
from runner.policy.scaling import (
    AdaptivePolicy,
    Decision,
    PoolSignals,
    QueueDepthPolicy,
    ScalingConfig,
    ScalingPolicy,
    make_policy,
)

# The policies' configs come from the built-in [pools.*] sections: the one source of defaults.
STANDARD_DEFAULTS = Config().pool("standard").scaling()
LUMINA_DEFAULTS = Config().pool("lumina").scaling()

DEEP = PoolSignals(pending=100_000)
EMPTY = PoolSignals(pending=0)


def cfg(**kw: float) -> ScalingConfig:
    """The standard defaults with some fields replaced."""
    return dataclasses.replace(STANDARD_DEFAULTS, **kw)  # type: ignore[arg-type]


def run_ticks(
    policy: ScalingPolicy, start: float, end: float, signals: PoolSignals, every: float = 10.0
) -> list[tuple[float, int]]:
    """Tick from start to end inclusive; return (time, limit) after each tick."""
    out = []
    t = start
    while t <= end:
        policy.tick(signals, t)
        out.append((t, policy.limit))
        t += every
    return out


# --- defaults -------------------------------------------------------------------------


def test_defaults_match_the_seed_and_design() -> None:
    """Standard 10/50/+5/60 s/180 s, lumina 2/20/+2/120 s/180 s, ticks every 10 s."""

    def seed_fields(c: ScalingConfig) -> tuple[float, ...]:
        return (c.initial, c.max, c.step, c.scale_up_interval, c.scale_down_interval)

    assert seed_fields(STANDARD_DEFAULTS) == (10, 50, 5, 60.0, 180.0)
    assert seed_fields(LUMINA_DEFAULTS) == (2, 20, 2, 120.0, 180.0)
    assert STANDARD_DEFAULTS.tick_interval == LUMINA_DEFAULTS.tick_interval == 10.0


@pytest.mark.parametrize(
    "kw",
    [
        {"initial": 0},
        {"initial": 60},  # above max
        {"step": 0},
        {"scale_up_interval": -1},
        {"tick_interval": 0},
        {"decrease_factor": 1.0},
        {"decrease_factor": 0.0},
        {"min_limit": 0},
        {"latency_tolerance": 0.9},
        {"latency_alpha": 0.0},
    ],
)
def test_config_rejects_nonsense(kw: dict[str, float]) -> None:
    """Configurations the policies cannot honour fail at construction."""
    with pytest.raises(ValueError):
        cfg(**kw)


# --- queue-depth: the seed, exactly -----------------------------------------------------


def test_queue_depth_ramps_standard_one_step_per_minute() -> None:
    """Deep queue: 10 → 15 → … → 50, one step every 60 s from construction, not faster."""
    policy = QueueDepthPolicy(STANDARD_DEFAULTS, now=0.0)
    got = run_ticks(policy, 10.0, 600.0, DEEP)
    assert got == [(t, min(10 + 5 * int(t // 60), 50)) for t, _ in got]
    assert policy.limit == 50


def test_queue_depth_ramps_lumina_every_two_minutes() -> None:
    """Lumina: 2 → 4 → … → 20, one step every 120 s."""
    policy = QueueDepthPolicy(LUMINA_DEFAULTS, now=0.0)
    got = run_ticks(policy, 10.0, 1500.0, DEEP)
    assert got == [(t, min(2 + 2 * int(t // 120), 20)) for t, _ in got]


def test_queue_depth_drains_one_step_per_three_minutes_to_initial() -> None:
    """Drained queue: 50 → 45 → … → 10 every 180 s, never below initial."""
    policy = QueueDepthPolicy(STANDARD_DEFAULTS, now=0.0)
    run_ticks(policy, 10.0, 480.0, DEEP)
    assert policy.limit == 50
    # lastScaleDown is still the construction time, so the first step down is immediate.
    got = run_ticks(policy, 600.0, 2400.0, EMPTY)
    assert got == [(t, max(45 - 5 * int((t - 600) // 180), 10)) for t, _ in got]
    assert policy.limit == 10


def test_queue_depth_waits_a_full_interval_after_construction() -> None:
    """Like the seed's constructor, both timestamps start at construction time."""
    policy = QueueDepthPolicy(STANDARD_DEFAULTS, now=1000.0)
    assert [lim for _, lim in run_ticks(policy, 1010.0, 1050.0, DEEP)] == [10] * 5
    assert policy.tick(DEEP, 1060.0) == Decision(15, "pending 100000 > 2×limit 10: 10 → 15")


def test_queue_depth_without_a_clock_anchors_on_first_tick() -> None:
    """No construction time given: the first tick starts the intervals."""
    policy = QueueDepthPolicy(STANDARD_DEFAULTS)
    assert policy.tick(DEEP, 5000.0).limit == 10
    assert policy.tick(DEEP, 5050.0).limit == 10
    assert policy.tick(DEEP, 5060.0).limit == 15


@pytest.mark.parametrize(
    ("limit", "pending", "expected"),
    [
        (10, 20, 10),  # pending == 2 × limit: not "more than"
        (10, 21, 15),
        (50, 10_000, 50),  # at max
        (15, 8, 15),  # 8 is not < 7.5
        (15, 7, 10),  # 7 < 7.5: the seed divides without rounding
        (20, 10, 20),  # 10 is not < 10
        (20, 9, 15),
        (20, 15, 20),  # between the thresholds: hold
        (10, 0, 10),  # at initial: never below
    ],
)
def test_queue_depth_thresholds(limit: int, pending: int, expected: int) -> None:
    """Strict comparisons as in the seed: pending > 2×limit up, pending < limit/2 down."""
    policy = QueueDepthPolicy(STANDARD_DEFAULTS, now=0.0)
    policy._limit = limit  # white-box: start from an arbitrary limit
    assert policy.tick(PoolSignals(pending=pending), 1000.0).limit == expected


def test_queue_depth_caps_and_floors_partial_steps() -> None:
    """A step that would overshoot max (or undershoot initial) stops at it."""
    policy = QueueDepthPolicy(cfg(initial=10, max=12), now=0.0)
    assert policy.tick(DEEP, 60.0).limit == 12
    policy = QueueDepthPolicy(cfg(initial=10, max=50), now=0.0)
    policy._limit = 12
    assert policy.tick(EMPTY, 180.0).limit == 10


def test_queue_depth_ignores_provider_pressure() -> None:
    """The seed has no backpressure: a 429 neither cuts nor pauses."""
    policy = QueueDepthPolicy(STANDARD_DEFAULTS, now=0.0)
    for kind in ("rate_limited", "unavailable", "timeout"):
        assert policy.on_pressure(kind, 30.0, 5.0) == Decision(10, None, None)
    assert not policy.is_paused(6.0)
    assert policy.paused_until is None


def test_unchanged_tick_has_no_reason() -> None:
    """A decision that keeps the limit carries reason None."""
    decision = QueueDepthPolicy(STANDARD_DEFAULTS, now=0.0).tick(DEEP, 10.0)
    assert decision == Decision(10, None, None)
    assert not decision.changed


# --- adaptive ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("start", "after"),
    [(50, 25), (25, 12), (15, 7), (3, 1), (2, 1), (1, 1)],
)
def test_adaptive_pressure_halves_with_floor_one(start: int, after: int) -> None:
    """A 429 halves the limit (rounded down), never below 1."""
    policy = AdaptivePolicy(cfg(initial=start, max=max(start, 5)), now=0.0)
    decision = policy.on_pressure("rate_limited", None, 100.0)
    assert decision.limit == policy.limit == after
    assert decision.changed == (start != after)


@pytest.mark.parametrize("kind", ["rate_limited", "unavailable", "timeout"])
def test_adaptive_every_pressure_kind_cuts(kind: str) -> None:
    """429, 503 and timeouts all count as provider pressure."""
    policy = AdaptivePolicy(cfg(initial=40), now=0.0)
    assert policy.on_pressure(kind, None, 1.0).limit == 20  # type: ignore[arg-type]


def test_adaptive_retry_after_pauses_claims() -> None:
    """Retry-After sets paused_until = now + retry_after; no Retry-After, no pause."""
    policy = AdaptivePolicy(cfg(initial=40), now=0.0)
    decision = policy.on_pressure("rate_limited", 30.0, 100.0)
    assert decision.paused_until == policy.paused_until == 130.0
    assert decision.reason == "rate_limited: 40 → 20 (×0.5), paused 30s"
    assert policy.is_paused(129.9)
    assert not policy.is_paused(130.0)
    assert policy.tick(EMPTY, 140.0).paused_until is None  # expired pauses are not reported

    fresh = AdaptivePolicy(cfg(initial=40), now=0.0)
    assert fresh.on_pressure("timeout", None, 100.0).paused_until is None
    assert not fresh.is_paused(100.0)


def test_adaptive_pause_is_extended_never_shortened() -> None:
    """A later 429 with a smaller Retry-After keeps the longer pause."""
    policy = AdaptivePolicy(cfg(initial=40), now=0.0)
    policy.on_pressure("rate_limited", 60.0, 100.0)
    assert policy.on_pressure("rate_limited", 5.0, 101.0).paused_until == 160.0
    assert policy.on_pressure("rate_limited", 90.0, 102.0).paused_until == 192.0


def test_adaptive_burst_of_429s_counts_once() -> None:
    """Ten 429s from one overload cut once; the next window's 429 cuts again."""
    policy = AdaptivePolicy(cfg(initial=50), now=0.0)
    decisions = [policy.on_pressure("rate_limited", None, 100.0 + i / 10) for i in range(10)]
    assert [d.limit for d in decisions] == [25] * 10
    assert [d.changed for d in decisions] == [True] + [False] * 9
    assert policy.on_pressure("rate_limited", None, 110.0).limit == 12


def test_adaptive_grows_faster_than_the_seed_when_healthy_and_deep() -> None:
    """Healthy latency and a deep queue: +step every tick; the seed needs a minute per step."""
    healthy = PoolSignals(pending=100_000, latency_p50=2.0)
    adaptive = AdaptivePolicy(STANDARD_DEFAULTS, now=0.0)
    seed = QueueDepthPolicy(STANDARD_DEFAULTS, now=0.0)
    fast = run_ticks(adaptive, 10.0, 120.0, healthy)
    slow = run_ticks(seed, 10.0, 120.0, healthy)
    assert slow[-1] == (120.0, 20)
    assert fast == [(t, min(10 + 5 * int(t // 10), 50)) for t, _ in fast]
    assert adaptive.limit == 50


@settings(max_examples=100, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.tuples(st.just("tick"), st.integers(0, 10_000), st.floats(0.01, 100)),
            st.tuples(
                st.sampled_from(["rate_limited", "unavailable", "timeout"]),
                st.one_of(st.none(), st.floats(0, 600)),
                st.floats(0, 30),
            ),
        ),
        max_size=60,
    ),
    st.sampled_from([STANDARD_DEFAULTS, LUMINA_DEFAULTS]),
)
def test_adaptive_limit_stays_within_one_and_max(
    events: list[tuple[str, object, float]], config: ScalingConfig
) -> None:
    """Whatever happens, 1 <= limit <= max, for both policies."""
    for policy in (AdaptivePolicy(config, now=0.0), QueueDepthPolicy(config, now=0.0)):
        now = 0.0
        for kind, arg, dt in events:
            now += dt if kind != "tick" else 10.0
            if kind == "tick":
                assert isinstance(arg, int)
                decision = policy.tick(PoolSignals(pending=arg, latency_p50=dt), now)
            else:
                assert arg is None or isinstance(arg, float)
                decision = policy.on_pressure(kind, arg, now)  # type: ignore[arg-type]
            assert 1 <= decision.limit == policy.limit <= config.max


def test_adaptive_no_growth_while_paused_or_cooling_down() -> None:
    """After pressure: no growth during Retry-After, nor for the cooldown after the last 429."""
    policy = AdaptivePolicy(STANDARD_DEFAULTS, now=0.0)
    run_ticks(policy, 10.0, 80.0, DEEP)
    assert policy.limit == 50
    policy.on_pressure("rate_limited", 40.0, 85.0)  # 25, paused until 125
    assert policy.limit == 25
    # Paused until 125, then cooldown (30 s after the 429 at 85) already over: grow at 130.
    got = run_ticks(policy, 90.0, 140.0, DEEP)
    assert got == [(90, 25), (100, 25), (110, 25), (120, 25), (130, 30), (140, 35)]

    policy.on_pressure("timeout", None, 145.0)  # 17, no pause, cooldown until 175
    got = run_ticks(policy, 150.0, 190.0, DEEP)
    assert got == [(150, 17), (160, 17), (170, 17), (180, 22), (190, 27)]


def test_adaptive_pressure_seen_in_signals_blocks_growth() -> None:
    """429s or timeouts counted in the tick's window block growth without cutting again."""
    policy = AdaptivePolicy(STANDARD_DEFAULTS, now=0.0)
    pressured = PoolSignals(pending=100_000, rate_limited=3)
    assert policy.tick(pressured, 10.0).limit == 10
    assert policy.tick(PoolSignals(pending=100_000, timeouts=1), 20.0).limit == 10
    assert policy.tick(DEEP, 40.0).limit == 10  # still within 30 s of the last pressure
    assert policy.tick(DEEP, 50.0).limit == 15


def test_adaptive_rising_latency_falls_back_to_seed_pace() -> None:
    """When latency jumps above the baseline, fast growth stops until it is absorbed."""
    policy = AdaptivePolicy(cfg(max=500), now=0.0)
    assert policy.tick(PoolSignals(pending=100_000, latency_p50=1.0), 10.0).limit == 15
    slow = PoolSignals(pending=100_000, latency_p50=5.0)
    assert [policy.tick(slow, t).limit for t in (20.0, 30.0, 40.0, 50.0)] == [15] * 4
    # The EWMA baseline has absorbed the new level (a slower model, say): fast growth resumes.
    assert policy.tick(slow, 60.0).limit == 20
    assert policy.tick(slow, 70.0).limit == 25


def test_adaptive_mean_latency_used_when_p50_missing() -> None:
    """Without p50, the mean latency feeds the same health check."""
    policy = AdaptivePolicy(cfg(max=500), now=0.0)
    policy.tick(PoolSignals(pending=100_000, latency_mean=1.0), 10.0)
    assert policy.tick(PoolSignals(pending=100_000, latency_mean=9.0), 20.0).limit == 15


def test_adaptive_recovers_toward_initial_after_pressure_stops() -> None:
    """Cut below initial, then quiet: climb back to initial by one step per tick, no further."""
    policy = AdaptivePolicy(STANDARD_DEFAULTS, now=0.0)
    policy.on_pressure("rate_limited", None, 100.0)  # 10 → 5
    policy.on_pressure("rate_limited", None, 111.0)  # new window: 5 → 2; cooldown until 141
    assert policy.limit == 2
    got = run_ticks(policy, 120.0, 180.0, EMPTY)
    assert got == [(120, 2), (130, 2), (140, 2), (150, 7), (160, 10), (170, 10), (180, 10)]


def test_adaptive_scales_down_like_the_seed_when_drained() -> None:
    """Queue drained: -step every 180 s down to initial, never below it."""
    policy = AdaptivePolicy(STANDARD_DEFAULTS, now=0.0)
    run_ticks(policy, 10.0, 80.0, DEEP)
    assert policy.limit == 50
    got = run_ticks(policy, 200.0, 2000.0, EMPTY)
    assert got == [(t, max(45 - 5 * int((t - 200) // 180), 10)) for t, _ in got]


# --- factory ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "cls"), [("adaptive", AdaptivePolicy), ("queue-depth", QueueDepthPolicy)]
)
def test_make_policy_by_name(name: str, cls: type) -> None:
    """The CLI names map to the policy classes and carry their config."""
    policy = make_policy(name, LUMINA_DEFAULTS, now=0.0)
    assert isinstance(policy, cls)
    assert policy.name == name
    assert policy.limit == 2


def test_make_policy_rejects_unknown_names() -> None:
    """A typo names the valid choices."""
    with pytest.raises(ValueError, match=r"unknown scaling policy 'aimd'.*adaptive, queue-depth"):
        make_policy("aimd", STANDARD_DEFAULTS)


@pytest.mark.parametrize("policy_name", ["adaptive", "queue-depth"])
def test_unknown_pressure_kind_is_an_error(policy_name: str) -> None:
    """on_pressure validates its kind so a runner typo is caught in tests."""
    policy = make_policy(policy_name, STANDARD_DEFAULTS, now=0.0)
    with pytest.raises(ValueError, match="unknown pressure kind"):
        policy.on_pressure("429", None, 1.0)  # type: ignore[arg-type]
