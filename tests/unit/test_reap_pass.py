"""The reaper's plan per pass (pure): when it judges other runners, when the backstop runs."""

from __future__ import annotations

from runner.config import RunnerSettings
from runner.loop.duties import reap_pass

SETTINGS = RunnerSettings(heartbeat_interval=1.0, stale_after=4.0, lease=8.0)


def test_other_runners_are_judged_only_after_stale_after_of_this_loop() -> None:
    """A loop (re)started at 100 (after an outage, say) leaves others be until 104."""
    judged = [reap_pass(100 + t, 100, 1e9, SETTINGS).dead_runners for t in (1, 2, 3, 3.9, 4, 9)]
    assert judged == [False, False, False, False, True, True]


def test_the_lease_backstop_runs_every_quarter_lease() -> None:
    """Due at the start, then every lease / 4 = 2 s, whatever the pass cadence."""
    at, ran = 0.0, []
    for now in (0.0, 1.0, 2.0, 3.0, 4.0, 4.5, 6.5):
        plan = reap_pass(now, 0.0, at, SETTINGS)
        at = plan.backstop_at
        ran.append(plan.backstop)
    assert ran == [True, False, True, False, True, False, True]
