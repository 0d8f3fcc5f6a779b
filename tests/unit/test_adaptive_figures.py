"""bench/adaptive_figures.py: the bench's rates and convergence, on made-up completion times."""

from __future__ import annotations

from bench.adaptive_figures import Row, Run, converge_after, per_second, steady_rate


def _run(completions: list[float], **kw: int) -> Run:
    fields = {"requests": len(completions), "rate_limited": 0, "max_in_flight": 4}
    fields.update(kw)
    return Run(
        "adaptive",
        len(completions),
        0,
        0.0,
        max(completions),
        tuple(completions),
        fields["requests"],
        fields["rate_limited"],
        fields["max_in_flight"],
        4,
    )


def test_per_second_bins_completions_by_whole_second() -> None:
    """Completions at 0.1, 0.9, 1.5 and 3.0 s: two, one, none, one."""
    assert per_second([100.1, 100.9, 101.5, 103.0], 100.0, 103.5) == [2, 1, 0, 1]


def test_convergence_is_the_first_five_seconds_at_ninety_percent() -> None:
    """2/s for 10 s, then 10/s: converged 10 s after the start against a best of 10/s."""
    times = [i / 2 for i in range(20)] + [10 + i / 10 for i in range(100)]
    assert converge_after(times, 0.0, 10.0, 20.0) == 10.0
    assert converge_after(times, 0.0, 2.0, 20.0) == 0.0
    assert converge_after(times, 0.0, 50.0, 20.0) is None  # never reached


def test_steady_rate_ignores_the_first_and_last_five_seconds() -> None:
    """A slow start and a slow tail do not move the median of the middle."""
    times = [i / 2 for i in range(10)] + [5 + i / 10 for i in range(200)] + [25, 26, 27]
    assert steady_rate(_run(times)) == 10.0


def test_a_row_flags_a_high_water_mark_over_the_cap() -> None:
    """max_in_flight above max_concurrency is marked, and the 429 share is of all requests."""
    row = Row("a", _run([1.0, 2.0], max_in_flight=5, requests=200, rate_limited=3), _run([1.0]), ())
    cells = row.cells()
    assert cells[-1] == "5 > 4 (!)"
    assert cells[5] == "1.50% (3/200)"
