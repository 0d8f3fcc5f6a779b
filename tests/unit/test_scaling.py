"""Scaling policies, driven by a fake clock: the seed's arithmetic, then AIMD on top."""

from __future__ import annotations

import dataclasses

import pytest

from runner.config import Config
from runner.policy.scaling import (
    Decision,
    HoldMaxPolicy,
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


# --- adaptive (the default): the pool holds what one machine can; providers adapt ---------


def test_adaptive_pool_holds_its_max_whatever_happens() -> None:
    """Ticks and pressure leave the pool at `max`: the fleet controller moves the limit."""
    policy = HoldMaxPolicy(cfg(initial=10, max=40), now=0.0)
    assert policy.limit == 40
    assert policy.tick(DEEP, 60.0) == Decision(40, None, None)
    assert policy.tick(EMPTY, 600.0) == Decision(40, None, None)
    for kind in ("rate_limited", "unavailable", "timeout"):
        assert policy.on_pressure(kind, 30.0, 601.0) == Decision(40, None, None)  # type: ignore[arg-type]
    assert not policy.is_paused(602.0)


# --- factory ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "cls"), [("adaptive", HoldMaxPolicy), ("queue-depth", QueueDepthPolicy)]
)
def test_make_policy_by_name(name: str, cls: type) -> None:
    """The CLI names map to the policy classes and carry their config."""
    policy = make_policy(name, LUMINA_DEFAULTS, now=0.0)
    assert isinstance(policy, cls)
    assert policy.name == name
    assert policy.limit == (20 if name == "adaptive" else 2)  # adaptive holds max


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
