"""bench/status_figures.py: per-round latencies and the summary table, on made-up timings."""

from __future__ import annotations

from bench.status_figures import Rounds, p95, spread, table


def test_p95_is_the_nearest_rank() -> None:
    """Of 1..20 ms the 95th percentile is the 19th value; of one value, that value."""
    assert p95([float(i) for i in range(1, 21)]) == 19.0
    assert p95([7.0]) == 7.0


def test_spread_is_median_then_min_to_max() -> None:
    """Three rounds 30, 10, 20: median 20 between 10 and 30."""
    assert spread([30.0, 10.0, 20.0]) == "20.0 (10.0–30.0)"


def test_a_loaded_mode_row_gives_medians_of_rounds_and_the_verdict() -> None:
    """p50/p95/max per round, then the medians; a median p95 over 100 ms is not met."""
    rounds = Rounds("replay", 5_000.0)
    rounds.add("r1", [10.0, 20.0, 150.0], rate=4_900.0)
    rounds.add("r2", [12.0, 30.0, 90.0], rate=5_000.0)
    line = rounds.add("r3", [11.0, 25.0, 120.0], rate=4_950.0)
    assert line == (
        "r3: p50 25.0 ms, p95 120.0 ms, max 120.0 ms (3 refreshes)"
        " while completing 4,950 subtasks/s"
    )
    row = rounds.row()
    assert "| 4,950 (4,900–5,000) (asked 5,000) |" in row
    assert "| 25.0 (20.0–30.0) | 120.0 (90.0–150.0) | 120.0 (90.0–150.0) | 3 × 3 | NOT met |" in row


def test_an_idle_mode_has_no_rate_and_the_table_has_one_row_per_mode() -> None:
    """Idle rows show a dash for the rate; the table is the header then each mode's row."""
    idle = Rounds("idle")
    for _ in range(3):
        idle.add("idle", [4.0, 5.0, 6.0])
    assert (
        idle.row() == "| idle | — | 5.0 (5.0–5.0) | 6.0 (6.0–6.0) | 6.0 (6.0–6.0) | 3 × 3 | met |"
    )
    lines = table([idle, idle]).splitlines()
    assert len(lines) == 4
    assert lines[0].startswith("| mode | completions/s achieved |")
