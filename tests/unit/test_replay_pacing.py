"""bench/replay_pacing.py: what each tick of the replay driver owes, on made-up clocks."""

from __future__ import annotations

import pytest

from bench.replay_pacing import Pacer, shares


def test_on_time_ticks_take_the_rate_times_the_tick() -> None:
    """5,000/s in 20 ms ticks: 100 per tick, 5,000 over 50 ticks, nothing dropped."""
    pacer = Pacer(5_000.0, tick=0.02)
    taken = [pacer.take(0.02 * k) for k in range(1, 51)]
    assert taken == [100] * 50
    assert sum(taken) == 5_000
    assert pacer.dropped == 0


def test_nothing_is_owed_at_the_start_or_twice_for_the_same_instant() -> None:
    """No time passed, nothing owed; asking again at the same time owes nothing more."""
    pacer = Pacer(5_000.0, tick=0.02)
    assert pacer.take(0.0) == 0
    assert pacer.take(0.02) == 100
    assert pacer.take(0.02) == 0
    assert pacer.take(0.01) == 0  # a clock read out of order never owes negative work


def test_fractional_rates_accumulate_instead_of_rounding_each_tick() -> None:
    """30/s in 20 ms ticks is 0.6 a tick: 3 in the first 100 ms, 30 in the first second."""
    pacer = Pacer(30.0, tick=0.02)
    first = [pacer.take(0.02 * k) for k in range(1, 6)]
    assert first == [0, 1, 0, 1, 1]
    rest = sum(pacer.take(0.02 * k) for k in range(6, 51))
    assert sum(first) + rest == 30


def test_a_late_tick_catches_up_one_burst_and_drops_the_rest() -> None:
    """200 ms late at 5,000/s owes 1,000; one burst (4 ticks: 400) is made, 600 dropped."""
    pacer = Pacer(5_000.0, tick=0.02, burst=4)
    assert pacer.take(0.02) == 100
    assert pacer.take(0.22) == 400
    assert pacer.dropped == 600
    # The dropped time is never repaid: the next tick owes one tick's worth again.
    assert pacer.take(0.24) == 100
    assert pacer.offered == 1_200


def test_the_cap_is_at_least_one() -> None:
    """A rate below one per burst still lets a tick make one completion."""
    pacer = Pacer(1.0, tick=0.02, burst=4)
    assert pacer.cap == 1
    assert pacer.take(3.0) == 1
    assert pacer.dropped == 2


def test_next_tick_is_the_next_boundary_after_now() -> None:
    """Ticks fall on multiples of the tick: from 0.05 s the next is 0.06 s; on 0.06, 0.08."""
    pacer = Pacer(5_000.0, tick=0.02)
    assert pacer.next_tick(0.0) == pytest.approx(0.02)
    assert pacer.next_tick(0.05) == pytest.approx(0.06)
    assert pacer.next_tick(0.06) == pytest.approx(0.08)


def test_shares_split_the_rate_evenly() -> None:
    """5,000/s over two runners is 2,500/s each; no runners is an error."""
    assert shares(5_000.0, 2) == [2_500.0, 2_500.0]
    with pytest.raises(ValueError, match="runners"):
        shares(5_000.0, 0)
