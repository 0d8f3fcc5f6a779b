"""Retry delays and the retry / defer / fail decision."""

from __future__ import annotations

import math
import random
from typing import Any

import pytest

from runner.policy.backoff import (
    DEFAULT_RETRY_POLICY,
    MIN_DEFERRAL,
    RetryDecision,
    SubtaskRetryPolicy,
    decide_failure,
    retry_delay,
)

EXACT = SubtaskRetryPolicy(defer_jitter=0.0)  # no randomness: exact seed arithmetic


@pytest.mark.parametrize(
    ("retry_count", "kw", "expected"),
    [
        (0, {}, 1.0),
        (1, {}, 2.0),
        (2, {}, 4.0),
        (3, {}, 8.0),
        (8, {}, 256.0),
        (9, {}, 300.0),  # capped
        (10_000, {}, 300.0),  # no overflow
        (3, {"base": 0.5}, 4.0),
        (3, {"cap": 5.0}, 5.0),
        (2, {"base": 0.0}, 0.0),
    ],
)
def test_retry_delay_doubles_from_one_second(
    retry_count: int, kw: dict[str, Any], expected: float
) -> None:
    """Seed: 1 s × 2^n, bounded by the cap."""
    assert retry_delay(retry_count, **kw) == expected


def test_retry_delay_jitter_is_proportional_and_reproducible() -> None:
    """Jitter stays within ±jitter × delay, respects the cap and follows the rng."""
    delays = [retry_delay(3, jitter=0.25, rng=random.Random(i)) for i in range(200)]
    assert all(6.0 <= d <= 10.0 for d in delays)
    assert len(set(delays)) > 100
    assert retry_delay(3, jitter=0.25, rng=random.Random(7)) == retry_delay(
        3, jitter=0.25, rng=random.Random(7)
    )
    assert all(retry_delay(20, jitter=1.0, rng=random.Random(i)) <= 300.0 for i in range(50))


@pytest.mark.parametrize(
    "kw", [{"retry_count": -1}, {"jitter": 1.5}, {"jitter": -0.1}, {"base": -1.0}]
)
def test_retry_delay_rejects_bad_arguments(kw: dict[str, Any]) -> None:
    """Negative counts or out-of-range jitter are programming errors."""
    args: dict[str, Any] = {"retry_count": 0, **kw}
    count = int(args.pop("retry_count"))
    with pytest.raises(ValueError):
        retry_delay(count, **args)


@pytest.mark.parametrize(
    ("retryable", "retry_count", "expected"),
    [
        (True, 0, RetryDecision("retry", 1.0, True, "retry 1/3 in 1s")),
        (True, 1, RetryDecision("retry", 2.0, True, "retry 2/3 in 2s")),
        (True, 2, RetryDecision("retry", 4.0, True, "retry 3/3 in 4s")),
        (True, 3, RetryDecision("failed", 0.0, False, "retries exhausted (3/3)")),
        (True, 9, RetryDecision("failed", 0.0, False, "retries exhausted (9/3)")),
        (False, 0, RetryDecision("failed", 0.0, False, "non-retryable error")),
    ],
)
def test_decide_failure_spends_the_retry_budget(
    retryable: bool, retry_count: int, expected: RetryDecision
) -> None:
    """Retryable errors retry after 1, 2, 4 s then fail; non-retryable fail at once."""
    got = decide_failure(retryable=retryable, retry_count=retry_count, policy=EXACT)
    assert got == expected


@pytest.mark.parametrize(("max_retries", "retries"), [(0, 0), (1, 1), (3, 3), (5, 5)])
def test_max_retries_is_respected(max_retries: int, retries: int) -> None:
    """A subtask failing every time gets exactly max_retries retries."""
    policy = SubtaskRetryPolicy(max_retries=max_retries)
    count, delays = 0, []
    while (d := decide_failure(retryable=True, retry_count=count, policy=policy)).action == "retry":
        delays.append(d.delay)
        count += d.counts_retry
    assert count == retries
    assert delays == [2.0**n for n in range(retries)]


@pytest.mark.parametrize(
    ("retry_after", "expected"),
    [
        (7.0, 7.0),
        (1.0, 1.0),
        (0.0, 1.0),  # a Retry-After: 0 storm still waits MIN_DEFERRAL
        (0.3, 1.0),
        (None, 5.0),  # no Retry-After: the default
        (-3.0, 5.0),  # nonsense header values fall back to the default
        (math.nan, 5.0),
        (math.inf, 3600.0),
        (86_400.0, 3600.0),  # clamped
    ],
)
def test_rate_limited_defers_by_retry_after(retry_after: float | None, expected: float) -> None:
    """A 429 defers by Retry-After without counting a retry."""
    got = decide_failure(
        retryable=True, retry_count=0, rate_limited=True, retry_after=retry_after, policy=EXACT
    )
    assert (got.action, got.delay, got.counts_retry) == ("defer", expected, False)


def test_rate_limited_never_spends_the_retry_budget() -> None:
    """Even with the retry budget exhausted, a 429 defers; only the deferral cap fails it."""
    decisions = []
    for deferrals in range(60):
        d = decide_failure(
            retryable=True,
            retry_count=3,
            rate_limited=True,
            rate_limit_count=deferrals,
            policy=EXACT,
        )
        decisions.append(d.action)
        assert not d.counts_retry
        if d.action == "failed":
            break
    assert decisions == ["defer"] * 50 + ["failed"]
    assert d.reason == "rate-limited 50 times (cap 50)"


@pytest.mark.parametrize(
    ("cap", "count", "action"), [(0, 0, "failed"), (1, 0, "defer"), (1, 1, "failed")]
)
def test_rate_limit_cap_is_configurable(cap: int, count: int, action: str) -> None:
    """The deferral cap is separate from max_retries."""
    policy = SubtaskRetryPolicy(rate_limit_cap=cap, max_retries=0)
    got = decide_failure(
        retryable=True, retry_count=0, rate_limited=True, rate_limit_count=count, policy=policy
    )
    assert got.action == action


def test_defer_jitter_only_delays_further() -> None:
    """Jitter on deferrals is upward: never earlier than the provider asked."""
    waits = [
        decide_failure(
            retryable=True,
            retry_count=0,
            rate_limited=True,
            retry_after=10.0,
            rng=random.Random(i),
        ).delay
        for i in range(200)
    ]
    assert all(10.0 <= w <= 10.0 * (1 + DEFAULT_RETRY_POLICY.defer_jitter) for w in waits)
    assert len(set(waits)) > 100


def test_retry_after_zero_storm_is_bounded() -> None:
    """`Retry-After: 0` defers >= MIN_DEFERRAL: one request a second per subtask, not 100."""
    waits = [
        decide_failure(
            retryable=True, retry_count=0, rate_limited=True, retry_after=0.0, rng=random.Random(i)
        ).delay
        for i in range(100)
    ]
    assert min(waits) >= MIN_DEFERRAL == 1.0
    assert max(waits) <= MIN_DEFERRAL * (1 + DEFAULT_RETRY_POLICY.defer_jitter)
    custom = SubtaskRetryPolicy(min_deferral=0.25, defer_jitter=0.0)
    got = decide_failure(
        retryable=True, retry_count=0, rate_limited=True, retry_after=0.0, policy=custom
    )
    assert got.delay == 0.25


@pytest.mark.parametrize(
    "kw",
    [
        {"max_retries": -1},
        {"rate_limit_cap": -1},
        {"base": -1.0},
        {"jitter": 2.0},
        {"min_deferral": -1.0},
    ],
)
def test_retry_policy_rejects_nonsense(kw: dict[str, float]) -> None:
    """Invalid budgets fail at construction."""
    with pytest.raises(ValueError):
        SubtaskRetryPolicy(**kw)  # type: ignore[arg-type]
