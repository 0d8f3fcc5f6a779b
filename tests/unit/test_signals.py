"""SignalCounts and the attempt's budget tracker: pure counting, tightest budget kept."""

from __future__ import annotations

import pytest

from runner.loop.signals import SignalCounts
from workers import budget
from workers.errors import TransientError
from workers.headers import RateLimitInfo


def test_each_signal_counts_into_its_field() -> None:
    """rate_limited, unavailable, timeout and server_error each land in their own count."""
    counts = SignalCounts()
    for signal in ("rate_limited", "unavailable", "unavailable", "timeout", "server_error"):
        counts.count(signal)  # type: ignore[arg-type]
    assert (counts.rate_limited, counts.unavailable, counts.timeouts, counts.server_errors) == (
        1,
        2,
        1,
        1,
    )


def test_the_smallest_remaining_wins_with_its_own_limit_and_reset() -> None:
    """The tightest budget is kept whole (its limit and reset), never mixed with another's."""
    counts = SignalCounts()
    counts.note(RateLimitInfo(remaining=50, limit=100, reset=1.0))
    counts.note(RateLimitInfo(remaining=3, limit=60, reset=20.0))
    counts.note(RateLimitInfo(remaining=9, limit=100, reset=0.5))
    counts.note(None)
    assert (counts.ratelimit_remaining, counts.ratelimit_limit, counts.ratelimit_reset) == (
        3,
        60,
        20.0,
    )


def test_take_hands_over_a_window_and_starts_again() -> None:
    """take() returns what was counted and leaves zeros behind."""
    counts = SignalCounts()
    counts.count("timeout")
    counts.note(RateLimitInfo(remaining=1))
    taken = counts.take()
    assert taken.timeouts == 1 and taken.ratelimit_remaining == 1
    assert counts == SignalCounts()


def test_a_tracker_collects_only_inside_its_block() -> None:
    """Outside an attempt a budget is dropped; inside, the tightest one is kept."""
    budget.note(RateLimitInfo(remaining=0))  # no attempt open: nowhere to go, no error
    with budget.tracking() as seen:
        budget.note(RateLimitInfo(remaining=10))
        budget.note(RateLimitInfo(remaining=4))
        budget.note(None)
    budget.note(RateLimitInfo(remaining=1))
    assert seen.lowest == RateLimitInfo(remaining=4)


def test_an_error_leaving_the_attempt_carries_its_tightest_budget() -> None:
    """A ProviderError raised inside tracking() carries the attempt's budget, if tighter."""
    with pytest.raises(TransientError) as caught, budget.tracking():
        budget.note(RateLimitInfo(remaining=2, limit=10))
        raise TransientError("HTTP 500", status=500)
    assert caught.value.ratelimit == RateLimitInfo(remaining=2, limit=10)
