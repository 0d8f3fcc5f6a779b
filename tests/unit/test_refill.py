"""When a pool claims again: a share of its limit free, or at once when nothing is in flight."""

from __future__ import annotations

import pytest

from runner.loop.executor import REFILL_SHARE, refill_at


@pytest.mark.parametrize(
    ("limit", "running", "expected"),
    [
        (100, 0, 1),  # idle: the first submitted row is claimed at once
        (100, 1, 100 // REFILL_SHARE),  # busy: wait for a share of the pool
        (100, 99, 100 // REFILL_SHARE),
        (3, 2, 1),  # a small pool never waits for more slots than it has
        (1, 1, 1),
    ],
)
def test_refill_threshold(limit: int, running: int, expected: int) -> None:
    """The number of free slots worth a claim."""
    assert refill_at(limit, running) == expected


def test_a_busy_pool_refills_before_it_is_empty() -> None:
    """Claims overlap the rest of the pool's work: the threshold is well under the limit."""
    assert all(refill_at(limit, 1) <= max(1, limit // 2) for limit in range(1, 1001))
